"""Engine B: parity with engine A, ledger consistency, data gate, capacity, failures.

Hand-computed cost tests live in ``test_engine_b_costs.py``; the backtrader peer
check in ``test_parity_backtrader.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphaloop.data import load_bars
from alphaloop.data.bars import Bars
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import backtest, run_batch
from alphaloop.engines.engine_b import daily_returns, verify
from alphaloop.engines.execution import ExecutionModel, Volume
from alphaloop.engines.verification import VerificationPolicy, classify_failures
from alphaloop.errors import DataError
from alphaloop.strategy.spec import StrategySpec

nan = math.nan
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _random_bars(seed: int, n_sym: int, n_bars: int, holes: bool) -> Bars:
    """A random OHLCV panel; with ``holes`` some bars are missing and the last
    symbol is listed late (engine A's test panels, plus a random volume)."""
    rng = np.random.default_rng(seed)
    c = 10.5 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_bars, n_sym)), axis=0))
    o = c * np.exp(rng.normal(0, 0.01, c.shape))
    h = np.maximum(o, c) * (1 + rng.random(c.shape) * 0.02)
    lo = np.minimum(o, c) * (1 - rng.random(c.shape) * 0.02)
    v = rng.integers(1_000, 100_000, c.shape).astype(float)
    if holes and n_bars > 10:
        miss = rng.random(c.shape) < 0.05
        miss[: n_bars // 3, n_sym - 1] = True  # listed late
        for a in (o, h, lo, c, v):
            a[miss] = nan
    idx = pd.date_range("2023-01-02", periods=n_bars, freq="B", tz="UTC")
    return Bars(index=idx, symbols=tuple(f"S{i}" for i in range(n_sym)), open=o, high=h,
                low=lo, close=c, volume=v)


ENTRIES = [("close > sma(close, 5)", "close < sma(close, 5)"),
           ("cross_above(sma(close, 3), sma(close, 8))", "cross_below(sma(close, 3), sma(close, 8))"),
           ("rank(roc(close, 3)) > 0.5", "rank(roc(close, 3)) < 0.5"),
           ("rsi(close, 4) < 45", "rsi(close, 4) > 55"),
           ("close > highest(high, 4)", "close < lowest(low, 4)"),
           ("close > 0", "close < 0")]
SIZINGS = [{}, {"method": "fixed_fraction", "fraction": 0.6},
           {"method": "fixed_fraction", "fraction": 1.5, "max_leverage": 2},
           {"method": "vol_target", "target_vol": 0.3, "vol_window": 5, "max_leverage": 2},
           {"method": "vol_target", "target_vol": 0.2, "vol_window": 4, "vol_estimator": "atr"}]


@st.composite
def specs(draw: st.DrawFn) -> StrategySpec:
    entry, exit_ = draw(st.sampled_from(ENTRIES))
    direction = draw(st.sampled_from(["long", "short", "both"]))
    off = st.none()
    risk = {"stop_loss": draw(off | st.floats(0.005, 0.2)),
            "trailing_stop": draw(off | st.floats(0.005, 0.2)),
            "take_profit": draw(off | st.floats(0.01, 0.5)),
            "max_bars": draw(off | st.integers(1, 10))}
    return StrategySpec(entry=entry, exit=exit_, direction=direction,
                        risk={k: v for k, v in risk.items() if v is not None},
                        sizing=draw(st.sampled_from(SIZINGS)))


panels = st.builds(_random_bars, seed=st.integers(0, 2**32 - 1), n_sym=st.integers(1, 4),
                   n_bars=st.integers(2, 80), holes=st.booleans())


# ----------------------------------------------------------------- parity
@FAST
@given(spec=specs(), bars=panels)
def test_frictionless_engine_b_reproduces_engine_a(spec: StrategySpec, bars: Bars) -> None:
    """The acceptance invariant: every friction zero, market orders only, unlimited
    volume ⇒ engine B's per-bar returns equal engine A's to 1e-9."""
    a = run_batch([spec], bars, CostModel(fees_bps=0, slippage_bps=0))
    b = verify(spec, bars, ExecutionModel.frictionless(), capacity=False)
    np.testing.assert_allclose(b.returns.to_numpy(), a.returns[0], rtol=0, atol=1e-9)
    if b.extra["ruined_bar"] < 0:  # engine A keeps counting trades after a ruin
        assert b.metrics["n_trades"] == a.metrics["n_trades"].iloc[0]


@FAST
@given(spec=specs(), bars=panels, fees=st.floats(0, 50), slip=st.floats(0, 30))
def test_engine_a_cost_model_in_engine_b_reproduces_engine_a(
        spec: StrategySpec, bars: Bars, fees: float, slip: float) -> None:
    """Engine A's fee + slippage are engine B's commission + half-spread: with only
    those on, the engines still agree (slippage is charged on stops too)."""
    costs = CostModel(fees_bps=fees, slippage_bps=slip)
    a = run_batch([spec], bars, costs)
    b = verify(spec, bars, ExecutionModel.from_cost_model(costs), capacity=False)
    np.testing.assert_allclose(b.returns.to_numpy(), a.returns[0], rtol=0, atol=1e-9)


def test_parity_on_real_data_with_trade_lists() -> None:
    bars = load_bars("us_indices")
    spec = StrategySpec(entry="sma(close, 10) > sma(close, 50)",
                        exit="sma(close, 10) < sma(close, 50)", direction="both",
                        risk={"stop_loss": 0.03, "trailing_stop": 0.05})
    costs = CostModel()
    a = backtest(spec, bars, costs)
    b = verify(spec, bars, ExecutionModel.from_cost_model(costs), capacity=False)
    np.testing.assert_allclose(b.returns.to_numpy(), a.returns.to_numpy(), rtol=0, atol=1e-9)
    cols = ["symbol", "side", "entry_time", "exit_time", "reason"]
    pd.testing.assert_frame_equal(a.trades[cols], b.trades[cols])
    # engine A's trade pnl is in units of the starting capital 1.0
    np.testing.assert_allclose(b.trades["pnl"], a.trades["pnl"], rtol=0, atol=1e-9)


# --------------------------------------------------------- ledger invariants
def _reconstruct(result, bars: Bars) -> tuple[np.ndarray, np.ndarray]:
    """Positions and equity rebuilt from the fills ledger alone."""
    fills = result.fills
    pos = np.zeros((bars.n_bars, bars.n_symbols))
    cash = np.zeros(bars.n_bars)
    col = {s: j for j, s in enumerate(bars.symbols)}
    row = bars.index.get_indexer(fills["timestamp"])
    sign = np.where(fills["side"] == "buy", 1.0, -1.0)
    np.add.at(pos, (row, fills["symbol"].map(col).to_numpy()), sign * fills["quantity"])
    np.add.at(cash, row, -sign * fills["quantity"] * fills["price"] - fills["fee"])
    return np.cumsum(pos, axis=0), np.cumsum(cash)


@FAST
@given(spec=specs(), bars=panels)
def test_ledger_reconciles_with_positions_and_equity(spec: StrategySpec, bars: Bars) -> None:
    """Realistic model without borrow: positions are the running sum of the fills,
    and equity is capital + cash flows of the fills + positions at the last close."""
    model = ExecutionModel(initial_capital=1e6, borrow_bps=0.0)
    res = verify(spec, bars, model, capacity=False)
    if res.extra["ruined_bar"] >= 0:
        return
    pos, cash = _reconstruct(res, bars)
    np.testing.assert_allclose(pos, res.positions.to_numpy(), rtol=0, atol=1e-6)
    marks = pd.DataFrame(bars.close, index=bars.index).ffill().fillna(0.0).to_numpy()
    equity = 1e6 + cash + (pos * marks).sum(axis=1)
    np.testing.assert_allclose(equity, res.equity.to_numpy(), rtol=1e-9, atol=1e-6)
    assert (res.fills["quantity"] > 0).all()
    assert (res.fills["quantity"] == np.floor(res.fills["quantity"])).all()  # whole shares
    ex = res.execution
    assert 0.0 <= ex["fill_rate"] <= 1.0 or math.isnan(ex["fill_rate"])
    assert ex["costs"]["total"] == pytest.approx(
        res.fills[["fee", "spread_cost", "impact_cost"]].to_numpy().sum(), rel=1e-9)
    # the cap holds on every fill: within 10 % of the average volume known before the
    # bar (the bar's own volume is unknown at its open, so it cannot be the cap)
    assert (res.fills["adv_util"] <= 0.1 + 1e-12).all()


@FAST
@given(spec=specs(), bars=panels)
def test_deterministic(spec: StrategySpec, bars: Bars) -> None:
    model = ExecutionModel(initial_capital=1e5)
    one = verify(spec, bars, model, capacity=False)
    two = verify(spec, bars, model, capacity=False)
    assert one.output_hash == two.output_hash
    assert classify_failures(one, VerificationPolicy(
        min_fill_rate=None, max_participation_p95=None, max_adv_utilization_p95=None,
        max_clipped_share=None, max_stop_overshoot=None, leverage_tolerance=None),
        rerun=lambda: two) == [] or one.extra["ruined_bar"] >= 0


def test_daily_returns_compound_intraday_bars() -> None:
    idx = pd.DatetimeIndex(["2024-01-02 15:00", "2024-01-02 16:00", "2024-01-03 15:00"],
                           tz="UTC")
    r = daily_returns(pd.Series([0.1, -0.1, 0.05], index=idx))
    # 1.1 * 0.9 - 1 = -0.01 on the first day
    assert r.to_numpy() == pytest.approx([-0.01, 0.05])


# ------------------------------------------------------------------ data gate
def test_a_symbol_failing_the_data_gate_is_excluded_from_that_bar_on() -> None:
    bars = _random_bars(3, 3, 60, holes=False)
    high = bars.high.copy()
    high[30, 1] = bars.low[30, 1] * 0.5  # high below low at bar 30: DQ_HIGH_LT_LOW
    bad = Bars(index=bars.index, symbols=bars.symbols, open=bars.open, high=high,
               low=bars.low, close=bars.close, volume=bars.volume)
    spec = StrategySpec(entry="close > 0", exit="close < 0")  # always long once funded
    model = ExecutionModel(volume={"max_participation": None}, impact={"k": 0.0})
    res = verify(spec, bad, model, capacity=False)
    clean = verify(spec, bars, model, capacity=False)
    assert res.status == "PARTIAL"
    assert [e["symbol"] for e in res.excluded] == ["S1"]
    assert res.excluded[0]["from"] == bars.index[30].isoformat()
    assert "DQ_HIGH_LT_LOW" in res.excluded[0]["reasons"][0]
    failures = classify_failures(res, rerun=None)
    assert [f.code for f in failures if f.code == "DATA_FAILURE"] == ["DATA_FAILURE"]
    # the bars before the failure are untouched: the same equity as on clean data
    np.testing.assert_array_equal(res.equity.to_numpy()[:30], clean.equity.to_numpy()[:30])
    assert res.equity.to_numpy()[30] != clean.equity.to_numpy()[30]
    # S1 is closed at bar 30 at its last good close (bar 29's), paying costs, and holds
    # nothing after; S0 and S2 are resized to half the portfolio each at the same open
    fill = res.fills[(res.fills["symbol"] == "S1") & (res.fills["reason"] == "data_failure")]
    assert len(fill) == 1 and fill["timestamp"].iloc[0] == bars.index[30]
    assert fill["ref_price"].iloc[0] == bars.close[29, 1]
    assert fill["fee"].iloc[0] > 0 and fill["spread_cost"].iloc[0] > 0
    assert (res.positions["S1"].to_numpy()[30:] == 0).all()
    assert set(res.fills.loc[res.fills["timestamp"] == bars.index[30], "reason"]) == {
        "data_failure", "universe"}
    trade = res.trades[res.trades["symbol"] == "S1"].iloc[-1]
    assert trade["reason"] == "data_failure" and trade["exit_time"] == bars.index[30]


def test_every_symbol_failing_is_a_data_failure_error() -> None:
    bars = _random_bars(4, 1, 30, holes=False)
    vol = np.zeros_like(bars.volume)  # no volume, but the default model caps participation
    bad = Bars(index=bars.index, symbols=bars.symbols, open=bars.open, high=bars.high,
               low=bars.low, close=bars.close, volume=vol)
    spec = StrategySpec(entry="close > 0", exit="close < 0")
    with pytest.raises(DataError, match=r"DQ_NO_VOLUME.*'S0'") as exc:
        verify(spec, bad, capacity=False)
    assert exc.value.code == "DATA_FAILURE"
    # without a volume cap or impact, volume is not needed
    res = verify(spec, bad, ExecutionModel.frictionless(), capacity=False)
    assert res.status == "SUCCESS"


# ---------------------------------------------------------- capacity, failures
def _trend_bars(volume: float) -> Bars:
    """A steady uptrend with noise (positive Sharpe when long) and a fixed volume."""
    rng = np.random.default_rng(7)
    n = 300
    c = 50 * np.exp(np.cumsum(0.002 + rng.normal(0, 0.01, n)))
    o = np.r_[c[0], c[:-1]] * np.exp(rng.normal(0, 0.002, n))
    h, lo = np.maximum(o, c) * 1.005, np.minimum(o, c) * 0.995
    idx = pd.date_range("2020-01-01", periods=n, freq="B", tz="UTC")
    return Bars(index=idx, symbols=("T",), open=o[:, None], high=h[:, None], low=lo[:, None],
                close=c[:, None], volume=np.full((n, 1), volume))


def test_capacity_is_where_sharpe_halves_between_the_bracketing_runs() -> None:
    bars = _trend_bars(volume=20_000.0)
    spec = StrategySpec(entry="close > sma(close, 10)", exit="close < sma(close, 10)")
    res = verify(spec, bars, ExecutionModel(initial_capital=1e4))
    cap = res.execution["capacity"]
    curve = cap["curve"]
    base = curve[0]["sharpe"]
    assert base > 0 and cap["bounded"]
    j = next(k for k, p in enumerate(curve) if not p["sharpe"] > base / 2)
    assert curve[j - 1]["capital"] < cap["capital"] <= curve[j]["capital"]
    # bigger accounts pay more impact and fill less: the curve's Sharpe falls
    assert curve[j]["sharpe"] < curve[0]["sharpe"]


def test_no_capacity_without_a_positive_sharpe() -> None:
    bars = _trend_bars(volume=1e6)
    spec = StrategySpec(entry="close > sma(close, 10)", exit="close < sma(close, 10)",
                        direction="short")
    cap = verify(spec, bars).execution["capacity"]
    assert cap["capital"] is None and cap["base_sharpe"] <= 0


def test_thin_volume_is_execution_infeasible() -> None:
    bars = _trend_bars(volume=500.0)
    spec = StrategySpec(entry="close > sma(close, 10)", exit="close < sma(close, 10)")
    model = ExecutionModel(initial_capital=1e6, volume=Volume(max_participation=0.1,
                                                              order_ttl_bars=2))
    res = verify(spec, bars, model, capacity=False)
    assert res.execution["fill_rate"] < 0.95
    assert res.execution["n_partial_fills"] > 0 and res.execution["n_cancelled"] > 0
    (fail,) = [f for f in classify_failures(res) if f.code == "EXECUTION_INFEASIBLE"]
    assert "fill_rate" in fail.message and fail.evidence["fill_rate"]["limit"] == 0.95
    assert str(fail.error_class) == "PERMANENT"


def test_a_strategy_whose_orders_never_fill_is_execution_infeasible() -> None:
    """A black-box report: with too little capital (here 20 against prices of 50 and
    up) no order buys one whole unit: orders, no fills, no fill rate, and it was
    called feasible."""
    bars = _trend_bars(volume=1e9)
    spec = StrategySpec(entry="close > sma(close, 10)", exit="close < sma(close, 10)")
    res = verify(spec, bars, ExecutionModel(initial_capital=20.0), capacity=False)
    assert res.execution["n_orders"] > 0 and res.execution["n_fills"] == 0
    assert math.isnan(res.execution["fill_rate"])
    (fail,) = [f for f in classify_failures(res) if f.code == "EXECUTION_INFEASIBLE"]
    assert f"none of its {res.execution['n_orders']} orders filled" in fail.message
    # the check is the fill-rate check's: a policy without one does not make it
    assert classify_failures(res, VerificationPolicy(min_fill_rate=None)) == []


def test_gap_through_the_stop_is_a_risk_model_failure() -> None:
    # enter at bar 1's open (100); bar 2 gaps to 80: a 5 % stop loses 20 %
    o = [100.0, 100.0, 80.0, 80.0]
    c = [100.0, 100.0, 80.0, 80.0]
    idx = pd.date_range("2023-01-02", periods=4, freq="B", tz="UTC")
    arr = np.array
    bars = Bars(index=idx, symbols=("X",), open=arr(o)[:, None], high=arr(o)[:, None],
                low=arr(c)[:, None], close=arr(c)[:, None], volume=np.full((4, 1), 1e9))
    spec = StrategySpec(entry="close > 0", exit="close < 0", risk={"stop_loss": 0.05})
    res = verify(spec, bars, ExecutionModel.frictionless(1e4), capacity=False)
    assert res.trades["reason"].iloc[0] == "stop_loss"
    (fail,) = classify_failures(res)
    assert fail.code == "RISK_MODEL_FAILURE"
    assert fail.evidence["worst_stop_loss"] == pytest.approx(0.2)


def test_non_determinism_is_critical() -> None:
    bars = _trend_bars(volume=1e6)
    spec = StrategySpec(entry="close > sma(close, 10)", exit="close < sma(close, 10)")
    res = verify(spec, bars, capacity=False)

    class Other:
        output_hash = "0" * 64

    (fail,) = [f for f in classify_failures(res, rerun=lambda: Other())]
    assert fail.code == "NON_DETERMINISTIC" and str(fail.error_class) == "CRITICAL"


def test_rebalance_resizes_vol_target_positions() -> None:
    bars = _trend_bars(volume=1e9)
    spec = StrategySpec(entry="close > 0", exit="close < 0",
                        sizing={"method": "vol_target", "target_vol": 0.1, "vol_window": 10})
    base = ExecutionModel.frictionless(1e6)
    never = verify(spec, bars, base, capacity=False)
    often = verify(spec, bars, base.model_copy(
        update={"rebalance": base.rebalance.model_copy(update={"every_bars": 5})}),
        capacity=False)
    assert (never.fills["reason"] == "rebalance").sum() == 0
    n_reb = int((often.fills["reason"] == "rebalance").sum())
    assert n_reb > 0
    # a threshold no drift reaches turns rebalancing off again
    lazy = verify(spec, bars, base.model_copy(update={"rebalance": base.rebalance.model_copy(
        update={"every_bars": 5, "threshold": 10.0})}), capacity=False)
    assert (lazy.fills["reason"] == "rebalance").sum() == 0
