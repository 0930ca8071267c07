"""The ``alphaloop`` console script: Ctrl-C at any moment is one line and exit 130.

A run in progress pauses itself on Ctrl-C and says how to resume; a command stopped
inside its body says so through the CLI's error handler. What is left is the start:
importing the CLI (Typer, Rich, pydantic, the command modules) and Typer's own work
before a command runs, where Ctrl-C would print a traceback from inside some import,
or nothing at all (Typer exits 130 silently), and the imports a command makes, where
a C extension cut short in its initialization turns the interrupt into an ImportError.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import NoReturn

from alphaloop import interrupts

LINE = "error: interrupted (Ctrl-C)\n"


class _Interrupt:
    seen = False  # a SIGINT arrived
    said = False  # and a line on stderr already says so


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _Interrupt.seen = True
    raise KeyboardInterrupt


def said_interrupted() -> None:
    """Called by whoever reported the interrupt, so that it is said once."""
    _Interrupt.said = True


def _late_sigint_exits(code: object) -> None:
    """The command is over and has said what it did. A Ctrl-C while the interpreter
    shuts down (joining worker threads, exit hooks) ends the process at once with the
    command's own exit code, not by the signal from inside some library's hook."""
    status = code if isinstance(code, int) else (0 if code is None else 1)

    def _now(signum: int, frame: FrameType | None) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    signal.signal(signal.SIGINT, _now)


def _streams_never_fail() -> None:
    """A stdout or stderr that cannot encode a character (an ASCII locale, a pipe with
    PYTHONIOENCODING=latin-1) gets it escaped (``\\xe9``) instead of an exception: a
    path or an em dash in a message must not turn a command that did its work into a
    traceback and exit 1."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


BROKEN_PIPE = 141
"""Exit code when the reader of stdout went away (`| head`): 128 + SIGPIPE, what a shell
reports for a tool the signal ended."""


def _stdout_closed(*_: object) -> NoReturn:
    """The reader of stdout is gone: write nothing more there (the interpreter's final
    flush would fail again) and exit :data:`BROKEN_PIPE`, where Rich would exit 1 in
    silence and Python would print a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(BROKEN_PIPE)


def main() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)  # the default's behaviour, noted
    _streams_never_fail()
    interrupts.install()  # a Ctrl-C inside a C callback (numba compiling) is noted
    from rich.console import Console

    Console.on_broken_pipe = _stdout_closed  # type: ignore[method-assign,assignment]  # every console
    try:
        from alphaloop.cli import app

        app()
    except SystemExit as exc:
        code = exc.code
        if code in (0, None) and interrupts.pending():  # swallowed, the work went on
            code = 130
        if code == 130 and not _Interrupt.said:
            sys.stderr.write(LINE)
        _late_sigint_exits(code)
        raise SystemExit(code) from None
    except BrokenPipeError:  # a plain write (sys.stdout.write) to the gone reader
        _stdout_closed()
    except BaseException as exc:
        if not (_Interrupt.seen or isinstance(exc, KeyboardInterrupt)):
            raise
        if not _Interrupt.said:
            sys.stderr.write(LINE)
        raise SystemExit(130) from None
