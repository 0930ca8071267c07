"""Run the service with uvicorn: ``alphaloop world serve`` (or ``python -m``)."""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import signal
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from alphaloop.world.app import create_app
from alphaloop.world.db import Database

_DB, _REFS = "ALPHALOOP_WORLD_DB", "ALPHALOOP_WORLD_REFS"
_SUPERVISOR = "ALPHALOOP_WORLD_SUPERVISOR"  # the pid of the process that starts workers
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def serve(db_url: str, host: str = "127.0.0.1", port: int = 8080,
          refs_root: Path | None = None, log_level: str = "warning",
          workers: int = 1) -> None:
    """Serve until stopped. ``workers`` > 1 runs that many server processes on one
    socket (uvicorn's supervisor), each with its own app on the same database: on
    SQLite their writers queue on one file lock (:class:`alphaloop.world.db.WriterLock`)."""
    if workers > 1:
        Database(db_url).close()  # migrate once, before the workers start
        os.environ[_DB] = db_url
        os.environ[_SUPERVISOR] = str(os.getpid())
        os.environ[_REFS] = "" if refs_root is None else str(refs_root)
        uvicorn.run("alphaloop.world.server:worker_app", factory=True, host=host, port=port,
                    log_level=log_level, access_log=False, workers=workers)
        return
    uvicorn.run(_frozen(create_app(db_url, refs_root=refs_root)), host=host, port=port,
                log_level=log_level, access_log=False)


def worker_app() -> FastAPI:
    """The app of one worker process of :func:`serve` (its settings come by environment)."""
    _end_with_supervisor()
    refs = os.environ.get(_REFS) or None
    return _frozen(create_app(os.environ[_DB], refs_root=None if refs is None else Path(refs)))


def _end_with_supervisor() -> None:
    """A worker ends (SIGTERM: uvicorn's graceful stop) when the supervisor that started
    it dies, even by SIGKILL, which it cannot pass on: else the workers would go on
    serving, orphaned, and a restart would find the port taken (a black-box report).
    Linux's parent-death signal; elsewhere nothing is done."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    # the supervisor may have died before the signal was asked for (a worker still
    # importing when it was killed): its pid, not the parent now, says who it was
    supervisor = os.environ.get(_SUPERVISOR)
    if supervisor and os.getppid() != int(supervisor):
        os.kill(os.getpid(), signal.SIGTERM)


def _frozen(app: FastAPI) -> FastAPI:
    # what starting made (modules, schemas, the engine) lives as long as the process: out
    # of the collector's way, a full collection no longer walks it under load
    gc.collect()
    gc.freeze()
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alphaloop.world.server")
    parser.add_argument("--db", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--refs-root", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    serve(args.db, args.host, args.port, args.refs_root, workers=args.workers)


if __name__ == "__main__":
    main()
