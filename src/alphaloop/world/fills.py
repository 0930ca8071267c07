"""Paper fills in the knowledge base: posted by the paper runner after each bar, in one
transaction with their audit record; a fill already stored is left as it is, so a bar
posted again after a crash adds nothing."""

from __future__ import annotations

import time
from datetime import UTC

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from alphaloop.world import audit
from alphaloop.world.models import PaperFill, table
from alphaloop.world.schemas import FillOut, FillsIn, FillsOut
from alphaloop.world.service import WorldService


def record_fills(service: WorldService, world_id: str, body: FillsIn, actor: str) -> FillsOut:
    rows = [dict(world_id=world_id, strategy_id=body.strategy_id,
                 fill_ts=f.ts.astimezone(UTC).isoformat(), seq=f.seq, symbol=f.symbol,
                 side=f.side, quantity=f.quantity, price=f.price, fee=f.fee,
                 slippage=f.slippage, reason=f.reason) for f in body.fills]
    with service.db.write() as conn:
        service.load(conn, world_id)
        stored = _stored(conn, world_id, body.strategy_id, {str(r["fill_ts"]) for r in rows})
        new = [r for r in rows if (r["fill_ts"], r["seq"]) not in stored]
        if new:
            now = time.time()
            conn.execute(insert(table(PaperFill)), [{**r, "recorded_at": now} for r in new])
            audit.record(conn, actor=actor, action="paper.fills", world_id=world_id,
                         target=f"{body.strategy_id}:{len(new)}",
                         after=audit.content_hash(new))
    return FillsOut(world_id=world_id, strategy_id=body.strategy_id, inserted=len(new),
                    existing=len(rows) - len(new))


def _stored(conn: Session, world_id: str, strategy_id: str,
            times: set[str]) -> set[tuple[str, int]]:
    if not times:
        return set()
    found = conn.execute(select(PaperFill.fill_ts, PaperFill.seq).where(
        PaperFill.world_id == world_id, PaperFill.strategy_id == strategy_id,
        PaperFill.fill_ts.in_(sorted(times))))
    return {(ts, seq) for ts, seq in found}


def list_fills(service: WorldService, world_id: str, strategy_id: str) -> list[FillOut]:
    with service.db.read() as conn:
        service.load(conn, world_id)
        rows = conn.execute(select(PaperFill).where(
            PaperFill.world_id == world_id, PaperFill.strategy_id == strategy_id)
            .order_by(PaperFill.fill_ts, PaperFill.seq)).scalars().all()
    return [FillOut(ts=r.fill_ts, seq=r.seq, symbol=r.symbol, side=r.side,  # type: ignore[arg-type]
                    quantity=r.quantity, price=r.price, fee=r.fee, slippage=r.slippage,
                    reason=r.reason) for r in rows]
