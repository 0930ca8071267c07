"""The equal-weight benchmark: a hand-computed buy-and-hold with a late listing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphaloop.data.bars import Bars
from alphaloop.engines.benchmark import (
    BenchmarkError,
    benchmark_spec,
    equal_weight_returns,
    panel_benchmark,
    symbol_returns,
)
from alphaloop.engines.costs import CostModel
from alphaloop.strategy.spec import StrategySpec

NAN = np.nan
ZERO = CostModel(fees_bps=0, slippage_bps=0)


def _panel() -> Bars:
    """A from bar 0; B lists at bar 2 (its first bar)."""
    o = np.array([[10, NAN], [10, NAN], [11, 20], [12, 20], [12, 22], [13, 21]], float)
    c = np.array([[10, NAN], [11, NAN], [12, 20], [12, 21], [13, 22], [13, 22]], float)
    idx = pd.bdate_range("2024-01-01", periods=6, tz="UTC")
    return Bars(index=idx, symbols=("A", "B"), open=o, high=np.fmax(o, c),
                low=np.fmin(o, c), close=c, volume=np.full(o.shape, 1e6))


def test_equal_weight_equals_hand_computed_buy_and_hold_with_late_listing() -> None:
    # Bar 0: A's first bar; its signal (close > 0) at the close trades at bar 1's open.
    # Bar 1: all capital in A, bought at 10: equity 11 / 10 = 1.1.
    # Bar 2: A closes 12: equity 1.2. B lists today (close 20), so it is tradable from
    #        bar 3's open: nothing knew of B before bar 2.
    # Bar 3: at the open the equity (0.1 shares x 12 = 1.2) is split 0.6 / 0.6;
    #        A: 0.6 x 12/12 = 0.6; B bought at 20: 0.6 x 21/20 = 0.63 → 1.23.
    # Bar 4: A 0.6 x 13/12 = 0.65, B 0.63 x 22/21 = 0.66 → 1.31 (each sleeve drifts).
    # Bar 5: A 13 → 13, B 22 → 22: 1.31, no rebalance.
    equity = np.array([1.0, 1.1, 1.2, 1.23, 1.31, 1.31])
    expected = np.concatenate([[0.0], equity[1:] / equity[:-1] - 1.0])
    got = equal_weight_returns(_panel(), ZERO)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_entry_pays_the_engines_costs() -> None:
    # 10 bps fee, 5 bps slippage: bought at 10 x 1.0005 plus a 0.1 % commission,
    # so bar 1's equity is 11 / (10.005 x 1.001)
    got = equal_weight_returns(_panel(), CostModel(fees_bps=10, slippage_bps=5))
    assert got[1] == pytest.approx(11 / (10.005 * 1.001) - 1, abs=1e-12)
    assert got[2] == pytest.approx(12 / 11 - 1, abs=1e-12)  # held: no cost


def test_benchmark_is_causal_truncation() -> None:
    """The benchmark on bars cut at t equals the full benchmark up to t."""
    bars = _panel()
    full = equal_weight_returns(bars, ZERO)
    for t in range(2, bars.n_bars):
        cut = equal_weight_returns(bars.slice(0, t), ZERO)
        np.testing.assert_allclose(cut, full[:t], atol=1e-12)


def test_symbol_and_cash_benchmarks() -> None:
    bars = _panel()
    a = symbol_returns(bars, "A", ZERO)
    np.testing.assert_allclose(a[1:], bars.close[1:, 0] / np.r_[10.0, bars.close[1:-1, 0]] - 1,
                               atol=1e-12)
    assert not panel_benchmark(bars, "cash").any()
    with pytest.raises(BenchmarkError, match="'C' is not in the data"):
        symbol_returns(bars, "C")


def test_spec_is_always_long() -> None:
    spec = benchmark_spec()
    assert spec.direction == "long" and spec.entry == "close > 0"


def test_symbols_trade_only_while_members() -> None:
    """B is a member only until 2024-01-04 (bar 3): from bar 4 on the benchmark holds A
    alone, as if B had been delisted; with membership B all along it holds both."""
    from dataclasses import replace

    from alphaloop.data.membership import membership_from_frame

    rows = [("A", "2020-01-01", None), ("B", "2020-01-01", "2024-01-04")]
    m = membership_from_frame(pd.DataFrame(rows, columns=["symbol", "start", "end"]))
    bars = _panel()
    left = equal_weight_returns(replace(bars, membership=m), ZERO)
    stay = equal_weight_returns(bars, ZERO)
    np.testing.assert_allclose(left[:4], stay[:4], atol=1e-12)
    # bar 4: B leaves the universe, its sleeve is sold; A's sleeve is resized to all the
    # equity at the open (1.23 at bar 3's close; A opens 12 = its close, B's last close 21
    # is what the sold sleeve is worth) and earns 13 / 12
    assert left[4] == pytest.approx(13 / 12 - 1, abs=1e-12)
    assert stay[4] != pytest.approx(left[4])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(0, 59), min_size=6,
                                                   max_size=6))
def test_membership_engines_agree_and_trade_members_only(seed: int, cuts: list[int]) -> None:
    """With random membership periods: frictionless engine B equals engine A, and no
    trade of either is open on a bar where its symbol is not a member."""
    from dataclasses import replace

    from alphaloop.data.membership import membership_from_frame
    from alphaloop.data.synthetic import generate
    from alphaloop.engines.engine_a import backtest
    from alphaloop.engines.engine_b import verify
    from alphaloop.engines.execution import ExecutionModel

    bars = generate(3, 60, seed=seed)
    days = bars.index.normalize().tz_localize(None)
    rows = []
    for j, sym in enumerate(bars.symbols):
        a, b = sorted(cuts[2 * j:2 * j + 2])
        rows.append((sym, days[a].date().isoformat(), days[b].date().isoformat()))
    m = membership_from_frame(pd.DataFrame(rows, columns=["symbol", "start", "end"]))
    bars = replace(bars, membership=m)
    spec = StrategySpec(entry="close > sma(close, 3)", exit="close < sma(close, 3)")
    a = backtest(spec, bars, ZERO)
    b = verify(spec, bars, ExecutionModel.frictionless(), capacity=False)
    np.testing.assert_allclose(b.returns.to_numpy(), a.returns.to_numpy(), atol=1e-9)
    member = bars.member_mask()
    assert member is not None
    for _, t in a.trades.iterrows():
        j = bars.symbols.index(t["symbol"])
        first = bars.index.get_loc(t["entry_time"])
        last = (bars.index.get_loc(t["exit_time"]) if pd.notna(t["exit_time"])
                else bars.n_bars - 1)
        # held from the entry fill to the exit; the exit of a removed member happens on
        # the bar it leaves, so the bars before the exit are all member bars
        assert member[first:last, j].all(), (t["symbol"], first, last)
