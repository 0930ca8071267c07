"""Where a run keeps its files, written so that a crash never leaves half of one.

Layout under ``out_dir/<run_id>/``::

    run.json                       the config, as given (written once)
    pipeline_events.jsonl          seed 004 §3.1, one event per line
    kb_wal.jsonl                   batches queued while the knowledge base was locked
    summary.json                   the RunSummary, rewritten after every iteration
    iter_0003/S50/output.pkl       a stage's output ...
    iter_0003/S50/.stage_done      ... and its completion marker: {stage_run_id, inputs_hash}

Every file is written to a temporary name in the same folder, flushed, fsynced and
renamed (atomic on POSIX). A stage counts as done only when its marker exists and names
the same ``inputs_hash`` (seed 004 §7): then resume loads its output instead of
running it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

from alphaloop.fsutil import atomic_write

DONE = ".stage_done"
OUTPUT = "output.pkl"


def stage_run_id(run_id: str, iteration: int, stage_id: str, attempt: int,
                 inputs_hash: str) -> str:
    """Seed 004 §7.1: hash(run_id, iteration_id, stage_id, attempt, inputs_hash)."""
    text = "\x1f".join([run_id, str(iteration), stage_id, str(attempt), inputs_hash])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def inputs_hash(*parts: Any) -> str:
    """A stable hash of a stage's inputs (JSON-able parts; sets sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=_jsonable, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` at ``path``, whole or not at all."""
    atomic_write(path, lambda fh: fh.write(data))


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=True, default=_jsonable).encode())


def append_line(path: Path, obj: Any, *, sync: bool = True) -> None:
    """One JSON line, appended (a torn last line is skipped on reading). ``sync``
    fsyncs it: needed where the line is the only copy of a record; a flushed line
    survives a killed process either way, only a machine crash can lose it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(obj, sort_keys=True, default=_jsonable) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        if sync:
            os.fsync(fh.fileno())


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path``; a last line cut short by a crash is ignored."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class StageStore:
    """The stage outputs of one run: save with a marker, find again by inputs."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, iteration: int, stage_id: str) -> Path:
        return self.root / f"iter_{iteration:04d}" / stage_id

    def load(self, iteration: int, stage_id: str, inputs: str) -> Any | None:
        """The output of a finished stage with these inputs, or None."""
        folder = self.folder(iteration, stage_id)
        marker = folder / DONE
        if not marker.exists():
            return None
        try:
            meta = json.loads(marker.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError):
            return None
        if meta.get("inputs_hash") != inputs:
            return None
        try:
            with open(folder / OUTPUT, "rb") as fh:
                return pickle.load(fh)
        except Exception:  # damaged bytes raise any type while they are unpickled
            # a damaged output (a disk error, a hand edit) is no output: the stage runs
            # again, with the same numbers, instead of stopping the resume
            return None

    def marker(self, iteration: int, stage_id: str) -> dict[str, Any]:
        """The completion marker of a stored stage ({} when unreadable or absent)."""
        try:
            meta = json.loads((self.folder(iteration, stage_id) / DONE).read_text(
                encoding="utf-8"))
        except (json.JSONDecodeError, OSError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def save(self, iteration: int, stage_id: str, inputs: str, run_stage_id: str,
             output: Any) -> str:
        """Write the output, then the marker (the marker last: its presence means done)."""
        folder = self.folder(iteration, stage_id)
        write_atomic(folder / OUTPUT, pickle.dumps(output, protocol=pickle.HIGHEST_PROTOCOL))
        write_json(folder / DONE, {"inputs_hash": inputs, "stage_run_id": run_stage_id})
        return str(folder / OUTPUT)
