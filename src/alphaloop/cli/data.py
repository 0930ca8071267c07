"""The ``data`` command group: list, show, import."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from alphaloop.cli._common import _friendly, out

data_app = typer.Typer(no_args_is_help=True, help="Market data sets: list, show, import.")


def register(app: typer.Typer) -> None:
    """Add the ``data`` group to APP."""
    app.add_typer(data_app, name="data")


@data_app.command("list")
@_friendly
def data_list() -> None:
    """List bundled and imported data sets."""
    from alphaloop.data import list_datasets

    table = Table(title="data sets")
    for c in ("name", "kind", "description"):
        table.add_column(c)
    for info in list_datasets():
        table.add_row(info.name, info.kind, info.description)
    out.print(table)


@data_app.command("show")
@_friendly
def data_show(name: Annotated[str, typer.Argument(help="Data set name.")]) -> None:
    """Describe one data set: origin, licence, span, symbols, quality warnings."""
    from alphaloop.data import dataset_info, load_bars, quality_report
    from alphaloop.data.catalog import is_index_data

    info = dataset_info(name, load=True)
    bars = load_bars(name)
    report = quality_report(bars)
    table = Table(title=name, show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")  # a data_ref is one long word: fold it, whole
    fields = {**info.to_dict(), "data_ref": bars.data_ref}  # the loaded panel's, once
    for key, value in fields.items():
        if value not in (None, "", []):
            shown = _listed(value) if isinstance(value, list) else str(value)
            table.add_row(key, shown)
    # the whole panel's rule (decisions inside a backtest use the causal per-bar value)
    table.add_row("periods_per_year", f"{bars.periods_per_year:.6g} (annualization)")
    if is_index_data(name, bars.symbols):
        table.add_row("instrument", "index levels: volume is not a tradable instrument's, "
                      "so participation and capacity are not meaningful")
    table.add_row("quality", "ok" if report.ok and not report.warnings else
                  "\n".join(_issue_lines(report.issues)))
    out.print(table)


def _issue_lines(issues: Sequence[Any]) -> list[str]:
    """Every code of a quality report, one line each: its first message, and how many
    more issues of that code there are and for which symbols (none is left out)."""
    by_code: dict[str, list[Any]] = {}
    for issue in issues:
        by_code.setdefault(issue.code, []).append(issue)
    lines = []
    for code, group in by_code.items():
        line = f"{code}: {group[0].message}"
        if len(group) > 1:
            names: list[object] = [i.symbol for i in group[1:] if i.symbol is not None]
            line += f" (+{len(group) - 1} more" + (f": {_listed(names)})" if names else ")")
        lines.append(line)
    return lines


@data_app.command("import")
@_friendly
def data_import(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file (long or wide format).")],
    name: Annotated[str | None, typer.Option(help="Name to store it under.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing data set.")] = False,
    symbol: Annotated[str | None, typer.Option(
        help="Symbol of a single-symbol file (default: the file name).")] = None,
    adjust: Annotated[bool, typer.Option(
        "--adjust/--no-adjust", help="Apply an Adj Close column to open/high/low/close.")]
    = True,
    membership: Annotated[Path | None, typer.Option(
        "--membership", help="CSV/Parquet of symbol, start, end: when each symbol was in "
        "the universe (engines trade members only; survivorship is checked).")] = None,
) -> None:
    """Validate a file and store it as a named data set.

    Layouts: long (timestamp, symbol, open, high, low, close[, volume]), single-symbol
    (Date, Open, High, Low, Close[, Adj Close][, Volume]) or wide (date + one close
    column per symbol)."""
    from alphaloop.data import import_dataset

    notes: list[str] = []
    info = import_dataset(file, name=name, overwrite=overwrite, symbol=symbol, adjust=adjust,
                          notes=notes, membership=membership)
    symbols = ", ".join(info.symbols or ()) if (info.n_symbols or 0) <= 5 else \
        f"{info.n_symbols} symbols"
    out.print(f"imported {info.name}: {info.n_bars} bars × {info.n_symbols} symbol"
              f"{'s' if info.n_symbols != 1 else ''} ({symbols}), {info.start} .. {info.end}",
              highlight=False)
    for note in notes:
        out.print(f"  {note}", highlight=False)
    if info.membership_periods is not None:
        out.print(f"  membership: {info.membership_periods} periods stored; symbols are "
                  "traded only while members", highlight=False)


def _listed(values: list[object]) -> str:
    shown = ", ".join(map(str, values[:20]))
    return shown if len(values) <= 20 else f"{shown}, … ({len(values)} in all)"

