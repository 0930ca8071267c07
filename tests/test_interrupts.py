"""A Ctrl-C raised inside a C callback is noted, not printed and lost.

The callback here is libc's ``qsort`` comparator through ctypes: Python cannot carry an
exception up through C, so it reports it as unraisable, as it does for llvmlite's
object-cache hook while numba compiles (where a black-box test pressed Ctrl-C, saw a
traceback, and the run went on to exit 0).
"""

from __future__ import annotations

import ctypes
import sys

import pytest

from alphaloop import interrupts

COMPARE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def swallowed(exc: type[BaseException]) -> None:
    """Raise ``exc`` inside a C callback, where C swallows it."""
    def compare(_a: int, _b: int) -> int:
        raise exc

    items = (ctypes.c_int * 2)(2, 1)
    libc = ctypes.CDLL(None)
    libc.qsort(items, 2, ctypes.sizeof(ctypes.c_int), COMPARE(compare))


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after
    monkeypatch.setattr(interrupts, "_pending", False)
    interrupts.install()


def test_an_interrupt_swallowed_by_c_is_noted_silently_and_raised_once(
        installed: None, capfd: pytest.CaptureFixture[str]) -> None:
    assert not interrupts.pending()
    interrupts.check()  # nothing pending: nothing raised
    swallowed(KeyboardInterrupt)
    assert interrupts.pending()
    assert capfd.readouterr().err == ""  # no "Exception ignored ..." traceback
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()
    assert not interrupts.pending()
    interrupts.check()  # raised once


def test_other_errors_swallowed_by_c_are_reported_as_python_does(
        installed: None, capfd: pytest.CaptureFixture[str]) -> None:
    swallowed(ValueError)
    assert not interrupts.pending()
    assert "ValueError" in capfd.readouterr().err
