"""The lookahead detector (engines/lookahead.py): no false positives on any built-in
operator, causal custom operators pass, non-causal ones are caught and named.

Expected findings are derived by hand from the operator's definition and checked
against the panel with plain numpy written here (e.g. "x shifted back one bar, cut at
t: the full data hold close[t + 1] at bar t, the cut data NaN").
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from alphaloop.data.bars import Bars
from alphaloop.engines.lookahead import (
    POLICY_CODE,
    LookaheadReport,
    WarmupOptions,
    check_lookahead,
)
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.errors import ErrorClass, LookaheadError
from alphaloop.strategy.expression import BUILTIN_OPS, OPS, operators_used
from alphaloop.strategy.operators import custom_operator
from alphaloop.strategy.spec import StrategySpec

SYMBOLS = ("AAA", "BBB", "CCC", "DDD", "EEE")
N_BARS = 500


def make_panel(n_bars: int = N_BARS, seed: int = 3) -> Bars:
    """Log-normal prices (not on a grid: running sums really round), a missing bar,
    a four-bar gap, a late listing, a delisting and a hole in one field only."""
    rng = np.random.default_rng(seed)
    shape = (n_bars, len(SYMBOLS))
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, shape), axis=0))
    opn = close * np.exp(rng.normal(0.0, 0.005, shape))
    high = np.maximum(opn, close) * (1.0 + 0.01 * rng.random(shape))
    low = np.minimum(opn, close) * (1.0 - 0.01 * rng.random(shape))
    volume = rng.integers(100, 1000, shape).astype(float)
    arrays = {"open": opn, "high": high, "low": low, "close": close, "volume": volume}
    for a in arrays.values():
        a[40, 0] = np.nan  # one missing bar
        a[100:104, 1] = np.nan  # a gap
        a[:60, 2] = np.nan  # listed late
        a[400:, 3] = np.nan  # delisted
    arrays["high"][77, 4] = np.nan  # a hole in one field only
    index = pd.date_range("2020-01-01", periods=n_bars, freq="D", tz="UTC")
    return Bars(index=index, symbols=SYMBOLS, open=opn, high=high, low=low, close=close,
                volume=volume, name="lookahead")


@pytest.fixture(scope="module")
def bars() -> Bars:
    return make_panel()


# ---------------------------------------------------------- test operators
def rolling_median(x: np.ndarray, n: int) -> np.ndarray:
    """Causal: median of bars t-n+1..t (NaN if any is missing)."""
    out = np.full(x.shape, np.nan)
    if x.shape[1] >= n:
        out[:, n - 1:] = np.median(np.lib.stride_tricks.sliding_window_view(x, n, axis=1),
                                   axis=-1)
    return out


def peek(x: np.ndarray, n: int) -> np.ndarray:
    """NOT causal: x n bars *ahead* (x shifted backwards)."""
    out = np.full(x.shape, np.nan)
    out[:, :-n] = x[:, n:]
    return out


def centered_mean(x: np.ndarray, n: int) -> np.ndarray:
    """NOT causal: mean of bars t-n..t+n."""
    out = np.full(x.shape, np.nan)
    if x.shape[1] >= 2 * n + 1:
        win = np.lib.stride_tricks.sliding_window_view(x, 2 * n + 1, axis=1)
        out[:, n:x.shape[1] - n] = win.mean(axis=-1)
    return out


def full_sample_scaled(x: np.ndarray) -> np.ndarray:
    """NOT causal: x divided by its maximum over the whole sample."""
    with warnings.catch_warnings():  # a symbol not yet listed in a cut panel: all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return x / np.nanmax(x, axis=1, keepdims=True)


def rebased(x: np.ndarray) -> np.ndarray:
    """Causal, but remembers the first bar forever: x / its first value so far."""
    first = np.full(x.shape[0], np.nan)
    out = np.full(x.shape, np.nan)
    for t in range(x.shape[1]):
        first = np.where(np.isnan(first), x[:, t], first)
        out[:, t] = x[:, t] / first
    return out


# ------------------------------------------------- every built-in operator
_SYMBOLIC = {  # operators spelled with symbols in the language
    "add": "(close + sma(open, 3))", "sub": "(close - sma(open, 3))",
    "mul": "(close * volume)", "div": "(close / (close - open))", "neg": "(-sma(open, 3))",
    "gt": "(close > sma(open, 3))", "ge": "(close >= lag(close, 1))",
    "eq": "(rank(close) == 0.5)", "ne": "(rank(close) != 0.5)",
    "and": "(close > open and high > lag(high, 1))",
    "or": "(close > open or rsi(close, 5) < 30)", "not": "(not (close > lag(close, 2)))",
}


def builtin_expression(op: str) -> str:
    """An expression for ``op`` built from its signature (a new operator is covered)."""
    if op in _SYMBOLIC:
        return _SYMBOLIC[op]
    spec = OPS[op]
    nums = iter(("close", "sma(open, 3)"))
    args = [str(max(spec.min_window, 6)) if k == "window" else next(nums) for k in spec.args]
    return f"{op}({', '.join(args)})"


def builtin_spec(op: str) -> StrategySpec:
    expr = builtin_expression(op)
    if OPS[op].result == "bool":
        return StrategySpec(entry=expr, exit="close < sma(close, 5)")
    # a numeric operator drives both signals, so cut points land where it moves
    return StrategySpec(entry=f"{expr} > lag({expr}, 1)", exit=f"{expr} < lag({expr}, 2)")


NESTED = [
    ("sma(close, 10) > ema(close, 12) and rsi(close, 9) < 70",
     "cross_below(close, sma(close, 10))"),
    ("zscore(rank(volume), 5) > 0.5", "not (close > highest(high, 10))"),
    ("cross_above(rsi(close, 4), 50) or roc(close, 3) > 0.01",
     "ema(close - lag(close, 1), 4) / atr(4) < -0.5"),
    ("rank(-std(close, 5)) >= 0.25 and close > lowest(low, 7)", "sma(rank(close), 4) < 0.5"),
]


# the warm-up check on every numeric node, at a tolerance far tighter than the
# default: still no false alarm from rounding or from the recursive averages
STRICT = WarmupOptions(scope="all", rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("op", sorted(BUILTIN_OPS))
def test_every_builtin_operator_passes(bars: Bars, op: str) -> None:
    spec = builtin_spec(op)
    report = check_lookahead(spec, bars, n_cuts=8, seed=1, warmup=STRICT)
    assert report.ok, [f.describe() for f in report.findings]
    report.raise_for_lookahead()  # nothing to raise
    assert len(report.cuts) == 8 and all(0 <= t < N_BARS - 1 for t in report.cuts)
    assert report.unchecked_warmup == ()  # the panel is long enough for every warm-up
    assert report.warmup_starts  # and the warm-up check ran


@pytest.mark.parametrize(("entry", "exit"), NESTED)
def test_nested_builtin_expressions_pass(bars: Bars, entry: str, exit: str) -> None:
    report = check_lookahead(StrategySpec(entry=entry, exit=exit), bars, n_cuts=8, seed=2,
                             warmup=STRICT)
    assert report.ok, [f.describe() for f in report.findings]
    assert report.unchecked_warmup == ()


def test_default_warmup_check_compares_registered_operators_only(bars: Bars) -> None:
    spec = StrategySpec(entry="sma(close, 10) > sma(close, 30)", exit="close < open")
    assert check_lookahead(spec, bars).warmup_starts == ()
    with custom_operator("rmedian", rolling_median, lookback=lambda n: n - 1):
        spec = StrategySpec(entry="rmedian(sma(close, 10), 5) > sma(close, 30)",
                            exit="close < open")
        report = check_lookahead(spec, bars)
    # sma(close,10) needs 9 bars, the median 4 more; 5 bars compared: start T - 18
    assert report.ok and report.warmup_starts == (N_BARS - 18,)


def test_builtins_cover_every_operator() -> None:
    used: set[str] = set()
    for op in BUILTIN_OPS:
        spec = builtin_spec(op)
        used |= operators_used(spec.entry_node) | operators_used(spec.exit_node)
    # canonicalization rewrites cross_below(a, b) as cross_above(b, a) and
    # not(a > b) as b >= a; every other operator is evaluated under its own name
    assert used == set(BUILTIN_OPS) - {"cross_below", "not"}


# ------------------------------------------------------ custom operators
def test_causal_custom_operator_passes(bars: Bars) -> None:
    with custom_operator("rmedian", rolling_median, lookback=lambda n: n - 1):
        spec = StrategySpec(entry="close > rmedian(close, 7)",
                            exit="cross_above(rmedian(close, 3), close)")
        report = check_lookahead(spec, bars)
    assert report.ok, [f.describe() for f in report.findings]
    assert "rmedian(close,7)" in str(spec.entry_node)


def test_causal_custom_operator_with_default_lookback_passes(bars: Bars) -> None:
    with custom_operator("rmedian", rolling_median):  # look-back n: one more than needed
        report = check_lookahead(StrategySpec(entry="rmedian(high, 5) > rmedian(low, 9)",
                                              exit="close < open"), bars)
    assert report.ok, [f.describe() for f in report.findings]


NON_CAUSAL: list[tuple[str, Callable[..., np.ndarray], tuple[str, ...], str]] = [
    ("peek", peek, ("num", "window"), "peek(close, 1)"),
    ("centered", centered_mean, ("num", "window"), "centered(close, 3)"),
    ("fullscale", full_sample_scaled, ("num",), "fullscale(close)"),
]


@pytest.mark.parametrize(("name", "fn", "args", "call"), NON_CAUSAL,
                         ids=[c[0] for c in NON_CAUSAL])
def test_non_causal_custom_operator_is_caught_and_named(
        bars: Bars, name: str, fn: Callable[..., np.ndarray], args: tuple[str, ...],
        call: str) -> None:
    with custom_operator(name, fn, args=args):
        # nested inside built-ins: the culprit is the custom operator, not sma/gt
        spec = StrategySpec(entry=f"sma({call}, 3) > sma(close, 5)", exit="close < open")
        report = check_lookahead(spec, bars)
    assert not report.ok
    first = report.findings[0]
    assert (first.check, first.operator, first.signal) == ("truncation", name, "entry")
    assert first.bar <= first.cut
    with pytest.raises(LookaheadError) as info:
        report.raise_for_lookahead()
    err = info.value
    assert err.code == POLICY_CODE == "LOOKAHEAD_POLICY_VIOLATION"
    assert err.error_class is ErrorClass.CRITICAL
    assert f"operator {name!r}" in str(err) and f"bar {first.bar}" in str(err)


def _late_listing(bars: Bars, symbol: int, first: int) -> Bars:
    arrays = {f: np.array(getattr(bars, f)) for f in ("open", "high", "low", "close",
                                                      "volume")}
    for a in arrays.values():
        a[:first, symbol] = np.nan
    return Bars(index=bars.index, symbols=bars.symbols, name="late", **arrays)


def test_an_operator_that_counts_symbols_listing_later_is_caught(bars: Bars) -> None:
    """A black-box report: a cross-sectional demean dividing by the panel's symbol count
    (which includes symbols not listed yet) passed, because the cut panels kept the later
    symbols as empty columns."""
    late = _late_listing(bars, 4, 450)  # EEE lists at bar 450: most cuts come before

    def by_panel_count(x: np.ndarray) -> np.ndarray:
        return x - np.nansum(x, axis=0, keepdims=True) / x.shape[0]

    def by_listed_count(x: np.ndarray) -> np.ndarray:  # causal: the symbols with a value
        import warnings

        with warnings.catch_warnings():  # a bar where no symbol has a value: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return x - np.nanmean(x, axis=0, keepdims=True)

    spec = "{0}(roc(close, 5)) > 0"
    with custom_operator("xsdm", by_panel_count, args=("num",)):
        report = check_lookahead(StrategySpec(entry=spec.format("xsdm"), exit="close < open"),
                                 late)
    assert not report.ok and report.findings[0].operator == "xsdm"
    assert report.findings[0].cut < 450
    with custom_operator("xsmean", by_listed_count, args=("num",)):
        fine = check_lookahead(StrategySpec(entry=spec.format("xsmean"), exit="close < open"),
                               late)
    assert fine.ok, [f.describe() for f in fine.findings]


def test_shift_backwards_finding_matches_hand_derivation(bars: Bars) -> None:
    with custom_operator("peek", peek):
        report = check_lookahead(StrategySpec(entry="peek(close, 1) > close",
                                              exit="close < open"), bars, n_cuts=5, seed=7)
    first = report.findings[0]
    # peek(close, 1) at bar t is close[t + 1]: identical on every cut for bars < t;
    # at t the cut panel has no t + 1, so NaN, while the full one has close[t + 1].
    t = report.cuts[0]  # the earliest cut already shows it
    close = bars.close
    sym = int(np.flatnonzero(~np.isnan(close[t + 1]))[0])
    assert (first.cut, first.bar, first.symbol) == (t, t, SYMBOLS[sym])
    assert first.full_value == close[t + 1, sym] and np.isnan(first.cut_value)
    assert first.expression == "peek(close,1)" and first.kind == "num"
    assert len(report.findings) == 1  # gt(...) above it is explained by its input


def test_warmup_dependence_is_reported(bars: Bars) -> None:
    with custom_operator("rebased", rebased, args=("num",)):  # declared look-back 0
        report = check_lookahead(StrategySpec(entry="rebased(close) > 1.1",
                                              exit="close < open"), bars)
    assert report.lookahead == ()  # causal: truncation finds nothing
    (finding,) = report.warmup
    assert (finding.check, finding.operator) == ("warmup", "rebased")
    # a look-back of 0 and 5 compared bars: the panel starts 5 bars before the end and
    # the first compared bar differs for the first symbol with a price there
    k = N_BARS - 5
    close = bars.close
    sym = int(np.flatnonzero(~np.isnan(close[k]))[0])
    first_full = close[np.flatnonzero(~np.isnan(close[:, sym]))[0], sym]
    assert (finding.cut, finding.bar, finding.symbol) == (k, k, SYMBOLS[sym])
    assert finding.full_value == pytest.approx(close[k, sym] / first_full, rel=1e-15)
    assert finding.cut_value == 1.0  # the first bar of its own panel
    report.raise_for_lookahead(warmup=False)  # not lookahead proper
    with pytest.raises(LookaheadError, match="declared look-back"):
        report.raise_for_lookahead()


# -------------------------------------------------------------- cut points
def test_cut_points_favour_signal_events_and_are_seeded(bars: Bars) -> None:
    # never true, so the only events are the bars where a symbol's close appears or
    # disappears (the code switches between unknown and false there)
    spec = StrategySpec(entry="close > 1000000", exit="close < 0")
    missing = np.isnan(bars.close)
    events = {int(t) for t in np.flatnonzero(np.any(missing[1:] != missing[:-1], axis=1)) + 1}
    events = {t for t in events if t < N_BARS - 1}
    report = check_lookahead(spec, bars, n_cuts=8, seed=4)
    assert report.ok
    assert len(set(report.cuts) & events) >= min(len(events), 6)  # 8 - 8 // 4
    assert len(set(report.cuts)) == 8 and all(0 <= t < N_BARS - 1 for t in report.cuts)
    assert check_lookahead(spec, bars, n_cuts=8, seed=4).cuts == report.cuts
    others = {check_lookahead(spec, bars, n_cuts=8, seed=s).cuts for s in range(5, 10)}
    assert len(others) > 1


def test_short_panels_and_no_cuts(bars: Bars) -> None:
    spec = StrategySpec(entry="close > sma(close, 3)", exit="close < open")
    assert check_lookahead(spec, bars.slice(0, 1)).cuts == ()
    # fewer candidate bars than cuts: every bar but the last, down to a one-bar panel
    assert check_lookahead(spec, bars.slice(0, 3), n_cuts=8).cuts == (0, 1)
    report = check_lookahead(spec, bars, n_cuts=0)
    assert report.cuts == () and report.ok


def test_evaluator_is_reused_and_must_match_the_panel(bars: Bars) -> None:
    spec = StrategySpec(entry="sma(close, 10) > sma(close, 30)", exit="close < open")
    ev = SignalEvaluator(bars)
    report = check_lookahead(spec, bars, evaluator=ev)
    assert "sma(close,10)" in ev.cache  # the shared evaluator holds the indicators
    assert report == check_lookahead(spec, bars)
    with pytest.raises(ValueError, match="another Bars panel"):
        check_lookahead(spec, bars, evaluator=SignalEvaluator(bars.slice(0, 100)))


def test_report_is_a_plain_value(bars: Bars) -> None:
    report = check_lookahead(StrategySpec(entry="close > open", exit="close < open"), bars)
    assert isinstance(report, LookaheadReport)
    assert report.n_expressions == 2 and report.findings == ()


# ---------------------------------------------------------------------- cost
def test_cost_on_twenty_specs(bars: Bars) -> None:
    """20 specs × (5 symbols × 500 bars): printed, never asserted (DESIGN §4)."""
    specs = [StrategySpec(entry=f"sma(close, {f}) > sma(close, {s})",
                          exit=f"sma(close, {f}) < sma(close, {s})")
             for f, s in [(5, 20), (10, 30), (10, 50), (20, 60), (5, 40)]]
    specs += [StrategySpec(entry=e, exit=x) for e, x in NESTED]
    specs += [builtin_spec(op) for op in ("rsi", "atr", "zscore", "highest", "rank", "ema",
                                          "roc", "std", "cross_above", "and", "lowest")]
    assert len(specs) == 20
    for label in ("first pass (numba loads its cached kernels)", "second pass"):
        ev = SignalEvaluator(bars)  # one per pass, as one per iteration in the loop
        start = time.perf_counter()
        reports = [check_lookahead(s, bars, evaluator=ev) for s in specs]
        elapsed = time.perf_counter() - start
        assert all(r.ok for r in reports)
        print(f"\nlookahead check, {label}: {len(specs)} specs × ({len(SYMBOLS)} symbols × "
              f"{N_BARS} bars), 8 cuts each: {elapsed:.3f} s "
              f"({1000 * elapsed / len(specs):.1f} ms per spec)")


def test_a_peeking_score_of_a_ranked_book_is_caught(bars: Bars) -> None:
    """A cross-sectional book's score is checked like entry and exit: a score that
    reads tomorrow's close is named, with the score as the place it was found."""
    with custom_operator("peek", peek):
        spec = StrategySpec.from_dict({"portfolio": {
            "method": "cross_sectional", "score": "peek(close, 1)", "long": 2}})
        report = check_lookahead(spec, bars)
    assert not report.ok
    assert any(f.signal == "score" and "peek(close,1)" in f.expression
               for f in report.findings), [f.describe() for f in report.findings]
