"""``alphaloop.world.db.Prepared``: the hot path's statements run on SQLite's driver store
exactly what SQLAlchemy Core stores, in the same transaction, with the same errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select, text

from alphaloop.world.db import _SQLITE, Database, Prepared
from alphaloop.world.errors import WorldError
from alphaloop.world.models import (
    ApiToken,
    ControlEvent,
    EvaluationRevision,
    EvaluationRun,
    RiskSnapshot,
    World,
    table,
)

RUN = {"world_id": "w", "strategy_id": "s" * 64, "stage": "backtest", "revision": 1,
       "outcome": "pass", "created_at": 1.5, "updated_at": 2.5}
REVISION = {"world_id": "w", "revision": 1, "content_hash": "h" * 64, "policy_version": 1,
            "ruleset_hash": "r" * 64, "metric_sources": ["request"], "outcome": "pass",
            "actor": "a#1", "created_at": 1.25}


def _db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'kb.sqlite'}")
    with db.write() as conn:
        conn.execute(insert(table(World)), dict(world_id="w", name="", data=None,
                                                policy_version=None, created_at=0.0))
    return db


def _stored(db: Database, name: str, key: str, value: Any) -> list[tuple[Any, ...]]:
    """Every column of the row as SQLite stores it: its type and its text."""
    with db.read() as conn:
        columns = [r[1] for r in conn.execute(text(f"PRAGMA table_info({name})"))]
        parts = ", ".join(f"typeof({c}), CAST({c} AS TEXT)" for c in columns if c != key)
        row = conn.execute(text(f"SELECT {parts} FROM {name} WHERE {key} = :v"), {"v": value})
        return [tuple(row.one())]


@pytest.mark.parametrize("values", [
    {"metrics": {"sharpe": 1.0, "max_drawdown": -0.1, "n_trades": 5, "x": None},
     "risk": None, "rules": [{"rule": "min_sharpe", "value": 1e-07, "reason": "é ü"}],
     "spec": {"entry": "close > 0", "exit": "close < 0"}},
    {"metrics": {}, "risk": {"weights": {"A": 0.5}, "as_of": "2026-12-01T00:00:00+00:00"},
     "rules": [], "spec": None},
])
def test_inserts_store_what_core_stores(tmp_path: Path, values: dict[str, Any]) -> None:
    db = _db(tmp_path)
    run_cols = (*RUN, "run_id", "spec")
    rev_cols = (*REVISION, "run_id", "metrics", "risk", "rules")
    runs = Prepared(insert(table(EvaluationRun)), run_cols)
    revisions = Prepared(insert(table(EvaluationRevision)), rev_cols)
    for run_id, driver in (("core", False), ("driver", True)):
        with db.write() as conn:
            if not driver:
                del conn.info[_SQLITE]  # as on other databases: through Core
            runs.run(conn, {**RUN, "run_id": run_id, "spec": values["spec"]})
            revisions.run(conn, {**REVISION, "run_id": run_id, "metrics": values["metrics"],
                                 "risk": values["risk"], "rules": values["rules"]})
    for name, model in (("evaluation_runs", EvaluationRun),
                        ("evaluation_revisions", EvaluationRevision)):
        assert _stored(db, name, "run_id", "core") == _stored(db, name, "run_id", "driver")
        with db.read() as conn:  # and Core reads back the same values
            rows = conn.execute(select(model).order_by(model.run_id)).scalars().all()
            keys = [c.key for c in table(model).c if c.key != "run_id"]
            assert [getattr(rows[0], k) for k in keys] == [getattr(rows[1], k) for k in keys]
    db.close()


def test_returning_and_select_answer_as_core_does(tmp_path: Path) -> None:
    db = _db(tmp_path)
    snap = table(RiskSnapshot)
    cols = ("content_hash", "world_id", "strategy_id", "as_of", "ttl_s", "ingested_at", "body")
    stmt = Prepared(insert(snap).returning(snap.c.snapshot_id), cols)
    events = Prepared(insert(table(ControlEvent)), ("world_id", "type", "payload", "ts"))
    by_world = Prepared(select(snap.c.snapshot_id, snap.c.as_of, snap.c.strategy_id)
                        .where(snap.c.content_hash == bindparam("h")))
    got = []
    for i, driver in enumerate((False, True)):
        with db.write() as conn:
            if not driver:
                del conn.info[_SQLITE]
            body = {"weights": {"A": 0.5}, "realized_returns": [0.1, -0.2], "n": None}
            got.append(stmt.run(conn, {"content_hash": f"{i}" * 64, "world_id": "w",
                                       "strategy_id": "", "as_of": 1.0, "ttl_s": 60.0,
                                       "ingested_at": 2.0, "body": body}))
            assert events.run(conn, {"world_id": "w", "type": "t", "payload": {"k": [i]},
                                     "ts": 3.0}) is None
            row = by_world.first(conn, {"h": f"{i}" * 64})
            assert row is not None and tuple(row) == (got[-1], 1.0, "")
            assert by_world.first(conn, {"h": "x" * 64}) is None
    assert got == [1, 2]
    a, b = (_stored(db, "risk_snapshots", "snapshot_id", n) for n in got)
    assert [x for x in a[0] if x != "0" * 64] == [x for x in b[0] if x != "1" * 64]
    assert _stored(db, "control_events", "event_id", 1)[0][:4] == \
        _stored(db, "control_events", "event_id", 2)[0][:4]
    db.close()


def test_a_conflict_is_a_409_and_nothing_of_the_transaction_stays(tmp_path: Path) -> None:
    db = _db(tmp_path)
    events = Prepared(insert(table(ControlEvent)), ("world_id", "type", "payload", "ts"))
    runs = Prepared(insert(table(EvaluationRun)), (*RUN, "run_id", "spec"))
    with db.write() as conn:
        runs.run(conn, {**RUN, "run_id": "r", "spec": None})
    with pytest.raises(WorldError) as caught, db.write() as conn:
        events.run(conn, {"world_id": "w", "type": "t", "payload": {}, "ts": 1.0})
        runs.run(conn, {**RUN, "run_id": "r", "spec": None})  # the same key again
    assert (caught.value.status, caught.value.code) == (409, "CONFLICT")
    with db.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM control_events")).scalar_one() == 0
    db.close()


def test_only_types_bound_as_they_are_are_accepted() -> None:
    with pytest.raises(TypeError, match="revoked"):  # a Boolean is bound as an integer
        Prepared(insert(table(ApiToken)), ("token_id", "revoked"))
