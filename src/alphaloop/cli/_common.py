"""Helpers shared by the command modules: consoles, option types, the error wrapper,
formatting and table writing. Light imports only (CLI start-up time matters)."""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from alphaloop.errors import AlphaloopError, ErrorClass

# no emoji codes: ids and run names such as "desk:sa:cool" print as they are (Rich
# would turn ":sa:" into an emoji)
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)
F = TypeVar("F", bound=Callable[..., Any])

DataOpt = Annotated[str, typer.Option("--data", "-d",
                                      help="Bundled data set name or a CSV/Parquet path.")]
FeesOpt = Annotated[float | None, typer.Option("--fees-bps", help="Commission per side, bps.")]
SlipOpt = Annotated[float | None, typer.Option("--slippage-bps", help="Slippage per side, bps.")]


def _friendly(fn: F) -> F:
    """Turn alphaloop's own errors, and the system's refusals (OSError), into one line
    on stderr and exit code 2 (75 for a full disk); Ctrl-C into one line and 130."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AlphaloopError as exc:
            _error_line(str(exc), exc.code, str(exc.error_class), exc.message,
                        as_json=bool(kwargs.get("as_json")))
            raise typer.Exit(2) from None
        except OSError as exc:
            # a folder that cannot be written, a full disk: where it arose is said, no
            # traceback; a full disk may pass (TRANSIENT, 75), a refusal will not
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            where = f": {exc.filename}" if exc.filename else ""
            text = f"{exc.strerror or exc}{where}"
            _error_line(f"[IO_ERROR] {text}", "IO_ERROR",
                        str(ErrorClass.TRANSIENT if full else ErrorClass.PERMANENT), text,
                        as_json=bool(kwargs.get("as_json")))
            raise typer.Exit(75 if full else 2) from None
        except KeyboardInterrupt:
            # a run in progress pauses itself and says how to resume; what reaches here
            # was stopped before one started, or is a command of its own (writes go
            # to a temporary file first, so none is left half-written)
            from alphaloop._console import said_interrupted

            _error_line("interrupted (Ctrl-C)", "INTERRUPTED", str(ErrorClass.TRANSIENT),
                        "interrupted (Ctrl-C)", as_json=bool(kwargs.get("as_json")))
            said_interrupted()
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _error_line(line: str, code: str, error_class: str, message: str, *,
                as_json: bool) -> None:
    """One line on stderr (a message's own line breaks, e.g. a database driver's hint,
    are folded into it) and, with ``--json``, the one JSON object on stdout."""
    # the message echoes user input (an expression, a path): never read it as markup
    err.print(f"[bold red]error:[/] {escape(' '.join(line.split()))}", highlight=False,
              markup=True, soft_wrap=True)
    if as_json:  # --json promises one JSON object on stdout: this one
        print(json.dumps({"error": {"code": code, "class": error_class,
                                    "message": " ".join(message.split())}}))


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


TABLES = (".csv", ".parquet", ".pq")


def _check_output(path: Path | None, suffixes: tuple[str, ...] | None = TABLES) -> None:
    """Refuse an output path before any work is done: a folder, or (for a table) not
    .csv/.parquet; ``suffixes=None`` takes any file name (an HTML page)."""
    if path is None:
        return
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise AlphaloopError(f"{path}: output must end in .csv or .parquet",
                             code="OUTPUT_FORMAT")
    if path.is_dir():
        raise AlphaloopError(f"cannot write {path}: it is a folder; name a file in it",
                             code="OUTPUT_WRITE_FAILED")
    above = next((p for p in path.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():  # made later, it could not be a folder
        raise AlphaloopError(f"cannot write {path}: {above} is a file, not a folder",
                             code="OUTPUT_WRITE_FAILED")


def _write_table(frame: Any, path: Path) -> None:
    """Write CSV or Parquet (by suffix) atomically: a crash never leaves half a file."""
    _check_output(path)
    suffix = path.suffix.lower()
    from alphaloop.fsutil import atomic_write

    try:
        if suffix == ".csv":
            atomic_write(path, lambda fh: frame.to_csv(fh, index=False), mode=0o644)
        else:
            atomic_write(path, lambda fh: frame.to_parquet(fh, index=False), mode=0o644)
    except OSError as exc:
        raise AlphaloopError(f"cannot write {path}: {exc.strerror or exc}",
                             code="OUTPUT_WRITE_FAILED",
                             error_class=ErrorClass.TRANSIENT) from None


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_compact(v)}" for k, v in params.items())


def _compact(value: Any) -> str:
    # 0.05 stays 0.05, 0.1234567 becomes 0.1235: a table cell, not a record (--out has all)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


SHORT_ID = 8
"""Hex characters of a strategy id shown in tables; any unique prefix is accepted."""


def short_id(strategy_id: str) -> str:
    return str(strategy_id)[:SHORT_ID]


# ------------------------------------------------------------ usage errors, one line
class OneLineTyper(typer.Typer):
    """A Typer app whose usage errors (``--n 0``, an unknown option, a missing argument)
    are one line on stderr and exit code 2, like alphaloop's own errors, instead of
    click's usage box. Only the console script goes through ``__call__``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("standalone_mode", True) is False:
            return super().__call__(*args, **kwargs)
        from typer._click.exceptions import ClickException

        try:
            code = super().__call__(*args, standalone_mode=False, **kwargs)
        except ClickException as exc:
            argv = kwargs.get("args", args[0] if args else sys.argv[1:])
            _usage_error(exc, as_json="--json" in (argv or ()))
        except typer.Abort:
            err.print("aborted", highlight=False)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: Any, *, as_json: bool = False) -> NoReturn:
    if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed
        sys.exit(exc.exit_code)
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    err.print(f"[bold red]error:[/] {escape(exc.format_message())}{escape(where)}",
              highlight=False, soft_wrap=True)
    if as_json:  # --json promises one JSON object on stdout, a refused option included
        print(json.dumps({"error": {"code": "USAGE_ERROR",
                                    "class": str(ErrorClass.PERMANENT),
                                    "message": exc.format_message()}}))
    sys.exit(2)


# ------------------------------------------------------------------ numba's cache
def use_user_numba_cache() -> None:
    """Without ``NUMBA_CACHE_DIR``, numba caches next to the installed sources, which
    may be read-only or differ per checkout: a direct CLI call then recompiles every
    kernel. A per-user folder keeps compiled kernels across calls. A value the user set
    is left alone. Must run before numba is imported."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    os.environ["NUMBA_CACHE_DIR"] = str(base / "alphaloop" / "numba")


def announce_compiles() -> None:
    """Say "compiling kernels (first run only)" on stderr when numba actually compiles
    one of alphaloop's kernels (a cache miss), once per process; a cached run prints
    nothing. numba's own helpers (``numba.typed.List``) compile on every run in a second
    or two and are never cached: they do not count."""
    from numba.core import event

    class _Once(event.Listener):
        said = False

        def on_start(self, event: Any) -> None:
            func = getattr(event.data.get("dispatcher"), "py_func", None)
            if getattr(func, "__module__", "").startswith("alphaloop") and not _Once.said:
                _Once.said = True
                err.print("compiling kernels (first run only) …", highlight=False)

        def on_end(self, event: Any) -> None:
            pass

    if not getattr(announce_compiles, "done", False):
        event.register("numba:compile", _Once())
        announce_compiles.done = True  # type: ignore[attr-defined]

