"""The ``data`` command group: list, show, import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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

    info = dataset_info(name, load=True)
    bars = load_bars(name)
    report = quality_report(bars)
    table = Table(title=name, show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key, value in info.to_dict().items():
        if value not in (None, "", []):
            shown = ", ".join(map(str, value[:20])) if isinstance(value, list) else str(value)
            table.add_row(key, shown)
    table.add_row("data_ref", bars.data_ref)
    table.add_row("quality", "ok" if report.ok and not report.warnings else
                  "; ".join(f"{i.code}: {i.message}" for i in report.issues[:5]))
    out.print(table)


@data_app.command("import")
@_friendly
def data_import(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file (long or wide format).")],
    name: Annotated[str | None, typer.Option(help="Name to store it under.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing data set.")] = False,
) -> None:
    """Validate a file and store it as a named data set."""
    from alphaloop.data import import_dataset

    info = import_dataset(file, name=name, overwrite=overwrite)
    out.print(f"imported {info.name}: {info.n_bars} bars × {info.n_symbols} symbols", highlight=False)

