"""Group commit (``alphaloop.world.commit.GroupCommit``): concurrent writes of one
process share a transaction and its fsync, each in its own savepoint. What must hold:
a request's failure undoes its own writes only, a failed commit fails (and stores) none
of its group, requests of one group see each other's writes in queue order, and through
a real server every write is stored once.

Groups are made deterministic, not timed: the test holds the writer lock, so the first
request leads a group of itself and waits on the lock while the others queue behind it;
when all are queued the lock is let go, and the rest commit as one group."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import SMA, free_port, make_tokens
from sqlalchemy import Connection, func, insert, select
from sqlalchemy.orm import Session

from alphaloop.kb import dispose_engines
from alphaloop.world import audit
from alphaloop.world.app import create_app
from alphaloop.world.commit import GroupCommit
from alphaloop.world.db import _SQLITE, Database
from alphaloop.world.errors import WorldError, invalid
from alphaloop.world.models import AuditEntry, EvaluationRevision, EvaluationRun, World, table
from alphaloop.world.schemas import EvaluateIn, WorldIn
from alphaloop.world.service import WorldService


def _group(db: Database) -> GroupCommit:
    group = db._group
    assert group is not None
    return group


def _queued(group: GroupCommit) -> int:
    with group._mutex:
        return len(group._queue)


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "the requests never queued"
        time.sleep(0.01)


def _in_one_group(db: Database, works: list[Callable[[Session], Any]]) -> list[Future[Any]]:
    """Run ``works`` concurrently through ``db.transact``: the first alone, the others
    queued behind it and so committed together (the writer lock is held meanwhile)."""
    pool = ThreadPoolExecutor(len(works))
    with db._writer:  # hold back the first leader
        futures = [pool.submit(db.transact, works[0])]
        _wait_for(lambda: _queued(_group(db)) == 1)
        futures += [pool.submit(db.transact, w) for w in works[1:]]
        _wait_for(lambda: _queued(_group(db)) == len(works))
    pool.shutdown(wait=True)
    return futures


def _record(target: str, fail: Exception | None = None) -> Callable[[Session], str]:
    def work(conn: Session) -> str:
        audit.record(conn, actor="t", action="test.write", target=target)
        if fail is not None:
            raise fail
        return target
    return work


def _targets(db: Database) -> list[str]:
    with db.read() as conn:
        return sorted(conn.execute(select(AuditEntry.target).where(
            AuditEntry.action == "test.write")).scalars())


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'kb.sqlite'}")
    yield database
    database.close()


def test_a_failing_request_loses_only_its_own_writes(db: Database) -> None:
    def conflict(conn: Session) -> None:  # writes, then violates a primary key
        audit.record(conn, actor="t", action="test.write", target="conflict")
        for _ in range(2):
            conn.execute(insert(table(World)), dict(world_id="dup", name="", data=None,
                                                    policy_version=None, created_at=0.0))

    works = [_record("a"), _record("b"), _record("bad", invalid("x", "refused")),
             conflict, _record("c")]
    futures = _in_one_group(db, works)
    assert [f.result() for f in (futures[0], futures[1], futures[4])] == ["a", "b", "c"]
    with pytest.raises(WorldError) as refused:
        futures[2].result()
    assert (refused.value.status, refused.value.code) == (422, "INVALID_REQUEST")
    with pytest.raises(WorldError) as conflicted:
        futures[3].result()
    assert (conflicted.value.status, conflicted.value.code) == (409, "CONFLICT")
    assert _targets(db) == ["a", "b", "c"]
    group = _group(db)
    assert (group.groups, group.writes) == (2, 5)  # the first alone, then four together
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(World)).scalar_one() == 0


def test_a_failed_commit_fails_and_stores_none_of_its_group(db: Database) -> None:
    group = _group(db)
    real = group.transaction

    @contextlib.contextmanager
    def failing() -> Iterator[Connection]:
        with real() as conn:
            yield conn
            raise sqlite3.OperationalError("disk I/O error")  # as a failed COMMIT would

    group.transaction = failing
    futures = _in_one_group(db, [_record(str(i)) for i in range(4)])
    for future in futures:
        with pytest.raises(WorldError) as failed:
            future.result()
        assert failed.value.status == 503
    assert len({id(f.exception()) for f in futures}) == 4  # each request its own error
    assert _targets(db) == []
    group.transaction = real
    assert db.transact(_record("after")) == "after"  # the queue is not stuck
    assert _targets(db) == ["after"]


def test_a_transaction_lost_midway_fails_the_rest_of_its_group(db: Database) -> None:
    def lost(conn: Session) -> None:  # SQLite rolls the whole transaction back itself
        audit.record(conn, actor="t", action="test.write", target="lost")  # on a full disk
        conn.info[_SQLITE].execute("ROLLBACK")

    futures = _in_one_group(db, [_record("alone"), _record("a"), lost, _record("b")])
    assert futures[0].result() == "alone"
    for future in futures[1:]:
        with pytest.raises(WorldError) as failed:
            future.result()
        assert failed.value.status == 503
    assert _targets(db) == ["alone"]  # "a" was in the lost transaction, "b" never ran
    assert db.transact(_record("after")) == "after"
    assert _targets(db) == ["after", "alone"]


def test_one_run_twice_in_one_group_is_revisions_1_and_2(db: Database, tmp_path: Path) -> None:
    service = WorldService(db, tmp_path)
    service.create_world(WorldIn(world_id="w"), "t#1")

    def evaluate(run_id: str, sharpe: float) -> Callable[[Session], Any]:
        body = EvaluateIn(run_id=run_id, spec=SMA,
                          metrics={"sharpe": sharpe, "max_drawdown": -0.1, "n_trades": 50})

        def work(conn: Session) -> Any:
            judged = service._judge_request(conn, "w", body)
            return service.write(conn, judged, "t#1")
        return work

    works = [evaluate("first", 1.0), evaluate("same", 1.0), evaluate("other", 1.0),
             evaluate("same", 2.0), evaluate("same", 2.0)]  # the last is a retry: no-op
    futures = _in_one_group(db, works)
    results = [f.result() for f in futures]
    assert [(rev.revision, written) for rev, written in results[1:]] == [
        (1, True), (1, True), (2, True), (2, False)]
    run = service.get_run("w", "same")
    assert [r.revision for r in run.revisions] == [1, 2]
    assert [r.metrics["sharpe"] for r in run.revisions] == [1.0, 2.0]
    with db.read() as conn:
        actions = conn.execute(select(AuditEntry.action, AuditEntry.target).where(
            AuditEntry.action.like("evaluation.%")).order_by(AuditEntry.audit_id)).all()
    assert [tuple(a) for a in actions] == [
        ("evaluation.create", "first@1"), ("evaluation.create", "same@1"),
        ("evaluation.create", "other@1"), ("evaluation.revise", "same@2")]
    assert (_group(db).groups, _group(db).writes) == (2, 5)  # the first alone, then 4


@contextlib.contextmanager
def _serving(db_url: str, refs: Path) -> Iterator[tuple[str, Any]]:
    """The app on a real uvicorn server in this process (its group commit readable)."""
    app = create_app(db_url, refs_root=refs)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_for(lambda: server.started)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(30)


def test_concurrent_writes_through_a_server_are_stored_once(tmp_path: Path) -> None:
    (tmp_path / "refs").mkdir()
    db_url = f"sqlite:///{tmp_path / 'kb.sqlite'}"
    token = make_tokens(db_url)["operator"]
    dispose_engines()
    with _serving(db_url, tmp_path / "refs") as (url, app), \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                         timeout=60) as http:
        http.post("/worlds", json={"world_id": "w"}).raise_for_status()
        db: Database = app.state.service.db

        def post(i: int) -> int:
            if i % 2:
                return http.post("/risk-hub/snapshots", json={
                    "world_id": "w", "as_of": datetime.now(UTC).isoformat(),
                    "weights": {"A": 0.5}, "provenance": {"seq": i}}).status_code
            return http.post("/worlds/w/evaluate", json={
                "run_id": f"r{i // 2 % 6}", "spec": SMA,
                "metrics": {"sharpe": 1.0 + i, "max_drawdown": -0.1, "n_trades": 50}}
            ).status_code

        n = 48
        with ThreadPoolExecutor(8) as pool, db._writer:
            futures = [pool.submit(post, i) for i in range(n)]
            _wait_for(lambda: _queued(_group(db)) >= 2)  # a group of more than one
        assert [f.result() for f in futures] == [200] * n
        group = _group(db)
        assert group.writes == n and group.groups < group.writes
        with db.read() as conn:
            runs = dict(conn.execute(select(EvaluationRun.run_id, EvaluationRun.revision)).all())
            revisions = conn.execute(select(EvaluationRevision.run_id,
                                            EvaluationRevision.revision)).all()
            actions = conn.execute(select(AuditEntry.action, func.count())
                                   .where(AuditEntry.world_id == "w")
                                   .group_by(AuditEntry.action)).all()
    # 24 evaluations of r0..r5 (every sharpe differs): four revisions each, no gap
    assert runs == {f"r{k}": 4 for k in range(6)}
    assert sorted(revisions) == sorted((f"r{k}", v) for k in range(6) for v in range(1, 5))
    assert dict(actions) == {"world.create": 1, "evaluation.create": 6,
                             "evaluation.revise": 18, "snapshot.post": 24}
