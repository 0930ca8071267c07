"""Seed 004 §6.5: a locked or read-only database → the iteration is queued in a
write-ahead log and replayed later; no record is lost, none is doubled.

The lock is real: another sqlite3 connection holds ``BEGIN EXCLUSIVE`` on the file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from _kb_records import batch, dump, open_kb, run

from alphaloop.errors import ErrorClass
from alphaloop.kb import KBError, KnowledgeBase


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "kb.sqlite"
    open_kb(path).save_run(run())
    return path


@pytest.fixture
def lock(db: Path) -> Iterator[sqlite3.Connection]:
    """Another process's write lock on the database, held until released."""
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    yield holder
    if holder.in_transaction:
        holder.execute("ROLLBACK")
    holder.close()


def _release(holder: sqlite3.Connection) -> None:
    holder.execute("ROLLBACK")


def _reference(tmp_path: Path, iterations: range) -> Path:
    """The same run persisted with no lock at all: what every path must end with."""
    path = tmp_path / "reference.sqlite"
    kb = open_kb(path)
    kb.save_run(run())
    for i in iterations:
        kb.persist_iteration(batch(iteration=i))
    return path


def test_a_locked_database_is_a_transient_db_locked(db: Path,
                                                    lock: sqlite3.Connection) -> None:
    kb = open_kb(db, timeout=0.1)
    with pytest.raises(KBError) as err:
        kb.persist_iteration(batch(iteration=0))
    assert (err.value.code, err.value.error_class) == ("DB_LOCKED", ErrorClass.TRANSIENT)
    assert str(db) in err.value.message
    with pytest.raises(KBError) as status:
        kb.set_run_status("run-a", "STOPPED")
    assert status.value.code == "DB_LOCKED"
    assert kb.iterations("run-a").empty  # reads go on: WAL readers do not wait


def test_locked_iterations_are_queued_then_replayed_losing_nothing(
        db: Path, lock: sqlite3.Connection, tmp_path: Path) -> None:
    kb = open_kb(db, timeout=0.1)
    wal = tmp_path / "queue" / "kb_wal.jsonl"
    assert kb.persist_or_queue(batch(iteration=0), wal) == "queued"
    assert kb.persist_or_queue(batch(iteration=1), wal) == "queued"
    lines = wal.read_text().splitlines()
    assert [json.loads(line)["batch"]["iteration"]["iteration"] for line in lines] == [0, 1]
    assert kb.stats()["tables"]["iterations"] == 0

    _release(lock)
    assert kb.replay(wal) == 2
    assert not wal.exists()
    assert dump(db, stamps=False) == dump(_reference(tmp_path, range(2)), stamps=False)
    assert kb.replay(wal) == 0  # nothing left to do


def test_the_next_persist_replays_the_queue_first(db: Path, lock: sqlite3.Connection,
                                                  tmp_path: Path) -> None:
    kb = open_kb(db, timeout=0.1)
    wal = tmp_path / "kb_wal.jsonl"
    assert kb.persist_or_queue(batch(iteration=0), wal) == "queued"
    _release(lock)
    assert kb.persist_or_queue(batch(iteration=1), wal) == "persisted"
    assert not wal.exists()
    assert dump(db, stamps=False) == dump(_reference(tmp_path, range(2)), stamps=False)


def test_replaying_twice_changes_nothing(db: Path, lock: sqlite3.Connection,
                                         tmp_path: Path) -> None:
    """A crash between the commit and the deletion of the log replays it again."""
    kb = open_kb(db, timeout=0.1)
    wal = tmp_path / "kb_wal.jsonl"
    kb.persist_or_queue(batch(iteration=0), wal)
    _release(lock)
    saved = wal.read_bytes()
    kb.replay(wal)
    after_first = dump(db)
    wal.write_bytes(saved)
    assert kb.replay(wal) == 1
    assert dump(db) == after_first


def test_a_replay_that_meets_the_lock_keeps_the_log(db: Path, lock: sqlite3.Connection,
                                                    tmp_path: Path) -> None:
    kb = open_kb(db, timeout=0.1)
    wal = tmp_path / "kb_wal.jsonl"
    kb.persist_or_queue(batch(iteration=0), wal)
    saved = wal.read_bytes()
    with pytest.raises(KBError) as err:
        kb.replay(wal)
    assert err.value.code == "DB_LOCKED"
    assert wal.read_bytes() == saved


def test_a_read_only_database_queues_too(db: Path, tmp_path: Path) -> None:
    read_only = KnowledgeBase(f"sqlite:///file:{db}?mode=ro&uri=true")
    with pytest.raises(KBError) as err:
        read_only.persist_iteration(batch(iteration=0))
    assert (err.value.code, err.value.error_class) == ("KB_WRITE_FAIL", ErrorClass.TRANSIENT)
    assert "read-only" in err.value.message
    wal = tmp_path / "kb_wal.jsonl"
    assert read_only.persist_or_queue(batch(iteration=0), wal) == "queued"
    assert open_kb(db).replay(wal) == 1
    assert dump(db, stamps=False) == dump(_reference(tmp_path, range(1)), stamps=False)


def test_a_permanent_failure_is_raised_not_queued(tmp_path: Path) -> None:
    kb = open_kb(tmp_path / "kb.sqlite")  # no run saved: the batch can never be stored
    wal = tmp_path / "kb_wal.jsonl"
    with pytest.raises(KBError) as err:
        kb.persist_or_queue(batch(iteration=0), wal)
    assert err.value.error_class is ErrorClass.PERMANENT
    assert not wal.exists()


def test_a_torn_last_line_is_dropped_and_a_damaged_line_stops_the_replay(
        db: Path, lock: sqlite3.Connection, tmp_path: Path) -> None:
    kb = open_kb(db, timeout=0.1)
    wal = tmp_path / "kb_wal.jsonl"
    kb.persist_or_queue(batch(iteration=0), wal)
    with wal.open("ab") as fh:  # an append that crashed halfway: never acknowledged
        fh.write(b'{"type": "IterationBatch", "batch": {"itera')
    kb.persist_or_queue(batch(iteration=1), wal)
    assert len(wal.read_text().splitlines()) == 2  # the torn piece is gone
    _release(lock)

    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(b"{not json}\n" + wal.read_bytes())
    with pytest.raises(KBError) as err:
        kb.replay(damaged)
    assert (err.value.code, err.value.error_class) == ("KB_WAL_CORRUPT", ErrorClass.CRITICAL)
    assert "line 1" in err.value.message
    assert damaged.exists() and kb.stats()["tables"]["iterations"] == 0

    assert kb.replay(wal) == 2
    assert dump(db, stamps=False) == dump(_reference(tmp_path, range(2)), stamps=False)
