"""The risk guard's trips (MOD-482, seed 004 §5.1): a breach halts a strategy.

A producer (the paper runner, operator role) reports the breach it saw on a bar; the
trip is stored, audited and announced on the control bus (``RISK_GUARD_TRIPPED``) in
one transaction, and holds across restarts: ``/decide`` answers backtest-only and the
campaign shows ``RISK_GUARD_TRIPPED:<rule>`` until an operator resets it (audited,
``RISK_GUARD_RESET``). The same breach reported again (same rule and bar, not reset)
is the same trip.
"""

from __future__ import annotations

import time

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from alphaloop.world import audit
from alphaloop.world.errors import WorldError
from alphaloop.world.models import RiskTrip, table
from alphaloop.world.schemas import GuardOut, TripIn, TripOut
from alphaloop.world.service import WorldService, ts


def active_trip(conn: Session, world_id: str, strategy_id: str) -> RiskTrip | None:
    return conn.execute(select(RiskTrip).where(
        RiskTrip.world_id == world_id, RiskTrip.strategy_id == strategy_id,
        RiskTrip.reset_at.is_(None)).order_by(RiskTrip.trip_id.desc()).limit(1)
    ).scalar_one_or_none()


def _out(row: RiskTrip, created: bool = False) -> TripOut:
    return TripOut(trip_id=row.trip_id, world_id=row.world_id, strategy_id=row.strategy_id,
                   rule=row.rule, value=row.value, limit=row.limit_value,  # type: ignore[arg-type]
                   bar=row.bar, tripped_at=ts(row.tripped_at), actor=row.actor,  # type: ignore[arg-type]
                   reset_at=None if row.reset_at is None else ts(row.reset_at),
                   reset_by=row.reset_by, created=created)


class RiskGuard:
    def __init__(self, service: WorldService) -> None:
        self.service = service

    def trip(self, world_id: str, body: TripIn, actor: str) -> TripOut:
        bar = body.bar.isoformat()
        with self.service.db.write() as conn:
            self.service.load(conn, world_id)
            found = active_trip(conn, world_id, body.strategy_id)
            if found is not None:  # halted already: the first trip stands
                return _out(found)
            values = dict(world_id=world_id, strategy_id=body.strategy_id, rule=body.rule,
                          value=body.value, limit_value=body.limit, bar=bar,
                          tripped_at=time.time(), actor=actor, reset_at=None, reset_by=None)
            stmt = insert(table(RiskTrip)).returning(table(RiskTrip).c.trip_id)
            trip_id = conn.execute(stmt, values).scalar_one()
            audit.record(conn, actor=actor, action="risk_guard.trip", world_id=world_id,
                         target=f"{body.strategy_id}#{trip_id}:{body.rule}",
                         after=audit.content_hash({k: v for k, v in values.items()
                                                   if k != "tripped_at"}))
            audit.emit(conn, world_id, "RISK_GUARD_TRIPPED",
                       {"trip_id": trip_id, "strategy_id": body.strategy_id,
                        "rule": body.rule, "value": body.value, "limit": body.limit,
                        "bar": bar, "severity": "CRITICAL"})
            return _out(RiskTrip(trip_id=trip_id, **values), created=True)

    def status(self, world_id: str, strategy_id: str) -> GuardOut:
        with self.service.db.read() as conn:
            self.service.load(conn, world_id)
            row = active_trip(conn, world_id, strategy_id)
            newest = row or conn.execute(select(RiskTrip).where(
                RiskTrip.world_id == world_id, RiskTrip.strategy_id == strategy_id)
                .order_by(RiskTrip.trip_id.desc()).limit(1)).scalar_one_or_none()
        return GuardOut(world_id=world_id, strategy_id=strategy_id, halted=row is not None,
                        trip=None if newest is None else _out(newest))

    def reset(self, world_id: str, strategy_id: str, actor: str) -> TripOut:
        now = time.time()
        with self.service.db.write() as conn:
            self.service.load(conn, world_id)
            row = active_trip(conn, world_id, strategy_id)
            if row is None:
                raise WorldError(f"strategy_id: {strategy_id[:12]}… is not halted",
                                 code="NOT_HALTED", status=409, field="strategy_id")
            conn.execute(update(RiskTrip).where(RiskTrip.trip_id == row.trip_id)
                         .values(reset_at=now, reset_by=actor))
            audit.record(conn, actor=actor, action="risk_guard.reset", world_id=world_id,
                         target=f"{strategy_id}#{row.trip_id}:{row.rule}")
            audit.emit(conn, world_id, "RISK_GUARD_RESET",
                       {"trip_id": row.trip_id, "strategy_id": strategy_id})
            row.reset_at, row.reset_by = now, actor
            return _out(row)
