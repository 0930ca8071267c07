"""Causal indicator kernels (numba).

Every kernel takes asset-major arrays of shape (N symbols, T bars), C-contiguous,
so that the time loop walks memory in order, and returns a new array of the same
shape. The value at bar ``t`` uses inputs at bars ``<= t`` only; a window that
contains a NaN gives NaN (a symbol that has no bar does not get an invented value).

The kernels know nothing about pandas or expressions: :mod:`alphaloop.engines.signals`
maps expression operators onto them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

NAN = np.nan


@njit(cache=True, parallel=True)
def lag(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.shape, NAN)
    for i in prange(x.shape[0]):
        for t in range(n, x.shape[1]):
            out[i, t] = x[i, t - n]
    return out


@njit(cache=True, parallel=True)
def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of the last ``n`` values.

    A running sum of the finite values with counts of NaNs and infinities in the
    window: a NaN gives NaN, an infinity is summed directly (so it leaves the window
    cleanly instead of poisoning the running sum with inf - inf).
    """
    out = np.full(x.shape, NAN)
    for i in prange(x.shape[0]):
        s = 0.0
        nans = 0
        infs = 0
        resum = 4096  # bars until the next exact re-sum
        for t in range(x.shape[1]):
            v = x[i, t]
            if v - v != 0.0:  # NaN or ±inf (one test on the common, finite path)
                if np.isnan(v):
                    nans += 1
                else:
                    infs += 1
            else:
                s += v
            if t >= n:
                old = x[i, t - n]
                if old - old != 0.0:
                    if np.isnan(old):
                        nans -= 1
                    else:
                        infs -= 1
                else:
                    s -= old
            resum -= 1
            if t < n - 1 or nans > 0:
                continue
            if infs > 0 or resum <= 0:
                # exact re-sum: for infinities, and now and then so that rounding
                # drift of the running sum stays tiny
                full = 0.0
                for k in range(t - n + 1, t + 1):
                    full += x[i, k]
                out[i, t] = full / n
                if infs == 0:
                    s = full
                    resum = 4096
            else:
                out[i, t] = s / n
    return out


@njit(cache=True, parallel=True)
def rolling_std(x: np.ndarray, n: int) -> np.ndarray:
    """Sample standard deviation (ddof = 1) of the last ``n`` values, in O(T) per symbol.

    Sums of ``x - ref`` and its square slide with the window; ``ref`` is a recent value
    and the sums are recomputed exactly every ``n`` bars, so that a price level far from
    zero (1e5 with moves of 1e-2) does not cancel away the variance, and rounding drift
    cannot build up. A window of equal values gives exactly 0 (as pandas does; a
    z-score over a flat stretch is then NaN, not an absurd number), a window holding an
    infinity gives NaN, and a variance lost to rounding falls back to the two-pass sum.
    """
    out = np.full(x.shape, NAN)
    for i in prange(x.shape[0]):
        run = 0  # consecutive non-NaN values ending at t
        same = 0  # consecutive equal values ending at t
        infs = 0  # infinities among the last min(run, n) values
        fresh = True  # the sums must be rebuilt before they are used
        since = 0
        ref = s1 = s2 = 0.0
        for t in range(x.shape[1]):
            v = x[i, t]
            if np.isnan(v):
                run = same = infs = 0
                fresh = True
                continue
            same = same + 1 if run > 0 and v == x[i, t - 1] else 1
            run += 1
            if np.isinf(v):
                infs += 1
            if run > n and np.isinf(x[i, t - n]):
                infs -= 1
            if run < n:
                continue
            if same >= n:
                out[i, t] = 0.0
                fresh = True
                continue
            if infs > 0:
                fresh = True
                continue
            if fresh or since >= n:
                ref = v
                s1 = 0.0
                s2 = 0.0
                for k in range(t - n + 1, t + 1):
                    d = x[i, k] - ref
                    s1 += d
                    s2 += d * d
                fresh = False
                since = 0
            else:
                d_new = v - ref
                d_old = x[i, t - n] - ref
                s1 += d_new - d_old
                s2 += d_new * d_new - d_old * d_old
                since += 1
            var = (s2 - s1 * s1 / n) / (n - 1)
            out[i, t] = np.sqrt(var) if var > 0.0 else _two_pass_std(x, i, t, n)
    return out


@njit(cache=True)
def _two_pass_std(x: np.ndarray, i: int, t: int, n: int) -> float:
    m = 0.0
    for k in range(t - n + 1, t + 1):
        m += x[i, k]
    m /= n
    ss = 0.0
    for k in range(t - n + 1, t + 1):
        d = x[i, k] - m
        ss += d * d
    return float(np.sqrt(ss / (n - 1)))


@njit(cache=True, parallel=True)
def standardize(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``(x - mean) / sd`` where ``sd > 0``, NaN elsewhere: a z-score in one pass
    (the same arithmetic as numpy's, without its three temporaries)."""
    out = np.empty(x.shape)
    for i in prange(x.shape[0]):
        for t in range(x.shape[1]):
            s = sd[i, t]
            out[i, t] = (x[i, t] - mean[i, t]) / s if s > 0.0 else NAN
    return out


@njit(cache=True, parallel=True)
def ema(x: np.ndarray, n: int) -> np.ndarray:
    """EMA with alpha = 2 / (n + 1), seeded by the mean of the first ``n`` values.

    A NaN input gives NaN and restarts the seed: the EMA never bridges a hole.
    """
    out = np.full(x.shape, NAN)
    alpha = 2.0 / (n + 1.0)
    for i in prange(x.shape[0]):
        run = 0
        acc = 0.0
        for t in range(x.shape[1]):
            v = x[i, t]
            if np.isnan(v):
                run = 0
                acc = 0.0
                continue
            run += 1
            if run < n:
                acc += v
            elif run == n:
                acc = (acc + v) / n
                out[i, t] = acc
            else:
                acc = acc + alpha * (v - acc)
                out[i, t] = acc
    return out


@njit(cache=True, parallel=True)
def rsi(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder's RSI: averages of gains and losses seeded by their n-change mean, then
    smoothed with weight 1/n. 100 when there were no losses, 50 when no change at all."""
    out = np.full(x.shape, NAN)
    for i in prange(x.shape[0]):
        run = 0  # number of valid changes in the current unbroken stretch
        g = 0.0
        lo = 0.0
        for t in range(1, x.shape[1]):
            a = x[i, t - 1]
            b = x[i, t]
            if np.isnan(a) or np.isnan(b):
                run = 0
                g = 0.0
                lo = 0.0
                continue
            d = b - a
            up = d if d > 0 else 0.0
            dn = -d if d < 0 else 0.0
            run += 1
            if run < n:
                g += up
                lo += dn
                continue
            if run == n:
                g = (g + up) / n
                lo = (lo + dn) / n
            else:
                g = (g * (n - 1) + up) / n
                lo = (lo * (n - 1) + dn) / n
            if lo == 0.0:
                out[i, t] = 50.0 if g == 0.0 else 100.0
            else:
                out[i, t] = 100.0 - 100.0 / (1.0 + g / lo)
    return out


@njit(cache=True, parallel=True)
def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int) -> np.ndarray:
    """Wilder's ATR. True range at t needs close at t-1; seeded by the mean of n ranges."""
    out = np.full(close.shape, NAN)
    for i in prange(close.shape[0]):
        run = 0
        acc = 0.0
        for t in range(1, close.shape[1]):
            h = high[i, t]
            lw = low[i, t]
            pc = close[i, t - 1]
            if np.isnan(h) or np.isnan(lw) or np.isnan(pc):
                run = 0
                acc = 0.0
                continue
            tr = max(h - lw, abs(h - pc), abs(lw - pc))
            run += 1
            if run < n:
                acc += tr
                continue
            acc = (acc + tr) / n if run == n else (acc * (n - 1) + tr) / n
            out[i, t] = acc
    return out


def highest_prev(x: np.ndarray, n: int) -> np.ndarray:
    """Max of x over the previous n bars (t-n .. t-1); NaN if any is NaN."""
    return _extreme_prev(x, n, True)


def lowest_prev(x: np.ndarray, n: int) -> np.ndarray:
    """Min of x over the previous n bars (t-n .. t-1); NaN if any is NaN."""
    return _extreme_prev(x, n, False)


@njit(cache=True, parallel=True)
def _extreme_prev(x: np.ndarray, n: int, take_max: bool) -> np.ndarray:
    """The max (or min) over bars t-n .. t-1 in O(T) per symbol: a monotone queue of
    the window's candidate indices (van Herk's deque), the best at its head."""
    n_bars = x.shape[1]
    out = np.full(x.shape, NAN)
    for i in prange(x.shape[0]):
        queue = np.empty(n_bars, dtype=np.int64)
        head = 0
        tail = 0
        last_nan = -1
        for j in range(n_bars - 1):  # bar j enters the window of bar t = j + 1
            v = x[i, j]
            if np.isnan(v):
                last_nan = j
                head = tail = 0
            else:
                while tail > head and (x[i, queue[tail - 1]] <= v if take_max
                                       else x[i, queue[tail - 1]] >= v):
                    tail -= 1
                queue[tail] = j
                tail += 1
            t = j + 1
            if t < n:
                continue
            while head < tail and queue[head] < t - n:
                head += 1
            if last_nan < t - n:
                out[i, t] = x[i, queue[head]]
    return out


@njit(cache=True)
def cross_rank(x: np.ndarray) -> np.ndarray:
    """Cross-sectional percentile rank per bar in [0, 1] among symbols with a value.

    Ties share their average rank; a lone value ranks 0.5. Uses column t only, so it
    is causal by construction.
    """
    n_sym, n_bars = x.shape
    out = np.full(x.shape, NAN)
    vals = np.empty(n_sym)
    idx = np.empty(n_sym, dtype=np.int64)
    for t in range(n_bars):
        m = 0
        for i in range(n_sym):
            v = x[i, t]
            if not np.isnan(v):
                vals[m] = v
                idx[m] = i
                m += 1
        if m == 0:
            continue
        if m == 1:
            out[idx[0], t] = 0.5
            continue
        order = np.argsort(vals[:m], kind="mergesort")
        j = 0
        while j < m:
            k = j
            while k + 1 < m and vals[order[k + 1]] == vals[order[j]]:
                k += 1
            r = 0.5 * (j + k) / (m - 1)  # average of 0-based ranks j..k, scaled
            for q in range(j, k + 1):
                out[idx[order[q]], t] = r
            j = k + 1
    return out


# Three-valued booleans: signals are uint8 codes FALSE=0, UNKNOWN=1, TRUE=2, so that
# "and" is a minimum, "or" a maximum and "not" is 2 - x (Kleene logic). A comparison
# that touches a NaN is UNKNOWN, and ``not`` of UNKNOWN stays UNKNOWN: a negated
# condition is never true merely because its indicators have not warmed up yet.
FALSE, UNKNOWN, TRUE = np.uint8(0), np.uint8(1), np.uint8(2)


@njit(cache=True, inline="always")
def _cmp(a: float, b: float, op: int) -> np.uint8:
    if np.isnan(a) or np.isnan(b):
        return UNKNOWN
    if op == 0:
        r = a > b
    elif op == 1:
        r = a >= b
    elif op == 2:
        r = a == b
    else:
        r = a != b
    return TRUE if r else FALSE


@njit(cache=True, parallel=True)
def compare(a: np.ndarray, b: np.ndarray, op: int) -> np.ndarray:
    """op: 0 ``>``, 1 ``>=``, 2 ``==``, 3 ``!=`` of two (N, T) arrays."""
    out = np.empty(a.shape, dtype=np.uint8)
    for i in prange(a.shape[0]):
        for t in range(a.shape[1]):
            out[i, t] = _cmp(a[i, t], b[i, t], op)
    return out


@njit(cache=True, parallel=True)
def compare_scalar(a: np.ndarray, b: float, op: int, swap: bool) -> np.ndarray:
    """Compare an array with a constant; ``swap`` puts the constant on the left."""
    out = np.empty(a.shape, dtype=np.uint8)
    for i in prange(a.shape[0]):
        for t in range(a.shape[1]):
            out[i, t] = _cmp(b, a[i, t], op) if swap else _cmp(a[i, t], b, op)
    return out


@njit(cache=True, parallel=True)
def cross(a: np.ndarray, b: np.ndarray, above: bool) -> np.ndarray:
    """``a`` crosses above (below) ``b`` at t: a > b now and a <= b at t-1 (mirrored)."""
    out = np.full(a.shape, UNKNOWN, dtype=np.uint8)
    for i in prange(a.shape[0]):
        for t in range(1, a.shape[1]):
            a0, b0, a1, b1 = a[i, t - 1], b[i, t - 1], a[i, t], b[i, t]
            if np.isnan(a0) or np.isnan(b0) or np.isnan(a1) or np.isnan(b1):
                continue
            hit = (a1 > b1 and a0 <= b0) if above else (a1 < b1 and a0 >= b0)
            out[i, t] = TRUE if hit else FALSE
    return out
