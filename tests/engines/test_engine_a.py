"""Engine A (run_batch / backtest) on tiny panels worked out by hand, plus properties.

Semantics under test (kernel_a's docstring): a signal at t's close fills at t+1's
open; buys fill at open·(1+slip), sells at open·(1-slip); a position uses the whole
sleeve: q = E / (p·(1+fee)); closing gives back q·p·(1-fee) (long) and costs
q·p·(1+fee) (short cover); stops/take-profits trigger on the bar's range and fill
at the level, or at the open when the open is already beyond it; the sleeve is then
marked to the close. Capital 1.0 is split equally over the symbols tradable at the
time (engines.universe): it waits as cash until the first allocation at bar 1's open.
A trade still open at the end is valued at the last close, with no exit fee.

Unless a test says otherwise costs are zero so that the numbers stay readable.
"""

from __future__ import annotations

import math
from unittest.mock import patch

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphaloop.data.bars import Bars
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import backtest, run_batch
from alphaloop.engines.metrics import CORE_METRICS
from alphaloop.strategy.spec import StrategySpec

ZERO = CostModel(fees_bps=0, slippage_bps=0)
DEFAULT = CostModel(fees_bps=10, slippage_bps=5)
PPY = 252.0
nan = math.nan


def make(o: list, c: list, h: list | None = None, lo: list | None = None,
         symbols: tuple[str, ...] | None = None) -> Bars:
    """A panel from per-bar lists (one symbol) or per-bar rows (several symbols).
    high/low default to max/min(open, close); volume is 1."""
    oa = np.array(o, dtype=float)
    ca = np.array(c, dtype=float)
    if oa.ndim == 1:
        oa, ca = oa[:, None], ca[:, None]
    ha = np.fmax(oa, ca) if h is None else np.array(h, dtype=float).reshape(oa.shape)
    la = np.fmin(oa, ca) if lo is None else np.array(lo, dtype=float).reshape(oa.shape)
    ha = np.where(np.isnan(oa) | np.isnan(ca), nan, ha)
    la = np.where(np.isnan(oa) | np.isnan(ca), nan, la)
    n_bars, n_sym = oa.shape
    symbols = symbols or tuple(f"S{i}" for i in range(n_sym))
    idx = pd.date_range("2023-01-02", periods=n_bars, freq="B", tz="UTC")  # weekdays: 252/yr
    return Bars(index=idx, symbols=symbols, open=oa.copy(), high=ha, low=la, close=ca.copy(),
                volume=np.where(np.isnan(ca), nan, 1.0))


def run1(spec: StrategySpec, bars: Bars, costs: CostModel = ZERO):
    res = run_batch([spec], bars, costs)
    return res.equity[0], res.returns[0], res.metrics.iloc[0]


def spec(entry: str = "close > 10.5", exit: str = "close < 10.5", **kw) -> StrategySpec:
    return StrategySpec(entry=entry, exit=exit, **kw)


def approx(x, rel: float = 1e-12):
    return pytest.approx(x, rel=rel, abs=1e-12)


# ------------------------------------------------------------ round trips
def test_long_round_trip_with_fees_and_slippage() -> None:
    # fee 10 bps, slippage 5 bps; entry close > 10.5, exit close < 10.5
    # t0 o=10 c=10  exit true but flat: nothing
    # t1 o=10 c=11  entry -> buy at t2's open
    # t2 o=12 c=12  fill p = 12·1.0005 = 12.006 ; q = 1/(12.006·1.001) = 1/12.018006
    #               cash = 1 - q·12.006·1.001 = 0 ; E = q·12 = 12/12.018006
    # t3 o=13 c=10  E = 10/12.018006 ; exit signal
    # t4 o=9  c=9   sell p = 9·0.9995 = 8.9955 ; cash = q·8.9955·0.999 = 8.9865045/12.018006
    bars = make(o=[10, 10, 12, 13, 9], c=[10, 11, 12, 10, 9])
    eq, r, m = run1(spec(), bars, DEFAULT)
    q = 1 / 12.018006
    want = [1.0, 1.0, 12 * q, 10 * q, 8.9865045 * q]
    assert eq == approx(want)
    assert r == approx([0.0, 0.0, 12 * q - 1, 10 / 12 - 1, 8.9865045 / 10 - 1])
    assert m["total_return"] == approx(8.9865045 * q - 1)
    assert m["n_trades"] == 1 and m["win_rate"] == 0.0 and m["profit_factor"] == 0.0
    # in the market (gross/equity = 1) on bars 2 and 3 of 5
    assert m["exposure"] == approx(2 / 5)
    # traded/previous equity: bar 2: q·12.006/1 ; bar 4: q·8.9955/(10q) = 0.89955
    assert m["turnover"] == approx((12.006 * q + 0.89955) / (5 / PPY))


def test_short_round_trip_with_fees_and_slippage() -> None:
    # direction short, entry close < 10.5, exit close > 10.5 ; fee 10 bps, slip 5 bps
    # t1 c=10 -> short at t2's open
    # t2 o=10: p = 10·0.9995 = 9.995 ; q = 1/(9.995·1.001) = 1/10.004995
    #          cash = 1 + q·9.995·0.999 = 1 + 9.985005q ; c=9: E = 1 + (9.985005 - 9)q
    # t3 c=11: E = 1 + (9.985005 - 11)q ; exit signal
    # t4 o=12: cover at 12·1.0005 = 12.006 costing q·12.006·1.001 = 12.018006q
    #          E = 1 + (9.985005 - 12.018006)q = 1 - 2.033001q
    bars = make(o=[11, 11, 10, 9, 12], c=[11, 10, 9, 11, 12])
    s = spec(entry="close < 10.5", exit="close > 10.5", direction="short")
    eq, _, m = run1(s, bars, DEFAULT)
    q = 1 / 10.004995
    assert eq == approx([1, 1, 1 + 0.985005 * q, 1 - 1.014995 * q, 1 - 2.033001 * q])
    assert m["n_trades"] == 1 and m["win_rate"] == 0.0


def test_both_reverses_at_one_open() -> None:
    # direction both, fee 10 bps, no slippage ; entry close > 10.5 -> long, exit
    # close < 10.5 -> short. t0 close 10.5: neither.
    # t1 c=11 -> long ; t2 o=12: q1 = 1/(12·1.001) = 1/12.012, cash 0, E = 12/12.012
    # t3 c=10 -> short ; E = 10/12.012
    # t4 o=9: sell q1: cash = E4 = 9·0.999/12.012 = 8.991/12.012
    #         short q2 = E4/(9·1.001) = E4/9.009 ; cash = E4 + q2·9·0.999 = E4(1 + 8.991/9.009)
    #         c=8: E = cash - 8·q2 = E4(1 + 0.991/9.009)
    # t5 o=8 c=8: still short (exit true again = stay short): same E
    bars = make(o=[10.5, 10.5, 12, 11, 9, 8], c=[10.5, 11, 12, 10, 8, 8])
    costs = CostModel(fees_bps=10, slippage_bps=0)
    res = run_batch([spec(direction="both")], bars, costs)
    eq, m = res.equity[0], res.metrics.iloc[0]
    e4 = 8.991 / 12.012
    final = e4 * (1 + 0.991 / 9.009)
    assert eq == approx([1, 1, 12 / 12.012, 10 / 12.012, final, final])
    assert m["n_trades"] == 2
    # trade 1 lost 1 - e4; trade 2 (open at the end) is valued at the last close, as
    # equity is: cash E4(1 + 8.991/9.009) - 8·q2 - E4 = e4·(8.991 - 8)/9.009 = e4·0.991/9.009
    assert m["win_rate"] == 0.5
    assert m["profit_factor"] == approx((e4 * 0.991 / 9.009) / (1 - e4))
    # traded notional / previous equity: t2: q1·12 / 1 = 1/1.001 ;
    # t4: both legs at 9, (q1·9 + q2·9) / E3 with E3 = 10/12.012
    t4 = (9 / 12.012 + 9 * e4 / 9.009) / (10 / 12.012)
    assert m["turnover"] == approx((1 / 1.001 + t4) / (6 / PPY))


# ------------------------------------------------------------ protective exits
def _stop_bars(o3: float, h3: float, l3: float, c3: float) -> Bars:
    # entry signal at t1 (close 11) only, fill at t2's open 10
    return make(o=[10, 10, 10, o3, 10], c=[10, 11, 10, c3, 10],
                h=[10, 11, 10.2, h3, 10], lo=[10, 10, 9.8, l3, 10])


def test_stop_loss_intrabar_fills_at_level() -> None:
    # entry 10, stop 10·0.95 = 9.5 ; t3 low 9.2 <= 9.5 < open 10 -> sell at 9.5
    # q = 0.1: E = 0.95 from t3 on (close 9.8 < 10.5: no re-entry)
    eq, _, m = run1(spec(exit="close < 5", risk={"stop_loss": 0.05}),
                    _stop_bars(10, 10.2, 9.2, 9.8))
    assert eq == approx([1, 1, 1, 0.95, 0.95])
    assert m["n_trades"] == 1 and m["win_rate"] == 0


def test_stop_loss_on_gap_fills_at_open() -> None:
    # t3 opens at 9 below the 9.5 stop -> sell at the open 9: E = 0.9
    eq, _, _ = run1(spec(exit="close < 5", risk={"stop_loss": 0.05}), _stop_bars(9, 9.4, 8.8, 9.2))
    assert eq == approx([1, 1, 1, 0.9, 0.9])


def test_stop_loss_level_with_costs() -> None:
    # fee 10 bps, slip 5 bps: entry p = 10.005, q = 1/(10.005·1.001) = 1/10.015005
    # stop level from the fill: 10.005·0.95 = 9.50475 ; sold at 9.50475·0.9995, less fee
    eq, _, _ = run1(spec(exit="close < 5", risk={"stop_loss": 0.05}),
                    _stop_bars(10, 10.2, 9.2, 9.8), DEFAULT)
    final = 9.50475 * 0.9995 * 0.999 / 10.015005
    assert eq[3:] == approx([final, final])


def test_stop_loss_short_intrabar_and_gap() -> None:
    # short at 10 (signal close < 10.5 at t1), stop 10.5
    s = spec(entry="close < 10.5", exit="close > 50", direction="short", risk={"stop_loss": 0.05})
    bars = make(o=[11, 11, 10, 10, 11], c=[11, 10, 10.8, 10.8, 11],
                h=[11, 11, 10.2, 10.7, 11], lo=[11, 10, 10, 9.9, 11])
    # t2: high 10.2 < 10.5, close 10.8 ; t3: high 10.7 >= 10.5 -> cover at 10.5
    # E = 1 + 0.1·(10 - 10.5) = 0.95 ; t3 close 10.8 > 10.5 -> no new short
    eq, _, _ = run1(s, bars)
    assert eq == approx([1, 1, 1 + 0.1 * (10 - 10.8), 0.95, 0.95])
    gap = make(o=[11, 11, 10, 11, 11], c=[11, 10, 10.8, 11, 11],
               h=[11, 11, 10.2, 11.2, 11], lo=[11, 10, 10, 10.9, 11])
    eq, _, _ = run1(s, gap)  # opens at 11 above the stop: cover at 11, E = 0.9
    assert eq[3:] == approx([0.9, 0.9])


def test_take_profit_intrabar_and_gap() -> None:
    # long at 10, target 11 ; intrabar: open 10.5, high 11.5 -> sell at 11 (E = 1.1)
    s = spec(exit="close < 5", risk={"take_profit": 0.1})
    eq, _, _ = run1(s, _stop_bars(10.5, 11.5, 10.4, 10.4))
    assert eq == approx([1, 1, 1, 1.1, 1.1])
    # gap: opens at 12 above the target -> sell at the open 12 (E = 1.2)
    eq, _, _ = run1(s, _stop_bars(12, 12.5, 10.2, 10.4))
    assert eq[3:] == approx([1.2, 1.2])


def test_take_profit_short() -> None:
    # short at 10, target 9: low 8.5 -> cover at 9 (E = 1.1) ; gap open 8 -> 1.2
    s = spec(entry="close < 10.5", exit="close > 50", direction="short",
             risk={"take_profit": 0.1})
    bars = make(o=[11, 11, 10, 9.5, 11], c=[11, 10, 10.8, 10.8, 11],
                h=[11, 11, 10.9, 10.9, 11], lo=[11, 10, 9.6, 8.5, 11])
    eq, _, _ = run1(s, bars)
    assert eq[3:] == approx([1.1, 1.1])
    gap = make(o=[11, 11, 10, 8, 11], c=[11, 10, 10.8, 10.8, 11],
               h=[11, 11, 10.9, 10.9, 11], lo=[11, 10, 9.6, 7.5, 11])
    eq, _, _ = run1(s, gap)
    assert eq[3:] == approx([1.2, 1.2])


def test_stop_first_when_stop_and_target_in_one_bar() -> None:
    # t3 range 9.2 .. 11.5 holds both the stop 9.5 and the target 11: the stop wins
    s = spec(exit="close < 5", risk={"stop_loss": 0.05, "take_profit": 0.1})
    eq, _, _ = run1(s, _stop_bars(10, 11.5, 9.2, 10.4))
    assert eq[3:] == approx([0.95, 0.95])


def test_stop_can_trigger_on_the_entry_bar() -> None:
    # fill at t2's open 10, the same bar dips to 9.3 below the 9.5 stop -> out at 9.5
    s = spec(exit="close < 5", risk={"stop_loss": 0.05})
    bars = make(o=[10, 10, 10, 10], c=[10, 11, 9.8, 10], h=[10, 11, 10.1, 10],
                lo=[10, 10, 9.3, 10])
    eq, _, m = run1(s, bars)
    assert eq == approx([1, 1, 0.95, 0.95]) and m["n_trades"] == 1


def test_trailing_stop_uses_previous_bars_highs_only() -> None:
    # edge-triggered entry: cross_above(close, 10.5) only at t1 ; trailing 10 %
    # t2: buy at 10, extreme starts at the fill 10 -> level 9.0 ; low 9.5: no exit
    #     (using this bar's own high 12 would give 10.8 and stop out at 10.8)
    #     extreme -> 12 after the bar
    # t3: level 12·0.9 = 10.8 ; low 10.9: no exit ; high 11.6 < 12
    # t4: level 10.8 (not 13·0.9 = 11.7 from this bar's high, which would fill at
    #     the open 11) ; low 10.7 -> sell at 10.8 -> E = 1.08
    s = spec(entry="cross_above(close, 10.5)", exit="close < 5", risk={"trailing_stop": 0.1})
    bars = make(o=[10, 10, 10, 11.5, 11], c=[10, 11, 11, 11, 12],
                h=[10, 11, 12, 11.6, 13], lo=[10, 10, 9.5, 10.9, 10.7])
    eq, _, m = run1(s, bars)
    assert eq == approx([1, 1, 1.1, 1.1, 1.08])
    assert m["n_trades"] == 1 and m["win_rate"] == 1.0


def test_max_bars_exits_then_level_entry_reenters() -> None:
    # max_bars 2, entry always true. t0 signal -> t1 buy at 10 (q = 0.1), held 1
    # t2 held 2 -> sell at t3's open 12 (cash 1.2) ; t3 close: entry still true
    # t4 buy at 13: q = 1.2/13 ; t5 (last bar) held 2 but nothing can execute
    bars = make(o=[10, 10, 11, 12, 13, 14], c=[11, 11, 12, 13, 14, 15])
    eq, r, m = run1(spec(exit="close < 0", risk={"max_bars": 2}), bars)
    assert eq == approx([1, 1.1, 1.2, 1.2, 1.2 * 14 / 13, 1.2 * 15 / 13])
    assert r[3] == 0.0  # flat on bar 3
    assert m["n_trades"] == 2


# ------------------------------------------------------------ sizing
def _vol_bars() -> Bars:
    return make(o=[100, 110, 99, 100, 105], c=[100, 110, 99, 105, 105])


def _frac(target: float, cap: float) -> float:
    # close-to-close returns at t1, t2: 110/100 - 1 = 0.1, 99/110 - 1 = -0.1
    # sample std of two values = |r1 - r2| / sqrt(2) = 0.2/sqrt(2) = sqrt(0.02)
    # annualized: sqrt(0.02)·sqrt(252) = sqrt(5.04) = 2.2449944...
    r1, r2 = 110 / 100 - 1, 99 / 110 - 1
    vol = abs(r1 - r2) / math.sqrt(2) * math.sqrt(PPY)
    assert vol == pytest.approx(math.sqrt(5.04), rel=1e-12)
    return min(target / vol, cap)


@pytest.mark.parametrize(("target", "cap"), [(0.5, 1.0), (5.0, 1.5)])
def test_vol_target_sizing(target: float, cap: float) -> None:
    # signal at t2 (close 99 < 100) ; fraction w = min(target/vol, cap) known at t2
    # t3: buy w·1/100 shares at 100, cash 1 - w ; close 105: E = 1 + 0.05·w
    sizing = {"method": "vol_target", "target_vol": target, "vol_window": 2, "max_leverage": cap}
    w = _frac(target, cap)
    eq, _, _ = run1(spec(entry="close < 100", exit="close < 0", sizing=sizing), _vol_bars())
    assert eq == approx([1, 1, 1, 1 + 0.05 * w, 1 + 0.05 * w])
    if cap == 1.5:
        assert w == 1.5 and eq[-1] == approx(1.075)  # capped: borrows 0.5


def test_vol_target_waits_for_a_defined_volatility() -> None:
    # entry true on every bar, but the 2-return std exists only from t2: the orders
    # decided at t0 and t1 have size 0 (no trade); the first fill is t3's open
    sizing = {"method": "vol_target", "target_vol": 0.5, "vol_window": 2}
    w = _frac(0.5, 1.0)
    eq, _, m = run1(spec(entry="close > 0", exit="close < 0", sizing=sizing), _vol_bars())
    assert eq == approx([1, 1, 1, 1 + 0.05 * w, 1 + 0.05 * w])
    assert m["n_trades"] == 1


# ------------------------------------------------------------ missing bars
def test_nan_bars_and_late_listing_hold_cash() -> None:
    # entry close > 0 (true on every real bar), never exit. Capital goes to the
    # symbols tradable at the previous close and still there:
    # t0: only A exists: 1.0 in cash. t1's open: all of it to A, buy q = 1/10 = 0.1
    #    E = 1.1 at t1's close 11 ; t2: A has no bar (marked at 11: 1.1, one missing
    #    bar is no delisting), B lists at 20 with no capital yet -> 1.1
    # t3's open: re-split over A and B: A is worth 0.1·12 = 1.2, 0.6 each; A sells
    #    0.05 at 12 (cash 0.6, handed to B), B buys 0.6/22 at 22 ; E = 0.6 + 0.6 = 1.2
    # t4: A = 0.05·13 = 0.65, B = 0.6/22·24
    bars = make(o=[[10, nan], [10, nan], [nan, 20], [12, 22], [13, 24]],
                c=[[10, nan], [11, nan], [nan, 20], [12, 22], [13, 24]])
    eq, r, m = run1(spec(entry="close > 0", exit="close < 0"), bars)
    assert eq == approx([1.0, 1.1, 1.1, 1.2, 0.65 + 0.6 * 24 / 22])
    assert r[2] == 0.0
    assert m["n_trades"] == 2
    assert np.isfinite(r).all()


def test_order_waits_over_a_missing_bar() -> None:
    # t0 entry -> buy at t1's open 10 ; t1 close 10 -> exit ; t2 no bar: the order
    # waits, equity marked at 10 ; t3 sells at its open 8: E = 0.8
    bars = make(o=[10, 10, nan, 8], c=[11, 10, nan, 10])
    eq, _, _ = run1(spec(), bars)
    assert eq == approx([1, 1, 1, 0.8])


def test_two_symbols_are_the_sum_of_half_sleeves() -> None:
    rng = np.random.default_rng(4)
    n_bars = 60
    c = 10.5 + np.cumsum(rng.normal(0, 0.3, (n_bars, 2)), axis=0)
    o = c + rng.normal(0, 0.1, c.shape)
    h = np.maximum(o, c) + rng.random(c.shape) * 0.3
    lo = np.minimum(o, c) - rng.random(c.shape) * 0.3
    c[10:13, 1] = nan
    both = make(o=o, c=c, h=h, lo=lo, symbols=("A", "B"))
    a, b = both.select(["A"]), both.select(["B"])
    specs = [spec(), spec(direction="short", risk={"stop_loss": 0.02}),
             spec(direction="both", risk={"trailing_stop": 0.03, "take_profit": 0.05})]
    ra, rb, rab = (run_batch(specs, x, DEFAULT) for x in (a, b, both))
    np.testing.assert_allclose(rab.equity, 0.5 * ra.equity + 0.5 * rb.equity, rtol=1e-12)
    n = ra.metrics["n_trades"] + rb.metrics["n_trades"]
    assert (rab.metrics["n_trades"] == n).all() and (n > 0).all()
    wins = (ra.metrics["win_rate"] * ra.metrics["n_trades"]
            + rb.metrics["win_rate"] * rb.metrics["n_trades"])
    np.testing.assert_allclose(rab.metrics["win_rate"], wins / n, rtol=1e-12)


# ------------------------------------------------------------ trade statistics
def test_trade_statistics_on_a_known_sequence() -> None:
    # entry close > 10.5, exit close < 10.5, no costs, one symbol
    #  t  o   c
    #  0  10  11  entry
    #  1  10  11  buy 0.1 at 10
    #  2  11  10  exit
    #  3  12  11  sell at 12: cash 1.2 (trade 1: +0.2) ; entry
    #  4  12  10  buy 0.1 at 12 ; exit
    #  5   9  11  sell at 9: cash 0.9 (trade 2: -0.3) ; entry
    #  6  10  11  buy 0.09 at 10 ; E = 0.99
    #  7  11  11  open trade valued at the close: +0.09 (trade 3)
    bars = make(o=[10, 10, 11, 12, 12, 9, 10, 11], c=[11, 11, 10, 11, 10, 11, 11, 11])
    eq, _, m = run1(spec(), bars)
    assert eq == approx([1, 1.1, 1.0, 1.2, 1.0, 0.9, 0.99, 0.99])
    assert m["n_trades"] == 3
    assert m["win_rate"] == approx(2 / 3)
    assert m["profit_factor"] == approx(0.29 / 0.3)
    assert m["total_return"] == approx(-0.01)


def test_signal_at_the_last_bar_never_executes() -> None:
    bars = make(o=[10, 10, 10, 10], c=[10, 10, 10, 11])
    eq, r, m = run1(spec(), bars, DEFAULT)
    assert (eq == 1.0).all() and (r == 0.0).all()
    assert m["n_trades"] == 0 and m["turnover"] == 0.0 and m["exposure"] == 0.0
    assert math.isnan(m["win_rate"]) and math.isnan(m["profit_factor"])


def test_exit_at_the_last_bar_leaves_the_position_open() -> None:
    # buy at t1's open 10 ; exit signal at t3 (last bar) cannot execute: E = c/10
    bars = make(o=[10, 10, 10, 10], c=[11, 11, 12, 10])
    eq, _, m = run1(spec(), bars)
    assert eq == approx([1, 1.1, 1.2, 1.0])
    assert m["n_trades"] == 1


# ------------------------------------------------------------ batch plumbing
def _random_bars(seed: int, n_sym: int, n_bars: int, holes: bool) -> Bars:
    rng = np.random.default_rng(seed)
    c = 10.5 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_bars, n_sym)), axis=0))
    o = c * np.exp(rng.normal(0, 0.01, c.shape))
    h = np.maximum(o, c) * (1 + rng.random(c.shape) * 0.02)
    lo = np.minimum(o, c) * (1 - rng.random(c.shape) * 0.02)
    if holes and n_bars > 10:
        c[rng.random(c.shape) < 0.05] = nan
        c[: n_bars // 3, n_sym - 1] = nan  # listed late
    return make(o=o, c=c, h=h, lo=lo)


SPECS = [
    spec("close > sma(close, 5)", "close < sma(close, 5)"),
    spec("cross_above(sma(close, 3), sma(close, 8))", "cross_below(sma(close, 3), sma(close, 8))",
         direction="short", risk={"stop_loss": 0.03}),
    spec("rank(roc(close, 3)) > 0.5", "rank(roc(close, 3)) < 0.5", direction="both",
         risk={"trailing_stop": 0.04, "take_profit": 0.05}),
    spec("rsi(close, 4) < 45", "rsi(close, 4) > 55", risk={"max_bars": 3},
         sizing={"method": "vol_target", "target_vol": 0.3, "vol_window": 5, "max_leverage": 2}),
    spec("close > highest(high, 4)", "close < lowest(low, 4)",
         sizing={"method": "vol_target", "target_vol": 0.1, "vol_window": 3}),
]


def test_chunking_and_backtest_wrapper_agree_with_one_batch() -> None:
    bars = _random_bars(1, 3, 80, holes=True)
    whole = run_batch(SPECS, bars, DEFAULT)
    done: list[int] = []
    pieces = run_batch(SPECS, bars, DEFAULT, chunk_size=2, progress=done.append)
    assert done == [2, 4, 5]
    np.testing.assert_array_equal(whole.equity, pieces.equity)
    pd.testing.assert_frame_equal(whole.metrics, pieces.metrics)
    for k, s in enumerate(SPECS):
        one = backtest(s, bars, DEFAULT)
        np.testing.assert_array_equal(one.returns.to_numpy(), whole.returns[k])
        assert one.metrics["n_trades"] == whole.metrics["n_trades"].iloc[k]
    assert list(whole.metrics.index) == [s.strategy_id for s in SPECS]


# ------------------------------------------------------------ properties
panels = st.builds(_random_bars, seed=st.integers(0, 2**32 - 1), n_sym=st.integers(1, 4),
                   n_bars=st.integers(2, 60), holes=st.booleans())
FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(bars=panels)
def test_deterministic_finite_and_complete(bars: Bars) -> None:
    a = run_batch(SPECS, bars, DEFAULT)
    b = run_batch(SPECS, bars, DEFAULT)
    np.testing.assert_array_equal(a.equity, b.equity)
    np.testing.assert_array_equal(a.returns, b.returns)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    assert not np.isnan(a.returns).any() and not np.isnan(a.equity).any()
    assert list(a.metrics.columns) == list(CORE_METRICS)
    assert a.returns.shape == (len(SPECS), bars.n_bars)


CONSTANT_SIDES = [
    spec("rsi(close, 3) < 40", "rsi(close, 3) > 60"),
    spec("close > 10.5", "close < 10.5", direction="both"),
    spec("10.4 < close", "rsi(close, 5) >= 70", direction="short", risk={"stop_loss": 0.05}),
    spec("close > sma(close, 4) and rsi(close, 3) < 50", "close < 10"),  # codes > 1.5
    spec("close > sma(close, 5)", "close < sma(close, 5)"),  # no constant: C-typed list
]


@FAST
@given(bars=panels)
def test_constant_operands_are_views_with_the_numbers_of_full_arrays(bars: Bars) -> None:
    """A comparison's constant side reaches the kernel as a zero-stride view of one
    number (SignalEvaluator._flat), not an (N x T) array; the results must be those
    of the materialized constant, bit for bit, in both kernels."""
    from alphaloop.engines.signals import SignalEvaluator

    ev = SignalEvaluator(bars)
    flat = ev.comparison(CONSTANT_SIDES[0].entry_node)[0]  # canonical: 40 > rsi(...)
    assert flat.strides == (0, 0) and flat.shape == ev.shape and not flat.flags.writeable
    assert ev._cache_bytes == sum(a.nbytes for a in ev.cache.values())
    views = run_batch(CONSTANT_SIDES, bars, DEFAULT)
    trades = [run_batch([s], bars, DEFAULT, record_trades=True) for s in CONSTANT_SIDES]
    with patch.object(SignalEvaluator, "_flat", SignalEvaluator.constant):
        full = run_batch(CONSTANT_SIDES, bars, DEFAULT)
        full_trades = [run_batch([s], bars, DEFAULT, record_trades=True)
                       for s in CONSTANT_SIDES]
    np.testing.assert_array_equal(views.equity, full.equity)
    pd.testing.assert_frame_equal(views.metrics, full.metrics)
    for a, b_ in zip(trades, full_trades, strict=True):
        np.testing.assert_array_equal(a.extra["trades"], b_.extra["trades"])
        np.testing.assert_array_equal(a.returns, b_.returns)


LONG_ONLY = [
    spec("close > sma(close, 3)", "close < sma(close, 3)"),
    spec("rsi(close, 3) < 50", "rsi(close, 3) > 50", risk={"max_bars": 2}),
    spec("rank(close) >= 0.5", "rank(close) < 0.5"),
    spec("close > 0", "close < 0"),
]


@FAST
@given(bars=panels, fees=st.floats(0.5, 50), slip=st.floats(0, 20))
def test_costs_never_help_long_only(bars: Bars, fees: float, slip: float) -> None:
    # same signals, same positions; every fill is worse with costs, so no sleeve can
    # end higher (specs without price-level exits, whose levels move with the fill)
    free = run_batch(LONG_ONLY, bars, ZERO).metrics["total_return"].to_numpy()
    paid = run_batch(LONG_ONLY, bars, CostModel(fees_bps=fees, slippage_bps=slip))
    assert (paid.metrics["total_return"].to_numpy() <= free + 1e-12).all()


@FAST
@given(seed=st.integers(0, 2**32 - 1), n_sym=st.integers(1, 4), n_bars=st.integers(2, 60))
def test_always_long_is_buy_and_hold_from_the_second_open(
        seed: int, n_sym: int, n_bars: int) -> None:
    # entry close > 0 is true at t0's close -> every sleeve buys (1/N)/o_1 at t1's
    # open and never exits: E_t = 1 for t = 0, and mean_i(c_{t,i}/o_{1,i}) for t >= 1
    bars = _random_bars(seed, n_sym, n_bars, holes=False)
    eq, r, m = run1(spec("close > 0", "close < 0"), bars)
    want = np.concatenate([[1.0], (bars.close[1:] / bars.open[1]).mean(axis=1)])
    np.testing.assert_allclose(eq, want, rtol=1e-12)
    np.testing.assert_allclose(r[1:], want[1:] / want[:-1] - 1, rtol=1e-9, atol=1e-14)
    assert r[0] == 0.0
    assert m["n_trades"] == (n_sym if n_bars > 1 else 0)


# ------------------------------------------------------------------ trade list
def test_trade_list_reconciles_with_equity_on_real_data() -> None:
    """Every unit of P&L is in the trade list: closed trades' pnl plus open trades
    marked at the last close (as equity values them, no exit fee) add up to the
    final equity minus the starting 1.0."""
    from alphaloop.data import load_bars

    bars = load_bars("us_indices")
    spec = StrategySpec(entry="sma(close, 10) > sma(close, 50)",
                        exit="sma(close, 10) < sma(close, 50)", direction="both",
                        risk={"stop_loss": 0.03, "trailing_stop": 0.08, "max_bars": 30})
    costs = CostModel(fees_bps=10, slippage_bps=5)
    res = backtest(spec, bars, costs)
    trades = res.trades
    assert len(trades) == res.metrics["n_trades"]
    assert set(trades["reason"]) <= {"signal", "stop_loss", "trailing_stop", "take_profit",
                                     "max_bars", "open"}
    assert {"stop_loss", "trailing_stop", "max_bars", "signal"} <= set(trades["reason"])
    open_ = trades[trades["reason"] == "open"]
    assert open_["exit_time"].isna().all() and trades.loc[trades["reason"] != "open",
                                                          "exit_time"].notna().all()
    assert len(open_) == 2  # both symbols end in a position
    assert trades["pnl"].sum() == pytest.approx(res.equity.iloc[-1] - 1.0, abs=1e-12)
    assert (trades["exit_time"].dropna() >= trades.loc[trades["exit_time"].notna(),
                                                       "entry_time"]).all()
    wins = (trades["pnl"] > 0).mean()
    assert wins == pytest.approx(res.metrics["win_rate"], abs=1e-12)


def test_trade_list_reasons_by_hand() -> None:
    """Bars (open, high, low, close), entry `close > 10.5`, exit never, stop 5%:
    bar1 close 11 → buy at bar2's open 11.0; stop level 11·0.95 = 10.45; bar2 low 10.4
    ≤ 10.45 → stopped at 10.45 (reason stop_loss). Close 10.6 > 10.5 → buy again at
    bar3's open 10.6; the data ends with the trade open (reason open)."""
    o = [10.0, 10.8, 11.0, 10.6]
    h = [10.2, 11.1, 11.2, 10.9]
    lo = [9.9, 10.7, 10.4, 10.5]
    c = [10.1, 11.0, 10.6, 10.8]
    bars = make(o, c, h=h, lo=lo)
    spec = StrategySpec(entry="close > 10.5", exit="close < 0", risk={"stop_loss": 0.05})
    res = backtest(spec, bars, CostModel(fees_bps=0, slippage_bps=0))
    t = res.trades
    assert list(t["reason"]) == ["stop_loss", "open"]
    assert t["entry_price"].tolist() == pytest.approx([11.0, 10.6])
    assert t["exit_price"].tolist() == pytest.approx([10.45, 10.8])
    assert t["return"].iloc[0] == pytest.approx(10.45 / 11.0 - 1.0)


def test_a_trade_resized_by_a_re_split_returns_its_pnl_over_its_capital_at_entry() -> None:
    """AAA alone from bar 0 (opens 100, 100, 103, 105, 107, 108; closes 100, 102, 104,
    106, 108, 110), BBB lists at bar 3; entry `close > 0`, no costs. Hand calculation:
    bar 0's close buys at bar 1's open 100 with the whole 1.0: 0.01 shares. At bar 4's
    open (107) the split moves to 1/2 each: AAA's sleeve is worth 1.07, sells 0.005 for
    0.535. At the end the 0.005 left is worth 0.55. pnl = 0.535 + 0.55 - 1.0 = 0.085;
    return 0.085 / 1.0 (the sleeve's equity at entry) = 8.5 %, not pnl over the 0.465
    left invested after the sale (18.3 %, what both engines said before) — AAA rose
    10 %. BBB enters at bar 5's open 52 with 0.535 and is marked at 51: -1/52."""
    from alphaloop.engines.engine_b import verify
    from alphaloop.engines.execution import ExecutionModel

    a = [(100, 101, 99, 100), (100, 102, 99, 102), (103, 104, 102, 104), (105, 106, 104, 106),
         (107, 108, 106, 108), (108, 110, 107, 110)]
    b = [(50, 51, 49, 50), (52, 53, 51, 52), (51, 52, 50, 51)]
    idx = pd.bdate_range("2024-01-01", periods=len(a), tz="UTC")
    rows = [dict(timestamp=t, symbol=sym, open=o, high=h, low=lo, close=c, volume=1e6)
            for sym, prices, times in (("AAA", a, idx), ("BBB", b, idx[3:]))
            for t, (o, h, lo, c) in zip(times, prices, strict=True)]
    bars = Bars.from_long(pd.DataFrame(rows))
    spec = StrategySpec(entry="close > 0", exit="close < 0")
    a_trades = backtest(spec, bars, CostModel(fees_bps=0, slippage_bps=0)).trades
    b_trades = verify(spec, bars, ExecutionModel.frictionless(), capacity=False).trades
    for trades in (a_trades, b_trades):
        got = trades.set_index("symbol")
        assert got.loc["AAA", "pnl"] == pytest.approx(0.085, abs=1e-12)
        assert got.loc["AAA", "return"] == pytest.approx(0.085, abs=1e-12)
        assert got.loc["BBB", "return"] == pytest.approx(51 / 52 - 1, abs=1e-12)


# ----------------------------------------------------------------------- ruin
def test_short_sleeve_is_stopped_out_where_its_equity_reaches_zero() -> None:
    """Short from the t1 open at 100 with capital 1: q = 1/100 = 0.01, cash 2.
    Equity 2 - 0.01·p is zero at p = 200 (the ruin level). t2 closes at 150
    (equity 0.5); t3 trades up to 250 through 200 without a gap (open 150), so the
    sleeve is bought back at 200: equity 0, reason "ruin". It never trades again and
    the portfolio (one symbol) is ruined: -100 %, flat at 0 afterwards."""
    b = make([100, 100, 120, 150, 250, 300], [100, 100, 150, 250, 300, 300],
             h=[100, 101, 150, 250, 300, 310], lo=[99, 99, 110, 140, 240, 290])
    res = backtest(StrategySpec(entry="close > 0", exit="close < 0", direction="short"), b, ZERO)
    assert res.equity.tolist() == approx([1.0, 1.0, 0.5, 0.0, 0.0, 0.0])
    assert res.metrics["total_return"] == approx(-1.0)
    assert res.trades["reason"].tolist() == ["ruin"]
    assert res.trades["exit_price"].iloc[0] == approx(200.0)


def test_ruined_sleeve_does_not_drain_the_others() -> None:
    """Two symbols, 0.5 capital each. A's short is stopped at its ruin level (200);
    B never trades (its entry is never true). Portfolio = 0 + 0.5."""
    o = [[100, 10], [100, 10], [150, 10], [250, 10]]
    c = [[100, 10], [100, 10], [190, 10], [260, 10]]
    h = [[100, 10], [100, 10], [195, 10], [270, 10]]
    lo = [[100, 10], [100, 10], [150, 10], [240, 10]]
    b = make(o, c, h=h, lo=lo)
    res = backtest(StrategySpec(entry="close > 50", exit="close < 0", direction="short"), b, ZERO)
    # t3 opens at 250, beyond the ruin level 200: a gap, so the fill is the open and
    # the loss is real: sleeve A = 1.0 (cash) - 0.005·250 = -0.25; portfolio 0.25
    assert res.equity.tolist() == approx([1.0, 1.0, 0.5 + (1.0 - 0.005 * 190), 0.25])
    assert res.trades["reason"].tolist() == ["ruin"]
