"""Helpers shared by the command modules: consoles, option types, the error wrapper,
formatting and table writing. Light imports only (CLI start-up time matters)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from alphaloop.errors import AlphaloopError, ErrorClass

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

DataOpt = Annotated[str, typer.Option("--data", "-d",
                                      help="Bundled data set name or a CSV/Parquet path.")]
FeesOpt = Annotated[float | None, typer.Option("--fees-bps", help="Commission per side, bps.")]
SlipOpt = Annotated[float | None, typer.Option("--slippage-bps", help="Slippage per side, bps.")]


def _friendly(fn: F) -> F:
    """Turn alphaloop's own errors into one line on stderr and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AlphaloopError as exc:
            # the message echoes user input (an expression, a path): never read it as markup
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True,
                      soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _costs(fees_bps: float | None, slippage_bps: float | None) -> Any:
    from pydantic import ValidationError

    from alphaloop.engines.costs import CostModel
    from alphaloop.errors import SpecError
    from alphaloop.strategy.spec import format_validation_error

    kwargs = {k: v for k, v in (("fees_bps", fees_bps), ("slippage_bps", slippage_bps))
              if v is not None}
    try:
        return CostModel(**kwargs)
    except ValidationError as exc:
        raise SpecError(f"costs: {format_validation_error(exc)}", code="COST_INVALID") from None


def _fmt(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if key == "n_trades":
        return f"{int(value)}"
    if key in ("total_return", "cagr", "ann_volatility", "max_drawdown", "exposure", "win_rate"):
        return f"{100 * float(value):.2f}%"
    return f"{float(value):.3f}"


def _pct(value: Any) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{100 * float(value):.2f}%"


def _write_table(frame: Any, path: Path) -> None:
    """Write CSV or Parquet (by suffix) atomically: a crash never leaves half a file."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise AlphaloopError(f"{path}: output must end in .csv or .parquet",
                             code="OUTPUT_FORMAT")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AlphaloopError(f"cannot write {path}: {exc.strerror or exc}",
                             code="OUTPUT_WRITE_FAILED",
                             error_class=ErrorClass.TRANSIENT) from None


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())

