"""A real WorldService: ``alphaloop world serve`` (uvicorn) in a subprocess on a loopback
port, on a SQLite file or on a database of a real PostgreSQL server (``world_server`` runs
every test that uses it on both)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from alphaloop.kb import dispose_engines
from alphaloop.world import tokens
from alphaloop.world.db import Database

ROLES = ("viewer", "submitter", "operator", "approver", "admin")
SMA = {"entry": "sma(close, 10) > sma(close, 50)", "exit": "sma(close, 10) < sma(close, 50)"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_tokens(db_url: str) -> dict[str, str]:
    db = Database(db_url)
    made = {}
    with db.write() as conn:
        for role in ROLES:
            made[role] = tokens.create(conn, role, f"test-{role}", actor="test")[1]
    db.close()
    return made


def create_database(server_url: str, name: str) -> str:
    """A new empty database on the session's PostgreSQL server; its URL."""
    from sqlalchemy import create_engine

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name


@dataclass
class Server:
    """One service process on ``db`` (a SQLite file, or a database URL); ``start`` again
    after ``kill`` to restart."""

    db: Path | str
    refs_root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    workers: int = 1

    @property
    def db_url(self) -> str:
        return self.db if isinstance(self.db, str) else f"sqlite:///{self.db}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        env = {**os.environ, "NUMBA_CACHE_DIR": str(Path.cwd() / ".numba_cache")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "alphaloop", "world", "serve", "--db",
             self.db_url, "--host", "127.0.0.1", "--port", str(self.port),
             "--refs-root", str(self.refs_root), "--workers", str(self.workers)], env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as in a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[Server, dict[str, str]]]:
    base = tmp_path_factory.mktemp("world")
    (base / "refs").mkdir()
    db: Path | str = base / "kb.sqlite"
    if request.param == "postgresql":
        server_url: str = request.getfixturevalue("postgres_server")
        db = create_database(server_url, f"world_{base.name}")
    server = Server(db, base / "refs")
    made = make_tokens(server.db_url)
    dispose_engines()
    server.start()
    yield server, made
    server.stop()


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[Server, dict[str, str]]]:
    """One service on a SQLite file for a test module, with a token of every role."""
    base = tmp_path_factory.mktemp("world-sqlite")
    (base / "refs").mkdir()
    server = Server(base / "kb.sqlite", base / "refs")
    made = make_tokens(server.db_url)
    dispose_engines()
    server.start()
    yield server, made
    server.stop()


def sqlite_files(db: Path) -> dict[str, str | None]:
    """sha256 of a SQLite database's main file and its WAL (None: absent)."""
    import hashlib

    out: dict[str, str | None] = {}
    for path in (db, db.with_name(db.name + "-wal")):
        out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return out


def checkpoint_and_dump(db: Path) -> str:
    """Fold the WAL into the main file (TRUNCATE empties the WAL), then every table's
    rows as SQL text."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        return "\n".join(con.iterdump())
    finally:
        con.close()
