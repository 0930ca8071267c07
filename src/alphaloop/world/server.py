"""Run the service with uvicorn: ``alphaloop world serve`` (or ``python -m``)."""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

import uvicorn

from alphaloop.world.app import create_app


def serve(db_url: str, host: str = "127.0.0.1", port: int = 8080,
          refs_root: Path | None = None, log_level: str = "warning") -> None:
    app = create_app(db_url, refs_root=refs_root)
    # what starting made (modules, schemas, the engine) lives as long as the process: out
    # of the collector's way, a full collection no longer walks it under load
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alphaloop.world.server")
    parser.add_argument("--db", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--refs-root", type=Path, default=None)
    args = parser.parse_args(argv)
    serve(args.db, args.host, args.port, args.refs_root)


if __name__ == "__main__":
    main()
