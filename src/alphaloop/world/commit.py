"""Group commit: the concurrent SQLite writes of one process made durable by one fsync.

SQLite has one writer, and with ``synchronous=FULL`` each commit waits for an fsync. One
transaction per request therefore serializes requests on the fsync as well as on their
work: some 600 writes a second, whatever the cores. Here the writes that queue up while
one commit is in flight go into the next transaction together (the leader/follower
queue of LevelDB's writer or MySQL's binlog group commit):

- the request at the head of the queue is the *leader*: it takes the write transaction
  (the process's writer lock and the ``flock`` shared by every server process, then
  ``BEGIN IMMEDIATE``), runs the queued requests' work, each in its own SAVEPOINT,
  commits once, and wakes every request of the group with its own result;
- a request whose work fails (a domain error, a constraint violation) has its savepoint
  rolled back and gets its error; the others' writes commit;
- a failed commit fails every request of the group: none of them was stored.

Durability is as strict as one transaction per request: a request is answered only after
the commit holding its write returned, so every acknowledged write is on disk. Requests
of one group are applied in queue order in one transaction, each seeing what the
earlier ones wrote (a second revision of the same run numbers itself after the first).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import Session

T = TypeVar("T")
Work = Callable[[Session], T]
"""A request's part of a write transaction: its reads and writes on the session; what it
returns is the request's result once committed."""

MAX_GROUP = 64
"""Requests in one transaction at most: the first of a group waits for the work of all
of it, so a group is bounded (and 50 clients never fill one)."""


@dataclass(eq=False)
class _Request(Generic[T]):
    """One queued write: its work, then its result or error once its group is done."""

    work: Work[T]
    wake: threading.Condition
    done: bool = False
    result: T | None = None
    error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


@dataclass(eq=False)
class GroupCommit:
    """Runs write work in shared transactions (see the module's docstring).

    ``transaction`` opens one write transaction on a connection (the writer lock held)
    and commits it on a clean exit; ``session`` makes a request's session on it;
    ``mapped`` turns a database error into the error a request answers (called once per
    failed request, so each gets its own exception object).
    """

    transaction: Callable[[], AbstractContextManager[Connection]]
    session: Callable[[Connection], Session]
    mapped: Callable[[BaseException], BaseException] = lambda exc: exc
    max_group: int = MAX_GROUP
    groups: int = 0  # transactions committed (tests and benchmarks read these two)
    writes: int = 0  # requests whose work those transactions held
    _mutex: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _queue: deque[_Request[Any]] = field(default_factory=deque, repr=False)

    def run(self, work: Work[T]) -> T:
        """``work``'s result once the transaction holding its writes is committed; its
        error if it failed (its writes rolled back), or the commit's if that failed."""
        me: _Request[T] = _Request(work, threading.Condition(self._mutex))
        with self._mutex:
            self._queue.append(me)
            while not me.done and self._queue[0] is not me:
                me.wake.wait()
            group = None if me.done else list(islice(self._queue, self.max_group))
        if group is not None:
            self._lead(group)
        return me.outcome()

    def _lead(self, group: list[_Request[Any]]) -> None:
        """Commit ``group`` (the queue's head), then hand the queue to the next leader."""
        try:
            self._commit(group)
        except BaseException as exc:  # nothing of the group is stored
            for request in group:
                request.error = self.mapped(exc)
            if not isinstance(exc, Exception):  # an interrupt: the leader's thread stops
                raise
        finally:
            with self._mutex:
                for request in group:
                    self._queue.popleft()
                    request.done = True
                    request.wake.notify()
                if self._queue:
                    self._queue[0].wake.notify()

    def _commit(self, group: list[_Request[Any]]) -> None:
        with self.transaction() as conn:
            driver = conn.connection.driver_connection
            for request in group:
                self._apply(conn, request)
                # SQLite rolls a whole transaction back on some errors (a full disk, I/O):
                # a later savepoint would then begin a transaction of its own, and the
                # requests before would be answered as stored
                if isinstance(driver, sqlite3.Connection) and not driver.in_transaction:
                    raise sqlite3.OperationalError("the write transaction was rolled back")
        self.groups += 1
        self.writes += len(group)

    def _apply(self, conn: Connection, request: _Request[Any]) -> None:
        """Run one request's work in its own savepoint: on error only it is undone."""
        savepoint = conn.begin_nested()
        try:
            with self.session(conn) as session:
                request.result = request.work(session)
        except Exception as exc:
            savepoint.rollback()
            request.error = self.mapped(exc)
        else:
            savepoint.commit()
