"""Indicator kernels (alphaloop.engines.indicators) against independent references.

References are pandas (rolling / shift / ewm / rank), plain-Python loops written
here, or small examples worked by hand in the comments. Kernels take asset-major
(N symbols, T bars) arrays; pandas works on (T, N) frames, hence the transposes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from alphaloop.engines import indicators as ind

F, U, T_ = ind.FALSE, ind.UNKNOWN, ind.TRUE  # three-valued codes 0, 1, 2


def _panel(seed: int = 0, n_sym: int = 4, n_bars: int = 200, holes: bool = True) -> np.ndarray:
    """(N, T) random walk prices; with NaN holes, a late-listed and a delisted symbol."""
    rng = np.random.default_rng(seed)
    x = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_sym, n_bars)), axis=1))
    if holes:
        x[0, 50] = np.nan  # one missing bar in the middle
        x[1, 120:123] = np.nan  # three missing bars
        x[2, :37] = np.nan  # listed late
        x[3, 170:] = np.nan  # delisted early
    return np.ascontiguousarray(x)


def _df(x: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(x.T)


def _back(df: pd.DataFrame) -> np.ndarray:
    return df.to_numpy().T


# ------------------------------------------------------------------- pandas refs
@pytest.mark.parametrize("n", [1, 2, 5, 20])
def test_sma_matches_pandas_rolling_mean(n: int) -> None:
    x = _panel()
    got = ind.sma(x, n)
    want = _back(_df(x).rolling(n).mean())  # min_periods = n: any NaN in window -> NaN
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, equal_nan=True)
    assert np.array_equal(np.isnan(got), np.isnan(want))


def test_sma_long_series_no_drift() -> None:
    # more than 4096 bars, large level and small moves: running-sum drift would show
    rng = np.random.default_rng(1)
    x = np.ascontiguousarray((1e6 + np.cumsum(rng.normal(0, 1, 10_000)))[None, :])
    got = ind.sma(x, 50)
    want = _back(_df(x).rolling(50).mean())
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=0, equal_nan=True)


@pytest.mark.parametrize("n", [2, 3, 10, 30])
def test_std_matches_pandas_rolling_std_ddof1(n: int) -> None:
    x = _panel()
    got = ind.rolling_std(x, n)
    want = _back(_df(x).rolling(n).std(ddof=1))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert np.array_equal(np.isnan(got), np.isnan(want))


def test_std_hand_example() -> None:
    # x = 2, 4, 4, 4, 5, 5, 7, 9 ; n = 8: mean 5, squared deviations
    # 9+1+1+1+0+0+4+16 = 32 ; sample variance 32/7 ; std sqrt(32/7) = 2.138089935...
    x = np.array([[2.0, 4, 4, 4, 5, 5, 7, 9]])
    got = ind.rolling_std(x, 8)
    assert np.isnan(got[0, :7]).all()
    assert got[0, 7] == pytest.approx(math.sqrt(32 / 7), rel=1e-14)


def test_std_of_a_constant_window_is_exactly_zero() -> None:
    # BUG (engines/indicators.py, rolling_std): a window of equal values has a
    # computed mean that is off by an ulp (0.1·20/20 != 0.1 in floating point), so
    # the two-pass std is ~1e-17 instead of 0. pandas returns exactly 0 here. The
    # consequence is in zscore (see test_signals.py): a flat stretch of prices
    # gets z-scores like -5.8 instead of NaN.
    x = np.full((1, 30), 0.1)
    x[0, :5] = 0.11  # a move, then a flat stretch (a halted or illiquid symbol)
    want = pd.Series(x[0]).rolling(20).std().to_numpy()
    assert (want[-6:] == 0.0).all()
    np.testing.assert_array_equal(ind.rolling_std(x, 20)[0, -6:], 0.0)


def _std_reference(x: np.ndarray, n: int) -> np.ndarray:
    """Two-pass sample std of every window, written with numpy: NaN where the window
    holds a NaN or an infinity, exactly 0 where all its values are equal."""
    out = np.full(x.shape, np.nan)
    for i, row in enumerate(x):
        for t, w in enumerate(sliding_window_view(row, n), start=n - 1):
            if np.isnan(w).any():
                continue
            if (w == w[0]).all():
                out[i, t] = 0.0
            elif np.isfinite(w).all():
                out[i, t] = math.sqrt(((w - w.mean()) ** 2).sum() / (n - 1))
    return out


def test_std_high_level_small_moves_keeps_precision() -> None:
    # minute prices: level 1e5, moves of 1e-2, 20,000 bars. A sum of squares of the
    # raw values would cancel to nothing (1e10 vs a variance of ~1e-3); the kernel
    # slides sums of deviations from a recent value and re-sums every n bars
    rng = np.random.default_rng(7)
    x = np.ascontiguousarray((1e5 + np.cumsum(rng.normal(0, 0.01, 20_000)))[None, :])
    for n in (5, 50, 390):
        np.testing.assert_allclose(ind.rolling_std(x, n), _std_reference(x, n),
                                   rtol=1e-8, atol=0, equal_nan=True)


_cell = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.sampled_from(
    [np.nan, np.inf, -np.inf, 1.0, 1.0, 1.0]))


@settings(max_examples=200, deadline=None)
@given(st.lists(_cell, min_size=1, max_size=60), st.integers(2, 8))
def test_std_matches_two_pass_reference_with_gaps_infinities_and_flats(
        values: list[float], n: int) -> None:
    x = np.array([values])
    if x.shape[1] < n:
        return
    np.testing.assert_allclose(ind.rolling_std(x, n), _std_reference(x, n),
                               rtol=1e-9, atol=1e-9, equal_nan=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(_cell, min_size=1, max_size=60), st.integers(1, 8))
def test_highest_lowest_match_numpy_windows_with_gaps_and_infinities(
        values: list[float], n: int) -> None:
    # numpy's max/min over each window of the previous n bars (a NaN in it gives
    # NaN); pandas is no reference here, its rolling windows read infinities as NaN
    x = np.array([values])
    want_hi, want_lo = np.full(x.shape, np.nan), np.full(x.shape, np.nan)
    if x.shape[1] > n:
        windows = sliding_window_view(x[0, :-1], n)
        want_hi[0, n:], want_lo[0, n:] = windows.max(axis=1), windows.min(axis=1)
    np.testing.assert_array_equal(ind.highest_prev(x, n), want_hi)
    np.testing.assert_array_equal(ind.lowest_prev(x, n), want_lo)


@pytest.mark.parametrize("n", [1, 3, 10])
def test_lag_matches_shift(n: int) -> None:
    x = _panel()
    np.testing.assert_array_equal(ind.lag(x, n), _back(_df(x).shift(n)))


@pytest.mark.parametrize("n", [1, 4, 20])
def test_highest_lowest_use_previous_bars_only(n: int) -> None:
    x = _panel()
    np.testing.assert_array_equal(ind.highest_prev(x, n), _back(_df(x).shift(1).rolling(n).max()))
    np.testing.assert_array_equal(ind.lowest_prev(x, n), _back(_df(x).shift(1).rolling(n).min()))


def test_highest_excludes_current_bar_hand_example() -> None:
    # x = 1, 5, 2, 9, 3 ; highest(x, 2) at t: max(x[t-2], x[t-1])
    #   t=2: max(1, 5) = 5 ; t=3: max(5, 2) = 5 (the 9 at t=3 itself is excluded)
    #   t=4: max(2, 9) = 9
    x = np.array([[1.0, 5, 2, 9, 3]])
    np.testing.assert_array_equal(ind.highest_prev(x, 2), [[np.nan, np.nan, 5, 5, 9]])
    np.testing.assert_array_equal(ind.lowest_prev(x, 2), [[np.nan, np.nan, 1, 2, 2]])


# ------------------------------------------------------------------------- EMA
def _ema_loop(x: np.ndarray, n: int) -> np.ndarray:
    """Plain-Python EMA: seed = mean of the first n values of an unbroken stretch,
    then e = e + a (x - e) with a = 2/(n+1); a NaN gives NaN and restarts the seed."""
    out = np.full(x.shape, np.nan)
    a = 2.0 / (n + 1)
    for i in range(x.shape[0]):
        buf: list[float] = []
        e = math.nan
        for t in range(x.shape[1]):
            v = x[i, t]
            if math.isnan(v):
                buf, e = [], math.nan
                continue
            if len(buf) < n:
                buf.append(v)
                if len(buf) == n:
                    e = sum(buf) / n
                    out[i, t] = e
                continue
            e = e + a * (v - e)
            out[i, t] = e
    return out


@pytest.mark.parametrize("n", [1, 3, 12])
def test_ema_matches_loop_with_holes(n: int) -> None:
    x = _panel()
    np.testing.assert_allclose(ind.ema(x, n), _ema_loop(x, n), rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("n", [3, 12])
def test_ema_matches_pandas_ewm_after_sma_seed(n: int) -> None:
    x = _panel(holes=False)[0]
    seed = x[:n].mean()
    s = pd.Series(np.concatenate([[seed], x[n:]]))
    want = s.ewm(span=n, adjust=False).mean().to_numpy()  # alpha = 2/(n+1)
    got = ind.ema(np.ascontiguousarray(x[None, :]), n)[0]
    assert np.isnan(got[: n - 1]).all()
    np.testing.assert_allclose(got[n - 1:], want, rtol=1e-12)


def test_ema_hand_example() -> None:
    # x = 1, 2, 3, 4, 5 ; n = 3, alpha = 2/4 = 0.5
    #   t=2: seed = (1+2+3)/3 = 2 ; t=3: 2 + 0.5*(4-2) = 3 ; t=4: 3 + 0.5*(5-3) = 4
    got = ind.ema(np.array([[1.0, 2, 3, 4, 5]]), 3)
    np.testing.assert_array_equal(got, [[np.nan, np.nan, 2, 3, 4]])


# ------------------------------------------------------------------ RSI, ATR
def test_rsi_hand_example_wilder() -> None:
    # closes 10, 11, 10.5, 11.5, 12, 11 ; n = 3
    # changes (t=1..5): +1, -0.5, +1, +0.5, -1
    # t=3 (first 3 changes): avg gain (1+0+1)/3 = 2/3, avg loss (0+0.5+0)/3 = 1/6
    #      RS = (2/3)/(1/6) = 4  -> RSI = 100 - 100/(1+4) = 80
    # t=4: gain 0.5, loss 0: g = (2/3*2 + 0.5)/3 = 11/18 ; l = (1/6*2 + 0)/3 = 1/9
    #      RS = 5.5 -> RSI = 100 - 100/6.5 = 84.6153846...
    # t=5: gain 0, loss 1:   g = (11/18*2)/3 = 11/27 ; l = (1/9*2 + 1)/3 = 11/27
    #      RS = 1 -> RSI = 50
    x = np.array([[10.0, 11, 10.5, 11.5, 12, 11]])
    got = ind.rsi(x, 3)[0]
    assert np.isnan(got[:3]).all()
    assert got[3] == pytest.approx(80.0, rel=1e-12)
    assert got[4] == pytest.approx(100 - 100 / 6.5, rel=1e-12)
    assert got[5] == pytest.approx(50.0, rel=1e-12)


def test_rsi_edge_cases_no_losses_and_flat() -> None:
    # only gains -> 100 ; no change at all -> 50
    up = ind.rsi(np.array([[1.0, 2, 3, 4, 5]]), 2)[0]
    flat = ind.rsi(np.array([[7.0, 7, 7, 7]]), 2)[0]
    np.testing.assert_array_equal(up, [np.nan, np.nan, 100, 100, 100])
    np.testing.assert_array_equal(flat, [np.nan, np.nan, 50, 50])


def _rsi_loop(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    for t in range(n, len(x)):
        d = np.diff(x[: t + 1])
        if np.isnan(d[-n:]).any():
            continue
        # start of the unbroken stretch of valid changes ending at t
        start = len(d) - 1
        while start > 0 and not np.isnan(d[start - 1]):
            start -= 1
        seg = d[start:]
        if len(seg) < n:
            continue
        g = np.clip(seg[:n], 0, None).mean()
        lo = np.clip(-seg[:n], 0, None).mean()
        for v in seg[n:]:
            g = (g * (n - 1) + max(v, 0.0)) / n
            lo = (lo * (n - 1) + max(-v, 0.0)) / n
        out[t] = (50.0 if g == 0 else 100.0) if lo == 0 else 100 - 100 / (1 + g / lo)
    return out


def test_rsi_matches_loop_with_holes() -> None:
    x = _panel()
    got = ind.rsi(x, 14)
    for i in range(x.shape[0]):
        np.testing.assert_allclose(got[i], _rsi_loop(x[i], 14), rtol=1e-10, equal_nan=True)


def test_atr_hand_example_wilder() -> None:
    # n = 3 ; true range TR_t = max(h-l, |h - c_{t-1}|, |l - c_{t-1}|), needs c_{t-1}
    # t0: h=10    l=9   c=9.5    (no TR: no previous close)
    # t1: h=11    l=9.5 c=10.5   TR = max(1.5, |11-9.5|=1.5, |9.5-9.5|=0)      = 1.5
    # t2: h=10.75 l=10  c=10.25  TR = max(0.75, |10.75-10.5|=.25, |10-10.5|=.5) = 0.75
    # t3: h=12    l=11  c=11.5   TR = max(1, |12-10.25|=1.75, |11-10.25|=.75)  = 1.75 (gap up)
    #     ATR = (1.5 + 0.75 + 1.75)/3 = 4/3
    # t4: h=11.5  l=10  c=10.5   TR = max(1.5, 0, 1.5) = 1.5
    #     ATR = (4/3*2 + 1.5)/3 = 25/18
    # t5: h=10    l=9   c=9.5    TR = max(1, |10-10.5|=.5, |9-10.5|=1.5) = 1.5 (gap down)
    #     ATR = (25/18*2 + 1.5)/3 = 77/54
    h = np.array([[10.0, 11, 10.75, 12, 11.5, 10]])
    lo = np.array([[9.0, 9.5, 10, 11, 10, 9]])
    c = np.array([[9.5, 10.5, 10.25, 11.5, 10.5, 9.5]])
    got = ind.atr(h, lo, c, 3)[0]
    assert np.isnan(got[:3]).all()
    np.testing.assert_allclose(got[3:], [4 / 3, 25 / 18, 77 / 54], rtol=1e-12)


def test_atr_nan_bar_restarts() -> None:
    # a missing bar breaks the true range at t and t+1 (needs the previous close),
    # so the Wilder average restarts and needs n fresh ranges again
    rng = np.random.default_rng(3)
    c = 50 + np.cumsum(rng.normal(0, 1, 40))
    h, lo = c + 1.0, c - 1.0
    c[20] = h[20] = lo[20] = np.nan
    got = ind.atr(h[None, :].copy(), lo[None, :].copy(), c[None, :].copy(), 5)[0]
    assert np.isnan(got[:5]).all() and np.isfinite(got[5:20]).all()
    # t=20 no bar; t=21 has no previous close; ranges restart at t=22 -> first ATR at t=26
    assert np.isnan(got[20:26]).all() and np.isfinite(got[26:]).all()


# ------------------------------------------------------------------------ rank
def test_rank_ties_hand_example() -> None:
    # one bar, five symbols: 3, 1, 3, NaN, 2 -> four values, ranks 0..3 scaled by 3
    #   1 -> 0 ; 2 -> 1/3 ; the two 3s share (2 + 3)/2 = 2.5 -> 2.5/3 ; NaN stays NaN
    x = np.array([[3.0], [1.0], [3.0], [np.nan], [2.0]])
    got = ind.cross_rank(x)[:, 0]
    np.testing.assert_allclose(got, [2.5 / 3, 0, 2.5 / 3, np.nan, 1 / 3], rtol=1e-15)


def test_rank_lone_all_equal_all_nan() -> None:
    x = np.array([[np.nan, 4.0, 1.0], [np.nan, np.nan, 1.0], [np.nan, np.nan, 1.0]])
    got = ind.cross_rank(x)
    assert np.isnan(got[:, 0]).all()  # no value at all
    np.testing.assert_array_equal(got[:, 1], [0.5, np.nan, np.nan])  # a lone value ranks 0.5
    np.testing.assert_array_equal(got[:, 2], [0.5, 0.5, 0.5])  # all tied: average rank


def test_rank_matches_pandas_average_pct() -> None:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 5, (9, 60)).astype(float)  # many ties
    x[rng.random(x.shape) < 0.2] = np.nan
    df = pd.DataFrame(x)  # rows symbols, columns bars: rank down each column
    r = df.rank(axis=0, method="average")
    m = df.notna().sum(axis=0)
    want = ((r - 1) / (m - 1)).where(m > 1, 0.5).where(df.notna()).to_numpy()
    np.testing.assert_allclose(ind.cross_rank(x), want, rtol=1e-14, equal_nan=True)


# ------------------------------------------------------------------------ NaN
@pytest.mark.parametrize("kernel", ["sma", "rolling_std", "highest_prev", "lowest_prev", "ema"])
def test_nan_inside_window_gives_nan(kernel: str) -> None:
    x = np.arange(1.0, 21.0)[None, :].copy()
    x[0, 10] = np.nan
    got = getattr(ind, kernel)(x, 4)[0]
    # windows t-4..t-1 (previous bars) or t-3..t that contain bar 10
    hole = range(11, 15) if kernel in ("highest_prev", "lowest_prev") else range(10, 14)
    assert all(np.isnan(got[t]) for t in hole)
    assert np.isfinite(got[hole.stop:]).all()  # recovers once the hole has left


def test_leading_nans_symbol_not_yet_listed() -> None:
    # symbol listed at bar 5: every windowed value starts n-1 (or n) bars later,
    # exactly as if its history began there
    x = np.full((1, 15), np.nan)
    x[0, 5:] = np.arange(1.0, 11.0)
    listed = np.ascontiguousarray(x[:, 5:])
    for name, n in [("sma", 3), ("rolling_std", 3), ("ema", 3), ("rsi", 3), ("lag", 2),
                    ("highest_prev", 2), ("lowest_prev", 2)]:
        got = getattr(ind, name)(x, n)
        assert np.isnan(got[0, :5]).all(), name
        np.testing.assert_array_equal(got[:, 5:], getattr(ind, name)(listed, n), err_msg=name)


def test_sma_window_after_infinite_value_is_finite() -> None:
    # BUG (engines/indicators.py, sma): the running sum is poisoned by an inf:
    # s += inf, later s -= inf -> NaN, so every later window is NaN (until the
    # re-sum at a multiple of 4096) although it holds only finite values.
    # inf is reachable through arithmetic overflow, e.g. sma(volume * volume * ..., n).
    x = np.array([[1.0, 2.0, np.inf, 3.0, 4.0, 5.0, 6.0]])
    got = ind.sma(x, 2)[0]
    np.testing.assert_array_equal(got[4:], [3.5, 4.5, 5.5])


# ------------------------------------------------------- booleans and crosses
def test_compare_three_valued() -> None:
    a = np.array([[1.0, 2.0, np.nan, 3.0, 3.0]])
    b = np.array([[2.0, 1.0, 1.0, np.nan, 3.0]])
    np.testing.assert_array_equal(ind.compare(a, b, 0), [[F, T_, U, U, F]])  # >
    np.testing.assert_array_equal(ind.compare(a, b, 1), [[F, T_, U, U, T_]])  # >=
    np.testing.assert_array_equal(ind.compare(a, b, 2), [[F, F, U, U, T_]])  # ==
    np.testing.assert_array_equal(ind.compare(a, b, 3), [[T_, T_, U, U, F]])  # !=
    # constant on either side: 2 > a  vs  a > 2
    np.testing.assert_array_equal(ind.compare_scalar(a, 2.0, 0, True), [[T_, F, U, F, F]])
    np.testing.assert_array_equal(ind.compare_scalar(a, 2.0, 0, False), [[F, F, U, T_, T_]])


def test_cross_hand_example() -> None:
    # a:  1   3   3   2   4   nan 5
    # b:  2   2   3   3   3   3   3
    # cross_above at t: a_t > b_t and a_{t-1} <= b_{t-1}
    #   t1: 3>2 and 1<=2 -> T ; t2: 3>3 no -> F ; t3: F ; t4: 4>3 and 2<=3 -> T
    #   t5: a NaN -> U ; t6: previous a NaN -> U ; t0: no previous bar -> U
    # cross_below: t2: 3<3 no -> F ; t3: 2<3 and 3>=3 -> T ; others F
    a = np.array([[1.0, 3, 3, 2, 4, np.nan, 5]])
    b = np.array([[2.0, 2, 3, 3, 3, 3, 3]])
    np.testing.assert_array_equal(ind.cross(a, b, True), [[U, T_, F, F, T_, U, U]])
    np.testing.assert_array_equal(ind.cross(a, b, False), [[U, F, F, T_, F, U, U]])
