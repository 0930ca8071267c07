"""Synthetic OHLCV panels with known properties, for tests and for checking the search.

:func:`generate` draws business-day bars from geometric Brownian motion and can
add, one at a time, the features real markets have and a research loop must cope
with:

- ``regimes``: a 2-state Markov chain (calm / stressed) switching drift and
  volatility for the whole market;
- ``fat_tails``: Student-t shocks with the given degrees of freedom, rescaled to
  unit variance so ``sigma`` keeps its meaning;
- ``correlation``: a one-factor model, every pair of symbols has shock
  correlation ``correlation``;
- ``planted``: a *known, exploitable* effect (:class:`PlantedEffect`) — a trend
  that a moving-average rule can find. A search that cannot find it on
  ``synth_planted`` is broken; one that finds "edges" on pure GBM is overfitting;
- ``cross_sectional``: a *known* cross-sectional effect
  (:class:`CrossSectionalEffect`) — every symbol's next return leans towards its rank
  of past return among all symbols, which a ranked long-short book can harvest.

Everything is deterministic from ``seed``: one :class:`numpy.random.SeedSequence`
is split into independent streams (shocks, regimes, opens, ranges, volumes), so
switching a feature on does not change the random numbers the others get — the
unplanted symbols of a planted panel are bit-identical to the plain panel. Every
stream is drawn bar-major, so a shorter panel is a prefix of a longer one with the
same seed: ``generate(n, 500)`` equals the first 500 bars of ``generate(n, 2520)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from alphaloop.data.bars import Bars
from alphaloop.errors import DataError

TRADING_DAYS = 252
GAP_VOL = 0.2
"""Overnight gap noise (open vs previous close), as a fraction of daily vol."""
RANGE_VOL = 0.5
"""Typical intraday excursion beyond open/close, as a fraction of daily vol."""


@dataclass(frozen=True)
class RegimeConfig:
    """A 2-state Markov switching of drift and volatility (state 0 calm, 1 stressed).

    ``p_stay[k]`` is the daily probability of staying in state k (expected stay
    ``1 / (1 - p_stay[k])`` bars); drift and vol of state k are ``mu × mu_mult[k]``
    and ``sigma × sigma_mult[k]``.
    """

    p_stay: tuple[float, float] = (0.99, 0.97)
    mu_mult: tuple[float, float] = (1.5, -1.5)
    sigma_mult: tuple[float, float] = (0.75, 1.75)


@dataclass(frozen=True)
class PlantedEffect:
    """A causal trend effect planted in some symbols.

    For each listed symbol (by position), the log return of bar t+1 gets an extra
    drift ``strength × sigma_daily × sign(close_t − mean(close_{t-lookback+1..t}))``:
    above its moving average the price tends to keep rising. It uses only closes
    up to t to shape the return of t+1, so it is exploitable without lookahead, and
    the correlation between that sign and the next return is about ``strength``.
    """

    symbols: tuple[int, ...] = (0, 1)
    strength: float = 0.1
    lookback: int = 20


@dataclass(frozen=True)
class CrossSectionalEffect:
    """A causal cross-sectional momentum effect planted in every symbol.

    At bar t's close the symbols are ranked by their log return over the last
    ``lookback`` bars (``log close_t − log close_{t-lookback}``); the log return of bar
    t+1 gets an extra ``strength × sigma_daily × z``, where ``z`` is the symbol's rank
    standardized across the symbols (mean 0, std 1). It uses only closes up to t, so it
    is exploitable without lookahead, and the cross-sectional correlation of that past
    return's rank with the next bar's return (the rank IC) is about ``strength``.
    ``strength = 0`` leaves the panel exactly the plain one.
    """

    strength: float = 0.04
    lookback: int = 60


def _bad(param: str, reason: str) -> DataError:
    return DataError(f"generate(): {param} {reason}", code="DQ_BAD_PARAM")


def _validate(n_symbols: int, n_bars: int, sigma: float, fat_tails: float | None,
              correlation: float, planted: PlantedEffect | None,
              regimes: RegimeConfig | None,
              cross_sectional: CrossSectionalEffect | None = None) -> None:
    if n_symbols < 1:
        raise _bad("n_symbols", f"must be >= 1, got {n_symbols}")
    if n_bars < 1:
        raise _bad("n_bars", f"must be >= 1, got {n_bars}")
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise _bad("sigma", f"must be finite and >= 0, got {sigma}")
    if fat_tails is not None and not fat_tails > 2:
        raise _bad("fat_tails", f"(Student-t dof) must be > 2 for a finite variance, got {fat_tails}")
    if not 0 <= correlation < 1:
        raise _bad("correlation", f"must be in [0, 1) for a one-factor model, got {correlation}")
    if regimes is not None and not all(0 <= p < 1 for p in regimes.p_stay):
        raise _bad("regimes.p_stay", f"must be in [0, 1), got {regimes.p_stay}")
    if planted is not None:
        out = [i for i in planted.symbols if not 0 <= i < n_symbols]
        if out:
            raise _bad("planted.symbols", f"{out} out of range 0..{n_symbols - 1}")
        if planted.lookback < 2:
            raise _bad("planted.lookback", f"must be >= 2, got {planted.lookback}")
    if cross_sectional is not None:
        if planted is not None:
            raise _bad("cross_sectional", "and planted cannot be combined: plant one "
                       "effect at a time")
        if not (math.isfinite(cross_sectional.strength) and cross_sectional.strength >= 0):
            raise _bad("cross_sectional.strength",
                       f"must be finite and >= 0, got {cross_sectional.strength}")
        if cross_sectional.lookback < 1:
            raise _bad("cross_sectional.lookback",
                       f"must be >= 1, got {cross_sectional.lookback}")


def symbol_names(n_symbols: int) -> tuple[str, ...]:
    """``SYN000``, ``SYN001``, … (wider when there are more than 1000)."""
    width = max(3, len(str(n_symbols - 1)))
    return tuple(f"SYN{i:0{width}d}" for i in range(n_symbols))


def generate(n_symbols: int = 10, n_bars: int = 2520, *, seed: int = 0,
             start: str = "2010-01-04", mu: float = 0.05, sigma: float = 0.2,
             regimes: bool | RegimeConfig = False, fat_tails: float | None = None,
             correlation: float = 0.0, planted: PlantedEffect | None = None,
             cross_sectional: CrossSectionalEffect | None = None,
             name: str = "synthetic") -> Bars:
    """A deterministic synthetic (n_bars × n_symbols) daily OHLCV panel.

    ``mu`` and ``sigma`` are annual drift and volatility of the log price. Opens
    gap slightly from the previous close; high/low extend beyond open/close by a
    half-normal amount, so ``low <= min(open, close) <= max(open, close) <= high``
    and every price is > 0 by construction. Volumes are lognormal, larger on big
    moves. See the module docstring for the optional features.
    """
    regime_cfg = _regime_config(regimes)
    _validate(n_symbols, n_bars, sigma, fat_tails, correlation, planted, regime_cfg,
              cross_sectional)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    rng_shock, rng_regime, rng_open, rng_range, rng_vol, rng_start = streams
    t, n = n_bars, n_symbols
    sd = sigma / math.sqrt(TRADING_DAYS)
    drift, vol = _drift_vol(rng_regime, t, mu / TRADING_DAYS, sd, regime_cfg)
    z = _shocks(rng_shock, t, n, fat_tails, correlation)
    logret = (drift - 0.5 * vol**2)[:, None] + vol[:, None] * z
    p0 = 100.0 * np.exp(rng_start.normal(0.0, 0.5, n))
    logc = np.log(p0) + np.cumsum(logret, axis=0)
    if planted is not None and planted.symbols:
        cols = list(planted.symbols)
        logc[:, cols] = _planted_path(logret[:, cols], np.log(p0[cols]), planted, sd)
    if cross_sectional is not None and cross_sectional.strength > 0 and n > 1:
        logc = _cross_sectional_path(logret, np.log(p0), cross_sectional, sd)
    close = np.exp(logc)
    o, h, lo = _ohlc(close, p0, sd, rng_open, rng_range)
    volume = _volume(rng_vol, np.diff(logc, axis=0, prepend=np.log(p0)[None, :]), sd)
    index = pd.bdate_range(start=pd.Timestamp(start), periods=t, tz="UTC").as_unit("ns")
    return Bars(index=index, symbols=symbol_names(n), open=o, high=h, low=lo, close=close,
                volume=volume, name=name)


def _regime_config(regimes: bool | RegimeConfig) -> RegimeConfig | None:
    if isinstance(regimes, RegimeConfig):
        return regimes
    return RegimeConfig() if regimes else None


def _drift_vol(rng: np.random.Generator, t: int, mu_d: float, sd: float,
               cfg: RegimeConfig | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-bar daily drift and vol, constant or following the regime path."""
    if cfg is None:
        return np.full(t, mu_d), np.full(t, sd)
    state = regime_path(rng, t, cfg)
    return (mu_d * np.asarray(cfg.mu_mult)[state], sd * np.asarray(cfg.sigma_mult)[state])


def regime_path(rng: np.random.Generator, t: int, cfg: RegimeConfig) -> np.ndarray:
    """A 2-state Markov chain of length t, drawn run by run (no loop over time).

    Staying in state k with probability p makes the length of each visit
    geometric with success probability 1 - p, so we draw alternating visit
    lengths and repeat the state labels; t visits always cover t bars. The first
    state comes from the stationary distribution.
    """
    q0, q1 = 1.0 - cfg.p_stay[0], 1.0 - cfg.p_stay[1]
    first = int(rng.random() >= q1 / (q0 + q1))  # P(state 0) = q1 / (q0 + q1)
    states = (np.arange(t) + first) % 2
    both = rng.geometric([q0, q1], size=(t, 2))  # row i: visit i's length in either state
    lengths = both[np.arange(t), states]
    return np.repeat(states, lengths)[:t]


def _shocks(rng: np.random.Generator, t: int, n: int, dof: float | None,
            rho: float) -> np.ndarray:
    """Unit-variance shocks (T × N): Gaussian or scaled Student-t, one-factor correlated."""
    def draw(shape: tuple[int, int]) -> np.ndarray:
        if dof is None:
            return rng.standard_normal(shape)
        return rng.standard_t(dof, shape) * math.sqrt((dof - 2.0) / dof)

    idio = draw((t, n))
    if rho == 0.0:
        return idio
    market = draw((t, 1))
    return math.sqrt(rho) * market + math.sqrt(1.0 - rho) * idio


def _planted_path(logret: np.ndarray, logp0: np.ndarray, eff: PlantedEffect,
                  sd: float) -> np.ndarray:
    """Log closes of the planted symbols, adding the trend drift bar by bar.

    The drift of bar t+1 depends on close t, which depends on the drift of bar t,
    so this one part is a loop over time (vectorized over the planted symbols).
    """
    t, k = logret.shape
    close = np.empty((t, k))
    level, extra = logp0.copy(), np.zeros(k)
    push = eff.strength * sd
    for i in range(t):
        level = level + logret[i] + extra
        close[i] = np.exp(level)
        if i + 1 >= eff.lookback:
            ma = close[i + 1 - eff.lookback:i + 1].mean(axis=0)
            extra = push * np.sign(close[i] - ma)
    return np.log(close)


def _cross_sectional_path(logret: np.ndarray, logp0: np.ndarray,
                          eff: CrossSectionalEffect, sd: float) -> np.ndarray:
    """Log closes of every symbol, adding the cross-sectional rank drift bar by bar
    (a loop over time, vectorized over the symbols: the ranks at t depend on the drift
    already added up to t)."""
    t, n = logret.shape
    logc = np.empty((t, n))
    level, extra = logp0.copy(), np.zeros(n)
    push = eff.strength * sd
    # ranks 0..n-1 standardized: mean (n-1)/2, population std sqrt((n^2-1)/12)
    centre, scale = (n - 1) / 2.0, math.sqrt((n * n - 1) / 12.0)
    for i in range(t):
        level = level + logret[i] + extra
        logc[i] = level
        if i >= eff.lookback:
            past = level - logc[i - eff.lookback]
            ranks = np.argsort(np.argsort(past, kind="stable"), kind="stable")
            extra = push * (ranks - centre) / scale
    return logc


def _ohlc(close: np.ndarray, p0: np.ndarray, sd: float, rng_open: np.random.Generator,
          rng_range: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open = previous close × small gap; high/low beyond open/close by |normal| moves."""
    prev = np.vstack([p0[None, :], close[:-1]])
    o = prev * np.exp(GAP_VOL * sd * rng_open.standard_normal(close.shape))
    ext = RANGE_VOL * sd * np.abs(rng_range.standard_normal((*close.shape, 2)))
    return o, np.maximum(o, close) * np.exp(ext[..., 0]), np.minimum(o, close) * np.exp(-ext[..., 1])


def _volume(rng: np.random.Generator, logret: np.ndarray, sd: float) -> np.ndarray:
    """Lognormal share volume around a per-symbol level, higher on large moves."""
    t, n = logret.shape
    level = np.exp(rng.normal(math.log(1e6), 1.0, n))
    noise = np.exp(rng.normal(0.0, 0.4, (t, n)))
    size = np.minimum(np.abs(logret), 10.0 * sd) / sd if sd > 0 else np.zeros((t, n))  # sigmas
    surprise = 1.0 + 0.3 * size
    return np.round(level * noise * surprise)
