"""A Ctrl-C that a library swallowed is not lost.

Python raises ``KeyboardInterrupt`` wherever the main thread is. When that is inside a
callback C code called (llvmlite's object-cache hook while numba compiles, any ctypes
callback), the exception cannot travel up through C: Python reports it as
"unraisable" (a multi-line "Exception ignored ..." on stderr) and the work goes on as
if no key had been pressed. :func:`install` routes such reports here instead: the
interrupt is noted, silently, and :func:`check` raises it again where the program can
act on it (a research loop between stages; the console script when a command ends).
"""

from __future__ import annotations

import sys
from typing import Any

_pending = False


def _hook(report: Any) -> None:
    global _pending
    if report.exc_type is not None and issubclass(report.exc_type, KeyboardInterrupt):
        _pending = True
        return
    sys.__unraisablehook__(report)


def install() -> None:
    """Note interrupts raised inside callbacks instead of printing them (once per
    process; other unraisable errors are reported as Python would)."""
    sys.unraisablehook = _hook


def pending() -> bool:
    """Whether an interrupt was swallowed and not yet raised again."""
    return _pending


def check() -> None:
    """Raise the swallowed interrupt, if any (once)."""
    global _pending
    if _pending:
        _pending = False
        raise KeyboardInterrupt
