"""The risk guard's trips (MOD-482, seed 004 §5.1): a breach halts a strategy.

A producer (the paper runner, operator role) reports the breach it saw on a bar; the
trip is stored, audited and announced on the control bus (``RISK_GUARD_TRIPPED``) in
one transaction, and holds across restarts: ``/decide`` answers backtest-only and the
campaign shows ``RISK_GUARD_TRIPPED:<rule>`` until an operator resets it (audited,
``RISK_GUARD_RESET``). The same breach reported again (same rule and bar, not reset)
is the same trip.

The world's limits (``risk_guard.world``) are checked here, by the service, on every
bar a paper runner records (``POST /worlds/{id}/paper/bars``, in the same
transaction): the world is the sum of its strategies' paper accounts. On each bar time
``t`` (every bar any strategy reported since the world's last reset), the world's
return is the strategies' summed profit on ``t`` over their summed equity before it (a
strategy that reported no bar at ``t`` counts as flat, its last equity carried); the
world's drawdown is that of the compounded returns (from 1.0 at the last reset), its
leverage the summed gross exposure over the summed equity (last reports), its orders
the fills summed over the strategies' bars at ``t``. A bar time is judged when its bar
arrives (a bar at an earlier time than the latest judges the times from its own on):
the first that crosses a limit trips the world (``strategy_id`` empty): every strategy
of the world is halted, also those that never breached their own limits, until an
operator resets the world. Bar times judged before are not judged again, so a limit
set later, or a reset, never trips the world on its past: after a reset the book is
summed from the tripped bar on, and the next breach must be a new one. A breach seen
stands (a trip is never undone by later data, only by an operator).

The world's book is not summed from the reset on every bar: each check leaves a mark
(``world_guard_marks``: the book before its latest bar time, that time, and the reset
and limits it was summed under), and a bar at that time or later is summed from the
mark. The earlier bar times are final by then; a bar reported for an earlier time, a
reset or new limits sum from the reset again. So the first breach is the one a sum from
the reset finds, to the bit (a property test compares the two).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from itertools import groupby

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from alphaloop.world import audit
from alphaloop.world.errors import WorldError
from alphaloop.world.models import PaperBar, RiskTrip, WorldGuardMark, table
from alphaloop.world.policy import WorldGuard
from alphaloop.world.schemas import BarIn, BarOrders, BarOut, GuardOut, TripIn, TripOut
from alphaloop.world.service import WorldService, WorldState, ts

WORLD = ""  # the strategy_id of a trip of the world's limits


def _own_trip(conn: Session, world_id: str, strategy_id: str) -> RiskTrip | None:
    return conn.execute(select(RiskTrip).where(
        RiskTrip.world_id == world_id, RiskTrip.strategy_id == strategy_id,
        RiskTrip.reset_at.is_(None)).order_by(RiskTrip.trip_id.desc()).limit(1)
    ).scalar_one_or_none()


def active_trip(conn: Session, world_id: str, strategy_id: str) -> RiskTrip | None:
    """What halts the strategy now: its own trip, else its world's."""
    own = _own_trip(conn, world_id, strategy_id)
    return own if own is not None or strategy_id == WORLD else _own_trip(conn, world_id, WORLD)


def trip_reason(trip: RiskTrip) -> str:
    scope = "world:" if trip.strategy_id == WORLD else ""
    return f"RISK_GUARD_TRIPPED:{scope}{trip.rule}"


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
            found = _own_trip(conn, world_id, body.strategy_id)
            if found is not None:  # halted already: the first trip stands
                return _out(found)
            return _out(_store_trip(conn, world_id, actor, body.strategy_id,
                                    (bar, body.rule, body.value, body.limit)), created=True)

    def status(self, world_id: str, strategy_id: str) -> GuardOut:
        with self.service.db.read() as conn:
            self.service.load(conn, world_id)
            row = active_trip(conn, world_id, strategy_id)
            newest = row or conn.execute(select(RiskTrip).where(
                RiskTrip.world_id == world_id, RiskTrip.strategy_id == strategy_id)
                .order_by(RiskTrip.trip_id.desc()).limit(1)).scalar_one_or_none()
        return GuardOut(world_id=world_id, strategy_id=strategy_id, halted=row is not None,
                        trip=None if newest is None else _out(newest))

    def reset(self, world_id: str, strategy_id: str | None, actor: str) -> TripOut:
        """Re-activate a halted strategy, or (``strategy_id`` None) the world."""
        now = time.time()
        sid = WORLD if strategy_id is None else strategy_id
        what = "the world" if sid == WORLD else f"strategy_id: {sid[:12]}…"
        with self.service.db.write() as conn:
            self.service.load(conn, world_id)
            row = _own_trip(conn, world_id, sid)
            if row is None:
                world = None if sid == WORLD else _own_trip(conn, world_id, WORLD)
                if world is not None:
                    raise WorldError(f"strategy_id: {sid[:12]}… is halted by the world's "
                                     f"trip #{world.trip_id} ({world.rule}); reset the world "
                                     "(no strategy_id)", code="WORLD_HALTED", status=409,
                                     field="strategy_id")
                raise WorldError(f"{what} is not halted", code="NOT_HALTED", status=409,
                                 field="strategy_id")
            conn.execute(update(RiskTrip).where(RiskTrip.trip_id == row.trip_id)
                         .values(reset_at=now, reset_by=actor))
            audit.record(conn, actor=actor, action="risk_guard.reset", world_id=world_id,
                         target=f"{sid or 'world'}#{row.trip_id}:{row.rule}")
            audit.emit(conn, world_id, "RISK_GUARD_RESET",
                       {"trip_id": row.trip_id, "strategy_id": sid,
                        "scope": "world" if sid == WORLD else "strategy"})
            row.reset_at, row.reset_by = now, actor
            return _out(row)

    # ---------------------------------------------------------- paper bars

    def record_bar(self, world_id: str, body: BarIn, actor: str) -> BarOut:
        """Store a paper bar (once), then check the world's limits, in one transaction."""
        bar_ts = body.ts.astimezone(UTC).isoformat()
        o = body.orders
        values = dict(world_id=world_id, strategy_id=body.strategy_id, bar_ts=bar_ts,
                      equity=body.equity, ret=body.ret, gross=body.gross,
                      n_orders=o.placed, n_fills=o.filled, n_partial=o.partial,
                      n_clipped=o.clipped, n_cancelled=o.cancelled,
                      filled_notional=o.filled_notional,
                      unfilled_notional=o.unfilled_notional,
                      pending_notional=o.pending_notional, untradable=list(o.untradable))
        with self.service.db.write() as conn:
            state = self.service.load(conn, world_id)
            found = conn.execute(select(PaperBar).where(
                PaperBar.world_id == world_id, PaperBar.strategy_id == body.strategy_id,
                PaperBar.bar_ts == bar_ts)).scalar_one_or_none()
            if found is None:
                conn.execute(insert(table(PaperBar)), {**values, "recorded_at": time.time()})
                audit.record(conn, actor=actor, action="paper.bar", world_id=world_id,
                             target=f"{body.strategy_id}@{bar_ts}",
                             after=audit.content_hash(values))
                self._check_world(conn, state, actor, bar_ts)
            elif any(getattr(found, k) != v for k, v in values.items()):
                # a retry adds nothing; other numbers for a stored bar would rewrite history
                raise WorldError(f"the bar {bar_ts} of {body.strategy_id[:12]}… is stored "
                                 "with other values; a recorded bar is never rewritten",
                                 code="BAR_CONFLICT", status=409, field="ts")
            row = found or PaperBar(**values)
            trip = active_trip(conn, world_id, body.strategy_id)
            return _bar_out(row, created=found is None,
                            trip=None if trip is None else _out(trip))

    def bars(self, world_id: str, strategy_id: str) -> list[BarOut]:
        """The strategy's stored bars; a bar on which it or its world tripped carries
        that trip (``halted``), as the answer to its POST did."""
        with self.service.db.read() as conn:
            self.service.load(conn, world_id)
            rows = conn.execute(select(PaperBar).where(
                PaperBar.world_id == world_id, PaperBar.strategy_id == strategy_id)
                .order_by(PaperBar.bar_ts)).scalars().all()
            trips = conn.execute(select(RiskTrip).where(
                RiskTrip.world_id == world_id,
                RiskTrip.strategy_id.in_((strategy_id, WORLD)))
                .order_by(RiskTrip.trip_id)).scalars().all()
        on = {t.bar: _out(t) for t in trips}  # the newest trip of a bar time last
        return [_bar_out(r, trip=on.get(r.bar_ts)) for r in rows]

    def _check_world(self, conn: Session, state: WorldState, actor: str, new_ts: str) -> None:
        limits = state.policy.risk_guard.world
        world_id = state.world.world_id
        if limits == WorldGuard() or _own_trip(conn, world_id, WORLD) is not None:
            return
        since = conn.execute(select(RiskTrip.bar).where(
            RiskTrip.world_id == world_id, RiskTrip.strategy_id == WORLD,
            RiskTrip.reset_at.is_not(None)).order_by(RiskTrip.trip_id.desc()).limit(1)
        ).scalar_one_or_none()
        key = (since or "", limits.model_dump_json())
        mark = conn.get(WorldGuardMark, world_id)
        resume = mark is not None and (mark.since, mark.limits) == key and new_ts >= mark.upto
        book = WorldBook.from_json(mark.book) if resume and mark is not None else WorldBook()
        stmt = select(PaperBar).where(PaperBar.world_id == world_id)
        if since is not None:  # measured afresh after the operator's reset
            stmt = stmt.where(PaperBar.bar_ts > since)
        if resume and mark is not None:  # the bar times before the mark are final
            stmt = stmt.where(PaperBar.bar_ts >= mark.upto)
        rows = conn.execute(stmt.order_by(PaperBar.bar_ts, PaperBar.strategy_id)).scalars()
        # only the bar being recorded (its time and later) is judged: earlier bar times
        # were judged when they arrived, under the limits then in force, so a new limit
        # or a reset never trips the world on its past (the book still sums it: the
        # drawdown is measured from the peak since the reset)
        breach = next((b for b in book.breaches(limits, rows) if b[0] >= new_ts), None)
        if breach is None:
            _save_mark(conn, world_id, mark, key, book)
            return
        _store_trip(conn, world_id, actor, WORLD, breach)


def _store_trip(conn: Session, world_id: str, actor: str, strategy_id: str,
                breach: Breach) -> RiskTrip:
    """Store a trip (a strategy's, or the world's: ``strategy_id`` empty), audited and
    announced on the control bus, in the caller's transaction."""
    bar, rule, value, limit = breach
    values = dict(world_id=world_id, strategy_id=strategy_id, rule=rule, value=value,
                  limit_value=limit, bar=bar, tripped_at=time.time(), actor=actor,
                  reset_at=None, reset_by=None)
    stmt = insert(table(RiskTrip)).returning(table(RiskTrip).c.trip_id)
    trip_id = conn.execute(stmt, values).scalar_one()
    who = "world" if strategy_id == WORLD else strategy_id
    audit.record(conn, actor=actor, action="risk_guard.trip", world_id=world_id,
                 target=f"{who}#{trip_id}:{rule}",
                 after=audit.content_hash({k: v for k, v in values.items()
                                           if k != "tripped_at"}))
    scope = {"scope": "world"} if strategy_id == WORLD else {}
    audit.emit(conn, world_id, "RISK_GUARD_TRIPPED",
               {"trip_id": trip_id, "strategy_id": strategy_id, **scope, "rule": rule,
                "value": value, "limit": limit, "bar": bar, "severity": "CRITICAL"})
    return RiskTrip(trip_id=trip_id, **values)


def _save_mark(conn: Session, world_id: str, mark: WorldGuardMark | None,
               key: tuple[str, str], book: WorldBook) -> None:
    """Where the world's book got to (the book before its latest bar time)."""
    if book.upto is None:  # no bar summed: the mark, if any, still holds
        return
    values = dict(since=key[0], limits=key[1], upto=book.upto, book=book.marked_json,
                  updated_at=time.time())
    t = table(WorldGuardMark)
    if mark is None:
        conn.execute(insert(t), {"world_id": world_id, **values})
    else:
        conn.execute(update(t).where(t.c.world_id == world_id), values)
        conn.expire(mark)


Breach = tuple[str, str, float, float]  # bar_ts, rule, value, limit


@dataclass
class WorldBook:
    """The world summed over its strategies' paper bars, bar time by bar time (the
    module docstring says how). ``upto`` is the latest bar time summed and
    ``marked_json`` the book before it: where the next check may resume."""

    last: dict[str, list[float]] = field(default_factory=dict)  # strategy -> equity, gross
    index: float = 1.0
    peak: float = 1.0
    upto: str | None = None
    _before: tuple[dict[str, list[float]], float, float] = field(
        default=({}, 1.0, 1.0), init=False, repr=False)

    @classmethod
    def from_json(cls, text: str) -> WorldBook:
        data = json.loads(text)  # key order kept: it is the order of the sums
        return cls(last=data["last"], index=data["index"], peak=data["peak"])

    @property
    def marked_json(self) -> str:
        """The book before ``upto`` as JSON (floats round-trip exactly)."""
        last, index, peak = self._before
        return json.dumps({"last": last, "index": index, "peak": peak})

    def first_breach(self, limits: WorldGuard, rows: Iterable[PaperBar]) -> Breach | None:
        """Sum ``rows`` (sorted by time) on; the first world limit crossed, if any."""
        return next(self.breaches(limits, rows), None)

    def breaches(self, limits: WorldGuard, rows: Iterable[PaperBar]) -> Iterator[Breach]:
        for bar_ts, group in groupby(rows, key=lambda r: r.bar_ts):
            # a shallow copy: a strategy's entry is replaced, never changed in place
            self._before, self.upto = (dict(self.last), self.index, self.peak), bar_ts
            for rule, value in self._step(list(group)).items():
                limit = getattr(limits, rule)
                if limit is not None and value > limit:
                    yield bar_ts, rule, value, float(limit)

    def _step(self, bars: list[PaperBar]) -> dict[str, float]:
        """Add one bar time's reports; what the limits are measured against."""
        last = self.last
        before = {r.strategy_id: r.equity / (1.0 + r.ret) for r in bars}
        base = sum(eq for sid, (eq, _) in last.items() if sid not in before)
        base += sum(before.values())
        pnl = sum(r.equity - before[r.strategy_id] for r in bars)
        for r in bars:
            last[r.strategy_id] = [r.equity, r.gross]
        ret = pnl / base if base > 0 else 0.0
        self.index *= 1.0 + ret
        self.peak = max(self.peak, self.index)
        equity = sum(eq for eq, _ in last.values())
        return {"max_drawdown": 1.0 - self.index / self.peak, "max_daily_loss": -ret,
                "max_leverage": sum(g for _, g in last.values()) / equity if equity > 0
                else 0.0,
                "max_orders_per_day": float(sum(r.n_fills for r in bars))}


def world_breaches(limits: WorldGuard, rows: Iterable[PaperBar]) -> Iterator[Breach]:
    """(bar_ts, rule, value, limit) of every world limit crossed, bar by bar, over
    paper bars sorted by time, summed from the start (the module docstring says how)."""
    return WorldBook().breaches(limits, rows)


def _bar_out(row: PaperBar, created: bool = False, trip: TripOut | None = None) -> BarOut:
    return BarOut(world_id=row.world_id, strategy_id=row.strategy_id, ts=row.bar_ts,  # type: ignore[arg-type]
                  equity=row.equity, ret=row.ret, gross=row.gross,
                  orders=BarOrders(placed=row.n_orders, filled=row.n_fills,
                                   partial=row.n_partial, clipped=row.n_clipped,
                                   cancelled=row.n_cancelled,
                                   filled_notional=row.filled_notional,
                                   unfilled_notional=row.unfilled_notional,
                                   pending_notional=row.pending_notional,
                                   untradable=list(row.untradable or [])),
                  created=created, halted=trip is not None, trip=trip)
