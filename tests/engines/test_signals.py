"""SignalEvaluator: three-valued logic, sharing of sub-expressions, constants, NaN."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alphaloop.data.bars import Bars
from alphaloop.engines import indicators as ind
from alphaloop.engines import signals as signals_mod
from alphaloop.engines.engine_a import run_batch
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.strategy.expression import canonicalize, parse
from alphaloop.strategy.spec import StrategySpec

F, U, T_ = int(ind.FALSE), int(ind.UNKNOWN), int(ind.TRUE)


def make_bars(n_bars: int = 80, seed: int = 2) -> Bars:
    rng = np.random.default_rng(seed)
    n = 3
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_bars, n)), axis=0))
    opn = close * (1 + rng.normal(0, 0.005, close.shape))
    high = np.maximum(opn, close) * 1.01
    low = np.minimum(opn, close) * 0.99
    vol = rng.integers(1, 100, close.shape).astype(float)
    arrays = {"open": opn, "high": high, "low": low, "close": close, "volume": vol}
    for a in arrays.values():
        a[:10, 2] = np.nan  # third symbol listed at bar 10
    idx = pd.date_range("2022-01-03", periods=n_bars, freq="D", tz="UTC")
    return Bars(index=idx, symbols=("A", "B", "C"), **arrays)


def codes(ev: SignalEvaluator, src: str) -> np.ndarray:
    out = ev._eval(canonicalize(parse(src)))
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    return out


# ------------------------------------------------------------ asset-major fields
def test_evaluators_of_one_panel_share_its_asset_major_copies() -> None:
    bars = make_bars()
    a, b = SignalEvaluator(bars), SignalEvaluator(bars)
    for name in ("open", "high", "low", "close", "volume"):
        assert a.fields[name] is b.fields[name]  # made once per panel
        np.testing.assert_array_equal(a.fields[name], getattr(bars, name).T)
        assert a.fields[name].flags.c_contiguous
    assert a.valid is b.valid
    # a bar exists where all of OHLC do: the third symbol from bar 10
    assert not a.valid[2, :10].any() and a.valid[2, 10:].all() and a.valid[:2].all()
    # another panel (even with equal content) gets its own
    assert SignalEvaluator(make_bars()).fields["close"] is not a.fields["close"]


# ------------------------------------------------------------ three-valued
def test_negation_is_never_true_during_warmup() -> None:
    ev = SignalEvaluator(make_bars())
    sig = ev.signal(parse("not (sma(close, 50) > close)"))
    raw = codes(ev, "not (sma(close, 50) > close)")
    # sma(close, 50) exists from bar 49 (bar 59 for the symbol listed at bar 10)
    assert not sig[:2, :49].any() and not sig[2, :59].any()
    assert (raw[:2, :49] == U).all() and (raw[2, :59] == U).all()
    # ... and the expression is not trivially false afterwards
    assert sig[:, 59:].any() and (raw[:, 59:] != U).all()
    # the two-valued reading would have fired: "not false" on every warm-up bar
    assert not ev.signal(parse("sma(close, 50) > close"))[:, :49].any()


def test_or_with_a_known_true_side_is_true() -> None:
    ev = SignalEvaluator(make_bars())
    listed = ~np.isnan(ev.fields["close"])
    # close > 0 is known true wherever there is a bar; the other side is unknown in warm-up
    sig = ev.signal(parse("close > 0 or sma(close, 50) > close"))
    np.testing.assert_array_equal(sig, listed)
    # unknown or false = unknown ; unknown and true = unknown ; unknown and false = false
    np.testing.assert_array_equal(codes(ev, "close < 0 or sma(close, 50) > close")[:, :49], U)
    np.testing.assert_array_equal(codes(ev, "close > 0 and sma(close, 50) > close")[:2, :49], U)
    np.testing.assert_array_equal(codes(ev, "close < 0 and sma(close, 50) > close")[:2, :49], F)
    assert not ev.signal(parse("close > 0 and sma(close, 50) > close"))[:, :49].any()


def test_not_of_known_values_flips() -> None:
    ev = SignalEvaluator(make_bars())
    a = codes(ev, "close > open")
    b = codes(ev, "not (close > open)")
    known = a != U
    np.testing.assert_array_equal(b[known], 2 - a[known])
    np.testing.assert_array_equal(b[~known], U)
    assert known.sum() > 100 and (~known).sum() == 10  # unknown only before the listing


def test_no_bar_gives_unknown_not_false() -> None:
    ev = SignalEvaluator(make_bars())
    raw = codes(ev, "close < open")
    assert (raw[2, :10] == U).all()
    assert not ev.signal(parse("not (close < open)"))[2, :10].any()


def test_signal_out_parameter_and_canonical_flag() -> None:
    ev = SignalEvaluator(make_bars())
    spec = StrategySpec(entry="sma(close, 5) < close", exit="close < sma(close, 5)")
    out = np.zeros(ev.shape, dtype=np.bool_)
    ret = ev.signal(spec.entry_node, out=out, canonical=True)
    assert ret is out
    np.testing.assert_array_equal(out, ev.signal(parse("close > sma(close, 5)")))


# ------------------------------------------------------------------ caching
def test_shared_subexpression_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = signals_mod._NUMERIC["sma"]

    def counting(x: np.ndarray, n: int) -> np.ndarray:
        calls.append(n)
        return real(x, n)

    monkeypatch.setitem(signals_mod._NUMERIC, "sma", counting)
    bars = make_bars()
    ev = SignalEvaluator(bars)
    specs = [StrategySpec(entry=f"close > sma(close, 20) * {1 + k / 100}",
                          exit=f"sma(close, {k + 2}) > sma(close, 20)") for k in range(10)]
    run_batch(specs, bars, evaluator=ev)
    assert calls.count(20) == 1  # ten specs, one computation
    assert sorted(n for n in calls if n != 20) == list(range(2, 12))
    assert "sma(close,20)" in ev.cache
    assert sum(key == "sma(close,20)" for key in ev.cache) == 1
    # another pass over the same evaluator recomputes nothing
    run_batch(specs, bars, evaluator=ev)
    assert len(calls) == 11


def test_equivalent_spellings_share_one_cache_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = signals_mod._NUMERIC["std"]
    monkeypatch.setitem(signals_mod._NUMERIC, "std",
                        lambda x, n: (calls.append(n), real(x, n))[1])
    ev = SignalEvaluator(make_bars())
    ev.signal(parse("std(close, 10) > 1"))
    ev.signal(parse("1 < std(close, 10)"))
    ev.values(parse("zscore(close, 10)"))  # reuses sma(close,10) and std(close,10)
    assert calls == [10]
    assert {"std(close,10)", "sma(close,10)", "zscore(close,10)"} <= set(ev.cache)


def test_cache_bytes_limit_keeps_results_correct() -> None:
    bars = make_bars()
    small = SignalEvaluator(bars, max_cache_bytes=3 * 8 * bars.n_bars * bars.n_symbols)
    big = SignalEvaluator(bars)
    for src in ["sma(close, 3) > sma(close, 9)", "ema(close, 4) > lag(close, 2)",
                "zscore(close, 6) > std(close, 5)", "rank(roc(close, 2)) > 0.3"]:
        np.testing.assert_array_equal(small.signal(parse(src)), big.signal(parse(src)))
    assert len(small.cache) <= 3


# ---------------------------------------------------------------- constants
def test_constants_broadcast() -> None:
    ev = SignalEvaluator(make_bars())
    n, t = ev.shape
    np.testing.assert_array_equal(ev.values(parse("3")), np.full((n, t), 3.0))
    np.testing.assert_array_equal(ev.values(parse("2 * 3 + 1")), np.full((n, t), 7.0))
    five = ev.values(parse("sma(5, 3)"))
    assert np.isnan(five[:, :2]).all() and (five[:, 2:] == 5.0).all()
    np.testing.assert_array_equal(ev.values(parse("rank(1)")), np.full((n, t), 0.5))
    np.testing.assert_array_equal(ev.signal(parse("1 > 0")), np.ones((n, t), dtype=bool))
    np.testing.assert_array_equal(ev.signal(parse("1 < 0")), np.zeros((n, t), dtype=bool))
    close = ev.fields["close"]
    np.testing.assert_array_equal(ev.values(parse("close + 1")), close + 1)
    np.testing.assert_array_equal(ev.signal(parse("close > 100")), close > 100)
    np.testing.assert_array_equal(ev.signal(parse("100 > close")), close < 100)
    np.testing.assert_array_equal(ev.signal(parse("cross_above(close, 100)"))[:, 1:],
                                  (close[:, 1:] > 100) & (close[:, :-1] <= 100))


# ---------------------------------------------------------- division by zero
def test_division_by_zero_gives_nan_not_inf() -> None:
    ev = SignalEvaluator(make_bars())
    with np.errstate(all="raise"):  # no floating-point warning may escape either
        z = ev.values(parse("close / (close - close)"))
        w = ev.values(parse("(close - open) / 0"))
        q = ev.values(parse("0 / (close - close)"))
    assert np.isnan(z).all() and np.isnan(w).all() and np.isnan(q).all()
    # a division by zero is unknown in a comparison, so its negation never fires either
    assert not ev.signal(parse("close / (close - close) > 0")).any()
    assert not ev.signal(parse("not (close / (close - close) > 0)")).any()


def test_roc_and_zscore_of_flat_series_are_nan() -> None:
    n_bars = 12
    flat = np.full((n_bars, 1), 5.0)
    zero = np.zeros((n_bars, 1))
    idx = pd.date_range("2022-01-03", periods=n_bars, freq="D", tz="UTC")
    bars = Bars(index=idx, symbols=("Z",), open=zero.copy(), high=flat.copy(), low=zero.copy(),
                close=flat, volume=zero.copy())
    ev = SignalEvaluator(bars)
    assert np.isnan(ev.values(parse("zscore(close, 4)"))).all()  # std 0
    assert np.isnan(ev.values(parse("roc(open, 2)"))).all()  # past value 0
    assert not np.isinf(ev.values(parse("high / open"))).any()


def test_zscore_of_a_flat_stretch_is_nan() -> None:
    # BUG (engines/signals.py zscore + indicators.rolling_std): after a move the
    # price stays at 0.1 (illiquid or halted symbol). std over the flat window is
    # mathematically 0, so zscore must be NaN (never fire), as it is for a flat 5.0.
    # Computed: std ~1.4e-17 > 0 and close - sma ~ -8e-17, so zscore = -5.85 and
    # "zscore(close, 20) < -2" fires on every flat bar.
    n_bars = 40
    c = np.full((n_bars, 1), 0.1)
    c[:10] = 0.11
    idx = pd.date_range("2022-01-03", periods=n_bars, freq="D", tz="UTC")
    bars = Bars(index=idx, symbols=("Z",), open=c.copy(), high=c.copy(), low=c.copy(),
                close=c, volume=np.ones((n_bars, 1)))
    ev = SignalEvaluator(bars)
    z = ev.values(parse("zscore(close, 20)"))[0]
    assert np.isnan(z[29:]).all(), z[29:]
    assert not ev.signal(parse("zscore(close, 20) < -2"))[0, 29:].any()


def test_constant_division_by_zero_broadcasts_to_nan() -> None:
    # BUG (engines/signals.py, _elementwise "div", and values/_compare): "1/0" is not
    # folded (the result is not finite), and _elementwise returns np.where(...) of two
    # Python floats: a 0-d ndarray. values() then returns shape () instead of (N, T).
    ev = SignalEvaluator(make_bars())
    got = ev.values(parse("1 / 0"))
    assert got.shape == ev.shape
    assert np.isnan(got).all()


def test_comparison_with_constant_division_by_zero_is_unknown() -> None:
    # BUG (same cause): the 0-d array reaches ind.compare as if it were an (N, T)
    # array and numba raises a TypingError instead of giving "unknown" everywhere.
    ev = SignalEvaluator(make_bars())
    raw = codes(ev, "close > 1 / 0")
    assert (raw == U).all()
    assert not ev.signal(parse("not (close > 1 / 0)")).any()


@pytest.mark.parametrize(("a", "b"), [
    ("not (sma(close, 3) > open)", "sma(close, 3) <= open"),
    ("not (sma(close, 3) >= open)", "sma(close, 3) < open"),
    ("not (sma(close, 3) == open)", "sma(close, 3) != open"),
    ("not (sma(close, 3) != open)", "sma(close, 3) == open"),
    ("cross_below(close, sma(close, 3))", "cross_above(sma(close, 3), close)"),
])
def test_canonical_rewrites_keep_three_valued_meaning(a: str, b: str) -> None:
    """The normalizer treats these as the same strategy; the raw (uncanonicalized)
    trees must give identical three-valued codes on data with holes and warm-up."""
    from alphaloop.strategy.expression import canonical_text, parse

    rng = np.random.default_rng(5)
    close = 100 + np.cumsum(rng.normal(0, 1, (40, 3)), axis=0)
    close[5:8, 1] = np.nan
    opn = close + rng.normal(0, 0.5, close.shape)
    opn[::7, 2] = close[::7, 2]  # exact ties for == / !=
    idx = pd.date_range("2024-01-01", periods=40, freq="B", tz="UTC")
    hi, lo = np.fmax(opn, close) + 1, np.fmin(opn, close) - 1
    bars = Bars(index=idx, symbols=("A", "B", "C"), open=opn, high=hi, low=lo, close=close,
                volume=np.ones_like(close))
    ev = SignalEvaluator(bars)
    raw_a, raw_b = parse(a, expect="bool"), parse(b, expect="bool")
    np.testing.assert_array_equal(ev._eval(raw_a), ev._eval(raw_b))
    assert canonical_text(a, expect="bool") == canonical_text(b, expect="bool")


def test_cache_evicts_least_recently_used_first() -> None:
    # room for three arrays: sma 3, sma 5, sma 7 fill it; sma 3 is used again, so
    # sma 9 pushes out sma 5 (the least recently used), not everything
    bars = make_bars()
    ev = SignalEvaluator(bars, max_cache_bytes=3 * 8 * bars.n_bars * bars.n_symbols)
    for n in (3, 5, 7, 3, 9):
        ev.values(parse(f"sma(close, {n})"))
    assert list(ev.cache) == ["sma(close,7)", "sma(close,3)", "sma(close,9)"]
    assert ev._cache_bytes == 3 * 8 * bars.n_bars * bars.n_symbols


def test_cached_arrays_count_against_the_budget() -> None:
    bars = make_bars()
    one = 8 * bars.n_bars * bars.n_symbols
    ev = SignalEvaluator(bars, max_cache_bytes=2 * one)
    calls: list[int] = []

    def make() -> np.ndarray:
        calls.append(1)
        return np.zeros(ev.shape)

    a = ev.cached("x", make)
    assert ev.cached("x", make) is a and len(calls) == 1  # a hit computes nothing
    ev.values(parse("sma(close, 3)"))
    ev.values(parse("sma(close, 5)"))  # the budget holds two: "x" goes
    assert "x" not in ev.cache and ev._cache_bytes == 2 * one
