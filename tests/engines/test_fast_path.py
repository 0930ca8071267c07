"""Engine A's fast path (kernel_a.simulate_blocked, _sleeve_plain) against its general kernel.

``run_batch`` runs a batch through :func:`kernel_a.simulate_blocked`: time blocks, groups
of candidates, and :func:`kernel_a._sleeve_plain` for candidates without stops or a
holding limit. A single spec with ``record_trades=True`` still runs through the general
kernel, :func:`kernel_a.simulate_batch` (one candidate, all bars, every bar through
``_sleeve``) followed by :func:`kernel_a.portfolio_series`: an independent
implementation of the same semantics, used here as the reference. The two must agree
bit for bit (equity, returns and every metric) on any panel and spec: NaN gaps,
symbols that list late or are delisted, long, short and both, every sizing rule,
stops (which the fast path leaves to ``_sleeve``, inside the blocked driver), and any
cut of time into blocks.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphaloop.data.bars import Bars
from alphaloop.engines import engine_a, kernel_a
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import run_batch
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.engines.universe import UniverseRule, build_universe
from alphaloop.strategy.spec import StrategySpec

COSTS = CostModel(fees_bps=10, slippage_bps=5)
nan = math.nan

ENTRIES = [
    ("sma(close, 2) > sma(close, 4)", "sma(close, 2) < sma(close, 4)"),
    ("close > sma(close, 3)", "close < sma(close, 3)"),
    ("close > lag(close, 1)", "close < lag(close, 2)"),
    ("cross_above(sma(close, 2), sma(close, 5))", "cross_below(sma(close, 2), sma(close, 5))"),
    ("rsi(close, 3) < 40", "rsi(close, 3) > 60"),
    ("close > 100 and close > lag(close, 1)", "close < 100 or close < lag(close, 3)"),
    ("not (close < sma(close, 3))", "close != lag(close, 1)"),
]


def panel(draw: st.DrawFn) -> Bars:
    """A small random panel: a random walk per symbol with NaN gaps, late listings and
    delistings (a trailing gap longer than the delisting rule)."""
    n_sym = draw(st.integers(1, 4))
    n_bars = draw(st.integers(4, 45))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    vol = draw(st.sampled_from([0.01, 0.05, 0.3]))
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, (n_bars, n_sym)), axis=0))
    opn = close * np.exp(rng.normal(0.0, vol / 2, close.shape))
    high = np.maximum(opn, close) * np.exp(np.abs(rng.normal(0.0, vol / 2, close.shape)))
    low = np.minimum(opn, close) * np.exp(-np.abs(rng.normal(0.0, vol / 2, close.shape)))
    missing = np.zeros(close.shape, dtype=bool)
    for i in range(n_sym):
        kind = draw(st.sampled_from(["full", "gaps", "late", "delisted", "late+gaps"]))
        if "gaps" in kind:
            missing[:, i] |= rng.random(n_bars) < 0.2
        if "late" in kind:
            missing[: draw(st.integers(0, n_bars)), i] = True
        if kind == "delisted":
            missing[draw(st.integers(0, n_bars)):, i] = True
    for a in (opn, high, low, close):
        a[missing] = nan
    idx = pd.date_range("2023-01-02", periods=n_bars, freq="B", tz="UTC")
    return Bars(index=idx, symbols=tuple(f"S{i}" for i in range(n_sym)), open=opn,
                high=high, low=low, close=close, volume=np.where(missing, nan, 1e6))


def spec_from(draw: st.DrawFn, plain: bool) -> StrategySpec:
    entry, exit_ = draw(st.sampled_from(ENTRIES))
    direction = draw(st.sampled_from(["long", "short", "both"]))
    sizing = draw(st.sampled_from([
        {"method": "equal_weight"},
        {"method": "fixed_fraction", "fraction": 0.5},
        {"method": "fixed_fraction", "fraction": 2.0, "max_leverage": 2.0},  # the ruin level is live
        {"method": "vol_target", "target_vol": 0.2, "vol_window": 3, "max_leverage": 3.0},
    ]))
    risk: dict[str, float | int] = {}
    if not plain:
        risk = draw(st.sampled_from([{"stop_loss": 0.02}, {"trailing_stop": 0.03},
                                     {"take_profit": 0.04}, {"max_bars": 2},
                                     {"stop_loss": 0.05, "take_profit": 0.1}]))
    return StrategySpec(entry=entry, exit=exit_, direction=direction, sizing=sizing,
                        risk=risk)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Bars, list[StrategySpec], int]:
    bars = panel(draw)
    n = draw(st.integers(1, 6))
    specs = [spec_from(draw, plain=draw(st.booleans()) or draw(st.booleans()))
             for _ in range(n)]
    block = draw(st.sampled_from([1, 2, 3, 7, 128]))
    return bars, specs, block


def reference(spec: StrategySpec, bars: Bars, costs: CostModel,
              universe: UniverseRule | None = None) -> engine_a.BatchResult:
    """The general kernel: one spec with its trade list goes through simulate_batch."""
    return run_batch([spec], bars, costs, record_trades=True, universe=universe)


def assert_same(fast: engine_a.BatchResult, k: int, ref: engine_a.BatchResult) -> None:
    np.testing.assert_array_equal(fast.equity[k], ref.equity[0])
    np.testing.assert_array_equal(fast.returns[k], ref.returns[0])
    np.testing.assert_array_equal(fast.metrics.iloc[k].to_numpy(dtype=float),
                                  ref.metrics.iloc[0].to_numpy(dtype=float))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=cases(), rule=st.sampled_from([UniverseRule(), UniverseRule(
    delist_after_bars=2, delist_after_days=0.0)]))
def test_fast_path_equals_general_kernel(case: tuple[Bars, list[StrategySpec], int],
                                         rule: UniverseRule,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    bars, specs, block = case
    monkeypatch.setattr(engine_a, "BLOCK_BARS", block)  # set anew for every example
    fast = run_batch(specs, bars, COSTS, universe=rule, chunk_size=4)
    for k, spec in enumerate(specs):
        assert_same(fast, k, reference(spec, bars, COSTS, rule))


def test_fast_path_on_a_wide_panel_with_every_feature() -> None:
    """One larger case, deterministic: 6 symbols (one lists late, one is delisted, one
    has gaps) over 300 bars, 24 specs of every kind, blocks of 50 bars."""
    rng = np.random.default_rng(7)
    n_bars, n_sym = 300, 6
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_bars, n_sym)), axis=0))
    opn = close * np.exp(rng.normal(0.0, 0.01, close.shape))
    high = np.maximum(opn, close) * 1.01
    low = np.minimum(opn, close) * 0.99
    missing = np.zeros(close.shape, dtype=bool)
    missing[:120, 1] = True  # lists at bar 120
    missing[200:, 2] = True  # delisted after bar 199
    missing[rng.random(n_bars) < 0.1, 3] = True  # gaps
    for a in (opn, high, low, close):
        a[missing] = nan
    idx = pd.date_range("2020-01-01", periods=n_bars, freq="B", tz="UTC")
    bars = Bars(index=idx, symbols=tuple(f"S{i}" for i in range(n_sym)), open=opn,
                high=high, low=low, close=close, volume=np.where(missing, nan, 1.0))
    specs = [StrategySpec(entry=e, exit=x, direction=d, risk=r)
             for (e, x) in ENTRIES[:4] for d in ("long", "short", "both")
             for r in ({}, {"stop_loss": 0.03})]
    old = engine_a.BLOCK_BARS
    try:
        engine_a.BLOCK_BARS = 50
        fast = run_batch(specs, bars, COSTS)
    finally:
        engine_a.BLOCK_BARS = old
    assert fast.metrics["n_trades"].sum() > 100
    for k, spec in enumerate(specs):
        assert_same(fast, k, reference(spec, bars, COSTS))


def _kernel_inputs(bars: Bars, specs: list[StrategySpec]) -> tuple:
    ev = SignalEvaluator(bars)
    uni = build_universe(ev.valid, bars.index, UniverseRule())
    n, operands, signals = engine_a._operands(specs, 0, len(specs), ev)
    assert n == len(specs)
    return ev, uni, operands, signals


@pytest.mark.parametrize("groups", [1, 2, 5])
def test_blocked_driver_alone_equals_simulate_batch(groups: int) -> None:
    """simulate_blocked with the plain sleeve switched off (``fast=False``): only the
    blocking and grouping differ from simulate_batch, and change no bit."""
    rng = np.random.default_rng(3)
    close = 20.0 * np.exp(np.cumsum(rng.normal(0.0, 0.03, (90, 3)), axis=0))
    close[:30, 0] = nan
    close[60:, 2] = nan
    opn = close * 1.001
    idx = pd.date_range("2021-01-01", periods=90, freq="B", tz="UTC")
    bars = Bars(index=idx, symbols=("A", "B", "C"), open=opn, high=close * 1.02,
                low=close * 0.98, close=close, volume=np.where(np.isnan(close), nan, 1.0))
    specs = [StrategySpec(entry=e, exit=x, direction=d)
             for (e, x) in ENTRIES[:3] for d in ("long", "short", "both")]
    ev, uni, operands, signals = _kernel_inputs(bars, specs)
    f = ev.fields
    risk = engine_a._risk_arrays(specs)
    sizes, size_idx = np.ones((1, 1, 1)), np.full(len(specs), -1, dtype=np.int64)
    eq, traded, gross, stats, _, _ = kernel_a.simulate_batch(
        f["open"], f["high"], f["low"], f["close"], ev.valid, uni.state, uni.alloc,
        engine_a.boundaries(uni), uni.reallocate, operands, signals, *risk, size_idx, sizes,
        COSTS.fee, COSTS.slippage, False)
    ret, turnover, exposure = kernel_a.portfolio_series(eq, traded, gross)
    starts, at_bound = kernel_a.cuts(engine_a.boundaries(uni), 90, 8)
    for fast in (False, True):
        eq2, ret2 = np.full_like(eq, 7.0), np.full_like(eq, 7.0)
        turnover2, exposure2, stats2 = kernel_a.simulate_blocked(
            f["open"], f["high"], f["low"], f["close"], ev.valid, uni.state, uni.alloc,
            starts, at_bound, uni.reallocate, operands, signals, *risk, size_idx, sizes,
            COSTS.fee, COSTS.slippage, groups, eq2, ret2, fast)
        np.testing.assert_array_equal(eq2, eq)
        np.testing.assert_array_equal(ret2, ret)
        np.testing.assert_array_equal(turnover2, turnover)
        np.testing.assert_array_equal(exposure2, exposure)
        np.testing.assert_array_equal(stats2, stats)


def test_cuts_merge_the_grid_and_the_boundaries() -> None:
    starts, at_bound = kernel_a.cuts(np.array([1, 5, 7], dtype=np.int64), 12, 5)
    assert starts.tolist() == [0, 1, 5, 7, 10, 12]
    assert at_bound.tolist() == [False, True, True, True, False]


def test_grid_shares_indicator_arrays_without_copies() -> None:
    """A 6-spec SMA grid hands the kernel its 4 distinct SMA arrays, the evaluator's
    cached objects themselves."""
    rng = np.random.default_rng(1)
    close = 10.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (40, 2)), axis=0))
    idx = pd.date_range("2021-01-01", periods=40, freq="B", tz="UTC")
    bars = Bars(index=idx, symbols=("A", "B"), open=close, high=close, low=close,
                close=close, volume=np.ones_like(close))
    specs = [StrategySpec(entry=f"sma(close,{f}) > sma(close,{s})",
                          exit=f"sma(close,{f}) < sma(close,{s})")
             for f, s in ((2, 5), (2, 8), (3, 5), (3, 8), (4, 5), (4, 8))]
    ev, _, operands, signals = _kernel_inputs(bars, specs)
    assert len(operands) == 5  # sma 2, 3, 4 (fast) and 5, 8 (slow)
    cached = {id(a) for a in ev.cache.values()}
    assert all(id(a) in cached for a in operands)
    assert signals.shape == (6, 2, 3)


def test_operand_budget_cuts_chunks_and_changes_nothing(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """With a budget smaller than one spec's operands every chunk holds one spec (the
    first spec of a chunk is always taken); the numbers stay the same."""
    rng = np.random.default_rng(5)
    close = 30.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (60, 3)), axis=0))
    idx = pd.date_range("2021-01-01", periods=60, freq="B", tz="UTC")
    bars = Bars(index=idx, symbols=("A", "B", "C"), open=close * 0.999, high=close * 1.01,
                low=close * 0.99, close=close, volume=np.ones_like(close))
    specs = [StrategySpec(entry=e, exit=x) for e, x in ENTRIES]
    whole = run_batch(specs, bars, COSTS)
    seen: list[int] = []
    monkeypatch.setattr(engine_a, "OPERAND_BUDGET", 1)
    cut = run_batch(specs, bars, COSTS, progress=seen.append)
    assert seen == list(range(1, len(specs) + 1))
    np.testing.assert_array_equal(cut.returns, whole.returns)
    pd.testing.assert_frame_equal(cut.metrics, whole.metrics)


def test_metrics_in_row_blocks_equal_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(9)
    close = 30.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (80, 2)), axis=0))
    idx = pd.date_range("2021-01-01", periods=80, freq="B", tz="UTC")
    bars = Bars(index=idx, symbols=("A", "B"), open=close * 1.001, high=close * 1.01,
                low=close * 0.99, close=close, volume=np.ones_like(close))
    specs = [StrategySpec(entry=e, exit=x, direction=d) for e, x in ENTRIES
             for d in ("long", "both")]
    whole = run_batch(specs, bars, COSTS)
    monkeypatch.setattr(engine_a, "METRIC_CELLS", 3 * 80)  # 3 rows per core_metrics call
    parts = run_batch(specs, bars, COSTS)
    pd.testing.assert_frame_equal(parts.metrics, whole.metrics)


def test_plain_long_round_trip_by_hand() -> None:
    """The fast path on a hand-worked case (fee 10 bps, slippage 5 bps, one symbol):
    entry close > 10.5 at t1 fills at t2's open 12·1.0005; exit at t3 fills at t4's
    open 9·0.9995 (the same numbers as test_engine_a's round trip)."""
    idx = pd.date_range("2023-01-02", periods=5, freq="B", tz="UTC")
    o = np.array([[10.0], [10.0], [12.0], [13.0], [9.0]])
    c = np.array([[10.0], [11.0], [12.0], [10.0], [9.0]])
    bars = Bars(index=idx, symbols=("S0",), open=o, high=np.fmax(o, c), low=np.fmin(o, c),
                close=c, volume=np.ones_like(c))
    spec = StrategySpec(entry="close > 10.5", exit="close < 10.5")
    res = run_batch([spec, spec], bars, CostModel(fees_bps=10, slippage_bps=5))
    q = 1 / 12.018006
    expected = [1.0, 1.0, q * 12, q * 10, q * 8.9955 * 0.999]
    np.testing.assert_allclose(res.equity[0], expected, rtol=1e-12)
    np.testing.assert_array_equal(res.equity[1], res.equity[0])
    assert res.metrics["n_trades"].tolist() == [1, 1]


def test_specs_sharing_a_boolean_tree_share_one_operand_array() -> None:
    """A boolean tree that is not a single comparison reaches the kernel as float codes
    (compared > 1.5); two specs with the same tree get the same cached array."""
    rng = np.random.default_rng(4)
    close = 10.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (30, 2)), axis=0))
    idx = pd.date_range("2021-01-01", periods=30, freq="B", tz="UTC")
    bars = Bars(index=idx, symbols=("A", "B"), open=close, high=close, low=close,
                close=close, volume=np.ones_like(close))
    tree = "close > 10 and close > lag(close, 1)"
    specs = [StrategySpec(entry=tree, exit="close < 9"),
             StrategySpec(entry=tree, exit="close < 8", direction="short")]
    ev, _, operands, signals = _kernel_inputs(bars, specs)
    assert signals[0, 0, 0] == signals[1, 0, 0]  # one array for both entries
    codes = operands[signals[0, 0, 0]]
    expected = ev.signal(specs[0].entry_node, canonical=True)
    np.testing.assert_array_equal(codes > 1.5, expected)


def test_a_batch_without_equity_curves_has_the_same_numbers() -> None:
    # keep_equity=False (what a sweep asks for): no (K, T) equity, every other number
    # bit for bit the same, for sleeves (chunks smaller than the batch) and ranked books
    rng = np.random.default_rng(11)
    n_bars, n_sym = 120, 5
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_bars, n_sym)), axis=0))
    idx = pd.date_range("2023-01-02", periods=n_bars, freq="B", tz="UTC")
    bars = Bars(index=idx, symbols=tuple(f"S{i}" for i in range(n_sym)), open=close * 0.999,
                high=close * 1.01, low=close * 0.99, close=close, volume=np.full(close.shape, 1e6))
    specs = [StrategySpec(entry=e, exit=x, direction=d)
             for (e, x) in ENTRIES[:4] for d in ("long", "both")]
    specs.append(StrategySpec(entry="close > 0", exit="close < 0", portfolio={
        "method": "cross_sectional", "score": "roc(close, 10)", "long": 2, "short": 2}))
    for chunk in (3, 256):
        kept = run_batch(specs, bars, COSTS, chunk_size=chunk)
        lean = run_batch(specs, bars, COSTS, chunk_size=chunk, keep_equity=False)
        assert kept.equity.shape == (len(specs), n_bars) and lean.equity.shape == (0, n_bars)
        assert lean.returns.tobytes() == kept.returns.tobytes()
        pd.testing.assert_frame_equal(lean.metrics, kept.metrics, check_exact=True)
