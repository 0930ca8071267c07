"""Factor evaluation: how well a numeric expression ranks the symbols of a panel.

Cross-sectional research judges a signal before any backtest by its information
coefficient (Qlib, RD-Agent and alphalens report IC, rank IC and ICIR first). Here the
score ``s[t, i]`` is a numeric expression of the strategy language evaluated at bar
``t``'s close, which is causal; the forward return it is judged against starts strictly
after the decision: from the open of bar ``t+1`` (where an order placed at ``t``'s close
fills, in both engines) to the open of bar ``t+1+H``.

- ``IC[t]``: Pearson correlation, across the symbols with both a score and a forward
  return at ``t``, of score and forward return; ``rank IC[t]``: the same of their ranks
  (average ranks for ties: Spearman's rho, as ``scipy.stats.spearmanr``). Bars with
  fewer than :data:`MIN_NAMES` such symbols are skipped.
- ``ic_mean``, ``rank_ic_mean`` and ``icir`` / ``rank_icir`` (mean / standard deviation
  of the per-bar series; per bar, not annualized); ``ic_t`` / ``rank_ic_t``: the mean's
  t-statistic with a Newey-West long-run variance (Bartlett kernel, ``arch``) over
  ``lags = max(H, floor(4 (n/100)^(2/9)))`` lags, as H-bar forward returns overlap.
- ``decay``: the mean rank IC at horizons 1, 2, 5, 10 and 20 bars.
- ``quantile_returns``: per bar the symbols split into ``Q`` groups by score rank
  (ties in panel order), the mean forward return of each group, averaged over bars;
  ``spread``: top minus bottom; ``turnover_top`` / ``turnover_bottom``: the mean share of
  the top (bottom) group's symbols that were not in it ``H`` bars before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy.stats import rankdata

from alphaloop.data.bars import Bars
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.errors import AlphaloopError, ErrorClass
from alphaloop.strategy.expression import parse
from alphaloop.strategy.spec import StrategySpec

MIN_NAMES = 3
DECAY_HORIZONS = (1, 2, 5, 10, 20)


class FactorError(AlphaloopError):
    """A factor that cannot be evaluated as asked (bad horizon, too few bars)."""

    code = "FACTOR_INVALID"
    error_class = ErrorClass.PERMANENT


class FactorReport(BaseModel):
    """What :func:`evaluate_factor` measured (JSON: ``model_dump(mode="json")``)."""

    model_config = ConfigDict(frozen=True)

    expression: str
    horizon: int
    quantiles: int
    n_bars: int  # bars with an IC
    lags: int
    ic_mean: float | None
    ic_t: float | None
    icir: float | None
    rank_ic_mean: float | None
    rank_ic_t: float | None
    rank_icir: float | None
    decay: dict[int, float | None]
    quantile_returns: list[float | None]
    spread: float | None
    turnover_top: float | None
    turnover_bottom: float | None
    ic: list[float | None]  # per bar (the decision bar's index order), None where skipped
    rank_ic: list[float | None]


def forward_returns(bars: Bars, horizon: int) -> np.ndarray:
    """(T, N): ``open[t+1+H] / open[t+1] - 1``, NaN where a bar is missing or beyond
    the data."""
    if horizon < 1:
        raise FactorError(f"horizon must be >= 1 bar, got {horizon}",
                              code="EVAL_BAD_HORIZON")
    o = np.asarray(bars.open, dtype=np.float64)
    out = np.full(o.shape, np.nan)
    m = o.shape[0] - 1 - horizon  # bars with a forward return; none at all is all NaN
    if m > 0:  # (a negative m would slice from the end)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:m] = o[1 + horizon:] / o[1:1 + m] - 1.0
    return out


def cross_correlation(x: np.ndarray, y: np.ndarray, *, ranks: bool) -> np.ndarray:
    """(T,) correlation of each row of ``x`` with the same row of ``y`` over the columns
    where both are finite; ``ranks``: of their average ranks (Spearman). NaN for a row
    with fewer than :data:`MIN_NAMES` such columns or no variation."""
    both = np.isfinite(x) & np.isfinite(y)
    a, b = np.where(both, x, np.nan), np.where(both, y, np.nan)
    if ranks:
        a, b = _ranks(a), _ranks(b)
    n = both.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = n[:, None].astype(np.float64)
        da = a - np.nansum(a, axis=1, keepdims=True) / k
        db = b - np.nansum(b, axis=1, keepdims=True) / k
        cov = np.nansum(da * db, axis=1)
        r = cov / np.sqrt(np.nansum(da * da, axis=1) * np.nansum(db * db, axis=1))
    return np.where(n >= MIN_NAMES, r, np.nan)


def _ranks(a: np.ndarray, method: str = "average") -> np.ndarray:
    """Row-wise ranks (1..n) of the finite values, NaN elsewhere."""
    out: np.ndarray = rankdata(a, method=method, axis=1, nan_policy="omit")
    return np.where(np.isfinite(a), out, np.nan)


def newey_west_t(series: np.ndarray, lags: int) -> float | None:
    """t-statistic of the mean of ``series`` (NaN skipped) with a Bartlett-kernel
    long-run variance over ``lags`` lags (``arch``); None with fewer than 3 values."""
    from arch.covariance.kernel import Bartlett

    x = series[np.isfinite(series)]
    if x.size < 3:
        return None
    lrv = float(np.asarray(Bartlett(x, bandwidth=min(lags, x.size - 1)).cov.long_run)[0, 0])
    if not lrv > 0:
        return None
    return float(x.mean() / math.sqrt(lrv / x.size))


def evaluate_factor(expression: str, bars: Bars, *, horizon: int = 1,
                    quantiles: int = 5) -> FactorReport:
    """IC, rank IC, their Newey-West t, ICIR, decay and quantile returns of the numeric
    ``expression`` on ``bars`` (see the module docstring for every definition)."""
    if quantiles < 2:
        raise FactorError(f"quantiles must be >= 2, got {quantiles}",
                              code="EVAL_BAD_QUANTILES")
    node = parse(expression, expect="num", where="factor")
    score = SignalEvaluator(bars).values(node).T  # (T, N): the score at each close
    fwd = forward_returns(bars, horizon)
    ic = cross_correlation(score, fwd, ranks=False)
    ric = cross_correlation(score, fwd, ranks=True)
    n = int(np.isfinite(ic).sum())
    if n < 3:
        raise FactorError(f"factor {expression!r}: {n} bars with at least {MIN_NAMES} "
                              "symbols scored and a forward return; need at least 3",
                              code="EVAL_TOO_FEW_BARS")
    lags = max(horizon, math.floor(4 * (n / 100) ** (2 / 9)))
    q_ret, spread, top, bottom = _quantiles(score, fwd, quantiles, horizon)
    decay = {h: _mean(ric if h == horizon else
                      cross_correlation(score, forward_returns(bars, h), ranks=True))
             for h in DECAY_HORIZONS if h < bars.n_bars - 2}
    return FactorReport(
        expression=expression, horizon=horizon, quantiles=quantiles, n_bars=n, lags=lags,
        ic_mean=_mean(ic), ic_t=newey_west_t(ic, lags), icir=_ir(ic),
        rank_ic_mean=_mean(ric), rank_ic_t=newey_west_t(ric, lags), rank_icir=_ir(ric),
        decay=decay, quantile_returns=q_ret, spread=spread, turnover_top=top,
        turnover_bottom=bottom, ic=_plain(ic), rank_ic=_plain(ric))


def _quantiles(score: np.ndarray, fwd: np.ndarray, q: int, horizon: int
               ) -> tuple[list[float | None], float | None, float | None, float | None]:
    both = np.isfinite(score) & np.isfinite(fwd)
    rank = _ranks(np.where(both, score, np.nan), method="ordinal")
    n = both.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        group = np.where(both & (n >= q), np.floor((rank - 1) * q / n), -1).astype(int)
    means = []
    for g in range(q):
        inside = group == g
        cnt = inside.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_bar = np.where(cnt > 0, np.where(inside, fwd, 0.0).sum(axis=1) / cnt, np.nan)
        means.append(_mean(per_bar))
    spread = (means[-1] - means[0]) if means[-1] is not None and means[0] is not None \
        else None
    return means, spread, _turnover(group == q - 1, horizon), _turnover(group == 0, horizon)


def _turnover(member: np.ndarray, horizon: int) -> float | None:
    """Mean share of a group's members at t that were not members at t - H."""
    now, before = member[horizon:], member[:-horizon]
    size = now.sum(axis=1)
    new = (now & ~before).sum(axis=1)
    ok = (size > 0) & before.any(axis=1)
    return float(np.mean(new[ok] / size[ok])) if ok.any() else None


def _mean(x: np.ndarray) -> float | None:
    f = x[np.isfinite(x)]
    return float(f.mean()) if f.size else None


def _ir(x: np.ndarray) -> float | None:
    f = x[np.isfinite(x)]
    sd = float(f.std(ddof=1)) if f.size >= 2 else math.nan
    return float(f.mean() / sd) if sd > 0 else None


def _plain(x: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in x.tolist()]


__all__ = ["FactorReport", "cross_correlation", "evaluate_factor", "forward_returns",
           "newey_west_t"]


def factor_columns(specs: Sequence[StrategySpec], bars: Bars) -> pd.DataFrame:
    """``rank_ic_mean`` and ``rank_ic_t`` of each ranked book's score on ``bars``, at
    its rebalance horizon (one evaluation per distinct score and horizon): the
    columns the score policy's factor gate reads. A sleeve strategy has NaN (the gate
    does not concern it); a book whose IC cannot be measured has a t of 0 and no
    mean (no evidence of a ranking skill)."""
    seen: dict[tuple[str, int], tuple[float, float]] = {}
    mean, t_stat = np.full(len(specs), np.nan), np.full(len(specs), np.nan)
    for k, spec in enumerate(specs):
        pf = spec.portfolio
        if not pf.cross_sectional or pf.score is None:
            continue
        key = (str(spec.score_node), pf.rebalance_every)
        if key not in seen:
            try:
                rep = evaluate_factor(pf.score, bars, horizon=pf.rebalance_every)
                seen[key] = (math.nan if rep.rank_ic_mean is None else rep.rank_ic_mean,
                             0.0 if rep.rank_ic_t is None else rep.rank_ic_t)
            except FactorError:  # too few names or bars: no evidence
                seen[key] = (math.nan, 0.0)
        mean[k], t_stat[k] = seen[key]
    return pd.DataFrame({"rank_ic_mean": mean, "rank_ic_t": t_stat})
