"""The truncation (no-lookahead) tests: DESIGN §4 "Custom operators are checked by a
truncation test (signals on data cut at t equal the full-data signals at t)".

Every operator in ``expression.OPS`` is covered: an expression is generated for each
operator from its signature (so a new operator is covered automatically) and a set
of hand-written expressions adds realistic nestings. Each is evaluated on a random
multi-symbol panel with NaN holes, a late-listed and an early-delisted symbol, on
the full data and on ``bars.slice(0, t + 1)`` for 60 values of t (see ``cut_points``);
the cut result must equal the full result on bars ``0..t`` exactly (NaN == NaN;
booleans compared as their raw three-valued codes, so an "unknown" that turned into
"false" would be caught).

At the engine level, run_batch on the cut panel must reproduce the full run's
equity and returns on bars ``0..t`` exactly (see ``test_engine_truncation``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alphaloop.data.bars import FIELDS, Bars
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import run_batch
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.strategy.expression import (
    OPS,
    Call,
    Field,
    Node,
    Num,
    canonicalize,
    check_types,
    operators_used,
    parse,
)
from alphaloop.strategy.spec import StrategySpec

SYMBOLS = ("AAA", "BBB", "CCC", "DDD", "EEE")


def make_bars(n_bars: int = 90, seed: int = 11) -> Bars:
    """Random OHLCV panel on a 0.5 price grid (ties and open == close happen), with a
    NaN hole in one field only, whole missing bars, a late listing and a delisting."""
    rng = np.random.default_rng(seed)
    n = len(SYMBOLS)
    close = 50.0 + np.cumsum(rng.normal(0.0, 1.0, (n_bars, n)), axis=0)
    close = np.round(close * 2) / 2
    opn = np.round((close + rng.normal(0.0, 0.6, close.shape)) * 2) / 2
    high = np.maximum(opn, close) + np.round(rng.random(close.shape) * 4) / 2
    low = np.minimum(opn, close) - np.round(rng.random(close.shape) * 4) / 2
    vol = rng.integers(100, 1000, close.shape).astype(float)
    arrays = {"open": opn, "high": high, "low": low, "close": close, "volume": vol}
    for a in arrays.values():
        a[30, 0] = np.nan  # one missing bar
        a[55:58, 1] = np.nan  # three missing bars
        a[:25, 2] = np.nan  # listed late
        a[70:, 3] = np.nan  # delisted
    arrays["high"][44, 4] = np.nan  # a hole in one field only
    idx = pd.date_range("2021-01-04", periods=n_bars, freq="D", tz="UTC")
    return Bars(index=idx, symbols=SYMBOLS, name="trunc", **arrays)


# ------------------------------------------------------------- the expressions
_NUM_ARGS: tuple[Node, ...] = (
    Field("close"),
    Call("sma", (Field("open"), Num(3.0))),  # warm-up NaNs in the second operand
)
_BOOL_ARGS: tuple[Node, ...] = (
    Call("gt", (Field("close"), Call("sma", (Field("close"), Num(5.0))))),
    Call("gt", (Field("open"), Call("lag", (Field("close"), Num(2.0))))),
)


def generated_expression(op: str) -> Node:
    """An expression for ``op`` built from its signature alone."""
    spec = OPS[op]
    args: list[Node] = []
    for pos, kind in enumerate(spec.args):
        if kind == "num":
            args.append(_NUM_ARGS[pos % 2])
        elif kind == "bool":
            args.append(_BOOL_ARGS[pos % 2])
        else:
            args.append(Num(float(max(spec.min_window, 4))))
    node = Call(op, tuple(args))
    check_types(node)
    return node


HAND_WRITTEN = [
    "close + open", "close - open", "close * volume", "close / (close - open)",
    "-close", "abs(close - open)", "min(open, close)", "max(high, sma(close, 3))",
    "close > open", "close >= open", "close == open", "close != open",
    "close < open and high > lag(high, 1)", "close > sma(close, 10) or rsi(close, 5) < 30",
    "not (sma(close, 20) > close)", "lag(close, 3)", "sma(close, 5)", "ema(close, 7)",
    "std(close, 6)", "zscore(close, 8)", "roc(close, 3)", "rsi(close, 9)", "atr(5)",
    "highest(high, 10)", "lowest(low, 10)", "close > highest(high, 10)",
    "cross_above(sma(close, 3), sma(close, 8))", "cross_below(close, ema(close, 5))",
    "rank(roc(close, 3))", "rank(close) > 0.5", "rank(-std(close, 5)) >= 0.25",
    "zscore(rank(volume), 5)", "sma(rank(close), 4) > 0.5",
    "ema(close - lag(close, 1), 4) / atr(4)", "cross_above(rsi(close, 4), 50)",
    "not (close > open) or (volume > sma(volume, 3) and not cross_below(close, open))",
]


def all_expressions() -> dict[str, Node]:
    # canonical trees are what the engines run; raw trees too, because canonicalization
    # rewrites some operators away (cross_below(a, b) -> cross_above(b, a)) and the
    # evaluator must stay causal for every operator it accepts
    exprs = {f"gen:{op}": canonicalize(generated_expression(op)) for op in OPS}
    exprs.update({f"raw:{op}": generated_expression(op) for op in OPS})
    exprs.update({src: canonicalize(parse(src)) for src in HAND_WRITTEN})
    return exprs


def cut_points(n_bars: int) -> list[int]:
    """Every bar through the warm-ups and the late listing (bar 25), then every
    third bar, plus the bars around each hole and the last bar."""
    special = {29, 30, 31, 43, 44, 45, 54, 55, 56, 57, 58, 69, 70, 71, n_bars - 1}
    return sorted({t for t in special if t < n_bars} | set(range(min(n_bars, 32)))
                  | set(range(32, n_bars, 3)))


def _raw(ev: SignalEvaluator, node: Node) -> np.ndarray:
    out = ev._eval(node)  # float64 values or uint8 three-valued codes
    assert isinstance(out, np.ndarray) and out.shape == ev.shape, node
    return out


# ---------------------------------------------------------------------- tests
def test_every_operator_is_covered() -> None:
    covered: set[str] = set()
    for node in all_expressions().values():
        covered |= operators_used(node)
    assert covered == set(OPS)
    # canonicalize rewrites these away in the generated forms (documented there):
    # cross_below(a, b) -> cross_above(b, a), not(a > b) -> b >= a
    rewritten = {"cross_below", "not"}
    for op in set(OPS) - rewritten:  # the generated expression keeps its operator
        assert op in operators_used(canonicalize(generated_expression(op))), op


@pytest.fixture(scope="module")
def bars() -> Bars:
    return make_bars()


@pytest.fixture(scope="module")
def full_values(bars: Bars) -> dict[str, np.ndarray]:
    ev = SignalEvaluator(bars)
    return {k: _raw(ev, node).copy() for k, node in all_expressions().items()}


def test_full_values_are_not_trivial(full_values: dict[str, np.ndarray]) -> None:
    # a truncation test over all-NaN or constant output would prove nothing
    for key, arr in full_values.items():
        if arr.dtype == np.uint8:
            assert {0, 2} <= set(np.unique(arr).tolist()), key
        else:
            assert np.isfinite(arr).sum() > 50, key


def test_signals_on_data_cut_at_t_equal_full_data(
        bars: Bars, full_values: dict[str, np.ndarray]) -> None:
    exprs = all_expressions()
    for t in cut_points(bars.n_bars):
        ev = SignalEvaluator(bars.slice(0, t + 1))
        for key, node in exprs.items():
            cut = _raw(ev, node)
            full = full_values[key][:, : t + 1]
            assert cut.dtype == full.dtype, key
            if not np.array_equal(cut, full, equal_nan=cut.dtype == np.float64):
                bad = np.argwhere(~((cut == full) | (np.isnan(cut) & np.isnan(full))
                                    if cut.dtype == np.float64 else cut == full))
                pytest.fail(f"{key}: data cut at t={t} differs at (symbol, bar) {bad[:3].tolist()}")


def test_signals_unchanged_when_the_future_is_rewritten(
        bars: Bars, full_values: dict[str, np.ndarray]) -> None:
    # same length, different bars after t: catches operators that look at the
    # length or at global statistics of the series
    rng = np.random.default_rng(5)
    exprs = all_expressions()
    for t in (20, 45, 75):
        arrays = {}
        for f in FIELDS:
            a = np.array(bars.field(f))
            a[t + 1:] = a[t + 1:] * rng.uniform(0.5, 1.5, a[t + 1:].shape)
            arrays[f] = a
        other = Bars(index=bars.index, symbols=bars.symbols, **arrays)
        ev = SignalEvaluator(other)
        for key, node in exprs.items():
            np.testing.assert_array_equal(_raw(ev, node)[:, : t + 1],
                                          full_values[key][:, : t + 1], err_msg=key)


# --- independence from warm-up length -------------------------------------
# Windowed operators whose value is an exact function of the last n bars: the value
# at the last bar must not depend on where the data starts (sma through a running
# sum can differ by rounding, hence 1e-9 relative).
WARMUP_EXACT = [
    "sma(close, 10)", "std(close, 10)", "zscore(close, 10)", "lag(close, 7)",
    "roc(close, 7)", "highest(high, 12)", "lowest(low, 12)", "rank(roc(close, 5))",
    "sma(rank(close), 6)", "close / sma(close, 10) - 1", "abs(close - lag(open, 2))",
]
# Wilder/EMA recursions remember their seed, but the memory decays geometrically:
# after many windows of warm-up the difference is far below any tolerance.
WARMUP_DECAYING = ["ema(close, 5)", "rsi(close, 5)", "atr(5)"]


def test_windowed_values_independent_of_warmup() -> None:
    bars = make_bars(n_bars=400, seed=3)
    full = SignalEvaluator(bars)
    checked = 0
    for src in WARMUP_EXACT:
        node = canonicalize(parse(src))
        want = _raw(full, node)[:, -1]
        for start in (1, 50, 200, 370, 385):
            got = _raw(SignalEvaluator(bars.slice(start, None)), node)[:, -1]
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True,
                                       err_msg=f"{src} start={start}")
            checked += int(np.isfinite(got).sum())
    assert checked > 100  # most symbols have a value at the last bar


def test_recursive_values_forget_their_warmup() -> None:
    bars = make_bars(n_bars=400, seed=3)
    full = SignalEvaluator(bars)
    for src in WARMUP_DECAYING:
        node = canonicalize(parse(src))
        want = _raw(full, node)[:, -1]
        got = _raw(SignalEvaluator(bars.slice(200, None)), node)[:, -1]
        assert np.isfinite(want[[0, 1, 2, 4]]).all(), src
        np.testing.assert_allclose(got, want, rtol=1e-9, equal_nan=True, err_msg=src)


# ------------------------------------------------------------ engine level
ENGINE_SPECS = [
    StrategySpec(entry="close > sma(close, 5)", exit="close < sma(close, 5)"),
    StrategySpec(entry="cross_above(sma(close, 3), sma(close, 8))",
                 exit="cross_below(sma(close, 3), sma(close, 8))", direction="short"),
    StrategySpec(entry="rank(roc(close, 3)) > 0.5", exit="rank(roc(close, 3)) < 0.5",
                 direction="both"),
    StrategySpec(entry="close > highest(high, 5)", exit="close < lowest(low, 5)",
                 risk={"stop_loss": 0.03, "take_profit": 0.06}),
    StrategySpec(entry="rsi(close, 5) < 40", exit="rsi(close, 5) > 60",
                 risk={"trailing_stop": 0.04, "max_bars": 4}),
    StrategySpec(entry="close < open", exit="close > open", direction="short",
                 risk={"stop_loss": 0.02, "trailing_stop": 0.03, "take_profit": 0.05}),
    StrategySpec(entry="zscore(close, 6) < -0.5", exit="zscore(close, 6) > 0.5",
                 sizing={"method": "vol_target", "target_vol": 0.2, "vol_window": 5,
                         "max_leverage": 2.0}),
    StrategySpec(entry="close > 0", exit="close < 0"),
]


def test_engine_truncation() -> None:
    """Run on bars 0..t versus all bars: everything that happens at bar t (the fill
    at t's open of the order decided at t-1's close, intrabar stops on t's range, the
    mark to t's close) uses data <= t, and the order decided at t's close only fills
    at t+1. So equity and returns agree *exactly* on every bar 0..t, including t;
    only what comes after t (and the accounting of a trade still open at the end)
    may differ."""
    bars = make_bars()
    costs = CostModel(fees_bps=10, slippage_bps=5)
    full = run_batch(ENGINE_SPECS, bars, costs)
    assert np.isfinite(full.returns).all()
    assert (full.metrics["n_trades"] > 0).all()
    for t in cut_points(bars.n_bars):
        cut = run_batch(ENGINE_SPECS, bars.slice(0, t + 1, drop_empty=True), costs)
        if t < 25:  # CCC lists at 25: the cut panel does not know it exists
            assert "CCC" not in bars.slice(0, t + 1, drop_empty=True).symbols
        np.testing.assert_array_equal(cut.equity, full.equity[:, : t + 1], err_msg=f"t={t}")
        np.testing.assert_array_equal(cut.returns, full.returns[:, : t + 1], err_msg=f"t={t}")
        # trades are counted when they fill: the cut run can only have fewer
        assert (cut.metrics["n_trades"].to_numpy() <= full.metrics["n_trades"].to_numpy()).all()


def test_engine_unchanged_when_the_future_is_rewritten() -> None:
    bars = make_bars()
    full = run_batch(ENGINE_SPECS, bars)
    rng = np.random.default_rng(9)
    for t in (15, 40, 66):
        arrays = {}
        for f in FIELDS:
            a = np.array(bars.field(f))
            a[t + 1:] = a[t + 1:] * rng.uniform(0.8, 1.2, a[t + 1:].shape)
            arrays[f] = a
        future = slice(t + 1, None)  # keep high >= open, close >= low after t only
        arrays["high"][future] = np.maximum(arrays["high"][future],
                                            np.maximum(arrays["open"][future],
                                                       arrays["close"][future]))
        arrays["low"][future] = np.minimum(arrays["low"][future],
                                           np.minimum(arrays["open"][future],
                                                      arrays["close"][future]))
        other = run_batch(ENGINE_SPECS, Bars(index=bars.index, symbols=bars.symbols, **arrays))
        np.testing.assert_array_equal(other.equity[:, : t + 1], full.equity[:, : t + 1])


def test_vol_target_sizing_does_not_depend_on_future_timestamps() -> None:
    """BUG (engines/sizing.py fraction_array, data/bars.py periods_per_year):
    realized vol is annualized with ``bars.periods_per_year``, the median spacing
    of the *whole* index. When the history starts weekly and continues daily
    (stitched sources), the sizes decided on the early bars change with bars that
    come later: on 40 weekly bars alone ppy = 52.18, with 50 daily bars appended
    ppy = 252, and the equity on the first 40 bars differs (by ~0.03)."""
    base = make_bars()
    idx = pd.DatetimeIndex(
        list(pd.date_range("2020-01-06", periods=40, freq="7D", tz="UTC"))
        + list(pd.date_range("2020-10-12", periods=50, freq="D", tz="UTC")))
    bars = Bars(index=idx, symbols=base.symbols, **{f: np.array(base.field(f)) for f in FIELDS})
    s = StrategySpec(entry="close > sma(close, 5)", exit="close < sma(close, 5)",
                     sizing={"method": "vol_target", "target_vol": 0.2, "vol_window": 5,
                             "max_leverage": 3.0})
    full = run_batch([s], bars)
    cut = run_batch([s], bars.slice(0, 40))
    np.testing.assert_array_equal(cut.equity, full.equity[:, :40])
