"""``alphaloop spec ID``: the YAML of one strategy, ready for ``backtest``/``verify``.

The id (or any unique prefix, e.g. the 8 characters the tables show) is looked up in
``--results`` when given, else in the recorded ``evaluate`` runs, else in the knowledge
base. Heavy imports stay inside the function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from alphaloop.cli._common import _friendly
from alphaloop.errors import AlphaloopError


def register(app: typer.Typer) -> None:
    """Add ``spec`` to APP."""
    app.command("spec")(spec)


@_friendly
def spec(
    strategy: Annotated[str, typer.Argument(
        metavar="ID", help="Strategy id or a unique prefix (the tables' id column).")],
    results_path: Annotated[Path | None, typer.Option(
        "--results", help="Sweep or evaluate output to look in (default: recorded runs, "
        "then the knowledge base).")] = None,
    url: Annotated[str | None, typer.Option(
        "--url", help="Knowledge base to look in, a SQLAlchemy URL (default "
        "sqlite:///$ALPHALOOP_HOME/kb.sqlite; a research loop's `kb.url`).")] = None,
) -> None:
    """Print one strategy's spec as YAML (save it and pass it to backtest or verify)."""
    found = _from_results(results_path, strategy) if results_path is not None else \
        _from_runs(strategy) or _from_kb(strategy, url)
    if found is None:
        where = "the knowledge base" if url is None else f"the knowledge base {url}"
        raise AlphaloopError(
            f"no strategy {strategy!r} in the recorded runs or {where}; pass "
            "--results FILE (the sweep's --out) or --url (a loop's `kb.url`)",
            code="SPEC_NOT_FOUND")
    sys.stdout.write(found.to_yaml())


def _from_results(path: Path, prefix: str) -> Any:
    import pandas as pd

    from alphaloop.cli.research import _read_results, _resolve_id

    frame = _read_results(path, pd)
    if "spec" not in frame.columns:
        raise AlphaloopError(f"{path}: no 'spec' column (not a sweep or evaluate output)",
                             code="EVAL_MISSING_COLUMN")
    sid = _resolve_id(frame, prefix)
    return _spec_of(frame[frame["strategy_id"] == sid].iloc[0]["spec"])


def _from_runs(prefix: str) -> Any:
    from alphaloop.kb.runs import runs_with_strategy

    ids: set[str] = set()
    newest: dict[str, str] = {}
    for run in runs_with_strategy(prefix):  # newest first
        rows = run.candidates[run.candidates["strategy_id"].str.startswith(prefix)]
        for sid, text in zip(rows["strategy_id"], rows["spec"], strict=True):
            ids.add(sid)
            newest.setdefault(sid, text)
    if len(ids) > 1:
        raise AlphaloopError(f"{len(ids)} recorded strategies match id {prefix!r}; give "
                             "more characters", code="EVAL_UNKNOWN_ID")
    return _spec_of(newest[ids.pop()]) if ids else None


def _from_kb(prefix: str, given: str | None = None) -> Any:
    """The spec the knowledge base at ``given`` (default: the default one) holds; a
    default one that does not exist yet holds nothing, a given one must exist."""
    from alphaloop.kb.store import KnowledgeBase, default_url
    from alphaloop.strategy.spec import StrategySpec

    url = given or default_url()
    if given is None and url.startswith("sqlite:///") \
            and not Path(url.removeprefix("sqlite:///")).is_file():
        return None  # no knowledge base yet: don't create one just to look
    with KnowledgeBase(url, create=False) as kb:
        try:
            record = kb.strategy(prefix)
        except AlphaloopError as exc:
            if getattr(exc, "code", "") == "KB_NOT_FOUND":
                return None
            raise
    return StrategySpec.from_dict(record["spec"], source=f"knowledge base {url}")


def _spec_of(text: str) -> Any:
    from alphaloop.strategy.spec import StrategySpec

    return StrategySpec.model_validate_json(text)
