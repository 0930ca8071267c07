"""Position sizing shared by both engines: the fraction of a sleeve a position uses.

The kernels take one (N, T) array of fractions per distinct sizing rule, read at
the *signal* bar, so sizing never sees the fill bar. ``equal_weight`` needs no array
(the kernels use 1.0). See :class:`alphaloop.strategy.spec.Sizing` for the methods.

Volatility is annualized with the bar spacing known up to the signal bar
(:meth:`Bars.periods_per_year_until`), never with the whole index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from alphaloop.data.bars import Bars
from alphaloop.engines import indicators as ind
from alphaloop.strategy.spec import Sizing, StrategySpec

# E[high - low] of a Brownian motion over one period is sqrt(8/pi)·sigma (Feller 1951),
# so ATR/close · sqrt(pi/8) estimates the per-bar sigma on the same scale as the std
ATR_TO_SIGMA = float(np.sqrt(np.pi / 8.0))

SizingKey = tuple[str, float, int, str, float]


def sizing_key(s: Sizing) -> SizingKey | None:
    """What determines the fraction array; None for ``equal_weight`` (always 1.0)."""
    if s.method == "equal_weight":
        return None
    if s.method == "fixed_fraction":
        return ("fixed_fraction", float(s.fraction or 0.0), 0, "", 0.0)
    return ("vol_target", float(s.target_vol or 0.0), s.vol_window, s.vol_estimator,
            s.max_leverage)


def fraction_array(key: SizingKey, fields: dict[str, np.ndarray], bars: Bars) -> np.ndarray:
    """The (N, T) fraction array for one sizing key; ``fields`` are asset-major."""
    method, value, window, estimator, cap = key
    close = fields["close"]
    if method == "fixed_fraction":
        return np.full(close.shape, value)
    if estimator == "atr":
        sigma = ind.atr(fields["high"], fields["low"], close, window) / close * ATR_TO_SIGMA
    else:
        sigma = ind.rolling_std(bar_returns(close), window)
    vol = sigma * np.sqrt(bars.periods_per_year_until(window))
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(vol > 0, np.minimum(value / vol, cap), np.nan)
    return np.ascontiguousarray(frac)


def bar_returns(close: np.ndarray) -> np.ndarray:
    """Close-to-close simple returns of an asset-major (N, T) array; NaN at t = 0."""
    rets = np.full(close.shape, np.nan)
    rets[:, 1:] = close[:, 1:] / close[:, :-1] - 1.0
    return rets


Cache = Callable[[str, Callable[[], np.ndarray]], np.ndarray]


def size_arrays(specs: Sequence[StrategySpec], fields: dict[str, np.ndarray],
                bars: Bars, cached: Cache | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sizes (M, N, T), size_idx (K,)): ``size_idx[k]`` picks spec k's fraction array,
    -1 for the whole sleeve. Specs with the same rule share one array. ``cached(key,
    compute)`` (a :class:`SignalEvaluator`'s) keeps fraction arrays between calls: the
    chunks of one batch then compute each rule once."""
    keys: dict[SizingKey, int] = {}
    arrays: list[np.ndarray] = []
    idx = np.full(len(specs), -1, dtype=np.int64)
    for j, spec in enumerate(specs):
        key = sizing_key(spec.sizing)
        if key is None:
            continue
        if key not in keys:
            keys[key] = len(arrays)
            arrays.append(fraction_array(key, fields, bars) if cached is None else
                          cached(f"sizing{key!r}", partial(fraction_array, key, fields, bars)))
        idx[j] = keys[key]
    if not arrays:
        return np.ones((1, 1, 1)), idx
    return np.ascontiguousarray(np.stack(arrays)), idx
