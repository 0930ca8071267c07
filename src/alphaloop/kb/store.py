"""The knowledge base (MOD-460/461/462): everything the loop learns, in one database.

:class:`KnowledgeBase` stores the records of :mod:`alphaloop.kb.records` and answers the
questions the next run asks: which strategies were already tested on this data, how many
trials a Deflated Sharpe Ratio must deflate by, which stage of an iteration already
finished. It knows the records, not the loop: it imports no orchestrator, engine or
service code.

Where it lives. Any SQLAlchemy URL; by default ``sqlite:///$ALPHALOOP_HOME/kb.sqlite``.
SQLite runs in WAL mode (readers never wait for the writer) with foreign keys on and a
busy timeout, and every write transaction starts with ``BEGIN IMMEDIATE`` so that a
writer waits for the lock up front instead of failing halfway through.

Opening never destroys anything. The schema is brought to the newest migration
(Alembic, shipped in :mod:`alphaloop.kb.migrations`) on open, in one transaction. A file
that is not a SQLite database (``KB_CORRUPT``), a database of some other application
(``KB_FOREIGN``) or one written by a newer alphaloop (``KB_SCHEMA_NEWER``) is refused
with a CRITICAL :class:`KBError` naming the file, and left byte for byte as it was.

Writes are idempotent. Every table has a natural key (see :mod:`alphaloop.kb.models`)
and every write is an upsert on it, so repeating a write, or replaying a whole
iteration, leaves the database as it was. Records are stored as their JSON form
(``model_dump_json``): NaN and infinities become NULL, numpy scalars plain numbers,
so a record written directly and one replayed from the write-ahead log are identical.

When the database cannot take a write (locked by another process, read-only), the write
raises a TRANSIENT :class:`KBError`; :meth:`KnowledgeBase.persist_or_queue` then appends
the iteration to a JSONL write-ahead log and :meth:`KnowledgeBase.replay` applies it
later (seed 004 §6.5), so no record is lost.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pydantic_core
from pydantic import BaseModel, ValidationError
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Table,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url

from alphaloop.data.catalog import home
from alphaloop.errors import AlphaloopError, ErrorClass
from alphaloop.kb import migrations
from alphaloop.kb.models import (
    TABLES,
    Backtest,
    Base,
    Claim,
    Constraint,
    ConstraintSet,
    Failure,
    Iteration,
    Run,
    Score,
    StageRun,
    Strategy,
    Transition,
)
from alphaloop.kb.records import (
    BacktestRecord,
    FailureRecord,
    IterationBatch,
    RunRecord,
    ScoreRecord,
    StageRunRecord,
    TransitionRecord,
)

__all__ = ["ClaimRow", "KBError", "KnowledgeBase", "default_url", "dispose_engines"]

_SQLITE_MAGIC = b"SQLite format 3\x00"
_Catalog = tuple[set[str], list[str]]  # a database's table names, its alembic versions
WRITE_OPTION = "alphaloop_kb_write"  # execution option: this connection's BEGIN is IMMEDIATE
_REUSABLE = ("SUCCESS", "PARTIAL")  # stage statuses whose output a resume may reuse
_PG_MIGRATE_KEY = 0x616C7068614C6F6F  # "alphaLoo": the advisory lock schema upgrades take
_CRITICAL, _TRANSIENT, _PERMANENT = ErrorClass.CRITICAL, ErrorClass.TRANSIENT, ErrorClass.PERMANENT


CLAIMED, DONE = "claimed", "done"  # a claim's statuses
_IN_LIST = 500  # ids per IN (...) list: well inside every driver's parameter limit


@dataclass(frozen=True)
class ClaimRow:
    """One claim as stored: who holds (or did) the work, and its result once done."""

    strategy_id: str
    run_id: str
    status: str
    lease_until_ns: int
    takeovers: int
    result: str | None = None
    payload: bytes | None = None


def _parts(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _IN_LIST):
        yield ids[start:start + _IN_LIST]


class KBError(AlphaloopError):
    """A knowledge base failure. ``code`` says which, ``error_class`` what to do:

    - CRITICAL ``KB_CORRUPT`` / ``KB_FOREIGN`` / ``KB_SCHEMA_NEWER`` /
      ``KB_MIGRATION_FAIL`` / ``KB_WAL_CORRUPT``: stop; nothing was changed.
    - TRANSIENT ``DB_LOCKED`` / ``KB_WRITE_FAIL`` / ``KB_READ_FAIL``: try again later,
      or queue the write (:meth:`KnowledgeBase.persist_or_queue`).
    - PERMANENT ``KB_NOT_FOUND`` / ``KB_AMBIGUOUS`` / ``KB_INTEGRITY`` /
      ``KB_INVALID_URL`` / ``KB_ACCESS_DENIED`` / ``KB_CLOSED``: the request itself is
      wrong (``KB_ACCESS_DENIED``: a server refused the login or has no such database).
    """

    code = "KB_ERROR"


def default_url() -> str:
    """``sqlite:///$ALPHALOOP_HOME/kb.sqlite`` (``~/.alphaloop`` without the variable)."""
    return f"sqlite:///{(home() / 'kb.sqlite').absolute()}"


# ----------------------------------------------------------------------------- engines


@dataclass
class _Pooled:
    engine: Engine
    file_id: tuple[int, int] | None  # (device, inode) of the SQLite file it was opened on


_POOL: dict[tuple[str, float], _Pooled] = {}
_POOL_LOCK = threading.Lock()
# Alembic runs a migration through module-level proxies (``alembic.context``): two
# threads migrating at once would share them. Processes are serialized by SQLite's lock.
_MIGRATE_LOCK = threading.Lock()


def dispose_engines() -> None:
    """Close every pooled connection (before deleting a database file, or at exit)."""
    with _POOL_LOCK:
        for pooled in _POOL.values():
            pooled.engine.dispose()
        _POOL.clear()


def _file_id(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _pooled_engine(url: str, busy_timeout_s: float, path: Path | None) -> Engine:
    """One engine per (URL, timeout) per process: opening a KB again costs no connect.

    If the file at ``path`` is no longer the one the pooled connections point at
    (deleted and recreated), those connections would write into a ghost: start afresh.
    """
    key = (url, busy_timeout_s)
    with _POOL_LOCK:
        pooled = _POOL.get(key)
        if pooled is not None and pooled.file_id not in (None, _file_id(path)):
            pooled.engine.dispose()
            pooled = None
        if pooled is None:
            pooled = _POOL[key] = _Pooled(_create_engine(url, busy_timeout_s), None)
        return pooled.engine


def _remember_file(url: str, busy_timeout_s: float, path: Path | None) -> None:
    with _POOL_LOCK:
        pooled = _POOL.get((url, busy_timeout_s))
        if pooled is not None:
            pooled.file_id = _file_id(path)


def _create_engine(url: str, busy_timeout_s: float) -> Engine:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        configure_sqlite(engine, busy_timeout_s)
    return engine


def configure_sqlite(engine: Engine, busy_timeout_s: float) -> None:
    """Foreign keys, busy timeout, and transactions that SQLAlchemy begins itself.

    Python's sqlite3 module would BEGIN only before DML (so DDL of a migration would not
    be transactional) and always as DEFERRED (so a writer could fail with "locked" in
    the middle of a transaction). We turn its handling off and emit BEGIN ourselves:
    IMMEDIATE for writes, which takes the write lock (waiting up to the busy timeout)
    before anything is done.
    """
    timeout_ms = max(0, int(busy_timeout_s * 1000))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={timeout_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        writing = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def _sqlite_file(url: URL) -> Path | None:
    """The file behind a SQLite URL; None for other databases and in-memory ones."""
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    database = url.database
    if str(url.query.get("uri", "")).lower() in ("true", "1"):
        if url.query.get("mode") == "memory" or not database.startswith("file:"):
            return None
        database = unquote(database[len("file:"):].split("?", 1)[0])
    if database == ":memory:" or database.startswith(":memory:"):
        return None
    return Path(database)


def is_in_memory(url: str) -> bool:
    """Whether ``url`` names an in-memory SQLite database, which forgets everything with
    its last connection (a run's records, a world's decisions)."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        return False  # opening it says what is wrong
    return parsed.get_backend_name() == "sqlite" and _sqlite_file(parsed) is None


def anchored_url(url: str) -> str:
    """``url`` with a SQLite file given relative to the working directory, or under
    ``~``, made absolute: the same database whichever directory a later command (a
    ``resume``, a ``report``) starts in, and never a folder literally named ``~``.
    Other URLs (and ``uri=true`` ones, which SQLite parses itself) come back as given."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        return url  # opening it says what is wrong
    path = _sqlite_file(parsed)
    if path is None or str(parsed.query.get("uri", "")).lower() in ("true", "1"):
        return url
    absolute = path.expanduser().absolute()
    if absolute == path:
        return url
    return parsed.set(database=str(absolute)).render_as_string(hide_password=False)


# --------------------------------------------------------------------- opening safely


def _refuse(code: str, message: str) -> KBError:
    return KBError(message, code=code, error_class=_CRITICAL)


def _read_sqlite_catalog(path: Path) -> _Catalog:
    """Table names and alembic version rows of an existing SQLite file, read-only.

    Opened with ``mode=ro`` through a separate connection so that even a pragma cannot
    change a file that turns out not to be ours.
    """
    with path.open("rb") as fh:
        magic = fh.read(len(_SQLITE_MAGIC))
    if magic != _SQLITE_MAGIC:
        raise _refuse("KB_CORRUPT", f"{path} is not a SQLite database (bad header); "
                                    "it was left untouched — move it away or pick another kb url")
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")}
        versions = ([r[0] for r in con.execute("SELECT version_num FROM alembic_version")]
                    if "alembic_version" in tables else [])
    finally:
        con.close()
    return tables, versions


@contextlib.contextmanager
def _left_as_it_was(path: Path) -> Iterator[None]:
    """A WAL-mode file makes even a read-only reader create its -wal and -shm files.
    When the block refuses the file (raises), those the reader created are removed, so
    that a file refused is left as it was; a file accepted is opened next and uses them."""
    side = [path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    there = [p.exists() for p in side]
    try:
        yield
    except BaseException:
        for p, existed in zip(side, there, strict=True):
            # a read-only connection writes no frames: a -wal it made is empty
            if not existed and p.exists() and (p.name.endswith("-shm")
                                               or p.stat().st_size == 0):
                p.unlink(missing_ok=True)
        raise


def _inspect_sqlite(path: Path) -> _Catalog:
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return set(), []
    if not path.is_file():
        raise KBError(f"{path} is not a file", code="KB_INVALID_URL", error_class=_PERMANENT)
    try:
        return _read_sqlite_catalog(path)
    except sqlite3.OperationalError as exc:
        if _is_lock(exc):
            raise KBError(f"{path} is locked: {exc}", code="DB_LOCKED",
                          error_class=_TRANSIENT) from exc
        if "unable to open" in str(exc).lower() and not _openable(path):
            # a sound file that the process may not open, or whose folder it may not
            # write (SQLite keeps its -wal and -shm files beside it): not damage
            raise KBError(f"{path} cannot be opened ({exc}): this process needs to read "
                          f"it and to write in {path.parent} (SQLite's -wal and -shm "
                          "files); it was left untouched", code="KB_ACCESS_DENIED",
                          error_class=_PERMANENT) from exc
        raise _refuse("KB_CORRUPT", f"{path} cannot be read as a SQLite database: {exc}; "
                                    "it was left untouched") from exc
    except sqlite3.DatabaseError as exc:
        raise _refuse("KB_CORRUPT", f"{path} is a damaged SQLite database: {exc}; "
                                    "it was left untouched") from exc


def _parsed(url: str) -> URL:
    try:
        return make_url(url)
    except sa_exc.ArgumentError as exc:
        raise KBError(f"invalid knowledge base url {url!r}: {exc}", code="KB_INVALID_URL",
                      error_class=_PERMANENT) from exc


def inspect_before_use(url: str | None) -> None:
    """Refuse a knowledge base that cannot be used (KB_CORRUPT, KB_FOREIGN, a newer
    schema, a URL SQLAlchemy cannot read) before a command does its work, where looking
    is cheap: an existing SQLite file, read only. Nothing is created or written; a
    missing file (a run creates it) and server databases are left to their opening."""
    path = _sqlite_file(_parsed(anchored_url(url) if url else default_url()))
    if path is not None and path.is_file() and path.stat().st_size > 0:
        with _left_as_it_was(path):
            _revision_of(_inspect_sqlite(path), str(path))


def _openable(path: Path) -> bool:
    """Whether this process may read ``path`` and create files beside it (as root, a
    read-only or immutable folder still refuses SQLite, so try rather than ask)."""
    try:
        with open(path, "rb"):
            pass
        probe = path.parent / f".{path.name}.{os.getpid()}.probe"
        probe.touch()
        probe.unlink()
    except OSError:
        return False
    return True


def _inspect_engine(engine: Engine) -> _Catalog:
    """Same as :func:`_inspect_sqlite`, through the engine (server databases)."""
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        versions = ([r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
                    if "alembic_version" in tables else [])
    return tables, versions


def _revision_of(catalog: _Catalog, where: str) -> str | None:
    """The schema revision of a database we may open; None when it is empty.

    Refuses, without touching it, a database holding tables but no alembic version
    (someone else's), a revision this code does not know (a newer alphaloop, or another
    Alembic-managed application), or a known revision whose tables are missing.
    """
    tables, versions = catalog
    if not versions:
        if tables - {"alembic_version"}:
            raise _refuse("KB_FOREIGN", f"{where} holds tables {sorted(tables)[:8]} but no "
                                        "alphaloop schema version; it is not an alphaloop "
                                        "knowledge base and was left untouched")
        return None
    if len(versions) > 1 or versions[0] not in migrations.known_revisions():
        raise _refuse("KB_SCHEMA_NEWER", f"{where} is at schema revision {versions} which "
                                         f"this alphaloop does not know (newest known: "
                                         f"{migrations.head()}); upgrade alphaloop — the "
                                         "database was left untouched")
    if "runs" not in tables:
        raise _refuse("KB_FOREIGN", f"{where} has alembic revision {versions[0]} but no "
                                    "'runs' table; it was left untouched")
    # at the head every table of the knowledge base's own models must be there: one
    # dropped since is damage no retry mends (read errors would call it TRANSIENT)
    missing = sorted(set(TABLES) - tables) if versions[0] == migrations.head() else []
    if missing:
        raise _refuse("KB_CORRUPT", f"{where} is at schema revision {versions[0]} but "
                                    f"lacks table(s) {missing}; it is damaged and was left "
                                    "untouched")
    return versions[0]


def _is_lock(exc: BaseException | None) -> bool:
    text_ = str(exc).lower()
    return "locked" in text_ or "busy" in text_


def _is_readonly(exc: BaseException | None) -> bool:
    text_ = str(exc).lower()
    return "readonly" in text_ or "read-only" in text_


# what a PostgreSQL server says when it rejects a login (psycopg gives no SQLSTATE for a
# failed connection, only the server's text)
_REFUSAL = re.compile(r"password authentication failed|no pg_hba\.conf entry|no password "
                      r"supplied|permission denied for database|(database|role) \".*\" "
                      r"does not exist")


def _is_refusal(exc: BaseException | None) -> bool:
    return _REFUSAL.search(str(exc)) is not None


# ------------------------------------------------------------------------ JSON forms


def _numpy_to_python(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_text(value: BaseModel | dict[str, Any]) -> str:
    """The one JSON form of a record, for the database and the write-ahead log alike."""
    try:
        if isinstance(value, BaseModel):
            return value.model_dump_json(fallback=_numpy_to_python)
        return pydantic_core.to_json(value, inf_nan_mode="null",
                                     fallback=_numpy_to_python).decode()
    except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
        raise KBError(f"a record cannot be stored as JSON: {exc}", code="KB_INTEGRITY",
                      error_class=_PERMANENT) from exc


def _row(value: BaseModel | dict[str, Any]) -> dict[str, Any]:
    # pydantic's Rust parser: several times faster than json.loads on a whole iteration
    out: dict[str, Any] = pydantic_core.from_json(_json_text(value))
    return out


def _transition_row(record: TransitionRecord) -> dict[str, Any]:
    row = _row(record)
    canonical = json.dumps(row, sort_keys=True, separators=(",", ":"))
    row["transition_key"] = hashlib.sha256(canonical.encode()).hexdigest()
    return row


# --------------------------------------------------------------------------- upserts


def _upsert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *,
            keys: Sequence[str] | None = None, update_: bool = True,
            keep: Sequence[str] = ()) -> None:
    """Insert ``rows``; on a key already present update it (or leave it: ``update_``).

    ``keep`` lists columns a later write must not overwrite (a run's ``created_ns``).
    SQLite and PostgreSQL do it in one ``INSERT … ON CONFLICT`` per batch; other
    databases row by row.
    """
    if not rows:
        return
    keys = list(keys or [c.name for c in table.primary_key.columns])
    name = conn.dialect.name
    if name not in ("sqlite", "postgresql"):
        _upsert_row_by_row(conn, table, rows, keys, update_, keep)
        return
    if name == "postgresql":
        # one key order for every writer: two transactions upserting overlapping rows
        # then wait for each other instead of deadlocking (SQLite has one writer anyway)
        rows = sorted(rows, key=lambda r: tuple(str(r[k]) for k in keys))
    ins = sqlite_insert(table) if name == "sqlite" else pg_insert(table)
    changing = [c for c in rows[0] if c not in keys and c not in keep]
    stmt = (ins.on_conflict_do_update(index_elements=keys,
                                      set_={c: ins.excluded[c] for c in changing})
            if update_ and changing else ins.on_conflict_do_nothing(index_elements=keys))
    conn.execute(stmt, list(rows))


def _upsert_row_by_row(conn: Connection, table: Table, rows: Sequence[dict[str, Any]],
                       keys: Sequence[str], update_: bool, keep: Sequence[str]) -> None:
    for row in rows:
        where = [table.c[k] == row[k] for k in keys]
        if conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one():
            if update_:
                values = {c: v for c, v in row.items() if c not in keys and c not in keep}
                conn.execute(update(table).where(*where).values(**values))
        else:
            conn.execute(table.insert().values(**row))


def _t(model: type[Base]) -> Table:
    table: Table = model.__table__  # type: ignore[assignment]
    return table


def _present(conn: Connection, column: Any, ids: set[str]) -> set[str]:
    found: set[str] = set()
    ordered = sorted(ids)
    for start in range(0, len(ordered), 500):  # stay under SQL parameter limits
        chunk = ordered[start:start + 500]
        found.update(conn.execute(select(column).where(column.in_(chunk))).scalars())
    return found


def _integrity(message: str) -> KBError:
    return KBError(message, code="KB_INTEGRITY", error_class=_PERMANENT)


def _check_batch(conn: Connection, batch: IterationBatch) -> None:
    """Refuse, with a message that names them, rows the foreign keys would reject.

    A batch that cannot be stored is a PERMANENT error (fix the caller), never a
    TRANSIENT one: queueing it in the write-ahead log would block every later replay.
    """
    it = batch.iteration
    if not _present(conn, Run.run_id, {it.run_id}):
        raise _integrity(f"run {it.run_id!r} is not in the knowledge base: save_run first")
    per_candidate: list[BacktestRecord | ScoreRecord | FailureRecord] = [
        *batch.backtests, *batch.scores, *batch.failures]
    strays = {(r.run_id, r.iteration) for r in per_candidate} - {(it.run_id, it.iteration)}
    if strays:
        raise _integrity(f"iteration batch ({it.run_id!r}, {it.iteration}) holds rows of "
                         f"other iterations: {sorted(strays)[:5]}")
    wanted = {r.strategy_id for r in per_candidate} - {s.strategy_id for s in batch.strategies}
    missing = wanted - _present(conn, Strategy.strategy_id, wanted)
    if missing:
        raise _integrity(f"{len(missing)} strategies are referenced but neither stored nor "
                         f"in the batch: {sorted(missing)[:5]}")
    sets = {c.constraint_set_id for c in batch.constraints}
    sets -= {s.constraint_set_id for s in batch.constraint_sets}
    missing = sets - _present(conn, ConstraintSet.constraint_set_id, sets)
    if missing:
        raise _integrity(f"constraints refer to unknown constraint sets {sorted(missing)[:5]}")


def _write_batch(conn: Connection, batch: IterationBatch) -> None:
    """Every row of one iteration; parents before children so foreign keys hold."""
    _check_batch(conn, batch)
    data = _row(batch)
    # stamped when first stored, kept by a replay: what a later run counts as earlier
    data["iteration"]["stored_ns"] = time.time_ns()
    _upsert(conn, _t(Iteration), [data["iteration"]], keep=("stored_ns",))
    _upsert(conn, _t(Strategy), data["strategies"], update_=False)  # id = canonical spec
    # a set's id is the hash of its rules: the first run to reach it keeps the record
    _upsert(conn, _t(ConstraintSet), data["constraint_sets"], update_=False)
    _upsert(conn, _t(Constraint), data["constraints"], update_=False)
    _upsert(conn, _t(Backtest), data["backtests"])
    _upsert(conn, _t(Score), data["scores"])
    _upsert(conn, _t(Failure), data["failures"])


# ----------------------------------------------------------------- write-ahead log


@contextlib.contextmanager
def _wal_lock(wal_path: Path) -> Iterator[None]:
    """An exclusive lock on ``<wal>.lock``, a file never deleted.

    Locking the log itself would not do: replay deletes it, and a writer waiting on the
    deleted file's lock would then append to a file nobody reads.
    """
    wal_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = wal_path.with_name(wal_path.name + ".lock")
    with lock_path.open("a") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: single writer assumed
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _drop_torn_tail(wal_path: Path) -> None:
    """Cut a last line without its newline: an append that crashed midway.

    That batch was never acknowledged as queued, so its writer will redo it; kept,
    it would glue onto the next line and make the log unreadable.
    """
    data = wal_path.read_bytes() if wal_path.exists() else b""
    if data and not data.endswith(b"\n"):
        os.truncate(wal_path, data.rfind(b"\n") + 1)


def _append_wal(wal_path: Path, batch: IterationBatch) -> None:
    # the batch's JSON text is embedded as is: one serialization, no second pass
    line = f'{{"type":"IterationBatch","batch":{_json_text(batch)}}}\n'
    with _wal_lock(wal_path):
        _drop_torn_tail(wal_path)
        created = not wal_path.exists()
        with wal_path.open("ab") as fh:
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())
        if created:
            _fsync_dir(wal_path.parent)


def _read_wal(wal_path: Path) -> list[IterationBatch]:
    if not wal_path.exists():
        return []
    lines = wal_path.read_bytes().split(b"\n")[:-1]  # the piece after the last \n is torn
    batches = []
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
            if entry.get("type") != "IterationBatch":
                raise ValueError(f"unknown entry type {entry.get('type')!r}")
            batches.append(IterationBatch.model_validate(entry["batch"]))
        except (ValueError, KeyError, AttributeError, ValidationError) as exc:
            raise _refuse("KB_WAL_CORRUPT", f"{wal_path} line {number} cannot be read "
                                            f"({exc}); the log was left untouched") from exc
    return batches


# ------------------------------------------------------------------- the store


class KnowledgeBase:
    """The knowledge base at ``url`` (default :func:`default_url`), opened safely.

    >>> with KnowledgeBase("sqlite:///tmp/kb.sqlite") as kb:   # doctest: +SKIP
    ...     kb.save_run(run)
    ...     kb.persist_or_queue(batch, wal_path)                # "persisted" | "queued"
    ...     kb.trial_count(run.data_ref, exclude_run=run.run_id)

    ``busy_timeout_s`` is how long a SQLite write waits for another writer's lock before
    it fails with ``DB_LOCKED``. Opening the same URL again in one process reuses the
    pooled engine; :meth:`close` ends this handle only (see :func:`dispose_engines`).
    ``create=False`` (a reader) refuses a SQLite file that does not exist with
    ``KB_NOT_FOUND`` instead of creating an empty knowledge base there.
    """

    def __init__(self, url: str | None = None, *, busy_timeout_s: float = 5.0,
                 create: bool = True) -> None:
        self.url = anchored_url(url) if url else default_url()
        parsed = _parsed(self.url)
        self.path = _sqlite_file(parsed)
        # what messages name: the file, or the URL without its password
        self._where = (str(self.path) if self.path is not None
                       else parsed.render_as_string(hide_password=True))
        self._closed = False
        # look before touching: a file is inspected read-only before any engine opens it
        if self.path is not None:
            if not create and not self.path.exists():
                # a reader's typo must not leave an empty knowledge base behind
                raise KBError(f"no knowledge base at {self.path} (a run creates one; "
                              "--url names another)", code="KB_NOT_FOUND",
                              error_class=_PERMANENT)
            if not create and self.path.is_file() and self.path.stat().st_size == 0:
                # SQLite would take an empty file for an empty database and a reader's
                # migration would write the schema into it: a reader writes nothing
                raise KBError(f"{self.path} is an empty file (0 bytes), not a knowledge "
                              "base (a run creates one there)", code="KB_NOT_FOUND",
                              error_class=_PERMANENT)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _left_as_it_was(self.path):
                revision = _revision_of(_inspect_sqlite(self.path), str(self.path))
            self._engine = self._open_engine(busy_timeout_s)
        else:
            self._engine = self._open_engine(busy_timeout_s)
            revision = _revision_of(self._guard(lambda: _inspect_engine(self._engine)),
                                    self._where)
        # WAL first: in WAL mode concurrent upgraders queue on the write lock; in the
        # rollback-journal mode of a new file they can deadlock and fail at once
        self._use_wal(busy_timeout_s)
        if revision != migrations.head():
            self._upgrade()
        _remember_file(self.url, busy_timeout_s, self.path)

    def _open_engine(self, busy_timeout_s: float) -> Engine:
        try:
            return _pooled_engine(self.url, busy_timeout_s, self.path)
        except (sa_exc.ArgumentError, ImportError) as exc:
            raise KBError(f"cannot open knowledge base {self._where}: {exc}",
                          code="KB_INVALID_URL", error_class=_PERMANENT) from exc

    def _guard(self, read: Callable[[], _Catalog]) -> _Catalog:
        try:
            return read()
        except sa_exc.OperationalError as exc:
            raise self._read_error(exc) from exc

    def _read_error(self, exc: sa_exc.OperationalError) -> KBError:
        """A server that refused us (no such database or role, a wrong password) will
        refuse again: PERMANENT. Anything else (unreachable, restarting) may pass."""
        if _is_refusal(exc.orig):
            return KBError(f"{self._where} refused the connection: {exc.orig}",
                           code="KB_ACCESS_DENIED", error_class=_PERMANENT)
        return KBError(f"cannot read {self._where}: {exc.orig}", code="KB_READ_FAIL",
                       error_class=_TRANSIENT)

    def _upgrade(self) -> None:
        """Migrate to head in one IMMEDIATE transaction (a concurrent opener waits)."""
        try:
            with (_MIGRATE_LOCK,
                  self._engine.connect().execution_options(**{WRITE_OPTION: True}) as conn):
                if conn.dialect.name == "postgresql":
                    # the server's counterpart of SQLite's write lock: concurrent openers of
                    # a new database queue here; the next one finds the head and does nothing
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                 {"key": _PG_MIGRATE_KEY})
                    migrations.upgrade(conn)
                    conn.commit()
                else:
                    migrations.upgrade(conn)
        except sa_exc.OperationalError as exc:
            if _is_lock(exc.orig):
                raise KBError(f"{self._where} is locked; schema upgrade deferred: {exc.orig}",
                              code="DB_LOCKED", error_class=_TRANSIENT) from exc
            if "disk is full" in str(exc.orig).lower():  # SQLITE_FULL: may pass once freed
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._where) from exc
            raise _refuse("KB_MIGRATION_FAIL", f"upgrading {self._where} failed and was "
                                               f"rolled back: {exc.orig}") from exc
        except sa_exc.SQLAlchemyError as exc:
            raise _refuse("KB_MIGRATION_FAIL", f"upgrading {self._where} failed and was "
                                               f"rolled back: {exc}") from exc

    def _use_wal(self, busy_timeout_s: float) -> None:
        """Switch a SQLite file to WAL; the mode is stored in the file, so once is enough.

        Runs on the raw connection because the pragma must run outside a transaction.
        The switch needs the only lock on the file and SQLite does not wait for it
        (two switchers would deadlock), so it is retried until the busy timeout. A
        read-only database keeps its journal mode: reads work either way.
        """
        if self._engine.dialect.name != "sqlite":
            return
        deadline = time.monotonic() + busy_timeout_s
        try:
            conn_cm = self._engine.connect()
        except sa_exc.OperationalError as exc:  # a place the system will not open
            raise KBError(f"cannot open {self._where}: {exc.orig}", code="KB_INVALID_URL",
                          error_class=_PERMANENT) from exc
        with conn_cm as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            while True:
                try:
                    raw.execute("PRAGMA journal_mode=WAL").fetchall()
                    return
                except sqlite3.OperationalError as exc:
                    if _is_readonly(exc):
                        return
                    if not _is_lock(exc) or time.monotonic() >= deadline:
                        raise KBError(f"{self._where} is locked; cannot switch it to WAL: "
                                      f"{exc}", code="DB_LOCKED",
                                      error_class=_TRANSIENT) from exc
                time.sleep(0.01)

    # -- lifecycle

    def close(self) -> None:
        """End this handle. The pooled engine stays for the next open of the same URL."""
        self._closed = True

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KnowledgeBase({self._where!r})"

    # -- transactions

    def _live(self) -> Engine:
        if self._closed:
            raise KBError(f"{self._where} was closed", code="KB_CLOSED", error_class=_PERMANENT)
        return self._engine

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[Connection]:
        """One write transaction; database failures become classified KBErrors."""
        try:
            with self._live().execution_options(**{WRITE_OPTION: True}).begin() as conn:
                yield conn
        except KBError:
            raise
        except sa_exc.OperationalError as exc:
            raise self._write_error(exc, what) from exc
        except sa_exc.IntegrityError as exc:
            raise _integrity(f"{what} violates the schema of {self._where}: {exc.orig}") from exc
        except sa_exc.SQLAlchemyError as exc:
            raise KBError(f"{what} failed on {self._where}: {exc}", code="KB_WRITE_FAIL",
                          error_class=_TRANSIENT) from exc

    def _write_error(self, exc: sa_exc.OperationalError, what: str) -> KBError:
        if _is_readonly(exc.orig):
            return KBError(f"{what}: {self._where} is read-only ({exc.orig})",
                           code="KB_WRITE_FAIL", error_class=_TRANSIENT)
        return KBError(f"{what}: {self._where} is locked or unavailable ({exc.orig})",
                       code="DB_LOCKED", error_class=_TRANSIENT)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        try:
            with self._live().connect() as conn:
                yield conn
        except KBError:
            raise
        except sa_exc.OperationalError as exc:
            raise self._read_error(exc) from exc

    def _frame(self, stmt: Select[Any]) -> pd.DataFrame:
        with self._reading() as conn:
            result = conn.execute(stmt)
            return pd.DataFrame(result.all(), columns=list(result.keys()))

    # -- writes

    def save_run(self, record: RunRecord) -> None:
        """Insert or update a run. Its ``created_ns`` is kept from the first save, so a
        resumed run keeps its place in "newest first" orders."""
        with self._writing(f"save run {record.run_id}") as conn:
            _upsert(conn, _t(Run), [_row(record)], keep=("created_ns", "finished_ns"))

    def set_run_status(self, run_id: str, status: str,
                       summary: dict[str, Any] | None = None, *,
                       finished: bool = False) -> None:
        """Set a run's status (and summary, when given). ``updated_ns`` moves only when
        something changed, so repeating the call is a no-op. ``finished``: the status
        is final; ``finished_ns`` is set then, the first time only (it never moves)."""
        with self._writing(f"set status of run {run_id}") as conn:
            current = conn.execute(select(Run.status, Run.summary, Run.updated_ns,
                                          Run.finished_ns)
                                   .where(Run.run_id == run_id)).one_or_none()
            if current is None:
                raise KBError(f"run {run_id!r} is not in the knowledge base",
                              code="KB_NOT_FOUND", error_class=_PERMANENT)
            new_summary = current.summary if summary is None else _row(summary)
            finish = finished and current.finished_ns is None
            if (current.status, current.summary) == (status, new_summary) and not finish:
                return
            stamp = max(time.time_ns(), current.updated_ns + 1)  # strictly increasing
            values: dict[str, Any] = {"status": status, "summary": new_summary,
                                      "updated_ns": stamp}
            if finish:
                values["finished_ns"] = stamp
            conn.execute(update(Run).where(Run.run_id == run_id).values(**values))

    def record_transition(self, record: TransitionRecord) -> None:
        """Append a state-machine move; the identical move recorded again is ignored."""
        with self._writing(f"record transition of run {record.run_id}") as conn:
            _upsert(conn, _t(Transition), [_transition_row(record)],
                    keys=("transition_key",), update_=False)

    def save_stage_run(self, record: StageRunRecord) -> None:
        """Insert or update one attempt of one stage, by ``stage_run_id``."""
        with self._writing(f"save stage run {record.stage_run_id}") as conn:
            _upsert(conn, _t(StageRun), [_row(record)])

    def add_stage_run(self, record: StageRunRecord) -> None:
        """Insert one attempt of one stage unless its ``stage_run_id`` is there already
        (a resumed run filling in the row of a stage whose output was stored just
        before the process died; a row written then is left as it is)."""
        with self._writing(f"add stage run {record.stage_run_id}") as conn:
            _upsert(conn, _t(StageRun), [_row(record)], update_=False)

    def persist_iteration(self, batch: IterationBatch) -> None:
        """Store everything of one iteration in ONE transaction: all of it or none.

        Strategies already known are left as they are (same id, same canonical spec);
        every other row is upserted on its natural key, so persisting the same batch
        twice leaves the database identical.
        """
        it = batch.iteration
        with self._writing(f"persist iteration {it.iteration} of run {it.run_id}") as conn:
            _write_batch(conn, batch)

    def persist_or_queue(self, batch: IterationBatch,
                         wal_path: Path) -> Literal["persisted", "queued"]:
        """Persist ``batch``, or queue it in the write-ahead log if the database cannot
        take it now (seed 004 §6.5).

        Batches queued earlier are replayed first, so the database receives iterations
        in their order. Only TRANSIENT failures queue; a PERMANENT or CRITICAL one is
        raised, since replaying would fail the same way forever.
        """
        wal_path = Path(wal_path)
        try:
            if wal_path.exists():
                self.replay(wal_path)
            self.persist_iteration(batch)
            return "persisted"
        except KBError as exc:
            if exc.error_class is not _TRANSIENT:
                raise
        _append_wal(wal_path, batch)
        return "queued"

    def replay(self, wal_path: Path) -> int:
        """Apply the queued batches of ``wal_path`` in order, in one transaction, and
        delete the log only once they are committed. Returns how many were applied.

        Idempotent: a crash between commit and delete replays the same batches again,
        which changes nothing.
        """
        wal_path = Path(wal_path)
        with _wal_lock(wal_path):
            batches = _read_wal(wal_path)
            if batches:
                with self._writing(f"replay {len(batches)} queued iterations") as conn:
                    for batch in batches:
                        _write_batch(conn, batch)
            if wal_path.exists():
                wal_path.unlink()
                _fsync_dir(wal_path.parent)
        return len(batches)

    # -- reads: runs

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._reading() as conn:
            row = conn.execute(select(_t(Run)).where(Run.run_id == run_id)).one_or_none()
        return None if row is None else RunRecord(**row._mapping)

    def find_run(self, prefix: str) -> RunRecord:
        """The run whose id is ``prefix`` or, failing that, the only one starting with it
        (``RUN_NOT_FOUND`` / ``RUN_AMBIGUOUS`` otherwise, as for a run's folder)."""
        exact = self.get_run(prefix)
        if exact is not None:
            return exact
        ids = self._ids_starting(Run.run_id, prefix, "run id", not_found="RUN_NOT_FOUND",
                                 ambiguous="RUN_AMBIGUOUS")  # the codes `status` uses
        run = self.get_run(ids)
        assert run is not None
        return run

    def _ids_starting(self, column: Any, prefix: str, what: str, *,
                      not_found: str = "KB_NOT_FOUND", ambiguous: str = "KB_AMBIGUOUS") -> str:
        if not prefix:
            raise KBError(f"an empty {what} matches everything", code=ambiguous,
                          error_class=_PERMANENT)
        stmt = (select(column).distinct().where(column.startswith(prefix, autoescape=True))
                .order_by(column).limit(6))
        with self._reading() as conn:
            ids = list(conn.execute(stmt).scalars())
        if prefix in ids:  # whole: a longer id that starts with it is another one
            return prefix
        if not ids:
            raise KBError(f"no {what} starts with {prefix!r}", code=not_found,
                          error_class=_PERMANENT)
        if len(ids) > 1:
            raise KBError(f"{what} prefix {prefix!r} is ambiguous: {ids[:5]}…",
                          code=ambiguous, error_class=_PERMANENT)
        found: str = ids[0]
        return found

    def list_runs(self, limit: int = 50) -> pd.DataFrame:
        """The newest ``limit`` runs (by ``created_ns``), one row each."""
        return self._frame(select(_t(Run)).order_by(Run.created_ns.desc(), Run.run_id)
                           .limit(limit))

    def iterations(self, run_id: str) -> pd.DataFrame:
        return self._frame(select(_t(Iteration)).where(Iteration.run_id == run_id)
                           .order_by(Iteration.iteration))

    def transitions(self, run_id: str) -> pd.DataFrame:
        """The run's state-machine moves in the order they were recorded."""
        cols = [c for c in _t(Transition).c if c.name not in ("id", "transition_key")]
        return self._frame(select(*cols).where(Transition.run_id == run_id)
                           .order_by(Transition.ts, Transition.id))

    def stage_runs(self, run_id: str) -> pd.DataFrame:
        return self._frame(select(_t(StageRun)).where(StageRun.run_id == run_id)
                           .order_by(StageRun.started_ts, StageRun.stage_run_id))

    def backtests(self, run_id: str) -> pd.DataFrame:
        """Every backtest of a run, by iteration then strategy, engine and window."""
        return self._run_rows(Backtest, run_id)

    def scores(self, run_id: str) -> pd.DataFrame:
        return self._run_rows(Score, run_id)

    def failures(self, run_id: str) -> pd.DataFrame:
        """Every failure record of a run (``iteration``, ``strategy_id``, ``stage_id``,
        ``code``, ``secondary``, ``evidence``), by iteration."""
        return self._run_rows(Failure, run_id)

    def constraints(self, constraint_set_id: str) -> list[dict[str, Any]]:
        """The rules of one constraint set (empty when there is no such set)."""
        stmt = select(Constraint).where(Constraint.constraint_set_id == constraint_set_id)
        frame = self._frame(stmt.order_by(Constraint.constraint_id))
        return [{str(k): v for k, v in r.items()} for r in frame.to_dict("records")]

    def constraint_sets(self, run_id: str | None = None) -> pd.DataFrame:
        """The constraint set versions (of one run), oldest first."""
        stmt = select(ConstraintSet)
        if run_id is not None:
            stmt = stmt.where(ConstraintSet.run_id == run_id)
        return self._frame(stmt.order_by(ConstraintSet.run_id, ConstraintSet.iteration))

    def _run_rows(self, model: type[Base], run_id: str) -> pd.DataFrame:
        table = _t(model)
        return self._frame(select(table).where(table.c.run_id == run_id)
                           .order_by(*table.primary_key.columns))

    def find_stage_run(self, run_id: str, iteration: int, stage_id: str,
                       inputs_hash: str) -> StageRunRecord | None:
        """The latest SUCCESS or PARTIAL attempt of this stage on these inputs: the work
        a resumed run reuses instead of recomputing (seed 004 §7.1)."""
        stmt = (select(_t(StageRun))
                .where(StageRun.run_id == run_id, StageRun.iteration == iteration,
                       StageRun.stage_id == stage_id, StageRun.inputs_hash == inputs_hash,
                       StageRun.status.in_(_REUSABLE))
                .order_by(StageRun.finished_ts.desc(), StageRun.attempt.desc()).limit(1))
        with self._reading() as conn:
            row = conn.execute(stmt).one_or_none()
        return None if row is None else StageRunRecord(**row._mapping)

    # -- claims: who does which piece of work (several runs on one database)

    def claim(self, work_key: str, strategy_ids: Sequence[str], run_id: str, *,
              lease_until_ns: int, now_ns: int) -> dict[str, ClaimRow]:
        """Claim the work ``work_key`` on each of ``strategy_ids`` for ``run_id``, in one
        transaction, and say who holds each now.

        A strategy nobody claimed yet becomes ``run_id``'s (``INSERT … ON CONFLICT DO
        NOTHING``: of two runs claiming at once exactly one wins, on SQLite and on
        PostgreSQL alike). A ``claimed`` row that is ``run_id``'s own (a resumed run) or
        whose lease ended before ``now_ns`` (its owner died) is taken over: its lease
        moves to ``lease_until_ns``. Done rows come back with their result. The caller
        owns exactly the rows returned with its ``run_id`` and status ``claimed``.
        """
        ids = sorted(set(strategy_ids))  # one lock order for every writer (PostgreSQL)
        if not ids:
            return {}
        table = _t(Claim)
        fresh = [{"work_key": work_key, "strategy_id": sid, "run_id": run_id,
                  "status": CLAIMED, "lease_until_ns": lease_until_ns, "takeovers": 0,
                  "result": None, "payload": None} for sid in ids]
        with self._writing(f"claim {len(ids)} strategies for run {run_id}") as conn:
            _upsert(conn, table, fresh, keys=("work_key", "strategy_id"), update_=False)
            for part in _parts(ids):
                conn.execute(
                    update(table)
                    .where(table.c.work_key == work_key, table.c.strategy_id.in_(part),
                           table.c.status == CLAIMED,
                           # not the rows just inserted (their lease is this one already)
                           table.c.lease_until_ns < lease_until_ns,
                           (table.c.run_id == run_id) | (table.c.lease_until_ns < now_ns))
                    .values(takeovers=table.c.takeovers + case(
                        (table.c.run_id == run_id, 0), else_=1),
                        run_id=run_id, lease_until_ns=lease_until_ns))
            return self._claim_rows(conn, work_key, ids)

    def claims(self, work_key: str, strategy_ids: Sequence[str]) -> dict[str, ClaimRow]:
        """The claims on ``strategy_ids`` for ``work_key`` as they stand (results of the
        done ones included); strategies nobody claimed are missing."""
        with self._reading() as conn:
            return self._claim_rows(conn, work_key, sorted(set(strategy_ids)))

    def finish_claims(self, work_key: str, run_id: str,
                      results: Mapping[str, tuple[str, bytes | None]]) -> None:
        """Store results (JSON text, binary payload) of work ``run_id`` did: each
        ``claimed`` row becomes ``done`` with ``run_id`` as the one that did it. A row
        already done keeps its result (the same numbers: the work is deterministic)."""
        if not results:
            return
        table = _t(Claim)
        stmt = (update(table)
                .where(table.c.work_key == bindparam("k"),
                       table.c.strategy_id == bindparam("sid"), table.c.status == CLAIMED)
                .values(status=DONE, run_id=bindparam("rid"), result=bindparam("res"),
                        payload=bindparam("pay")))
        rows = [{"k": work_key, "sid": sid, "rid": run_id, "res": res, "pay": pay}
                for sid, (res, pay) in sorted(results.items())]
        with self._writing(f"finish {len(rows)} claims of run {run_id}") as conn:
            conn.execute(stmt, rows)

    def prune_claims(self, older_than_s: float, *, now_ns: int | None = None) -> int:
        """Delete the claims whose lease ended more than ``older_than_s`` seconds ago
        (done work, and work whose owner died); returns how many.

        A done claim keeps its result (engine A: about 6 kB a candidate) only to spare
        a concurrent run the recomputation: a run that finds a claim gone claims it
        again and computes the same numbers, so pruning costs work, never a result.
        A claim whose lease still holds (work in progress) is never deleted. SQLite
        reuses the freed pages (``VACUUM`` gives them back to the file system)."""
        if not older_than_s >= 0:
            raise ValueError(f"older_than_s must be >= 0 seconds; got {older_than_s!r}")
        now = time.time_ns() if now_ns is None else now_ns
        table = _t(Claim)
        cutoff = min(now - int(older_than_s * 1e9), now)
        with self._writing(f"prune claims older than {older_than_s:g} s") as conn:
            return int(conn.execute(delete(table).where(table.c.lease_until_ns < cutoff))
                       .rowcount)

    def claims_of(self, run_id: str) -> pd.DataFrame:
        """Every claim ``run_id`` holds or did (``work_key``, ``strategy_id``,
        ``status``, ``takeovers``), without results."""
        t = _t(Claim)
        return self._frame(select(t.c.work_key, t.c.strategy_id, t.c.status, t.c.takeovers)
                           .where(t.c.run_id == run_id)
                           .order_by(t.c.work_key, t.c.strategy_id))

    @staticmethod
    def _claim_rows(conn: Connection, work_key: str, ids: list[str]) -> dict[str, ClaimRow]:
        table = _t(Claim)
        out: dict[str, ClaimRow] = {}
        for part in _parts(ids):
            for r in conn.execute(select(table).where(table.c.work_key == work_key,
                                                      table.c.strategy_id.in_(part))):
                out[r.strategy_id] = ClaimRow(r.strategy_id, r.run_id, r.status,
                                              r.lease_until_ns, r.takeovers, r.result,
                                              None if r.payload is None else bytes(r.payload))
        return out

    # -- reads: what was tried

    def tested(self, data_ref: str, *, engine: str = "A", window: str = "search",
               exclude_run: str | None = None,
               stored_before: int | None = None) -> pd.DataFrame:
        """One row per strategy evaluated on ``data_ref`` by ``engine`` on ``window``,
        with its backtest fields; when several runs evaluated it, the latest run (by
        ``created_ns``, then iteration) wins. ``exclude_run`` leaves a run out (the
        current one, whose own trials the caller counts itself); ``stored_before``
        keeps only iterations stored before that time (``iterations.stored_ns``; for
        rows stored before that stamp existed, their run's ``finished_ns``): a run's
        "earlier trials", whatever became of the runs that made them (one killed
        mid-way included), and the same whenever it asks. Sorted by strategy id.
        """
        cols = [c.name for c in _t(Backtest).c]
        latest = (Run.created_ns.desc(), Backtest.iteration.desc(), Backtest.run_id.desc())
        rank = func.row_number().over(partition_by=Backtest.strategy_id,
                                      order_by=latest).label("rank")
        where = self._trial_filter(data_ref, engine, window, exclude_run)
        stmt = select(*_t(Backtest).c, rank).join(Run, Run.run_id == Backtest.run_id)
        if stored_before is not None:
            stmt = stmt.join(Iteration, (Iteration.run_id == Backtest.run_id)
                             & (Iteration.iteration == Backtest.iteration))
            where.append(or_(Iteration.stored_ns < stored_before,
                             Iteration.stored_ns.is_(None) & (Run.finished_ns < stored_before)))
        inner = stmt.where(*where).subquery()
        return self._frame(select(*[inner.c[c] for c in cols]).where(inner.c["rank"] == 1)
                           .order_by(inner.c.strategy_id))

    @staticmethod
    def _trial_filter(data_ref: str, engine: str, window: str,
                      exclude_run: str | None) -> list[Any]:
        where = [Backtest.data_ref == data_ref, Backtest.engine == engine,
                 Backtest.window == window]
        if exclude_run is not None:
            where.append(Backtest.run_id != exclude_run)
        return where

    def trial_count(self, data_ref: str, *, exclude_run: str | None = None) -> int:
        """How many distinct strategies were tried on ``data_ref`` (engine A, search
        window): the number of trials a Deflated Sharpe Ratio deflates by."""
        stmt = (select(func.count(func.distinct(Backtest.strategy_id)))
                .where(*self._trial_filter(data_ref, "A", "search", exclude_run)))
        with self._reading() as conn:
            count: int = conn.execute(stmt).scalar_one()
        return count

    def trial_sharpes(self, data_ref: str, *, exclude_run: str | None = None,
                      stored_before: int | None = None) -> np.ndarray:
        """The per-period Sharpe of each trial counted by :meth:`trial_count` (of the
        iterations stored before ``stored_before``, when given), sorted by strategy id;
        NaN where none was recorded."""
        frame = self.tested(data_ref, exclude_run=exclude_run,
                            stored_before=stored_before)
        return np.array([np.nan if v is None or pd.isna(v) else float(v)
                         for v in frame["sharpe_per_period"]], dtype=float)

    def top_strategies(self, n: int = 20, *, data_ref: str | None = None) -> pd.DataFrame:
        """The ``n`` best strategies by their best ``score_total`` anywhere (or only in
        runs on ``data_ref``, :meth:`data_ref` resolves a prefix), with family, params,
        and the run, its data and the iteration that scored it. Equal scores (the score
        is capped at 100) rank what passed every gate first, then the higher DSR, then
        the earliest run; strategies tied on all of these, by id."""
        # ties (a capped score) go to what passed every gate, then to the higher DSR
        best = (Score.score_total.desc(), Score.passed.desc(), Score.dsr.desc().nulls_last(),
                Run.created_ns, Score.iteration, Score.run_id)
        rank = func.row_number().over(partition_by=Score.strategy_id, order_by=best)
        ranked = (select(*_t(Score).c, Run.data_ref, rank.label("rank"))
                  .join(Run, Run.run_id == Score.run_id))
        if data_ref is not None:
            ranked = ranked.where(Run.data_ref == data_ref)
        inner = ranked.subquery()
        stmt = (select(inner.c.strategy_id, Strategy.family, Strategy.params,
                       inner.c.score_total, inner.c.passed, inner.c.policy_version,
                       inner.c.dsr, inner.c.psr, inner.c.run_id, inner.c.data_ref,
                       inner.c.iteration)
                .join(Strategy, Strategy.strategy_id == inner.c.strategy_id)
                .where(inner.c["rank"] == 1)
                .order_by(inner.c.score_total.desc(), inner.c.passed.desc(),
                          inner.c.dsr.desc().nulls_last(), inner.c.strategy_id).limit(n))
        return self._frame(stmt)

    def data_ref(self, ref_or_prefix: str) -> str:
        """The ``data_ref`` of a run in this knowledge base that is ``ref_or_prefix`` or,
        failing that, the only one starting with it (``KB_NOT_FOUND`` /
        ``KB_AMBIGUOUS`` otherwise; `kb runs --json` lists each run's)."""
        try:
            return self._ids_starting(Run.data_ref, ref_or_prefix, "run's data ref")
        except KBError as exc:  # the hex digits without their scheme, as a user types them
            if exc.code != "KB_NOT_FOUND" or ":" in ref_or_prefix:
                raise
            return self._ids_starting(Run.data_ref, f"sha256:{ref_or_prefix}",
                                      "run's data ref")

    def strategy(self, id_or_prefix: str) -> dict[str, Any]:
        """A strategy's canonical spec with every backtest, score and failure it got,
        each list oldest first, and ``survived``: its entry in the ``best_strategies`` of
        each run it survived (the holdout Sharpe is there only: the holdout is never a
        backtest record, so that nothing in a loop reads it). Accepts a unique prefix
        of the id."""
        with self._reading() as conn:
            row = conn.execute(select(_t(Strategy))
                               .where(Strategy.strategy_id == id_or_prefix)).one_or_none()
        sid = id_or_prefix if row is not None else self._ids_starting(
            Strategy.strategy_id, id_or_prefix, "strategy id")
        with self._reading() as conn:
            row = conn.execute(select(_t(Strategy)).where(Strategy.strategy_id == sid)).one()
            out: dict[str, Any] = dict(row._mapping)
            for name, model in (("backtests", Backtest), ("scores", Score),
                                ("failures", Failure)):
                out[name] = self._history(conn, model, sid)
            runs = conn.execute(select(Run.run_id, Run.summary).where(Run.summary.is_not(None))
                                .order_by(Run.created_ns, Run.run_id))
            out["survived"] = [{"run_id": run_id, **best} for run_id, summary in runs
                               for best in (summary or {}).get("best_strategies", [])
                               if best.get("strategy_id") == sid]
        return out

    @staticmethod
    def _history(conn: Connection, model: Any, strategy_id: str) -> list[dict[str, Any]]:
        table = _t(model)
        stmt = (select(*table.c).join(Run, Run.run_id == table.c.run_id)
                .where(table.c.strategy_id == strategy_id)
                .order_by(Run.created_ns, *table.primary_key.columns))
        return [dict(r._mapping) for r in conn.execute(stmt)]

    # -- reads: across runs (kb failures, kb constraints, the retriever)

    def failure_records(self, run_id: str | None = None, *,
                        limit: int | None = None) -> pd.DataFrame:
        """Failure records of every run, or of ``run_id``, newest first (by the run's
        ``created_ns``, then iteration), with the strategy's ``family`` and ``params``
        and the run's ``created_ns``."""
        stmt = (select(*_t(Failure).c, Strategy.family, Strategy.params, Run.created_ns)
                .join(Run, Run.run_id == Failure.run_id)
                .join(Strategy, Strategy.strategy_id == Failure.strategy_id))
        if run_id is not None:
            stmt = stmt.where(Failure.run_id == run_id)
        stmt = stmt.order_by(Run.created_ns.desc(), Failure.run_id, Failure.iteration.desc(),
                             Failure.strategy_id, Failure.stage_id, Failure.code)
        return self._frame(stmt if limit is None else stmt.limit(limit))

    def failure_counts(self, by: Literal["code", "family"] = "code",
                       run_id: str | None = None) -> pd.DataFrame:
        """Failure records per primary ``code`` or per strategy ``family`` (of every run,
        or of ``run_id``): columns ``<by>``, ``failures`` (records), ``strategies`` and
        ``runs`` (distinct), most failures first, then by name (a missing family last)."""
        keys = {"code": Failure.code, "family": Strategy.family}
        if by not in keys:
            raise KBError(f"failures can be counted by code or family, not {by!r}",
                          code="KB_BAD_QUERY", error_class=_PERMANENT)
        key = keys[by]
        columns: list[Any] = [key.label(by), func.count().label("failures"),
                              func.count(func.distinct(Failure.strategy_id)).label("strategies"),
                              func.count(func.distinct(Failure.run_id)).label("runs")]
        stmt = (select(*columns).select_from(Failure)
                .join(Strategy, Strategy.strategy_id == Failure.strategy_id).group_by(key))
        if run_id is not None:
            stmt = stmt.where(Failure.run_id == run_id)
        frame = self._frame(stmt)
        frame = frame.sort_values(["failures", by], ascending=[False, True],
                                  na_position="last", kind="stable")
        return frame.reset_index(drop=True)

    def constraint_set(self, constraint_set_id: str) -> dict[str, Any] | None:
        """One constraint set version (id, parent, run, iteration, note), or None."""
        with self._reading() as conn:
            row = conn.execute(select(_t(ConstraintSet)).where(
                ConstraintSet.constraint_set_id == constraint_set_id)).one_or_none()
        return None if row is None else dict(row._mapping)

    def latest_constraint_set(self, run_id: str | None = None) -> str | None:
        """The id of the newest constraint set of ``run_id`` or, without it, of the newest
        run (by ``created_ns``) that has one; None when there is none."""
        stmt = (select(ConstraintSet.constraint_set_id)
                .join(Run, Run.run_id == ConstraintSet.run_id)
                .order_by(Run.created_ns.desc(), Run.run_id.desc(),
                          func.coalesce(ConstraintSet.iteration, -1).desc(),
                          ConstraintSet.constraint_set_id.desc()).limit(1))
        if run_id is not None:
            stmt = stmt.where(ConstraintSet.run_id == run_id)
        with self._reading() as conn:
            found: str | None = conn.execute(stmt).scalar_one_or_none()
        return found

    def run_constraint_set(self, run_id: str) -> tuple[str, int] | None:
        """(id, iteration) of the constraint set in force at the newest iteration of
        ``run_id`` that had one, from its iterations' summaries; None when none had.
        A set's id is the hash of its rules, so a set two runs reach is stored once,
        under the first: this is the one *this* run used, wherever it was stored."""
        with self._reading() as conn:  # newest first, read only as far as needed
            for iteration, summary in conn.execute(
                    select(Iteration.iteration, Iteration.summary)
                    .where(Iteration.run_id == run_id).order_by(Iteration.iteration.desc())):
                found = (summary or {}).get("constraint_set_id")
                if found:
                    return str(found), int(iteration)
        return None

    def strategy_rows(self, strategy_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored rows (``strategy_id``, ``family``, ``params``, ``spec``) of these
        strategies, by id; ids the knowledge base does not hold are left out."""
        out: dict[str, dict[str, Any]] = {}
        with self._reading() as conn:
            for part in _parts(list(dict.fromkeys(strategy_ids))):
                rows = conn.execute(select(_t(Strategy)).where(Strategy.strategy_id.in_(part)))
                out.update({r.strategy_id: dict(r._mapping) for r in rows})
        return out

    def strategy_index(self) -> pd.DataFrame:
        """One row per strategy, sorted by id: ``strategy_id``, ``family``, ``params``,
        ``spec``, ``best_score`` (its best ``score_total`` anywhere, NaN if never scored)
        and ``runs`` (the runs that backtested it, oldest first). Three queries, whatever
        the number of strategies."""
        strategies = self._frame(select(_t(Strategy)).order_by(Strategy.strategy_id))
        score, backtest = _t(Score).c, _t(Backtest).c
        best = self._frame(select(score.strategy_id,
                                  func.max(score.score_total).label("best_score"))
                           .group_by(score.strategy_id))
        pairs = self._frame(select(backtest.strategy_id, backtest.run_id, _t(Run).c.created_ns)
                            .join(Run, Run.run_id == backtest.run_id).distinct())
        pairs = pairs.sort_values(["created_ns", "run_id"], kind="stable")
        runs = pairs.groupby("strategy_id", sort=False)["run_id"].agg(list).rename("runs")
        out = strategies.merge(best, on="strategy_id", how="left").merge(
            runs, left_on="strategy_id", right_index=True, how="left")
        out["best_score"] = out["best_score"].astype(float)
        out["runs"] = [r if isinstance(r, list) else [] for r in out["runs"]]
        return out.reset_index(drop=True)

    # -- reads: the whole database

    def revision(self) -> str | None:
        """The schema revision the database is at."""
        with self._reading() as conn:
            value: str | None = conn.execute(
                text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
        return value

    def stats(self) -> dict[str, Any]:
        """Row counts per table, runs per status, where the database is and its size,
        and its schema revision."""
        with self._reading() as conn:
            counts = {name: conn.execute(select(func.count()).select_from(
                Base.metadata.tables[name])).scalar_one() for name in TABLES}
            by_status = dict(conn.execute(select(Run.status, func.count())
                                          .group_by(Run.status).order_by(Run.status)).all())
        return {"url": make_url(self.url).render_as_string(hide_password=True),
                "path": None if self.path is None else str(self.path),
                "file_bytes": _size(self.path), "wal_bytes": _size(_wal_file(self.path)),
                "revision": self.revision(), "head": migrations.head(), "tables": counts,
                "runs_by_status": by_status}


def _wal_file(path: Path | None) -> Path | None:
    return None if path is None else path.with_name(path.name + "-wal")


def _size(path: Path | None) -> int | None:
    try:
        return None if path is None else path.stat().st_size
    except OSError:
        return None
