"""The world service's connection to the knowledge base database.

Opening goes through :class:`alphaloop.kb.KnowledgeBase` first, which refuses foreign or
newer files untouched and migrates to the newest revision (``0003`` holds the world
tables). The service then keeps its own engine: for SQLite, WAL with
``synchronous=FULL`` (a write is acknowledged only once it is on disk) and every write
transaction begins IMMEDIATE, so it holds the write lock before it reads what it will
change (revision numbers, latest snapshot) and never fails halfway. On PostgreSQL every
write transaction first takes one advisory lock (held until it ends) for the same
reason: writers are serialized across processes, readers never wait. The hot writes
go through :meth:`Database.transact`, which on SQLite lets concurrent requests share one
transaction and its fsync (:mod:`alphaloop.world.commit`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import JSON, Connection, Double, Engine, Integer, String, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import Insert, Select

from alphaloop.kb import KBError, KnowledgeBase
from alphaloop.kb.store import WRITE_OPTION, configure_sqlite, is_in_memory
from alphaloop.world.commit import GroupCommit, Work
from alphaloop.world.errors import WorldError, unavailable

T = TypeVar("T")

WORLD_WRITE_LOCK = 0x776F726C64  # "world": the advisory lock every PostgreSQL write takes


def _durable_commits(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()


_SQLITE = "alphaloop_world_sqlite"  # Session.info key: the SQLite driver connection, if any


class Prepared:
    """A hot-path statement of fixed shape (an INSERT of fixed columns, optionally
    RETURNING one; a SELECT of plain columns), run on SQLite's driver connection itself
    (in the write transaction, which has begun) and through SQLAlchemy Core in reads and
    on other databases.

    SQLAlchemy's per-statement machinery (execution context, events, result objects)
    costs some 35 µs a statement, several times what SQLite needs for these small ones,
    and a request runs five or six. The SQL is SQLAlchemy's own compilation for SQLite;
    values are bound as SQLAlchemy binds them there: JSON columns (all ``none_as_null``)
    as ``json.dumps`` of the value, None as NULL, the other types (strings, integers,
    doubles) as they are. A column of any other type is refused when the statement is
    built.
    """

    def __init__(self, stmt: Insert | Select[Any], columns: Sequence[str] = ()) -> None:
        self.stmt = stmt
        compiled = stmt.compile(dialect=sqlite.dialect(), column_keys=list(columns) or None)
        self.sql = compiled.string
        self.returns = bool(compiled.effective_returning)
        self.names: list[str] = list(compiled.positiontup or ())
        self.json: list[bool] = []
        if isinstance(stmt, Insert):
            table = stmt.table
            for name in self.names:
                kind = table.c[name].type
                self.json.append(self._json(kind, name))
        else:
            self.json = [False] * len(self.names)
            for column in stmt.selected_columns:
                self._plain(column.type, column.name)

    @classmethod
    def _json(cls, kind: Any, name: str) -> bool:
        if isinstance(kind, JSON):
            if not kind.none_as_null:
                raise TypeError(f"{name}: a JSON column must store None as NULL here")
            return True
        cls._plain(kind, name)
        return False

    @staticmethod
    def _plain(kind: Any, name: str) -> None:
        if not isinstance(kind, String | Integer | Double):
            raise TypeError(f"{name}: {kind!r} is not bound as it is on SQLite")

    def _values(self, params: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(json.dumps(params[n]) if j and params[n] is not None else params[n]
                     for n, j in zip(self.names, self.json, strict=True))

    def first(self, session: Session, params: dict[str, Any]) -> Sequence[Any] | None:
        """The first row (its columns in order), or None."""
        driver = session.info.get(_SQLITE)
        if driver is None:
            return session.execute(self.stmt, params).first()
        row: Sequence[Any] | None = driver.execute(self.sql, self._values(params)).fetchone()
        return row

    def run(self, session: Session, params: dict[str, Any]) -> Any:
        """Execute; the RETURNING column's value, if the statement has one."""
        driver = session.info.get(_SQLITE)
        if driver is None:
            result = session.execute(self.stmt, params)
            return result.scalar_one() if self.returns else None
        cursor = driver.execute(self.sql, self._values(params))
        return cursor.fetchone()[0] if self.returns else None


class WriterLock:
    """One writer at a time: a thread lock for this process's threads, then an
    exclusive ``flock`` on ``<database>.write-lock`` that every server process of the
    same SQLite file takes (the kernel queues the waiters: no polling, and a process
    that dies releases it). An in-memory database has the thread lock only."""

    def __init__(self, database: str | None) -> None:
        self._thread = threading.Lock()
        self._path = None if database in (None, "", ":memory:") else f"{database}.write-lock"
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        self._thread.acquire()
        try:
            if self._path is not None and self._fd is None:
                try:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                except OSError:  # a read-only folder: SQLite's own lock still serializes
                    self._path = None
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread.release()


class Database:
    """The engine of one knowledge base URL, migrated to the newest schema."""

    def __init__(self, url: str, *, busy_timeout_s: float = 10.0,
                 synchronous: str | None = None) -> None:
        if is_in_memory(url):  # every connection of the pool would see another database
            raise WorldError(f"{url!r} is an in-memory database: a world keeps its "
                             "decisions in a file (sqlite:///path/world.sqlite) or on a "
                             "server", code="KB_INVALID_URL", status=400)
        try:
            KnowledgeBase(url, busy_timeout_s=busy_timeout_s).close()
        except KBError as exc:
            raise WorldError(exc.message, code=exc.code, status=503,
                             error_class=exc.error_class) from exc
        self.url = url
        # a pool as large as the thread pool that serves requests: no request waits for one
        self.engine = create_engine(url, pool_size=40, max_overflow=20)
        # built once: an engine with options is a new object each time it is asked for
        self._write_engine = self.engine.execution_options(**{WRITE_OPTION: True})
        # SQLite has one writer: queue the writers on a lock instead of letting them poll
        # SQLite's file lock (its backoff sleeps make tail latencies of seconds under
        # load): a thread lock in this process, then an flock shared by every server
        # process on the same file (``alphaloop world serve --workers N``); any other
        # process still meets SQLite's own lock.
        self._writer: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._server_lock = self.engine.dialect.name == "postgresql"
        self._sqlite = self.engine.dialect.name == "sqlite"
        if self.engine.dialect.name == "sqlite":
            # the KB's own settings (foreign keys, busy timeout, BEGIN IMMEDIATE for writes)
            configure_sqlite(self.engine, busy_timeout_s)
            _durable_commits(self.engine, synchronous
                             or os.environ.get("ALPHALOOP_WORLD_SQLITE_SYNC", "FULL"))
            self._writer = WriterLock(self.engine.url.database)
        # SQLite's commits wait for an fsync each: concurrent writes share them
        self._group = None if not self._sqlite else GroupCommit(
            self._transaction, self._session, _world_error)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A write transaction on a connection, the writer lock held until it ends; it
        commits on a clean exit."""
        with self._writer, self._write_engine.begin() as conn:
            if self._server_lock:
                # PostgreSQL's counterpart of SQLite's one writer: writes read what they
                # change (revision numbers, latest snapshot), so they queue on a lock
                # held until commit, across every process of the service
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                             {"key": WORLD_WRITE_LOCK})
            yield conn

    def _session(self, conn: Connection) -> Session:
        # "rollback_only": the session never commits, nor (closing) rolls back, the
        # connection's transaction or a savepoint it is in; whoever opened them does
        info = {_SQLITE: conn.connection.driver_connection} if self._sqlite else {}
        return Session(bind=conn, join_transaction_mode="rollback_only", info=info)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: all of it is committed, or none of it."""
        try:
            with self._transaction() as conn, self._session(conn) as session:
                yield session
        except (sa_exc.IntegrityError, sqlite3.IntegrityError,
                sa_exc.OperationalError, sqlite3.OperationalError) as exc:
            raise _world_error(exc) from exc

    def transact(self, work: Work[T]) -> T:
        """``work``'s result once its writes are committed, as :meth:`write` would
        commit them. On SQLite, requests running this concurrently share transactions
        (:class:`alphaloop.world.commit.GroupCommit`: one fsync for many, each request
        in its own savepoint); elsewhere it is :meth:`write`."""
        if self._group is None:
            with self.write() as session:
                return work(session)
        return self._group.run(work)

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        try:
            with self.engine.connect() as conn, Session(bind=conn) as session:
                yield session
        except sa_exc.OperationalError as exc:
            raise unavailable(f"the database is unavailable: {exc.orig}") from exc

    def close(self) -> None:
        self.engine.dispose()


def _world_error(exc: BaseException) -> BaseException:
    """The error a write answers for a database error: a constraint violation is a 409,
    an unavailable database a 503 (retry); anything else is itself."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    if isinstance(exc, sa_exc.IntegrityError | sqlite3.IntegrityError):
        error = WorldError(f"the write conflicts with stored data: {orig}",
                           code="CONFLICT", status=409)
    elif isinstance(exc, sa_exc.OperationalError | sqlite3.OperationalError):
        error = unavailable(f"the database is unavailable: {orig}")
    else:
        return exc
    error.__cause__ = exc
    return error
