"""A loop run's folder: where it is, the files it keeps, and reading them back.

Kept apart from :mod:`alphaloop.orchestrator.runner` (which re-exports its public names) so
that what only shows a run (``status``, ``report``, ``kb`` queries) does not import the
engines and the statistics.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alphaloop.errors import AlphaloopError
from alphaloop.orchestrator.config import STORED, ConfigError, RunConfig, check_run_id

CONFIG_FILE = "loop.json"
SUMMARY_FILE = "summary.json"
OWNER_FILE = "owner.json"  # the process running the loop now (gone when it ends)

R = TypeVar("R")


def runs_root(out_dir: str | None) -> Path:
    """Where loop runs live: ``out_dir``, else ``$ALPHALOOP_HOME/runs``."""
    from alphaloop.data.catalog import home

    return Path(out_dir).expanduser() if out_dir else home() / "runs"


def run_folder(run_id: str, out_dir: str | None = None) -> Path:
    """The folder of the loop run ``run_id`` (or of the one run whose id starts with
    it) under ``out_dir``; without ``out_dir``, under the default runs folder, else
    where the default knowledge base says the run's config put it (a run with its own
    ``out_dir``). ``ConfigError`` ``RUN_NOT_FOUND`` naming where it looked."""
    root = runs_root(out_dir)
    found = _match(root, check_run_id(run_id))
    if out_dir is None and (found is None or found.name != run_id):
        # a prefix: the default KB may know another run with it in a folder of its own
        recorded = _recorded_out_dir(run_id)
        if recorded is not None:
            elsewhere = _match(runs_root(recorded), run_id)
            if found is not None and elsewhere is not None and elsewhere != found:
                raise ConfigError(f"runs {found.name!r} (under {root}) and "
                                  f"{elsewhere.name!r} (under {runs_root(recorded)}) both "
                                  f"start with {run_id!r}; give more of the id",
                                  code="RUN_AMBIGUOUS")
            found = found or elsewhere
    if found is None:
        raise ConfigError(f"no run {run_id!r} under {root}"
                          + ("" if out_dir else " (nor one the default knowledge base "
                                                "knows); give --out-dir"),
                          code="RUN_NOT_FOUND")
    return found


def _match(root: Path, prefix: str) -> Path | None:
    if (root / prefix / CONFIG_FILE).is_file():
        return root / prefix
    hits = sorted(p for p in root.glob(f"{prefix}*") if (p / CONFIG_FILE).is_file()) \
        if root.is_dir() else []
    if len(hits) > 1:
        raise ConfigError(f"{len(hits)} runs under {root} start with {prefix!r}: "
                          + ", ".join(p.name for p in hits[:5]), code="RUN_AMBIGUOUS")
    return hits[0] if hits else None


def _recorded_out_dir(run_id: str) -> str | None:
    """The out_dir the default knowledge base recorded for the run (None if the file
    or the run is not there; a database that cannot be read is not an answer either)."""
    from alphaloop.kb.store import KBError, KnowledgeBase, default_url

    if not Path(default_url().removeprefix("sqlite:///")).is_file():
        return None
    try:
        with KnowledgeBase(None) as kb:
            found = kb.find_run(run_id)
    except KBError as exc:
        if exc.code == "RUN_AMBIGUOUS":  # many runs start with it: say so, not "none"
            raise ConfigError(f"{exc.message}; give more of the id",
                              code="RUN_AMBIGUOUS") from None
        return None
    except AlphaloopError:
        return None
    if (found.config or {}).get("kind") == "evaluate":  # known, but no research loop
        raise ConfigError(f"run {found.run_id[:16]!r} is an `evaluate` run, not a research "
                          f"loop: `alphaloop report --run {found.run_id[:8]}` shows it",
                          code="RUN_NOT_FOUND")
    out = (found.config or {}).get("out_dir")
    return str(out) if out else None


def loop_alive(folder: Path) -> bool:
    """Whether a process is running the loop of this run folder now: False for a run
    that ended or whose process was killed; True for one started on another machine
    (nothing here can tell)."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
        if owner["host"] != socket.gethostname():
            return True
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # the pid exists, owned by someone else
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no owner file (or an unreadable one): no process claims the run
    return True


def abandoned(folder: Path, status: str) -> bool:
    """A run whose last summary says it is still going, and no process runs it: it was
    killed or crashed (``resume`` continues it)."""
    return status in ("RUNNING", "RUN_CREATED") and not loop_alive(folder)


def read_stored_config(folder: Path) -> RunConfig:
    """A run folder's config as it was recorded (to show the run, not to run it: the
    families a Python process registered need not exist in this one)."""
    return read_run_file(folder / CONFIG_FILE, lambda text: RunConfig.model_validate(
        json.loads(text), context={STORED: True}))


def read_run_file(path: Path, parse: Callable[[str], R]) -> R:
    """One of a run folder's own files, parsed; a damaged one (a disk error, a hand
    edit) is one ``ConfigError`` ``RUN_DAMAGED`` naming it, not a traceback."""
    text = path.read_text(encoding="utf-8")
    try:
        return parse(text)
    except ValueError as exc:  # JSONDecodeError and pydantic's ValidationError both
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path} cannot be read ({first}): the run folder is damaged",
                          code="RUN_DAMAGED") from None
