"""The world service's connection to the knowledge base database.

Opening goes through :class:`alphaloop.kb.KnowledgeBase` first, which refuses foreign or
newer files untouched and migrates to the newest revision (``0003`` holds the world
tables). The service then keeps its own engine: for SQLite, WAL with
``synchronous=FULL`` (a write is acknowledged only once it is on disk) and every write
transaction begins IMMEDIATE, so it holds the write lock before it reads what it will
change (revision numbers, latest snapshot) and never fails halfway. On PostgreSQL every
write transaction first takes one advisory lock (held until it ends) for the same
reason: writers are serialized across processes, readers never wait.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from alphaloop.kb import KBError, KnowledgeBase
from alphaloop.kb.store import WRITE_OPTION, configure_sqlite
from alphaloop.world.errors import WorldError, unavailable

WORLD_WRITE_LOCK = 0x776F726C64  # "world": the advisory lock every PostgreSQL write takes


def _durable_commits(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()


class Database:
    """The engine of one knowledge base URL, migrated to the newest schema."""

    def __init__(self, url: str, *, busy_timeout_s: float = 10.0,
                 synchronous: str | None = None) -> None:
        try:
            KnowledgeBase(url, busy_timeout_s=busy_timeout_s).close()
        except KBError as exc:
            raise WorldError(str(exc), code=exc.code, status=503,
                             error_class=exc.error_class) from exc
        self.url = url
        # a pool as large as the thread pool that serves requests: no request waits for one
        self.engine = create_engine(url, pool_size=40, max_overflow=20)
        # built once: an engine with options is a new object each time it is asked for
        self._write_engine = self.engine.execution_options(**{WRITE_OPTION: True})
        # SQLite has one writer: queue this process's writers on a lock, first come first
        # served, instead of letting them poll the file lock (its backoff sleeps make
        # tail latencies of seconds under load). Other processes still meet the file lock.
        self._writer: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._server_lock = self.engine.dialect.name == "postgresql"
        if self.engine.dialect.name == "sqlite":
            # the KB's own settings (foreign keys, busy timeout, BEGIN IMMEDIATE for writes)
            configure_sqlite(self.engine, busy_timeout_s)
            _durable_commits(self.engine, synchronous
                             or os.environ.get("ALPHALOOP_WORLD_SQLITE_SYNC", "FULL"))
            self._writer = threading.Lock()

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: all of it is committed, or none of it."""
        try:
            with (self._writer, self._write_engine.begin() as conn,
                  Session(bind=conn) as session):
                if self._server_lock:
                    # PostgreSQL's counterpart of SQLite's one writer: writes read what they
                    # change (revision numbers, latest snapshot), so they queue on a lock
                    # held until commit, across every process of the service
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                 {"key": WORLD_WRITE_LOCK})
                yield session
        except sa_exc.IntegrityError as exc:
            raise WorldError(f"the write conflicts with stored data: {exc.orig}",
                             code="CONFLICT", status=409) from exc
        except sa_exc.OperationalError as exc:
            raise unavailable(f"the database is unavailable: {exc.orig}") from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        try:
            with self.engine.connect() as conn, Session(bind=conn) as session:
                yield session
        except sa_exc.OperationalError as exc:
            raise unavailable(f"the database is unavailable: {exc.orig}") from exc

    def close(self) -> None:
        self.engine.dispose()
