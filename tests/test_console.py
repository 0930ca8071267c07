"""The console script: Ctrl-C at any moment of a command is one line and exit 130.

Each case runs ``alphaloop._console.main`` in a subprocess (it installs a SIGINT
handler, which a test must not leave in pytest's own process) with the interrupt
delivered for real, by ``signal.raise_signal``, at the moment named.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alphaloop.cli import app

LINE = "error: interrupted (Ctrl-C)"


def _main_with(prelude: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(prelude) + textwrap.dedent("""
        import sys
        from alphaloop._console import main
        sys.argv = ["alphaloop", *sys.argv[1:]]
        main()
    """)
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_ctrl_c_while_the_cli_is_imported_is_one_line_not_a_traceback() -> None:
    done = _main_with("""
        import importlib.abc, signal, sys

        class CutShort(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "alphaloop.cli":
                    signal.raise_signal(signal.SIGINT)
                return None

        sys.meta_path.insert(0, CutShort())
    """, "families")
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == LINE and done.stdout == ""


def test_an_import_that_ctrl_c_cut_short_is_the_interrupt_not_its_import_error() -> None:
    """A C extension interrupted in its initialization raises ImportError (seen with
    scipy); after a SIGINT that is the interrupt, said as such."""
    done = _main_with("""
        import signal
        import alphaloop.cli

        def cut_short_import():
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                raise ImportError("initialization failed") from None

        alphaloop.cli.app = cut_short_import
    """)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == LINE


def test_an_import_error_without_ctrl_c_is_not_called_an_interrupt() -> None:
    done = _main_with("""
        import alphaloop.cli

        def broken():
            raise ImportError("a broken install")

        alphaloop.cli.app = broken
    """)
    assert done.returncode == 1 and "ImportError: a broken install" in done.stderr
    assert LINE not in done.stderr


def test_ctrl_c_inside_a_command_is_one_line_exit_130_and_nothing_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before a run exists (its config being read) nothing is written."""
    from alphaloop.orchestrator import RunConfig

    def interrupted(path: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(RunConfig, "from_yaml", staticmethod(interrupted))
    monkeypatch.setenv("ALPHALOOP_HOME", str(tmp_path))
    config = tmp_path / "run.yaml"
    config.write_text("seed: 1\n")
    res = CliRunner().invoke(app, ["run", str(config), "--json"])
    assert res.exit_code == 130
    assert res.stderr.strip() == LINE
    assert json.loads(res.stdout)["error"]["code"] == "INTERRUPTED"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


@pytest.mark.parametrize("args", [["families"], ["kb", "--help"]])
def test_a_reader_that_went_away_is_exit_141_and_nothing_on_stderr(args: list[str]) -> None:
    """`alphaloop families | head -1`: stdout's reader is gone before the command writes.
    The exit code is the shell's for a tool SIGPIPE ended (128 + 13), not Rich's silent
    1, and nothing is printed on stderr (a traceback, or an 'Exception ignored')."""
    script = ("import sys; from alphaloop._console import main; "
              "sys.argv = ['alphaloop', *sys.argv[1:]]; main()")
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first write
    errors = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert errors == b""


def test_ctrl_c_swallowed_by_c_code_is_one_line_and_exit_130() -> None:
    """A Ctrl-C raised inside a C callback (numba compiling a kernel: llvmlite's hook)
    cannot stop the command there; it is noted, and the command that went on ends with
    the one line and 130, not with a traceback and 0 (a black-box report)."""
    done = _main_with("""
        import ctypes
        from rich.console import Console

        compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
        printed = Console.print

        def raise_in_c(*_):
            raise KeyboardInterrupt

        def print_after_a_swallowed_ctrl_c(self, *args, **kwargs):
            items = (ctypes.c_int * 2)(2, 1)
            ctypes.CDLL(None).qsort(items, 2, ctypes.sizeof(ctypes.c_int),
                                    compare(raise_in_c))
            return printed(self, *args, **kwargs)

        Console.print = print_after_a_swallowed_ctrl_c
    """, "families")
    assert done.returncode == 130, done.stderr
    assert done.stderr == LINE + "\n"
