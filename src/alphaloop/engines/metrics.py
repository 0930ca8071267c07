"""Core performance metrics (v1): the one implementation used by the engines,
scoring and the world service.

Conventions (they hold for every function in this module):

- ``returns`` are *simple* returns per bar (``0.01`` = +1 %), net of costs, in
  time order. Shape ``(T,)`` gives Python floats; shape ``(K, T)`` gives arrays
  of shape ``(K,)``, one value per row, computed along the last axis without a
  Python loop over rows.
- The risk-free rate is 0 and the Sortino target return is 0.
- Annualization: ``periods_per_year`` (``ppy``) is the number of bars in a year
  (252 for US daily bars, 252 * 390 for minute bars, 52 for weekly, ...).
  ``years = T / ppy`` where ``T`` is the number of return periods. Volatility
  and ratios are annualized with ``sqrt(ppy)``; growth with ``1 / years``.
- Equity starts at 1.0 *before* the first return, and that initial 1.0 counts
  as a peak for the drawdown.
- Undefined values are NaN (never an exception): Sharpe of a series with no
  variation, Calmar without a drawdown, win rate without trades, ...
  :func:`to_jsonable` maps NaN and ±inf to ``None`` for JSON.
- Input errors raise :class:`ValueError`: empty returns, NaN or ±inf inside the
  returns (the engine never produces them, so they signal a bug upstream),
  a non-positive ``periods_per_year``.

Definitions (``r`` one row of returns, ``T`` its length):

==========================  =====================================================
``total_return``            ``prod(1 + r) - 1``
``cagr``                    ``(1 + total_return) ** (1 / years) - 1``;
                            ``-1.0`` when ``1 + total_return <= 0``
``ann_volatility``          ``std(r, ddof=1) * sqrt(ppy)``; NaN when ``T < 2``
``sharpe``                  ``mean(r) / std(r, ddof=1) * sqrt(ppy)``;
                            NaN when the std is 0 or ``T < 2``
``sortino``                 ``mean(r) / dd * sqrt(ppy)`` with downside deviation
                            ``dd = sqrt(mean(min(r, 0) ** 2))`` over *all* T
                            periods; NaN when ``dd == 0``
``max_drawdown``            ``min_t(equity_t / running_max_t - 1)``, ``<= 0``;
                            0.0 if equity never falls below a previous peak;
                            floored at -1.0 (equity at or below zero is a total
                            loss)
``calmar``                  ``cagr / |max_drawdown|``; NaN when
                            ``max_drawdown == 0``
``win_rate``                ``n_wins / n_trades``; NaN when ``n_trades == 0``
``profit_factor``           ``gross_profit / gross_loss`` (``gross_loss`` given
                            as a positive number); ``+inf`` when
                            ``gross_loss == 0 < gross_profit``; NaN when both 0
``turnover``                passed through: per year, ``sum_t(traded_t /
                            equity_{t-1}) * ppy / T`` (traded notional at fill
                            prices; 2.0 = the whole equity bought and sold once
                            a year); engines A and B compute it
``exposure``                passed through: ``mean_t(gross_t / equity_t)``, the
                            mean gross position value over equity
``n_trades``,               passed through
``effective_history_years``
==========================  =====================================================

Relative metrics (:func:`relative_metrics`, ``b`` the benchmark's returns over the
same bars, ``e = r - x b`` the excess return series, ``x`` the strategy's stated net
exposure to the benchmark: 1 unless the caller says otherwise, 0 for a dollar-neutral
book, whose yardstick is then cash):

==========================  =====================================================
``beta``, ``alpha_ann``     OLS ``r_t = alpha + beta * b_t + u_t``
                            (``numpy.polyfit``, every candidate in one call);
                            ``alpha_ann = alpha * ppy`` (arithmetic annualization)
``beta_t``, ``alpha_t``     the OLS t-statistics (``beta / se(beta)``,
                            ``alpha / se(alpha)``); NaN when ``b`` does not vary
                            (cash: there is nothing to regress on), ``T < 3`` or
                            the fit is exact (``se(beta) <= 1e-10 |beta|``)
``tracking_error``          ``std(e, ddof=1) * sqrt(ppy)``
``information_ratio``       ``mean(e) / std(e, ddof=1) * sqrt(ppy)``: the Sharpe
                            of the excess series (against cash it *is* Sharpe)
``active_return``           ``mean(e) * ppy``
``up_capture``              ``mean(r | b > 0) / mean(b | b > 0)``; NaN without an
                            up bar
``down_capture``            ``mean(r | b < 0) / mean(b | b < 0)``; NaN without a
                            down bar
``benchmark_<m>``           each :data:`RETURN_METRICS` ``m`` of ``b`` itself
==========================  =====================================================

"The std is 0" is judged with a floating-point tolerance: a series whose
values are all equal can have a computed sample std of a few ulps (the mean is
rounded), and the returns of a flat equity near 1 can carry residues of an ulp of
1 (~1e-16), so a std ``<= 16 * eps * max(max|r|, 1)`` counts as zero
(:func:`negligible_std`); ``ann_volatility`` is then reported as exactly 0.0 and
``sharpe`` as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit

__all__ = [
    "BENCHMARK_METRICS",
    "CORE_METRICS",
    "RELATIVE_METRICS",
    "RETURN_METRICS",
    "TRADE_METRICS",
    "core_metrics",
    "excess_returns",
    "relative_metrics",
    "return_metrics",
    "to_jsonable",
    "trade_metrics",
]

RETURN_METRICS: tuple[str, ...] = (
    "total_return",
    "cagr",
    "ann_volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
)

CORE_METRICS: tuple[str, ...] = (
    *RETURN_METRICS,
    "turnover",
    "exposure",
    "n_trades",
    "win_rate",
    "profit_factor",
    "effective_history_years",
)

TRADE_METRICS: tuple[str, ...] = ("win_rate", "profit_factor")

RELATIVE_METRICS: tuple[str, ...] = (
    "beta",
    "beta_t",
    "alpha_ann",
    "alpha_t",
    "information_ratio",
    "tracking_error",
    "active_return",
    "up_capture",
    "down_capture",
)

BENCHMARK_METRICS: tuple[str, ...] = tuple(f"benchmark_{m}" for m in RETURN_METRICS)

# A sample std at or below this multiple of eps * max(max|r|, 1) is treated as zero.
_ZERO_STD_ULPS = 16.0


def negligible_std(std: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Where the sample ``std`` of each row of ``r`` (returns, fractions of an equity
    near 1) is floating-point noise: at most 16 ulps of the row's largest ``|r|`` or of
    1, whichever is larger (a flat equity's returns can carry ~1e-16 residues)."""
    scale = np.maximum(np.abs(r).max(axis=-1), 1.0)
    return np.asarray(std <= _ZERO_STD_ULPS * np.finfo(np.float64).eps * scale)

MetricValue = np.ndarray | float | int
MetricDict = dict[str, MetricValue]


def _check_returns(returns: Any) -> np.ndarray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim not in (1, 2):
        raise ValueError(
            f"returns must have shape (T,) or (K, T); got an array with {r.ndim} "
            f"dimension(s), shape {r.shape}"
        )
    if r.shape[-1] == 0:
        raise ValueError(f"returns are empty (shape {r.shape}); need at least one period")
    n_nan = int(np.count_nonzero(np.isnan(r)))
    if n_nan:
        raise ValueError(
            f"returns contain {n_nan} NaN value(s) out of {r.size}; "
            "the engine must not produce NaN returns"
        )
    n_inf = int(np.count_nonzero(np.isinf(r)))
    if n_inf:
        raise ValueError(
            f"returns contain {n_inf} infinite value(s) out of {r.size}; "
            "the engine must not produce infinite returns"
        )
    return r


def _check_ppy(periods_per_year: float) -> float:
    try:
        ppy = float(periods_per_year)
    except (TypeError, ValueError):
        raise ValueError(
            f"periods_per_year must be a positive number; got {periods_per_year!r}"
        ) from None
    if not math.isfinite(ppy) or ppy <= 0.0:
        raise ValueError(f"periods_per_year must be a positive finite number; got {ppy!r}")
    return ppy


def _out(values: np.ndarray, scalar: bool) -> np.ndarray | float:
    """A (K,) array, or a Python float when the input was one series."""
    if scalar:
        return float(values.reshape(-1)[0])
    return values


def return_metrics(returns: np.ndarray, periods_per_year: float) -> dict[str, np.ndarray | float]:
    """The return-based core metrics of one series ``(T,)`` or of K series ``(K, T)``.

    Keys: ``total_return``, ``cagr``, ``ann_volatility``, ``sharpe``, ``sortino``,
    ``max_drawdown``, ``calmar`` (definitions in the module docstring). A ``(T,)``
    input gives Python floats; a ``(K, T)`` input gives float64 arrays of shape
    ``(K,)``, vectorized along the last axis.

    Raises ``ValueError`` for empty returns, NaN/inf returns, or a non-positive
    ``periods_per_year``.
    """
    r = _check_returns(returns)
    ppy = _check_ppy(periods_per_year)
    scalar = r.ndim == 1
    r2 = r.reshape(1, -1) if scalar else r
    t = r2.shape[1]
    years = t / ppy
    sqrt_ppy = math.sqrt(ppy)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        total_return, max_drawdown = _equity_path(r2)
        growth = 1.0 + total_return
        cagr = np.where(
            growth > 0.0,
            np.power(np.where(growth > 0.0, growth, 1.0), 1.0 / years) - 1.0,
            -1.0,
        )

        mean = r2.mean(axis=1)
        if t >= 2:
            std = r2.std(axis=1, ddof=1)
            zero_std = negligible_std(std, r2)
            std = np.where(zero_std, 0.0, std)
            ann_volatility = std * sqrt_ppy
            sharpe = np.where(zero_std, np.nan, mean / np.where(zero_std, 1.0, std) * sqrt_ppy)
        else:
            ann_volatility = np.full(r2.shape[0], np.nan)
            sharpe = np.full(r2.shape[0], np.nan)

        downside = np.sqrt(np.mean(np.minimum(r2, 0.0) ** 2, axis=1))
        no_downside = downside == 0.0
        sortino = np.where(
            no_downside, np.nan, mean / np.where(no_downside, 1.0, downside) * sqrt_ppy
        )

        no_dd = max_drawdown == 0.0
        calmar = np.where(no_dd, np.nan, cagr / np.where(no_dd, 1.0, -max_drawdown))

    return {
        "total_return": _out(total_return, scalar),
        "cagr": _out(cagr, scalar),
        "ann_volatility": _out(ann_volatility, scalar),
        "sharpe": _out(sharpe, scalar),
        "sortino": _out(sortino, scalar),
        "max_drawdown": _out(max_drawdown, scalar),
        "calmar": _out(calmar, scalar),
    }


@njit(cache=True, error_model="numpy")
def _equity_path(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (total return, max drawdown in [-1, 0]) of the equity path that starts
    at 1.0 before the first return.

    One pass per row, where numpy needs a (K, T) cumulative product, a running maximum
    and a drawdown array (each along rows, which numpy walks slowly): the same
    operations in the same order (a product is sequential either way), so the same
    bits. The initial 1.0 is a peak: the running maximum is at least 1.0 (never 0). A
    NaN (an equity that overflowed) propagates as numpy's maximum and minimum
    propagate it."""
    k_rows, n = r.shape
    total = np.empty(k_rows)
    mdd = np.empty(k_rows)
    for k in range(k_rows):
        e = 1.0
        peak = -np.inf  # np.maximum.accumulate starts at the first value
        low = np.inf
        for t in range(n):
            e = e * (1.0 + r[k, t])
            if e != e or peak != peak:
                peak = np.nan
            elif e > peak:
                peak = e
            top = peak if (peak != peak or peak >= 1.0) else 1.0
            dd = e / top - 1.0
            if dd != dd or low != low:
                low = np.nan
            elif dd < low:
                low = dd
        total[k] = e - 1.0
        # clipped to [-1, 0] as np.maximum / np.minimum clip (NaN stays NaN)
        mdd[k] = low if low != low else min(max(low, -1.0), 0.0)
    return total, mdd


def _nonneg(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    if (arr < 0).any():
        raise ValueError(f"{name} must be >= 0; got a negative value (min {arr.min()!r})")
    return arr


def trade_metrics(
    n_trades: Any, n_wins: Any, gross_profit: Any, gross_loss: Any
) -> dict[str, np.ndarray | float]:
    """``win_rate`` and ``profit_factor`` from trade counts and gross P&L.

    - ``win_rate = n_wins / n_trades``; NaN when ``n_trades == 0``.
    - ``profit_factor = gross_profit / gross_loss`` where ``gross_loss`` is the
      (positive) sum of losing trades' losses; ``+inf`` when ``gross_loss == 0``
      and ``gross_profit > 0``; NaN when both are 0.

    Scalars give Python floats; arrays (broadcast together) give float64 arrays.
    Raises ``ValueError`` for negative or NaN inputs or ``n_wins > n_trades``.
    """
    nt = _nonneg("n_trades", n_trades)
    nw = _nonneg("n_wins", n_wins)
    gp = _nonneg("gross_profit", gross_profit)
    gl = _nonneg("gross_loss", gross_loss)
    if (nw > nt).any():
        raise ValueError("n_wins must not exceed n_trades")
    nt, nw, gp, gl = np.broadcast_arrays(nt, nw, gp, gl)
    with np.errstate(divide="ignore", invalid="ignore"):
        win_rate = np.where(nt > 0, nw / np.where(nt > 0, nt, 1.0), np.nan)
        profit_factor = np.where(
            gl > 0,
            gp / np.where(gl > 0, gl, 1.0),
            np.where(gp > 0, np.inf, np.nan),
        )
    scalar = win_rate.ndim == 0
    return {
        "win_rate": _out(np.asarray(win_rate, dtype=np.float64), scalar),
        "profit_factor": _out(np.asarray(profit_factor, dtype=np.float64), scalar),
    }


def _passthrough(name: str, value: Any, k: int | None, *, integer: bool = False) -> MetricValue:
    arr = np.asarray(value)
    if k is None:
        if arr.ndim != 0 and arr.size != 1:
            raise ValueError(
                f"{name} must be a scalar for a single return series; got shape {arr.shape}"
            )
        item = arr.reshape(-1)[0]
        return int(item) if integer else float(item)
    try:
        out = np.broadcast_to(arr, (k,))
    except ValueError:
        raise ValueError(
            f"{name} must be a scalar or have shape ({k},) for returns of {k} series; "
            f"got shape {arr.shape}"
        ) from None
    return out.astype(np.int64 if integer else np.float64)  # astype copies


def core_metrics(
    returns: np.ndarray,
    periods_per_year: float,
    *,
    n_trades: Any,
    n_wins: Any,
    gross_profit: Any,
    gross_loss: Any,
    turnover: Any,
    exposure: Any,
    effective_history_years: Any,
) -> MetricDict:
    """All :data:`CORE_METRICS`, in that order.

    The return metrics come from :func:`return_metrics`, ``win_rate`` and
    ``profit_factor`` from :func:`trade_metrics`; ``turnover``, ``exposure``,
    ``n_trades`` and ``effective_history_years`` are passed through as the
    engine computed them. For ``(T,)`` returns every value is a Python scalar
    (``n_trades`` an ``int``); for ``(K, T)`` returns every value is an array of
    shape ``(K,)`` (scalar trade/pass-through inputs are broadcast to ``K``).
    """
    ret = return_metrics(returns, periods_per_year)
    first = ret["total_return"]
    k = None if isinstance(first, float) else int(np.shape(first)[0])

    trade_in = {
        name: _passthrough(name, value, k)
        for name, value in (
            ("n_trades", n_trades),
            ("n_wins", n_wins),
            ("gross_profit", gross_profit),
            ("gross_loss", gross_loss),
        )
    }
    n_trades_arr = np.asarray(trade_in["n_trades"])
    if (n_trades_arr != np.round(n_trades_arr)).any():
        raise ValueError("n_trades must be a whole number")
    trades = trade_metrics(**trade_in)

    values: dict[str, Any] = {
        **ret,
        **trades,
        "n_trades": _passthrough("n_trades", n_trades, k, integer=True),
        "turnover": _passthrough("turnover", turnover, k),
        "exposure": _passthrough("exposure", exposure, k),
        "effective_history_years": _passthrough(
            "effective_history_years", effective_history_years, k
        ),
    }
    return {name: values[name] for name in CORE_METRICS}


def excess_returns(returns: np.ndarray, benchmark: np.ndarray,
                   exposure: np.ndarray | float = 1.0) -> np.ndarray:
    """``returns - exposure * benchmark`` per bar: shape ``(T,)`` or ``(K, T)`` against a
    ``(T,)`` benchmark; ``exposure`` is a number or one per row (the strategies' stated
    net exposures, 1 by default). Raises ``ValueError`` for bad returns or a length
    mismatch."""
    r = _check_returns(returns)
    b = _check_returns(benchmark)
    if b.ndim != 1 or b.shape[0] != r.shape[-1]:
        raise ValueError(f"benchmark returns must have shape ({r.shape[-1]},) to match the "
                         f"returns; got {b.shape}")
    x = np.asarray(exposure, dtype=np.float64)
    if x.ndim == 0:
        return r - float(x) * b if float(x) != 1.0 else r - b
    if r.ndim != 2 or x.shape != (r.shape[0],):
        raise ValueError(f"exposure must be a number or one per row ({r.shape[0]},); "
                         f"got {x.shape}")
    return r - x[:, None] * b[None, :]


def _ols_rows(r2: np.ndarray, b: np.ndarray, b_flat: bool) -> np.ndarray:
    """(K, 4): beta, beta_t, alpha (per period), alpha_t of each row regressed on ``b``
    by ordinary least squares, all rows in one call of numpy's ``polyfit`` (the
    standard errors from its covariance, scaled by the residual variance over T - 2
    degrees of freedom, as ``scipy.stats.linregress`` computes them); NaN where
    undefined."""
    k, t = r2.shape
    if b_flat or t < 3 or k == 0:
        return np.full((k, 4), np.nan)
    coef, cov = np.polyfit(b, r2.T, 1, cov=True)
    cov = cov.reshape(2, 2, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        se_beta, se_alpha = np.sqrt(cov[0, 0]), np.sqrt(cov[1, 1])
        # a row that is an exact linear function of b leaves only rounding in its
        # residuals: its t-statistics are undefined, not 1e16 of noise
        exact = se_beta <= _EXACT_FIT * np.abs(coef[0])
        beta_t = np.where((se_beta > 0) & ~exact, coef[0] / se_beta, np.nan)
        alpha_t = np.where((se_alpha > 0) & ~exact, coef[1] / se_alpha, np.nan)
    return np.column_stack([coef[0], beta_t, coef[1], alpha_t])


_EXACT_FIT = 1e-10  # se(beta) / |beta| below this: a perfect fit up to rounding


def _capture(r2: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return np.full(r2.shape[0], np.nan)
    return np.asarray(r2[:, mask].mean(axis=1) / b[mask].mean())


def relative_metrics(returns: np.ndarray, benchmark: np.ndarray,
                     periods_per_year: float, *,
                     exposure: np.ndarray | float = 1.0) -> dict[str, np.ndarray | float]:
    """:data:`RELATIVE_METRICS` and :data:`BENCHMARK_METRICS` of ``returns`` (``(T,)``
    or ``(K, T)``) against the ``(T,)`` ``benchmark`` returns over the same bars
    (definitions in the module docstring). A cash benchmark is all zeros: beta and
    alpha are then NaN and the information ratio equals the Sharpe ratio.
    ``exposure`` (a number or one per row) scales the benchmark in the excess series
    (information ratio, tracking error, active return); beta, alpha and the captures
    are measured against the benchmark itself.
    """
    e = excess_returns(returns, benchmark, exposure)  # checks both
    ppy = _check_ppy(periods_per_year)
    r2 = np.atleast_2d(np.asarray(returns, dtype=np.float64))
    b = np.asarray(benchmark, dtype=np.float64)
    scalar = np.ndim(returns) == 1
    bench = return_metrics(b, ppy)
    b_flat = bool(np.isnan(np.asarray(bench["sharpe"])) or b.shape[0] < 2)
    ols = _ols_rows(r2, b, b_flat)
    act = return_metrics(e, ppy)
    mean_e = np.atleast_2d(e).mean(axis=1)
    values: dict[str, np.ndarray] = {
        "beta": ols[:, 0], "beta_t": ols[:, 1], "alpha_ann": ols[:, 2] * ppy,
        "alpha_t": ols[:, 3],
        "information_ratio": np.atleast_1d(np.asarray(act["sharpe"], dtype=np.float64)),
        "tracking_error": np.atleast_1d(np.asarray(act["ann_volatility"], dtype=np.float64)),
        "active_return": mean_e * ppy,
        "up_capture": _capture(r2, b, b > 0), "down_capture": _capture(r2, b, b < 0),
    }
    out: dict[str, np.ndarray | float] = {k: _out(values[k], scalar) for k in RELATIVE_METRICS}
    for m in RETURN_METRICS:
        v = float(np.asarray(bench[m]))
        out[f"benchmark_{m}"] = v if scalar else np.full(r2.shape[0], v)
    return out


def _jsonable_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _jsonable_value(v) for key, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_jsonable_value(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_jsonable_value(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def to_jsonable(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``metrics`` that ``json.dumps(..., allow_nan=False)`` accepts.

    NumPy scalars become Python ``float``/``int``/``bool``, arrays become lists,
    and non-finite floats (NaN, ±inf) become ``None`` (JSON has no NaN/inf).
    Nested mappings and sequences are converted too.
    """
    return {str(key): _jsonable_value(value) for key, value in metrics.items()}
