"""The ``alphaloop`` command line.

    alphaloop backtest SPEC.yaml --data us_indices [--fees-bps 10] [--json]
    alphaloop verify SPEC.yaml --data us_indices [--costs costs.yaml] [--json] [--fills f.parquet]
    alphaloop sweep sma_cross --data us_indices --n 500 --sampler sobol --out results.parquet
    alphaloop evaluate results.parquet --policy default [--holdout 0.3] [--top 5]
    alphaloop report --strategy ID [--run ID | --results results.parquet] [--out page.html]
    alphaloop report --run ID [--out page.html]
    alphaloop data list | show NAME | import FILE [--name NAME]
    alphaloop families
    alphaloop spec ID [--results results.parquet]
    alphaloop run CONFIG.yaml [--json] | resume RUN_ID | status RUN_ID
    alphaloop kb stats | runs | strategies --top 20 | show ID
    alphaloop world serve --db URL | token create --role R | token revoke ID
    alphaloop submit SPEC|ID --world W [--url URL]

Bad input (unknown family, bad expression, missing file, malformed YAML) prints one
line naming what is wrong and exits with code 2; no traceback.

One module per command group (DESIGN.md §2); shared helpers live in ``_common``.
To add a command module (e.g. ``run.py``, ``kb.py``):

    # alphaloop/cli/run.py
    def register(app: typer.Typer) -> None:
        app.command()(run)                   # top-level commands, in --help order, or
        app.add_typer(kb_app, name="kb")     # a sub-group defined in the module

then import it below and append it to ``_COMMAND_MODULES``. Keep heavy imports inside
the command functions: this package is imported on every ``alphaloop`` start.
"""

from __future__ import annotations

import inspect

import typer

from alphaloop.cli._common import OneLineTyper, use_user_numba_cache

# before anything imports numba: compiled kernels are kept per user across calls
use_user_numba_cache()

from alphaloop.cli import data, kb, research, run, spec, world  # noqa: E402

app = OneLineTyper(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="alphaloop: search, backtest and verify systematic trading strategies.")

# Each module's register(app) adds its commands; order here = order in --help
# (Typer lists sub-groups such as `data` after the plain commands).
_COMMAND_MODULES = (research, spec, run, data, kb, world)
for _module in _COMMAND_MODULES:
    _module.register(app)


def _listing_lines(typer_app: typer.Typer) -> None:
    """A command listing (the top level's and each group's) shows each command's first
    docstring paragraph as one paragraph, and its --help every paragraph as one: Rich
    keeps a docstring's line breaks, which cut its sentences in the middle of a line
    (a paragraph whose lines are indented or listed keeps them)."""
    for info in typer_app.registered_commands:
        doc = inspect.cleandoc(info.callback.__doc__ or "") if info.callback else ""
        if info.short_help is None and doc:
            info.short_help = " ".join(doc.split("\n\n")[0].split())
        if info.help is None and doc:
            info.help = "\n\n".join(_one_line(p) for p in doc.split("\n\n"))
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _listing_lines(group.typer_instance)


def _one_line(paragraph: str) -> str:
    lines = paragraph.split("\n")
    laid_out = any(line[:1].isspace() or line.lstrip().startswith(("-", "*", "\b"))
                   for line in lines)
    return paragraph if laid_out else " ".join(lines)


_listing_lines(app)

__all__ = ["app"]
