"""The risk signal hub (seed §1, §3): snapshots stored as producers post them.

The hub computes nothing about risk; it keeps each snapshot with its content hash
(re-posting the same content is a no-op), answers the newest one per world and
strategy, and judges staleness two ways: by TTL since ingestion, and by the age of
``as_of`` — an old snapshot posted just now is stale. Realized returns come inline or
as a reference to a Parquet file under the service's refs root (``..`` and absolute
paths are refused, so a request cannot make the service read other files).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from alphaloop.world import audit
from alphaloop.world.db import Prepared
from alphaloop.world.errors import WorldError, invalid
from alphaloop.world.models import RiskSnapshot, table
from alphaloop.world.schemas import SnapshotIn, SnapshotOut
from alphaloop.world.service import WorldService, WorldState, ts
from alphaloop.world.sourcing import HubView, resolve_ref

_FUTURE_SKEW_S = 300.0  # clocks differ; an as_of further ahead than this is an error
_SNAP = table(RiskSnapshot)
# built once (a statement costs more to build than to run)
_BY_HASH = select(_SNAP).where(_SNAP.c.content_hash == bindparam("content_hash"))
_SEEN = Prepared(select(_SNAP.c.snapshot_id).where(
    _SNAP.c.content_hash == bindparam("content_hash")))  # the whole row only when seen
_INSERT = Prepared(insert(_SNAP).returning(_SNAP.c.snapshot_id),
                   ("content_hash", "world_id", "strategy_id", "as_of", "ttl_s", "ingested_at",
                    "body"))


@dataclass(frozen=True)
class Snapshot:
    """A ``risk_snapshots`` row (what :func:`snapshot_out` reads)."""

    snapshot_id: int
    content_hash: str
    world_id: str
    strategy_id: str
    as_of: float
    ttl_s: float
    ingested_at: float
    body: dict[str, Any]


def read_returns(path: Path) -> np.ndarray:
    """The ``returns`` column (or the only column) of a stored Parquet file."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise invalid("realized_returns_ref", f"cannot be read as Parquet: {exc}",
                      "REF_INVALID") from exc
    column = "returns" if "returns" in frame.columns else (
        frame.columns[0] if len(frame.columns) == 1 else None)
    if column is None:
        raise invalid("realized_returns_ref", "needs a 'returns' column", "REF_INVALID")
    values = frame[column].to_numpy(dtype=float)
    if len(values) < 2 or not np.isfinite(values).all():
        raise invalid("realized_returns_ref", "needs 2 or more finite returns", "REF_INVALID")
    return values


def stale_reasons(row: RiskSnapshot | Snapshot, state: WorldState, now: float) -> list[str]:
    reasons = []
    if now > row.ingested_at + row.ttl_s:
        reasons.append("TTL_EXPIRED")
    if now - row.as_of > state.policy.freshness.snapshot_max_age:
        reasons.append("AS_OF_TOO_OLD")
    return reasons


def latest_row(conn: Session, world_id: str, strategy_id: str) -> RiskSnapshot | None:
    stmt = (select(RiskSnapshot).where(RiskSnapshot.world_id == world_id,
                                       RiskSnapshot.strategy_id == strategy_id)
            .order_by(RiskSnapshot.snapshot_id.desc()).limit(1))
    return conn.execute(stmt).scalar_one_or_none()


def hub_view(conn: Session, refs_root: Path, state: WorldState,
             strategy_id: str) -> HubView | None:
    row = latest_row(conn, state.world.world_id, strategy_id)
    if row is None:
        return None
    body = row.body
    returns = None
    if body.get("realized_returns") is not None:
        returns = np.asarray(body["realized_returns"], dtype=float)
    elif body.get("realized_returns_ref") is not None:
        returns = read_returns(resolve_ref(refs_root, body["realized_returns_ref"], "realized_returns_ref"))
    risk = {"snapshot_hash": row.content_hash, "as_of": ts(row.as_of).isoformat(),
            "weights": body.get("weights"), "covariance": body.get("covariance"),
            "stress": body.get("stress")}
    trades = (body.get("provenance") or {}).get("n_trades")
    return HubView(row.content_hash, stale_reasons(row, state, time.time()), risk, returns,
                   float(body.get("periods_per_year", 252.0)),
                   _count(trades))


def _count(value: Any) -> int | float | None:
    """A count as stated: 5 stays 5 (the metrics show what the producer posted); a
    stored value that is no finite number (posted before ingestion checked it) is
    unknown, not a failure of every read of the world."""
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not np.isfinite(value):
        return None
    return int(value) if float(value).is_integer() else float(value)


def snapshot_out(row: RiskSnapshot | Snapshot, state: WorldState, created: bool) -> SnapshotOut:
    reasons = stale_reasons(row, state, time.time())
    return SnapshotOut(snapshot_id=row.snapshot_id, content_hash=row.content_hash,
                       world_id=row.world_id, strategy_id=row.strategy_id, as_of=ts(row.as_of),
                       ttl_s=row.ttl_s, ingested_at=ts(row.ingested_at), body=row.body,
                       created=created, stale=bool(reasons), stale_reasons=reasons)


def _checked_body(service: WorldService, snap: SnapshotIn) -> dict[str, Any]:
    if snap.as_of.timestamp() > time.time() + _FUTURE_SKEW_S:
        raise invalid("as_of", "lies in the future", "AS_OF_IN_FUTURE")
    if snap.realized_returns is not None and snap.realized_returns_ref is not None:
        raise invalid("realized_returns_ref", "give realized_returns or a ref, not both")
    if snap.realized_returns_ref is not None:
        read_returns(resolve_ref(service.refs_root, snap.realized_returns_ref, "realized_returns_ref"))
    n = len(snap.covariance or [])
    if any(len(row) != n for row in snap.covariance or []):
        raise invalid("covariance", "must be a square matrix")
    # one instant, one text: "+09:00" and "Z" forms of the same as_of hash alike
    return snap.model_copy(update={"as_of": snap.as_of.astimezone(UTC)}).model_dump(mode="json")


def post_snapshot(service: WorldService, snap: SnapshotIn, actor: str) -> SnapshotOut:
    """Store a snapshot (one transaction with its audit record and its
    ``risk_snapshot_updated`` event); the same content again changes nothing."""
    body = _checked_body(service, snap)
    digest = audit.content_hash(body)

    def store(conn: Session) -> tuple[Snapshot, WorldState, bool]:
        state = service.load(conn, snap.world_id)
        if _SEEN.first(conn, {"content_hash": digest}) is not None:
            found = conn.execute(_BY_HASH, {"content_hash": digest}).one()
            return Snapshot(**found._mapping), state, False
        ttl = snap.ttl_s if snap.ttl_s is not None else state.policy.freshness.snapshot_ttl
        values = dict(content_hash=digest, world_id=snap.world_id, strategy_id=snap.strategy_id,
                      as_of=snap.as_of.timestamp(), ttl_s=ttl, ingested_at=time.time(),
                      body=body)
        snapshot_id = _INSERT.run(conn, values)
        audit.record(conn, actor=actor, action="snapshot.post", world_id=snap.world_id,
                     target=f"{snap.strategy_id or '*'}#{snapshot_id}", after=digest)
        audit.emit(conn, snap.world_id, "risk_snapshot_updated",
                   {"snapshot_id": snapshot_id, "strategy_id": snap.strategy_id,
                    "content_hash": digest, "as_of": body["as_of"]})
        return Snapshot(snapshot_id=snapshot_id, **values), state, True  # type: ignore[arg-type]

    row, state, created = service.db.transact(store)  # the answer is built after commit
    return snapshot_out(row, state, created)


def latest_snapshot(service: WorldService, world_id: str, strategy_id: str) -> SnapshotOut:
    with service.db.read() as conn:
        state = service.load(conn, world_id)
        row = latest_row(conn, world_id, strategy_id)
    if row is None:
        raise WorldError(f"no risk snapshot for world {world_id!r} and strategy "
                         f"{strategy_id or '*'!r}", code="SNAPSHOT_NOT_FOUND", status=404)
    return snapshot_out(row, state, created=False)

