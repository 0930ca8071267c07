"""Engine B's execution rules, one component at a time, on tiny hand-made panels.

Every expected number is worked out in the comments from the rules documented in
:mod:`alphaloop.engines.execution` (costs, volume, lots, borrow, leverage) and
:mod:`alphaloop.engines.kernel_b` (order of events in a bar, sizing of an entry),
never read back from the engine. Each test starts from
``ExecutionModel.frictionless`` and switches on the one component it checks.

Shared semantics (spec / kernel_b docstrings): signals at bar t's close fill at
t+1's open; one symbol = one sleeve holding all the capital; an entry is sized
"all-in": ``q = w·budget / (p·(1 + fee) + per_share)`` with ``p`` the reference
price after half the spread (and the impact of the first, impact-free size).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from alphaloop.data.bars import Bars
from alphaloop.engines.engine_b import verify
from alphaloop.engines.execution import Commission, ExecutionModel, Impact, Spread, Volume
from alphaloop.strategy.spec import StrategySpec

REL = 1e-12
BIG_VOLUME = 1e9


def approx(x, rel: float = REL):
    return pytest.approx(x, rel=rel, abs=1e-9)


def panel(o: list[float], c: list[float], h: list[float] | None = None,
          lo: list[float] | None = None, v: list[float] | None = None,
          dates: list[str] | None = None) -> Bars:
    """One symbol ``S``; high/low default to max/min(open, close) ± 1, volume to 1e9,
    dates to consecutive weekdays from Tue 2024-01-02."""
    n = len(o)
    oa, ca = np.array(o, float), np.array(c, float)
    ha = np.fmax(oa, ca) + 1.0 if h is None else np.array(h, float)
    la = np.fmin(oa, ca) - 1.0 if lo is None else np.array(lo, float)
    va = np.full(n, BIG_VOLUME) if v is None else np.array(v, float)
    idx = (pd.date_range("2024-01-02", periods=n, freq="B", tz="UTC") if dates is None
           else pd.DatetimeIndex(dates, tz="UTC"))
    col = lambda a: np.ascontiguousarray(a[:, None])  # noqa: E731
    return Bars(index=idx, symbols=("S",), open=col(oa), high=col(ha), low=col(la),
                close=col(ca), volume=col(va))


def spec(entry: str = "close > 0", exit: str = "close < 0", **kw) -> StrategySpec:
    return StrategySpec(entry=entry, exit=exit, **kw)


def frictionless(capital: float, **update) -> ExecutionModel:
    return ExecutionModel.frictionless(initial_capital=capital).model_copy(update=update)


def run(s: StrategySpec, bars: Bars, model: ExecutionModel):
    return verify(s, bars, model, capacity=False)


# A round trip used by the commission and spread tests: always-true entry, exit on
# close > 22.5.  t0 c=10 -> buy at t1's open 20;  t2 c=23 -> sell at t3's open 25;
# at t3 (c=24) flat again, entry and exit both true -> no new order.
RT_OPEN = [10.0, 20.0, 22.0, 25.0]
RT_CLOSE = [10.0, 21.0, 23.0, 24.0]
RT_SPEC = dict(entry="close > 0", exit="close > 22.5")


# ------------------------------------------------------------------ commission
def test_commission_bps_on_notional() -> None:
    # commission = bps/1e4 · q · price, fee = 0.001, capital 10_000
    # t1 buy at 20: q = 10000 / (20·1.001) = 10000/20.02; comm = q·20·0.001 = q·0.02
    #     cash = 10000 - q·20 - q·0.02 = 0;  equity(t1) = q·21, equity(t2) = q·23
    # t3 sell at 25: comm = q·25·0.001 = q·0.025; cash = q·25 - q·0.025 = q·24.975
    res = run(spec(**RT_SPEC), panel(RT_OPEN, RT_CLOSE),
              frictionless(10_000.0, commission=Commission(bps=10.0)))
    q = 10_000.0 / 20.02
    f = res.fills
    assert list(f["side"]) == ["buy", "sell"]
    assert list(f["timestamp"]) == [res.equity.index[1], res.equity.index[3]]
    assert f["quantity"].tolist() == approx([q, q])
    assert f["price"].tolist() == approx([20.0, 25.0])
    assert f["fee"].tolist() == approx([q * 0.02, q * 0.025])
    assert res.execution["costs"]["commission"] == approx(q * 0.045)
    assert res.equity.tolist() == approx([10_000.0, q * 21, q * 23, q * 24.975])


def test_commission_per_share() -> None:
    # commission = per_share · q (bps 0), per_share = 0.01
    # t1: q = 10000 / (20 + 0.01) = 10000/20.01; comm = q·0.01; cash 0
    # t3: sell q at 25, comm q·0.01: cash = q·(25 - 0.01) = q·24.99
    res = run(spec(**RT_SPEC), panel(RT_OPEN, RT_CLOSE),
              frictionless(10_000.0, commission=Commission(bps=0.0, per_share=0.01)))
    q = 10_000.0 / 20.01
    f = res.fills
    assert f["quantity"].tolist() == approx([q, q])
    assert f["fee"].tolist() == approx([q * 0.01, q * 0.01])
    assert res.execution["costs"]["commission"] == approx(2 * q * 0.01)
    assert res.equity.tolist() == approx([10_000.0, q * 21, q * 23, q * 24.99])


def test_commission_minimum_per_fill() -> None:
    # bps 10 with a 50 minimum: 0.001·~10000 = ~10 < 50, so the minimum binds and the
    # entry is sized to leave exactly the minimum: q = (10000 - 50) / 20 = 497.5
    # t1: comm 50, cash 0;  t3: 0.001·497.5·25 = 12.4375 < 50 -> comm 50
    #     cash = 497.5·25 - 50 = 12387.5
    res = run(spec(**RT_SPEC), panel(RT_OPEN, RT_CLOSE),
              frictionless(10_000.0, commission=Commission(bps=10.0, minimum=50.0)))
    f = res.fills
    assert f["quantity"].tolist() == approx([497.5, 497.5])
    assert f["fee"].tolist() == approx([50.0, 50.0])
    assert res.execution["costs"]["commission"] == approx(100.0)
    assert res.equity.tolist() == approx([10_000.0, 497.5 * 21, 497.5 * 23, 12_387.5])


def test_commission_minimum_paid_again_by_a_partial_fill() -> None:
    # minimum 5, no rate: the entry is sized q = (10000 - 5) / 100 = 99.95 shares.
    # Volume 500 per bar, participation cap 0.1 -> 50 shares per bar:
    # t1: 50 shares at 100, comm 5;  t2: the remaining 49.95 at 100, comm 5 again
    # ("a partial fill on a later bar is a new execution and pays its own minimum")
    # cash = 10000 - 99.95·100 - 10 = -5
    bars = panel([100.0] * 4, [100.0] * 4, v=[500.0] * 4)
    model = frictionless(10_000.0, commission=Commission(bps=0.0, minimum=5.0),
                         volume=Volume(max_participation=0.1))
    res = run(spec(), bars, model)
    f = res.fills
    assert f["quantity"].tolist() == approx([50.0, 49.95])
    assert f["fee"].tolist() == approx([5.0, 5.0])
    assert res.execution["costs"]["commission"] == approx(10.0)
    assert res.execution["n_partial_fills"] == 1
    assert res.equity.tolist() == approx([10_000.0, 9_995.0, 9_990.0, 9_990.0])


# ---------------------------------------------------------------------- spread
def test_spread_fixed_bps_each_fill_pays_half() -> None:
    # spread 20 bps -> half = 0.001. Buy at 20·1.001 = 20.02, sell at 25·0.999 = 24.975
    # q = 10000 / 20.02;  spread cost = q·ref·half: q·0.02 at entry, q·0.025 at exit
    # equity(t1) = q·21 (cash 0), equity(t3) = q·24.975
    res = run(spec(**RT_SPEC), panel(RT_OPEN, RT_CLOSE),
              frictionless(10_000.0, spread=Spread(bps=20.0)))
    q = 10_000.0 / 20.02
    f = res.fills
    assert f["quantity"].tolist() == approx([q, q])
    assert f["ref_price"].tolist() == approx([20.0, 25.0])
    assert f["price"].tolist() == approx([20.02, 24.975])
    assert f["spread_cost"].tolist() == approx([q * 0.02, q * 0.025])
    assert res.execution["costs"]["spread"] == approx(q * 0.045)
    assert res.execution["costs"]["commission"] == 0.0
    assert res.equity.tolist() == approx([10_000.0, q * 21, q * 23, q * 24.975])


def test_spread_range_model() -> None:
    # range model, range_fraction 0.5: s = 0.5·(high - low)/close of the bar *before*
    # the fill (the fill bar's range is not known at its open), half of it paid:
    # price = p·(1 ± s/2)
    # t1's open 20, bar t0 (h 11, l 9, c 10): s = 0.5·0.2 = 0.1 -> buy at 20·1.05 = 21
    #     q = 10000/21; spread cost q·20·0.05 = q·1
    # t3's open 25, bar t2 (h 24, l 21, c 23): s = 0.5·3/23 -> sell at 25·(1 - 0.75/23)
    #     = 25 - 18.75/23; spread cost q·18.75/23
    # the fill bars' own ranges (t1: 40 - 18, t3: 60 - 23) are absurd on purpose
    bars = panel(RT_OPEN, RT_CLOSE, h=[11.0, 40.0, 24.0, 60.0], lo=[9.0, 18.0, 21.0, 23.0])
    res = run(spec(**RT_SPEC), bars,
              frictionless(10_000.0, spread=Spread(model="range", range_fraction=0.5)))
    q = 10_000.0 / 21.0
    sell = 25.0 - 18.75 / 23.0
    f = res.fills
    assert f["quantity"].tolist() == approx([q, q])
    assert f["price"].tolist() == approx([21.0, sell])
    assert f["spread_cost"].tolist() == approx([q * 1.0, q * 18.75 / 23.0])
    assert res.execution["costs"]["spread"] == approx(q * (1.0 + 18.75 / 23.0))
    assert res.equity.tolist() == approx([10_000.0, q * 21, q * 23, q * sell])


# ---------------------------------------------------------------------- impact
def test_impact_square_root_law() -> None:
    # k = 1, vol_window = 2: sigma at bar t = sample std of the close-to-close returns
    # of bars t-2 and t-1 (the bars before the fill's bar); V = the average volume of
    # the bars before the fill's bar (ADV).
    # closes 100, 110, 99, 103.95, 98.7525, 100
    #   r1 = +0.10, r2 = -0.10, r3 = +0.05, r4 = -0.05
    # entry "close < 100" is first true at t2 (99) -> buy at t3's open 100
    #   sigma3 = std(0.10, -0.10) = sqrt(0.02)
    # exit "close < 99" first true at t4 (98.7525) -> sell at t5's open 100
    #   sigma5 = std(0.05, -0.05) = sqrt(0.005)
    # volume 1000 every bar, capital 10_000
    # sizing (kernel_b._entry_qty): q0 = 10000/100 = 100 without impact;
    #   p1 = 100·(1 + sigma3·sqrt(100/1000)) = 100·(1 + sqrt(0.002));  q = 10000/p1
    # buy fill: price = 100·(1 + sigma3·sqrt(q/1000)); impact cost = q·100·sigma3·sqrt(q/1000)
    # sell fill: price = 100·(1 - sigma5·sqrt(q/1000)); impact cost = q·100·sigma5·sqrt(q/1000)
    closes = [100.0, 110.0, 99.0, 103.95, 98.7525, 100.0]
    opens = [100.0, 105.0, 100.0, 100.0, 100.0, 100.0]
    bars = panel(opens, closes, v=[1000.0] * 6)
    model = frictionless(10_000.0, impact=Impact(k=1.0, vol_window=2))
    res = run(spec(entry="close < 100", exit="close < 99"), bars, model)
    s3, s5 = math.sqrt(0.02), math.sqrt(0.005)
    q = 10_000.0 / (100.0 * (1.0 + math.sqrt(0.002)))
    imp3, imp5 = s3 * math.sqrt(q / 1000.0), s5 * math.sqrt(q / 1000.0)
    f = res.fills
    assert list(f["side"]) == ["buy", "sell"]
    assert list(f["timestamp"]) == [bars.index[3], bars.index[5]]
    assert f["quantity"].tolist() == approx([q, q], rel=1e-9)
    assert f["price"].tolist() == approx([100.0 * (1 + imp3), 100.0 * (1 - imp5)], rel=1e-9)
    assert f["impact_cost"].tolist() == approx([q * 100 * imp3, q * 100 * imp5], rel=1e-9)
    assert f["participation"].tolist() == approx([q / 1000.0, q / 1000.0], rel=1e-9)
    cash3 = 10_000.0 - q * 100.0 * (1 + imp3)
    final = cash3 + q * 100.0 * (1 - imp5)
    assert res.execution["costs"]["impact"] == approx(q * 100 * (imp3 + imp5), rel=1e-9)
    assert res.equity.iloc[3] == approx(cash3 + q * 103.95, rel=1e-9)
    assert res.equity.iloc[5] == approx(final, rel=1e-9)


# ------------------------------------------------------------------ volume cap
def test_participation_cap_carries_the_rest_to_later_opens() -> None:
    # capital 100_000, opens 100 at t1 -> q = 1000 shares (decided at t1's open).
    # max_participation 0.1 of the ADV: the mean volume of the bars before the fill's
    # bar (known at its open). Volumes 1000, 1000, 2000, 5000, 1e6, 1e6 at t0..t5:
    #   t1: ADV 1000 -> cap 100:              100 @ 100
    #   t2: ADV 1000 -> cap 100:              100 @ 98
    #   t3: ADV 4000/3 -> cap 400/3:          400/3 @ 96   (fractional shares)
    #   t4: ADV 9000/4 = 2250 -> cap 225:     225 @ 95
    #   t5: ADV 1_009_000/5 -> cap 20_180:    the last 1000 - 100 - 100 - 400/3 - 225
    #                                         = 1325/3 @ 95
    # position 0, 100, 200, 1000/3, 1675/3, 1000
    # cash = 100000 - 10000 - 9800 - 12800 - 21375 - 125875/3 = 12200/3
    # four of the five fills leave a remainder (partial); nothing unfilled: fill rate 1
    opens = [100.0, 100.0, 98.0, 96.0, 95.0, 95.0]
    closes = [100.0, 99.0, 97.0, 95.0, 96.0, 97.0]
    vols = [1000.0, 1000.0, 2000.0, 5000.0, 1e6, 1e6]
    bars = panel(opens, closes, v=vols)
    res = run(spec(), bars, frictionless(100_000.0, volume=Volume(max_participation=0.1)))
    f = res.fills
    assert list(f["timestamp"]) == list(bars.index[1:6])
    assert list(f["side"]) == ["buy"] * 5
    assert f["quantity"].tolist() == approx([100.0, 100.0, 400 / 3, 225.0, 1325 / 3])
    assert f["price"].tolist() == approx([100.0, 98.0, 96.0, 95.0, 95.0])
    assert f["adv_util"].tolist() == approx([0.1, 0.1, 0.1, 0.1, (1325 / 3) / 201_800])
    # participation in the fill bar's actual volume is reported after the fact
    assert f["participation"].tolist() == approx(
        [0.1, 0.05, (400 / 3) / 5000, 225 / 1e6, (1325 / 3) / 1e6])
    assert res.positions["S"].tolist() == approx(
        [0.0, 100.0, 200.0, 1000 / 3, 1675 / 3, 1000.0])
    cash = 12_200.0 / 3
    assert res.equity.iloc[5] == approx(cash + 1000.0 * 97.0)
    ex = res.execution
    assert ex["n_partial_fills"] == 4
    assert ex["n_cancelled"] == 0
    assert ex["unfilled_notional"] == 0.0
    assert ex["filled_notional"] == approx(100_000.0 - cash)
    assert ex["fill_rate"] == approx(1.0)


def test_order_ttl_cancels_the_unfilled_rest() -> None:
    # capital 100_000 at open 100 -> q = 1000; 0.1 × volume 1000 = 100 shares per bar.
    # order_ttl_bars 2: the order gets two bars, t1 and t2 (100 @ 100, 100 @ 102),
    # and is cancelled when it is two bars old (t2's close 104): 800 shares unfilled,
    # valued at 104 (= t3's open, where it would have filled next): 83_200.
    # The position (200 shares) is kept; the signals still want it, so no new order.
    # filled 100·100 + 100·102 = 20_200; fill rate = 20_200 / (20_200 + 83_200)
    opens = [100.0, 100.0, 102.0, 104.0, 104.0]
    closes = [100.0, 101.0, 104.0, 105.0, 106.0]
    bars = panel(opens, closes, v=[1000.0] * 5)
    model = frictionless(100_000.0, volume=Volume(max_participation=0.1, order_ttl_bars=2))
    res = run(spec(), bars, model)
    f = res.fills
    assert list(f["timestamp"]) == list(bars.index[1:3])
    assert f["quantity"].tolist() == approx([100.0, 100.0])
    assert f["price"].tolist() == approx([100.0, 102.0])
    assert res.positions["S"].tolist() == approx([0.0, 100.0, 200.0, 200.0, 200.0])
    ex = res.execution
    assert ex["n_cancelled"] == 1
    assert ex["filled_notional"] == approx(20_200.0)
    assert ex["unfilled_notional"] == approx(800.0 * 104.0)
    assert ex["fill_rate"] == approx(20_200.0 / (20_200.0 + 83_200.0))
    assert ex["pending_at_end_notional"] == 0.0
    cash = 100_000.0 - 20_200.0
    assert res.equity.iloc[4] == approx(cash + 200.0 * 106.0)


# ------------------------------------------------------------------------ lots
@pytest.mark.parametrize(("lot", "capital", "qty"), [
    # 10000/30 = 333.33 shares -> 333; cash left 10000 - 9990 = 10
    (1.0, 10_000.0, 333.0),
    # 100000/30 = 3333.33 shares -> 33 lots of 100 = 3300; cash left 100000 - 99000 = 1000
    (100.0, 100_000.0, 3300.0),
])
def test_lot_size_rounds_down_and_leaves_cash(lot: float, capital: float, qty: float) -> None:
    bars = panel([30.0, 30.0, 31.0], [30.0, 32.0, 33.0])
    res = run(spec(), bars, frictionless(capital, lot_size=lot))
    f = res.fills
    assert f["quantity"].tolist() == [qty]
    cash = capital - qty * 30.0
    assert cash == {1.0: 10.0, 100.0: 1000.0}[lot]
    assert res.equity.tolist() == approx([capital, cash + qty * 32.0, cash + qty * 33.0])


# ---------------------------------------------------------------- stops / gaps
# entry at t1's open 100 with capital 10_000 -> 100 shares (frictionless); t1 itself
# stays clear of every level (low 95, high 105); the panel ends at t2, so no re-entry.
def _stop_bars(o2: float, h2: float, l2: float, c2: float) -> Bars:
    return panel([100.0, 100.0, o2], [100.0, 100.0, c2],
                 h=[101.0, 105.0, h2], lo=[99.0, 95.0, l2])


@pytest.mark.parametrize(("risk", "bar2", "price", "reason"), [
    # stop loss 10 %: level 90.  Open 85 gapped below -> fill at the open 85
    ({"stop_loss": 0.1}, (85.0, 88.0, 80.0, 86.0), 85.0, "stop_loss"),
    # open 95 above the level, low 85 crosses it -> fill at the level 90
    ({"stop_loss": 0.1}, (95.0, 96.0, 85.0, 88.0), 90.0, "stop_loss"),
    # take profit 20 %: level 120.  Open 125 gapped above -> fill at 125
    ({"take_profit": 0.2}, (125.0, 130.0, 122.0, 126.0), 125.0, "take_profit"),
    # open 110, high 130 crosses it -> fill at the level 120
    ({"take_profit": 0.2}, (110.0, 130.0, 108.0, 125.0), 120.0, "take_profit"),
])
def test_stop_and_take_profit_gap_vs_inside(risk: dict, bar2: tuple, price: float,
                                            reason: str) -> None:
    res = run(spec(risk=risk), _stop_bars(*bar2), frictionless(10_000.0))
    f = res.fills
    assert list(f["side"]) == ["buy", "sell"]
    assert f["quantity"].tolist() == approx([100.0, 100.0])
    assert f["price"].tolist() == approx([100.0, price])
    assert list(f["reason"]) == ["entry", reason]
    assert res.trades["reason"].tolist() == [reason]
    assert res.trades["exit_price"].tolist() == approx([price])
    assert res.equity.iloc[-1] == approx(100.0 * price)  # flat: cash only
    assert res.positions["S"].tolist() == [0.0, 100.0, 0.0]


@pytest.mark.parametrize(("bar3", "price"), [
    # level = 10 % below the highest high before bar t3 = 0.9·120 = 108
    ((105.0, 107.0, 100.0, 104.0), 105.0),  # open 105 already below: fill at the open
    ((112.0, 113.0, 100.0, 104.0), 108.0),  # low 100 crosses inside the bar: at 108
])
def test_trailing_stop_gap_vs_inside(bar3: tuple, price: float) -> None:
    # entry at t1's open 100 (100 shares); highs since entry: t1 110, t2 120.
    # t1: level 0.9·100 = 90 (only the entry price known), low 99: no exit
    # t2: level 0.9·110 = 99, low 105: no exit
    # t3: level 0.9·120 = 108
    o3, h3, l3, c3 = bar3
    bars = panel([100.0, 100.0, 115.0, o3], [100.0, 105.0, 118.0, c3],
                 h=[101.0, 110.0, 120.0, h3], lo=[99.0, 99.0, 105.0, l3])
    res = run(spec(risk={"trailing_stop": 0.1}), bars, frictionless(10_000.0))
    f = res.fills
    assert f["price"].tolist() == approx([100.0, price])
    assert list(f["timestamp"]) == [bars.index[1], bars.index[3]]
    assert list(f["reason"]) == ["entry", "trailing_stop"]
    assert res.trades["reason"].tolist() == ["trailing_stop"]
    assert res.equity.iloc[-1] == approx(100.0 * price)


# ---------------------------------------------------------------------- borrow
def test_short_borrow_act365_over_a_weekend() -> None:
    # borrow 100 bps/yr; Thu 2024-01-04, Fri 01-05, Mon 01-08, Tue 01-09.
    # short at Fri's open 50 with capital 10_000: q = 200, cash 20_000.
    # Fri -> Mon (3 days): 0.01 · 3/365 · 200 · 52 (Fri close) = 312/365
    # Mon -> Tue (1 day):  0.01 · 1/365 · 200 · 48 (Mon close) =  96/365
    bars = panel([50.0, 50.0, 51.0, 49.0], [50.0, 52.0, 48.0, 49.0],
                 dates=["2024-01-04", "2024-01-05", "2024-01-08", "2024-01-09"])
    res = run(spec(direction="short"), bars, frictionless(10_000.0, borrow_bps=100.0))
    assert res.fills["quantity"].tolist() == approx([200.0])
    assert res.fills["side"].tolist() == ["sell"]
    b2, b3 = 312.0 / 365.0, 96.0 / 365.0
    assert res.execution["costs"]["borrow"] == approx(b2 + b3)
    assert res.equity.tolist() == approx([
        10_000.0,
        20_000.0 - 200.0 * 52.0,
        20_000.0 - b2 - 200.0 * 48.0,
        20_000.0 - b2 - b3 - 200.0 * 49.0,
    ])


# ------------------------------------------------------------------- leverage
LEVERED = {"method": "fixed_fraction", "fraction": 1.5, "max_leverage": 2}


def test_max_leverage_clips_an_order_above_equity() -> None:
    # fraction 1.5 of 10_000 at open 100 -> 150 shares wanted. max_leverage 1:
    # gross exposure after the order <= 1 × equity at the open (10_000) -> 100 shares.
    # clipped once; 50·100 = 5000 reported unfilled: fill rate 10000/15000; cash 0
    bars = panel([100.0, 100.0, 104.0], [100.0, 102.0, 103.0])
    res = run(spec(sizing=LEVERED), bars, frictionless(10_000.0, max_leverage=1.0))
    assert res.fills["quantity"].tolist() == approx([100.0])
    ex = res.execution
    assert ex["n_clipped"] == 1
    assert ex["unfilled_notional"] == approx(5_000.0)
    assert ex["fill_rate"] == approx(10_000.0 / 15_000.0)
    assert res.equity.tolist() == approx([10_000.0, 100.0 * 102.0, 100.0 * 103.0])


def test_looser_leverage_fills_on_credit() -> None:
    # max_leverage 2 allows 20_000 of exposure: the 150 shares (15_000) fill in full,
    # cash = 10_000 - 15_000 = -5_000 (within (2 - 1) × equity)
    bars = panel([100.0, 100.0, 104.0], [100.0, 102.0, 103.0])
    res = run(spec(sizing=LEVERED), bars, frictionless(10_000.0, max_leverage=2.0))
    assert res.fills["quantity"].tolist() == approx([150.0])
    ex = res.execution
    assert ex["n_clipped"] == 0
    assert ex["unfilled_notional"] == 0.0
    assert ex["fill_rate"] == approx(1.0)
    assert res.equity.tolist() == approx([10_000.0, -5_000.0 + 150.0 * 102.0,
                                          -5_000.0 + 150.0 * 103.0])
