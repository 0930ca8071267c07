"""Writing files so that a crash never leaves half of one (floor 1: no alphaloop imports).

:func:`atomic_write` writes to a temporary file in the target's folder, flushes and
fsyncs it, then ``os.replace``-s it over the target: readers see the old file or the
new one, never a torn one; on any failure the temporary file is removed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *,
                 mode: int | None = None) -> Path:
    """Call ``write(fh)`` on a temporary binary file, then move it to ``path``.

    ``mode`` sets the permissions (``mkstemp`` makes files 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
