"""``alphaloop kb stats | runs | strategies | show | import-runs``: the knowledge base."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from alphaloop.cli._common import _friendly, out

kb_app = typer.Typer(no_args_is_help=True, help="Read the knowledge base.")
UrlOpt = Annotated[str | None, typer.Option(
    "--url", help="SQLAlchemy URL (default sqlite:///$ALPHALOOP_HOME/kb.sqlite).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _kb(url: str | None) -> Any:
    from alphaloop.kb.store import KnowledgeBase

    return KnowledgeBase(url)


@kb_app.command("stats")
@_friendly
def kb_stats(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Row counts, runs by status, schema revision."""
    stats = _kb(url).stats()
    if as_json:
        out.print_json(json.dumps(stats, default=str))
        return
    for key, value in stats.items():
        out.print(f"{key}: {value}")


@kb_app.command("runs")
@_friendly
def kb_runs(url: UrlOpt = None, limit: int = 50, as_json: JsonOpt = False) -> None:
    """The latest runs."""
    _frame(_kb(url).list_runs(limit=limit), as_json)


@kb_app.command("strategies")
@_friendly
def kb_strategies(url: UrlOpt = None, top: int = 20, as_json: JsonOpt = False) -> None:
    """The best-scored strategies of every run."""
    _frame(_kb(url).top_strategies(top), as_json)


@kb_app.command("show")
@_friendly
def kb_show(strategy_id: Annotated[str, typer.Argument(help="An id or a unique prefix.")],
            url: UrlOpt = None) -> None:
    """One strategy: its canonical spec, backtests, scores and failures."""
    out.print_json(json.dumps(_kb(url).strategy(strategy_id), default=str))


@kb_app.command("import-runs")
@_friendly
def kb_import_runs(url: UrlOpt = None) -> None:
    """Index the `evaluate` runs recorded under $ALPHALOOP_HOME/runs before evaluate
    wrote to the knowledge base (idempotent: an indexed run is left as it is)."""
    from alphaloop.kb.runs import import_runs, runs_dir

    with _kb(url) as kb:
        n = import_runs(kb)
    out.print(f"{n} run folder(s) under {runs_dir()} indexed in the knowledge base",
              highlight=False)


def _frame(frame: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(frame.to_json(orient="records", default_handler=str))
        return
    from rich.table import Table

    table = Table()
    for col in frame.columns:
        table.add_column(str(col), overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*[_cell(v) for v in row])
    out.print(table)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    text = str(v)
    return text[:12] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def register(app: typer.Typer) -> None:
    app.add_typer(kb_app, name="kb")
