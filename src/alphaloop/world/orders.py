"""Paper orders in the knowledge base: posted by the paper runner after each bar (the
orders decided, filled or ended in it, and those still working), in one transaction
with their audit record.

An order is one row, keyed by the bar it was decided at, its symbol and its place
among that symbol's orders decided at that bar. Its outcome changes as later bars fill
or end it, so a row is updated when a report *as of a later bar* differs from it; a
report as of the same or an earlier bar changes nothing, so a bar posted again after
a crash adds nothing (and writes no audit record)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from alphaloop.world import audit
from alphaloop.world.models import PaperOrder, table
from alphaloop.world.schemas import OrderOut, OrdersIn, OrdersOut
from alphaloop.world.service import WorldService

# what a report may change (the key and the order's own terms aside from its sizing)
_OUTCOME = ("side", "quantity", "target_weight", "reason", "filled_quantity", "n_fills",
            "last_fill_ts", "ended_ts", "status")


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat()


def record_orders(service: WorldService, world_id: str, body: OrdersIn,
                  actor: str) -> OrdersOut:
    as_of = body.as_of.astimezone(UTC)
    posted: dict[tuple[str, str, int], dict[str, Any]] = {}
    for o in body.orders:
        key = (o.ts.astimezone(UTC).isoformat(), o.symbol, o.seq)
        posted[key] = dict(order_ts=key[0], symbol=o.symbol, seq=o.seq, side=o.side,
                           quantity=o.quantity, target_weight=o.target_weight,
                           reason=o.reason, filled_quantity=o.filled_quantity,
                           n_fills=o.n_fills, last_fill_ts=_iso(o.last_fill),
                           ended_ts=_iso(o.ended), status=o.status,
                           as_of_ts=as_of.isoformat())
    inserted: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    with service.db.write() as conn:
        service.load(conn, world_id)
        stored = _stored(conn, world_id, body.strategy_id, list(posted))
        now = time.time()
        for key, row in posted.items():
            old = stored.get(key)
            if old is None:
                inserted.append(row)
            elif (datetime.fromisoformat(old.as_of_ts) < as_of
                  and any(getattr(old, k) != row[k] for k in _OUTCOME)):
                changed.append(row)
        ids = dict(world_id=world_id, strategy_id=body.strategy_id)
        if inserted:
            conn.execute(insert(table(PaperOrder)),
                         [{**ids, **r, "recorded_at": now, "updated_at": now}
                          for r in inserted])
        for r in changed:
            conn.execute(update(table(PaperOrder)).where(
                PaperOrder.world_id == world_id, PaperOrder.strategy_id == body.strategy_id,
                PaperOrder.order_ts == r["order_ts"], PaperOrder.symbol == r["symbol"],
                PaperOrder.seq == r["seq"]).values(
                    **{k: r[k] for k in (*_OUTCOME, "as_of_ts")}, updated_at=now))
        if inserted or changed:
            audit.record(conn, actor=actor, action="paper.orders", world_id=world_id,
                         target=f"{body.strategy_id}:{len(inserted)}+{len(changed)}",
                         after=audit.content_hash(inserted + changed))
    return OrdersOut(world_id=world_id, strategy_id=body.strategy_id,
                     inserted=len(inserted), updated=len(changed),
                     existing=len(posted) - len(inserted) - len(changed))


def _stored(conn: Session, world_id: str, strategy_id: str,
            keys: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], PaperOrder]:
    times = sorted({ts for ts, _, _ in keys})
    if not times:
        return {}
    rows = conn.execute(select(PaperOrder).where(
        PaperOrder.world_id == world_id, PaperOrder.strategy_id == strategy_id,
        PaperOrder.order_ts.in_(times))).scalars().all()
    return {(r.order_ts, r.symbol, r.seq): r for r in rows}


def list_orders(service: WorldService, world_id: str, strategy_id: str) -> list[OrderOut]:
    with service.db.read() as conn:
        service.load(conn, world_id)
        rows = conn.execute(select(PaperOrder).where(
            PaperOrder.world_id == world_id, PaperOrder.strategy_id == strategy_id)
            .order_by(PaperOrder.order_ts, PaperOrder.symbol, PaperOrder.seq)
            ).scalars().all()
    return [OrderOut(ts=r.order_ts, symbol=r.symbol, seq=r.seq,  # type: ignore[arg-type]
                     side=r.side, quantity=r.quantity,  # type: ignore[arg-type]
                     target_weight=r.target_weight, reason=r.reason,
                     filled_quantity=r.filled_quantity, n_fills=r.n_fills,
                     last_fill=r.last_fill_ts, ended=r.ended_ts,  # type: ignore[arg-type]
                     status=r.status, as_of=r.as_of_ts)  # type: ignore[arg-type]
            for r in rows]
