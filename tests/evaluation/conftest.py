"""Fixtures for the evaluation tests: a headless Chromium to render report pages in.

``chromium`` finds ``chromium``, ``chromium-browser``, ``google-chrome`` or
``google-chrome-stable`` on PATH. When none is there and the tests run as root on a
Debian-like system, it installs Debian's ``chromium`` package
(``apt-get update && apt-get install -y --no-install-recommends chromium``), once: the
result is cached for the session, and an exclusive file lock keeps parallel workers
(pytest-xdist) from running apt twice. Otherwise the tests that need it are skipped,
with the reason.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_TIMEOUT_S = 1200
_LOCK = Path(tempfile.gettempdir()) / "alphaloop-tests-chromium-install.lock"


def find_chromium() -> str | None:
    """The first Chromium-family browser on PATH, or None."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def _install_lock() -> Iterator[None]:
    with open(_LOCK, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(text: str, n: int = 800) -> str:
    return text[-n:].strip()


def _install_chromium() -> tuple[str | None, str]:
    """Install Debian's chromium with apt; (path, "") or (None, why not)."""
    if os.name != "posix" or os.geteuid() != 0:
        return None, ("no chromium/chromium-browser/google-chrome on PATH, and installing "
                      "one needs root (run `apt-get install chromium` or put a Chromium "
                      "on PATH)")
    if shutil.which("apt-get") is None:
        return None, "no chromium on PATH and no apt-get to install it with"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (["apt-get", "update"],
             ["apt-get", "install", "-y", "--no-install-recommends", "chromium"])
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                  timeout=INSTALL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return None, f"`{' '.join(cmd)}` did not finish in {INSTALL_TIMEOUT_S} s"
        if proc.returncode != 0:
            return None, (f"`{' '.join(cmd)}` failed (exit {proc.returncode}): "
                          f"{_tail(proc.stderr or proc.stdout)}")
    found = find_chromium()
    if found is None:
        return None, "apt-get installed chromium but no chromium binary is on PATH"
    return found, ""


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a headless-capable Chromium; installed with apt (as root) when missing."""
    found = find_chromium()
    if found is None:
        with _install_lock():
            found = find_chromium()  # another worker may have installed it meanwhile
            why = ""
            if found is None:
                found, why = _install_chromium()
        if found is None:
            pytest.skip(f"headless Chromium unavailable: {why}")
    return found
