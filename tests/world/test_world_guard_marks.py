"""The world's risk guard resumes from its mark (``world_guard_marks``) instead of summing
every bar since the reset on each new bar; it must trip exactly where a sum from the
reset trips: the same bar, rule and value, to the bit, whatever order the bars arrive
in (late bars, several strategies on one bar time, the same bar twice) and across
operator resets."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from alphaloop.kb import dispose_engines
from alphaloop.world.db import Database
from alphaloop.world.errors import WorldError
from alphaloop.world.models import PaperBar, RiskTrip, WorldGuardMark
from alphaloop.world.policy import WorldGuard
from alphaloop.world.riskguard import WORLD, RiskGuard, WorldBook
from alphaloop.world.schemas import BarIn, BarOrders, WorldIn
from alphaloop.world.service import WorldService

SIDS = ("a" * 64, "b" * 64, "c" * 64)
T0 = datetime(2026, 1, 5, tzinfo=UTC)

bar_events = st.tuples(st.just("bar"), st.sampled_from(SIDS), st.integers(0, 12),
                       st.floats(50.0, 150.0), st.floats(-0.09, 0.07),
                       st.floats(0.0, 400.0), st.integers(0, 4))
events = st.lists(st.one_of(bar_events, bar_events, bar_events, st.just(("reset",))),
                  min_size=1, max_size=40)
limits = st.fixed_dictionaries({}, optional={
    "max_drawdown": st.floats(0.05, 0.4), "max_daily_loss": st.floats(0.02, 0.08),
    "max_leverage": st.floats(1.2, 4.0), "max_orders_per_day": st.integers(4, 10)})


class Reference:
    """The guard as it was before the marks: on every new bar, every stored bar since
    the last reset summed from the start; the first breach at the new bar's time or
    later trips the world."""

    def __init__(self, guard: WorldGuard) -> None:
        self.guard = guard
        self.bars: dict[tuple[str, str], PaperBar] = {}
        self.since: str | None = None
        self.trip: tuple[str, str, float] | None = None
        self.mark: tuple[str, str] | None = None  # (upto, book before it) of a full sum

    def record(self, bar: PaperBar) -> None:
        key = (bar.strategy_id, bar.bar_ts)
        if key in self.bars:  # the same bar again is left as it is
            return
        self.bars[key] = bar
        if self.trip is not None or self.guard == WorldGuard():  # halted, or no limits
            return
        rows = sorted((b for b in self.bars.values()
                       if self.since is None or b.bar_ts > self.since),
                      key=lambda b: (b.bar_ts, b.strategy_id))
        book = WorldBook()  # the new bar's time and later are judged: the past was
        first = next((b for b in book.breaches(self.guard, rows) if b[0] >= bar.bar_ts),
                     None)
        if first is not None:
            self.trip = (first[0], first[1], first[2])
        elif book.upto is not None:
            self.mark = (book.upto, book.marked_json)

    def reset(self) -> None:
        if self.trip is not None:
            self.since, self.trip = self.trip[0], None


def _mark(db: Database) -> tuple[str, str] | None:
    with db.read() as conn:
        row = conn.execute(select(WorldGuardMark)).scalar_one_or_none()
    return None if row is None else (row.upto, row.book)


def _world_trip(db: Database) -> tuple[str, str, float] | None:
    with db.read() as conn:
        row = conn.execute(select(RiskTrip).where(
            RiskTrip.strategy_id == WORLD, RiskTrip.reset_at.is_(None))).scalar_one_or_none()
    return None if row is None else (row.bar, row.rule, row.value)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=events, limit=limits)
def test_the_guard_from_its_mark_trips_where_a_sum_from_the_reset_trips(
        script: list[tuple], limit: dict[str, float]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'kb.sqlite'}"
        db = Database(url)
        try:
            service = WorldService(db, Path(tmp))
            service.create_world(WorldIn(world_id="w", policy={
                "risk_guard": {"world": limit}}), "op#1")
            guard, ref = RiskGuard(service), Reference(WorldGuard(**limit))
            for event in script:
                if event[0] == "reset":
                    if ref.trip is not None:
                        guard.reset("w", None, "op#1")
                    ref.reset()
                    continue
                _, sid, day, equity, ret, gross, fills = event
                body = BarIn(strategy_id=sid, ts=T0 + timedelta(days=day), equity=equity,
                             ret=ret, gross=gross, orders=BarOrders(placed=fills,
                                                                     filled=fills))
                before = ref.bars.get((sid, body.ts.isoformat()))
                if before is not None and (before.equity, before.ret, before.gross,
                                           before.n_fills) != (equity, ret, gross, fills):
                    with pytest.raises(WorldError) as refused:  # history is not rewritten
                        guard.record_bar("w", body, "op#1")
                    assert refused.value.code == "BAR_CONFLICT"
                    continue
                stored = guard.record_bar("w", body, "op#1")
                ref.record(PaperBar(strategy_id=sid, bar_ts=stored.ts.isoformat(),
                                    equity=equity, ret=ret, gross=gross, n_fills=fills))
                assert _world_trip(db) == ref.trip
                if ref.trip is None:  # where the next bar resumes: the full sum's book
                    assert _mark(db) == ref.mark
        finally:
            db.close()
            dispose_engines()


def test_bars_in_time_order_leave_a_mark_at_the_latest_bar_time(tmp_path: Path) -> None:
    """What makes a bar cheap: after in-order bars the mark sits at the newest bar time,
    holding the book before it (both strategies seen, the index compounded)."""
    db = Database(f"sqlite:///{tmp_path / 'kb.sqlite'}")
    service = WorldService(db, tmp_path)
    service.create_world(WorldIn(world_id="w", policy={
        "risk_guard": {"world": {"max_drawdown": 0.5}}}), "op#1")
    guard = RiskGuard(service)
    for day in range(3):
        for sid, ret in ((SIDS[0], 0.01), (SIDS[1], -0.01)):
            guard.record_bar("w", BarIn(strategy_id=sid, ts=T0 + timedelta(days=day),
                                        equity=100.0 * (1 + ret) ** (day + 1), ret=ret,
                                        gross=50.0), "op#1")
    with db.read() as conn:
        mark = conn.execute(select(WorldGuardMark)).scalar_one()
    assert mark.upto == (T0 + timedelta(days=2)).isoformat()
    assert (mark.since, mark.limits) == ("", WorldGuard(max_drawdown=0.5).model_dump_json())
    assert '"' + SIDS[0] + '"' in mark.book and '"' + SIDS[1] + '"' in mark.book
    db.close()
    dispose_engines()


def test_after_a_reset_the_guard_sums_from_the_reset_not_from_its_old_mark(
        tmp_path: Path) -> None:
    """A mark made before a trip is not resumed once the operator resets the world: the
    world is measured afresh from the trip's bar (the index starts again at 1)."""
    db = Database(f"sqlite:///{tmp_path / 'kb.sqlite'}")
    service = WorldService(db, tmp_path)
    service.create_world(WorldIn(world_id="w", policy={
        "risk_guard": {"world": {"max_daily_loss": 0.05}}}), "op#1")
    guard = RiskGuard(service)

    def bar(sid: str, day: int, equity: float, ret: float) -> None:
        guard.record_bar("w", BarIn(strategy_id=sid, ts=T0 + timedelta(days=day),
                                    equity=equity, ret=ret, gross=0.0), "op#1")

    a, b = SIDS[0], SIDS[1]
    bar(a, 0, 101.0, 0.01)
    bar(b, 0, 99.0, -0.01)
    bar(a, 1, 101.0, 0.0)  # the mark: before day 1, both strategies at day 0's equity
    bar(b, 1, 79.2, -0.2)  # world: (101 + 79.2 - 200) / 200 = -9.9 %: a trip on day 1
    trip = _world_trip(db)
    assert trip is not None and trip[:2] == ("2026-01-06T00:00:00+00:00", "max_daily_loss")
    assert trip[2] == pytest.approx(19.8 / 200.0, rel=1e-12)  # b lost 19.8 of 200
    guard.reset("w", None, "op#1")
    bar(a, 2, 102.01, 0.01)
    bar(b, 2, 80.0, 80.0 / 79.2 - 1)
    with db.read() as conn:
        mark = conn.execute(select(WorldGuardMark)).scalar_one()
    # summed from the reset: day 2 alone; its book before it is empty, index 1
    assert (mark.since, mark.upto) == ("2026-01-06T00:00:00+00:00",
                                       "2026-01-07T00:00:00+00:00")
    assert mark.book == '{"last": {}, "index": 1.0, "peak": 1.0}'
    assert _world_trip(db) is None
    db.close()
    dispose_engines()


def test_a_limit_set_later_and_a_reset_never_trip_the_world_on_its_past() -> None:
    """One strategy's bars 100, 90, 95, 100 (a 10 % drawdown in the past), then a world
    max_drawdown of 5 % is set. Hand calculation: a new high of 101 is 0 % drawdown:
    no trip (before, the new limit tripped on the 90 of the past). A fall to 95 is
    1 - 95/101 = 5.94 % > 5 %: the world trips on that bar. After the operator's reset
    the book starts at that bar: 96 is up, no trip (before, the reset only moved on to
    the next breach of the past)."""
    sid = SIDS[0]
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'kb.sqlite'}")
        try:
            service = WorldService(db, Path(tmp))
            service.create_world(WorldIn(world_id="w"), "op#1")
            guard = RiskGuard(service)
            equity = [100.0]

            def bar(day: int, value: float) -> bool:
                ret = value / equity[-1] - 1.0 if day else 0.0
                equity.append(value)
                body = BarIn(strategy_id=sid, ts=T0 + timedelta(days=day), equity=value,
                             ret=ret, gross=value, orders=BarOrders())
                return guard.record_bar("w", body, "op#1").halted

            assert not any(bar(d, v) for d, v in enumerate((100.0, 90.0, 95.0, 100.0)))
            service.put_policy("w", {"risk_guard": {"world": {"max_drawdown": 0.05}}},
                               "op#1")
            assert not bar(4, 101.0)
            assert bar(5, 95.0)
            trip = _world_trip(db)
            assert trip is not None and trip[0] == (T0 + timedelta(days=5)).isoformat()
            assert trip[2] == pytest.approx(1 - 95 / 101, abs=1e-12)
            guard.reset("w", None, "op#1")
            assert not bar(6, 96.0)
            assert _world_trip(db) is None
        finally:
            dispose_engines()
