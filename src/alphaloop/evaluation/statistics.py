"""Robustness statistics (MOD-432): PSR, MinTRL, DSR, MinBTL, PBO by CSCV,
Hansen's SPA / White's Reality Check and a stationary-bootstrap interval for
the Sharpe ratio.

Units and conventions
=====================

This section is the one place where the units are stated. Every function below
follows it, and the ``*_from_returns`` functions convert raw returns into these
units for you.

==========================  ==================================================
quantity                    unit / convention
==========================  ==================================================
returns                     simple returns per period (``0.01`` = +1 %), net
                            of costs, risk-free rate 0 (pass excess returns if
                            you want a non-zero rate). NaN or ±inf is an error.
Sharpe ratio ``sr``         **per period**, never annualized:
                            ``mean(r) / std(r, ddof=1)``. ``std`` is the
                            *sample* standard deviation (``ddof=1``), as in
                            :mod:`alphaloop.engines.metrics`.
skewness ``skew``           ``m3 / m2**1.5`` with population central moments
                            ``m_k = mean((r - mean(r))**k)`` (no small-sample
                            correction; ``scipy.stats.skew(bias=True)``).
kurtosis ``kurtosis``       **raw** (Pearson) kurtosis ``m4 / m2**2``: a normal
                            distribution has 3, not 0. Excess kurtosis
                            (``scipy.stats.kurtosis`` default,
                            ``pandas.Series.kurt``) must be converted with
                            ``+ 3``. Values below ``1 + skew**2`` are
                            impossible for raw kurtosis and are rejected as
                            "probably excess kurtosis".
``n_obs``                   number of return periods ``T`` behind ``sr``.
``var_trial_sharpe``        variance of the **per-period** Sharpe ratios of all
                            trials; when computed from the trials it is the
                            *sample* variance (``ddof=1``).
``n_trials``                number of trials (configurations) the selected
                            strategy was chosen from, all of them, including
                            the abandoned ones (DESIGN.md §6).
MinTRL                      number of observations at the frequency of ``sr``.
MinBTL                      **years**; its ``expected_max_sr`` is an
                            **annualized** Sharpe ratio (the only annualized
                            input in this module, as in the paper).
matrices                    shape ``(T, N)``: rows are time, columns are
                            candidates. (:mod:`alphaloop.engines.metrics` uses
                            ``(K, T)``; transpose its arrays before passing.)
==========================  ==================================================

Conversions at the boundary (``ppy`` = periods per year, 252 for US daily bars):
``sr_per_period = sr_annual / sqrt(ppy)`` and
``var_per_period = var_annual / ppy`` (:func:`annualized_to_per_period_sharpe`,
:func:`annualized_to_per_period_variance`). Feeding an annualized Sharpe to
PSR/DSR saturates them near 1 (DESIGN.md §6): don't.

``Z`` below is the standard normal CDF, ``Z^{-1}`` its inverse and
``γ ≈ 0.5772156649`` the Euler–Mascheroni constant.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from arch.bootstrap import SPA, StationaryBootstrap, optimal_block_length
from scipy import stats
from scipy.special import ndtr

from alphaloop.engines.metrics import negligible_std

__all__ = [
    "EULER_GAMMA",
    "PBOResult",
    "ReturnMoments",
    "SPAResult",
    "SharpeInterval",
    "annualized_to_per_period_sharpe",
    "annualized_to_per_period_variance",
    "deflated_sharpe_ratio",
    "deflated_sharpe_ratio_from_returns",
    "expected_max_sharpe",
    "min_backtest_length",
    "min_track_record_length",
    "pbo_cscv",
    "per_period_to_annualized_sharpe",
    "psr",
    "psr_from_returns",
    "return_moments",
    "sharpe_confidence_interval",
    "sharpe_per_period",
    "spa_test",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Euler–Mascheroni constant γ used by the expected-maximum formula.
EULER_GAMMA: float = float(np.euler_gamma)


# ---------------------------------------------------------------------------
# Input checks and unit conversions
# ---------------------------------------------------------------------------


def _as_returns_1d(returns: Any, name: str = "returns", min_len: int = 2) -> FloatArray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"{name} must be one series of shape (T,); got shape {r.shape}")
    if r.shape[0] < min_len:
        raise ValueError(f"{name} needs at least {min_len} periods; got {r.shape[0]}")
    if not np.all(np.isfinite(r)):
        bad = int(np.count_nonzero(~np.isfinite(r)))
        raise ValueError(f"{name} contain {bad} NaN or infinite value(s) out of {r.size}")
    return r


def _as_returns_2d(returns: Any, name: str, min_rows: int = 2, min_cols: int = 1) -> FloatArray:
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(
            f"{name} must be a matrix of shape (T, N) (time x candidates); got shape {r.shape}"
        )
    if r.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (periods); got {r.shape[0]}")
    if r.shape[1] < min_cols:
        raise ValueError(
            f"{name} needs at least {min_cols} column(s) (candidates); got {r.shape[1]}"
        )
    if not np.all(np.isfinite(r)):
        bad = int(np.count_nonzero(~np.isfinite(r)))
        raise ValueError(f"{name} contain {bad} NaN or infinite value(s) out of {r.size}")
    return r


def _finite(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {v!r}")
    return v


def _check_prob(name: str, value: float) -> float:
    p = _finite(name, value)
    if not 0.0 < p < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1; got {p!r}")
    return p


def _check_moments(skew: float, kurtosis: float) -> tuple[float, float]:
    g3 = _finite("skew", skew)
    g4 = _finite("kurtosis", kurtosis)
    # Pearson's inequality: raw kurtosis >= 1 + skew**2 for any distribution
    # (and for the sample moments of any data set).
    if g4 < 1.0 + g3 * g3 - 1e-9:
        raise ValueError(
            f"kurtosis={g4!r} is below 1 + skew**2 = {1.0 + g3 * g3!r}, impossible for raw "
            "kurtosis; this looks like excess kurtosis (normal = 0). Pass raw kurtosis "
            "(normal = 3), i.e. excess + 3."
        )
    return g3, g4


def annualized_to_per_period_sharpe(sr_annual: float, periods_per_year: float) -> float:
    """``sr_annual / sqrt(periods_per_year)``: the per-period Sharpe ratio this module uses."""
    ppy = _finite("periods_per_year", periods_per_year)
    if ppy <= 0:
        raise ValueError(f"periods_per_year must be positive; got {ppy!r}")
    return _finite("sr_annual", sr_annual) / math.sqrt(ppy)


def per_period_to_annualized_sharpe(sr: float, periods_per_year: float) -> float:
    """``sr * sqrt(periods_per_year)``, for reporting only."""
    ppy = _finite("periods_per_year", periods_per_year)
    if ppy <= 0:
        raise ValueError(f"periods_per_year must be positive; got {ppy!r}")
    return _finite("sr", sr) * math.sqrt(ppy)


def annualized_to_per_period_variance(var_annual: float, periods_per_year: float) -> float:
    """``var_annual / periods_per_year``: a variance of annualized Sharpe ratios in per-period units.

    The Sharpe ratio scales with ``sqrt(ppy)``, so its variance scales with ``ppy``.
    """
    ppy = _finite("periods_per_year", periods_per_year)
    if ppy <= 0:
        raise ValueError(f"periods_per_year must be positive; got {ppy!r}")
    v = _finite("var_annual", var_annual)
    if v < 0:
        raise ValueError(f"var_annual must be >= 0; got {v!r}")
    return v / ppy


# ---------------------------------------------------------------------------
# Moments of a return series
# ---------------------------------------------------------------------------


def _sharpe_rows(r: FloatArray) -> FloatArray:
    """Per-period Sharpe (ddof=1) of each row of a C-contiguous (K, T) matrix; NaN if
    the std is 0. Rows are reduced along their own contiguous axis (numpy's pairwise
    sum), so a row gives the same bits alone or among any other rows."""
    mean = r.mean(axis=1)
    std = r.std(axis=1, ddof=1)
    zero = negligible_std(std, r)
    out = np.full(r.shape[0], np.nan)
    np.divide(mean, std, out=out, where=~zero)
    return out


def _sharpe_columns(r: FloatArray) -> FloatArray:
    """:func:`_sharpe_rows` of each column of a (T, N) matrix."""
    return _sharpe_rows(np.ascontiguousarray(r.T))


def sharpe_per_period(returns: Any) -> float | FloatArray:
    """Per-period (non-annualized) Sharpe ratio ``mean(r) / std(r, ddof=1)``.

    ``returns`` of shape ``(T,)`` gives a float; shape ``(T, N)`` gives one value
    per column, shape ``(N,)``. NaN when the sample std is zero (constant
    returns). See the module's *Units and conventions*.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 1:
        return float(_sharpe_columns(_as_returns_1d(r)[:, None])[0])
    return _sharpe_columns(_as_returns_2d(r, "returns"))


@dataclass(frozen=True)
class ReturnMoments:
    """The four inputs PSR/DSR need from a return series, in this module's units."""

    sr: float
    skew: float
    kurtosis: float
    n_obs: int


def return_moments(returns: Any) -> ReturnMoments:
    """Per-period Sharpe (ddof=1), skewness and **raw** kurtosis (population moments).

    ``skew = m3 / m2**1.5`` and ``kurtosis = m4 / m2**2`` with
    ``m_k = mean((r - mean(r))**k)``. For constant returns all three are NaN.
    """
    r = _as_returns_1d(returns)
    sr, skew, kurt = _moments_rows(r[None, :])
    return ReturnMoments(sr=float(sr[0]), skew=float(skew[0]), kurtosis=float(kurt[0]),
                         n_obs=r.shape[0])


def return_moments_rows(returns: Any) -> tuple[FloatArray, FloatArray, FloatArray]:
    """:func:`return_moments` of each row of a (K, T) matrix at once: (Sharpe, skew,
    kurtosis) arrays of length K, NaN for constant rows. Every row is reduced on its
    own, so a row's moments do not depend on the other rows."""
    return _moments_rows(np.ascontiguousarray(returns, dtype=np.float64))


def _moments_rows(r: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    # One code path for a series and for a batch, reduced row by row along contiguous
    # rows: scipy.stats.skew gives a 1-D series and the same series inside a matrix
    # results that differ in the last bit (its reductions run along another axis), and
    # the loop's batch statistics must be the series function's, bit for bit.
    sr = _sharpe_rows(r)
    constant = np.isnan(sr)
    d = r - r.mean(axis=1, keepdims=True)
    d2 = d * d
    m2 = d2.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        skew = (d2 * d).mean(axis=1) / m2**1.5
        kurt = (d2 * d2).mean(axis=1) / (m2 * m2)
    skew[constant] = np.nan
    kurt[constant] = np.nan
    return sr, skew, kurt


# ---------------------------------------------------------------------------
# Probabilistic Sharpe Ratio and Minimum Track Record Length
# ---------------------------------------------------------------------------


def _sr_variance_factor(sr: float, skew: float, kurtosis: float) -> float:
    """``1 - γ3·SR + (γ4 - 1)/4 · SR²``: (T - 1) times the variance of the SR estimator."""
    factor = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if not factor > 0.0:
        raise ValueError(
            f"1 - skew*sr + (kurtosis-1)/4*sr^2 = {factor!r} is not positive for sr={sr!r}, "
            f"skew={skew!r}, kurtosis={kurtosis!r}; check that sr is per period and kurtosis raw"
        )
    return factor


def psr(
    sr: float,
    sr_benchmark: float,
    n_obs: float,
    skew: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    r"""Probabilistic Sharpe Ratio: the probability that the true Sharpe exceeds ``sr_benchmark``.

    .. math::

        \mathrm{PSR}(SR^*) = Z\left[\frac{(\widehat{SR} - SR^*)\sqrt{T-1}}
            {\sqrt{1 - \hat\gamma_3 \widehat{SR} + \frac{\hat\gamma_4 - 1}{4}\widehat{SR}^2}}\right]

    Source: D. H. Bailey and M. López de Prado (2012), "The Sharpe Ratio Efficient
    Frontier", *Journal of Risk* 15(2), 3–44, section 3; the variance of the Sharpe
    estimator under non-normal IID returns is from Mertens (2002) and Lo (2002).

    Args:
        sr: observed **per-period** Sharpe ratio ``SR^``.
        sr_benchmark: benchmark ``SR*``, per period.
        n_obs: number of returns ``T`` (> 1).
        skew: skewness ``γ3`` of the returns.
        kurtosis: **raw** kurtosis ``γ4`` (normal = 3).
    """
    s = _finite("sr", sr)
    s0 = _finite("sr_benchmark", sr_benchmark)
    g3, g4 = _check_moments(skew, kurtosis)
    t = _finite("n_obs", n_obs)
    if t <= 1:
        raise ValueError(f"n_obs must be > 1; got {n_obs!r}")
    z = (s - s0) * math.sqrt(t - 1.0) / math.sqrt(_sr_variance_factor(s, g3, g4))
    # ndtr is the standard normal CDF that stats.norm.cdf evaluates, without the
    # distribution machinery's per-call overhead (~50x): the loop calls this per candidate
    return float(ndtr(z))


def psr_rows(sr: Any, sr_benchmark: float, n_obs: Any, skew: Any, kurtosis: Any) -> FloatArray:
    """:func:`psr` of many candidates at once (arrays of equal length; ``sr_benchmark``
    one number): the same formula and operations, element by element, with NaN where
    :func:`psr` would refuse its inputs (a moment or ``sr`` not finite, kurtosis below
    ``1 + skew²``, ``n_obs <= 1``, a non-positive variance factor)."""
    s = np.asarray(sr, dtype=np.float64)
    g3 = np.asarray(skew, dtype=np.float64)
    g4 = np.asarray(kurtosis, dtype=np.float64)
    t = np.broadcast_to(np.asarray(n_obs, dtype=np.float64), s.shape)
    s0 = float(sr_benchmark)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        factor = 1.0 - g3 * s + (g4 - 1.0) / 4.0 * s * s
        ok = (np.isfinite(s) & np.isfinite(g3) & np.isfinite(g4) & np.isfinite(t)
              & (g4 >= 1.0 + g3 * g3 - 1e-9) & (t > 1) & (factor > 0.0))
        z = (s - s0) * np.sqrt(t - 1.0) / np.sqrt(factor)
    out: FloatArray = np.where(ok, ndtr(np.where(ok, z, 0.0)), np.nan)
    return out


def psr_from_returns(returns: Any, sr_benchmark: float = 0.0) -> float:
    """:func:`psr` of a return series: SR, skew, raw kurtosis and ``T`` estimated from it.

    ``sr_benchmark`` is per period. NaN for constant returns (no Sharpe ratio).
    """
    m = return_moments(returns)
    if math.isnan(m.sr):
        return math.nan
    return psr(m.sr, sr_benchmark, m.n_obs, m.skew, m.kurtosis)


def min_track_record_length(
    sr: float,
    sr_benchmark: float,
    skew: float = 0.0,
    kurtosis: float = 3.0,
    prob: float = 0.95,
) -> float:
    r"""Minimum Track Record Length: observations needed for ``PSR(SR*) >= prob``.

    .. math::

        \mathrm{MinTRL} = 1 + \left[1 - \hat\gamma_3\widehat{SR}
            + \frac{\hat\gamma_4 - 1}{4}\widehat{SR}^2\right]
            \left(\frac{Z^{-1}[\mathrm{prob}]}{\widehat{SR} - SR^*}\right)^2

    Source: D. H. Bailey and M. López de Prado (2012), "The Sharpe Ratio Efficient
    Frontier", *Journal of Risk* 15(2), eq. (13).

    The result is a number of observations at the frequency of ``sr`` (divide by
    periods per year for years); ``+inf`` when ``sr <= sr_benchmark`` (no track
    record is long enough). Inputs as in :func:`psr`.
    """
    s = _finite("sr", sr)
    s0 = _finite("sr_benchmark", sr_benchmark)
    g3, g4 = _check_moments(skew, kurtosis)
    p = _check_prob("prob", prob)
    if s <= s0:
        return math.inf
    z = float(stats.norm.ppf(p))
    return 1.0 + _sr_variance_factor(s, g3, g4) * (z / (s - s0)) ** 2


# ---------------------------------------------------------------------------
# Expected maximum Sharpe, Deflated Sharpe Ratio, Minimum Backtest Length
# ---------------------------------------------------------------------------


def _expected_max_std_normal(n_trials: float) -> float:
    """``(1-γ)Z^{-1}[1-1/N] + γZ^{-1}[1-1/(N e)]``; 0 for a single trial."""
    n = _finite("n_trials", n_trials)
    if n < 1:
        raise ValueError(f"n_trials must be >= 1; got {n_trials!r}")
    if n == 1:
        return 0.0
    return float(
        (1.0 - EULER_GAMMA) * stats.norm.ppf(1.0 - 1.0 / n)
        + EULER_GAMMA * stats.norm.ppf(1.0 - 1.0 / (n * math.e))
    )


def expected_max_sharpe(n_trials: float, var_trial_sharpe: float) -> float:
    r"""Expected maximum Sharpe ratio of ``N`` independent zero-skill trials.

    .. math::

        SR_0 = \sqrt{V[\{\widehat{SR}_n\}]}\left((1-\gamma)Z^{-1}\left[1-\frac1N\right]
            + \gamma Z^{-1}\left[1-\frac{1}{N e}\right]\right)

    with ``γ`` the Euler–Mascheroni constant. Sources: Bailey, Borwein, López de
    Prado and Zhu (2014), "Pseudo-Mathematics and Financial Charlatanism", *Notices
    of the AMS* 61(5), the expected-maximum proposition; Bailey and López de Prado (2014), "The Deflated
    Sharpe Ratio", *Journal of Portfolio Management* 40(5), the threshold ``SR_0``.

    ``var_trial_sharpe`` is in per-period units (then so is the result); with
    ``var_trial_sharpe = 1`` the result is the expected maximum of ``N`` standard
    normals. ``n_trials = 1`` gives 0 (nothing was selected). ``n_trials`` may be a
    non-integer effective number of trials.
    """
    v = _finite("var_trial_sharpe", var_trial_sharpe)
    if v < 0:
        raise ValueError(f"var_trial_sharpe must be >= 0; got {v!r}")
    return math.sqrt(v) * _expected_max_std_normal(n_trials)


def deflated_sharpe_ratio(
    sr: float,
    n_obs: float,
    skew: float,
    kurtosis: float,
    n_trials: float,
    var_trial_sharpe: float,
) -> float:
    r"""Deflated Sharpe Ratio: PSR against the expected maximum Sharpe of the trials.

    .. math::

        \mathrm{DSR} = Z\left[\frac{(\widehat{SR} - SR_0)\sqrt{T-1}}
            {\sqrt{1 - \hat\gamma_3\widehat{SR} + \frac{\hat\gamma_4-1}{4}\widehat{SR}^2}}\right],
        \qquad SR_0 = \text{expected\_max\_sharpe}(N, V[\{\widehat{SR}_n\}])

    Source: D. H. Bailey and M. López de Prado (2014), "The Deflated Sharpe Ratio:
    Correcting for Selection Bias, Backtest Overfitting and Non-Normality", *Journal
    of Portfolio Management* 40(5), 94–107, eq. (2).

    Args:
        sr: per-period Sharpe ratio of the selected strategy.
        n_obs: number of its returns ``T``.
        skew: skewness of its returns.
        kurtosis: **raw** kurtosis of its returns (normal = 3).
        n_trials: number of trials ``N`` it was selected from (all of them).
        var_trial_sharpe: variance of the trials' **per-period** Sharpe ratios. This
            module computes it as the *sample* variance (``ddof=1``) when it is given
            the trials (:func:`deflated_sharpe_ratio_from_returns`); the paper's
            example gives the variance directly, so it does not force a choice.
    """
    return psr(sr, expected_max_sharpe(n_trials, var_trial_sharpe), n_obs, skew, kurtosis)


def deflated_sharpe_ratio_from_returns(
    returns: Any,
    trial_sharpes: Any = None,
    *,
    n_trials: float | None = None,
    var_trial_sharpe: float | None = None,
) -> float:
    """:func:`deflated_sharpe_ratio` of the selected strategy's return series.

    SR, skew, raw kurtosis and ``T`` come from ``returns``. The trials are given
    either as ``trial_sharpes`` — the per-period Sharpe ratios of *all* trials,
    the selected one included — whose **sample variance** (``ddof=1``, over the
    finite values) is ``var_trial_sharpe`` and whose length is ``n_trials``; or as
    ``n_trials`` and ``var_trial_sharpe`` directly (e.g. from the knowledge base).
    ``n_trials`` may be given with ``trial_sharpes`` when more trials were run than
    have Sharpe ratios at hand; it must then be at least ``len(trial_sharpes)``.
    A trial with a NaN Sharpe (no variation) counts in ``n_trials`` but not in
    the variance.

    Returns NaN for constant ``returns``.
    """
    if trial_sharpes is not None:
        ts = np.asarray(trial_sharpes, dtype=np.float64).reshape(-1)
        finite = ts[np.isfinite(ts)]
        if finite.size < 2:
            raise ValueError(
                f"trial_sharpes needs at least 2 finite Sharpe ratios for a sample variance; "
                f"got {finite.size}"
            )
        if var_trial_sharpe is not None:
            raise ValueError("give trial_sharpes or var_trial_sharpe, not both")
        var = float(np.var(finite, ddof=1))
        n = float(ts.size) if n_trials is None else _finite("n_trials", n_trials)
        if n < ts.size:
            raise ValueError(
                f"n_trials={n_trials!r} is smaller than the {ts.size} trial Sharpe ratios given"
            )
    else:
        if n_trials is None or var_trial_sharpe is None:
            raise ValueError("give trial_sharpes, or both n_trials and var_trial_sharpe")
        n = _finite("n_trials", n_trials)
        var = _finite("var_trial_sharpe", var_trial_sharpe)
    m = return_moments(returns)
    if math.isnan(m.sr):
        return math.nan
    return deflated_sharpe_ratio(m.sr, m.n_obs, m.skew, m.kurtosis, n, var)


def min_backtest_length(n_trials: float, expected_max_sr: float = 1.0) -> float:
    r"""Minimum Backtest Length, in **years**.

    .. math::

        \mathrm{MinBTL} \approx \left(\frac{(1-\gamma)Z^{-1}\left[1-\frac1N\right]
            + \gamma Z^{-1}\left[1-\frac{1}{N e}\right]}{\overline{E[\max_N]}}\right)^2
            < \frac{2\ln N}{\overline{E[\max_N]}^2}

    Source: D. H. Bailey, J. M. Borwein, M. López de Prado and Q. J. Zhu (2014),
    "Pseudo-Mathematics and Financial Charlatanism: The Effects of Backtest
    Overfitting on Out-of-Sample Performance", *Notices of the AMS* 61(5), 458–471,
    the MinBTL theorem (section "Minimum Backtest Length").

    The backtest length (years) below which ``N`` independent zero-skill trials are
    expected to produce a best in-sample **annualized** Sharpe ratio of
    ``expected_max_sr``. It assumes annualized Sharpe estimates whose variance is
    ``1 / years`` (normal returns, true Sharpe 0). ``n_trials = 1`` gives 0. It is
    a necessary, not a sufficient, condition against overfitting.
    """
    e = _finite("expected_max_sr", expected_max_sr)
    if e <= 0:
        raise ValueError(f"expected_max_sr must be positive (annualized); got {e!r}")
    return (_expected_max_std_normal(n_trials) / e) ** 2


# ---------------------------------------------------------------------------
# Probability of Backtest Overfitting by CSCV
# ---------------------------------------------------------------------------

Metric = Literal["sharpe", "mean"] | Callable[[FloatArray], Any]


@dataclass(frozen=True)
class PBOResult:
    """Outcome of :func:`pbo_cscv`. Arrays have one entry per combination ``c``.

    Attributes:
        pbo: probability of backtest overfitting, the share of combinations whose
            logit is ``<= 0`` (the in-sample best ranks at or below the OOS median).
        logits: ``λ_c = ln(ω_c / (1 - ω_c))``.
        relative_rank: ``ω_c = rank_OOS(n*_c) / (N + 1)``, rank 1 = worst.
        best_is_index: ``n*_c``, the column with the best in-sample metric.
        is_performance: in-sample metric of ``n*_c``.
        oos_performance: out-of-sample metric of ``n*_c``.
        degradation_slope, degradation_intercept: least-squares fit
            ``oos = intercept + slope * is`` over the combinations (performance
            degradation; a negative slope is a sign of overfitting).
        prob_oos_loss: share of combinations with ``oos_performance < 0``.
        n_splits: ``S``; n_combinations: ``C(S, S/2)``; block_length: rows per
            block; n_rows_dropped: the oldest ``T mod S`` rows left out so that
            the blocks have equal length.
    """

    pbo: float
    logits: FloatArray
    relative_rank: FloatArray
    best_is_index: IntArray
    is_performance: FloatArray
    oos_performance: FloatArray
    degradation_slope: float
    degradation_intercept: float
    prob_oos_loss: float
    n_splits: int
    n_combinations: int
    block_length: int
    n_rows_dropped: int


def _safe_ratio(num: FloatArray, std: FloatArray, tol: FloatArray) -> FloatArray:
    """``num / std``; where ``std <= tol`` (flat sub-sample): 0 if ``|num| <= tol``, else ±inf."""
    zero = std <= tol
    out = np.zeros(np.broadcast(num, std).shape)
    np.divide(num, std, out=out, where=~zero)
    flat_nonzero = zero & (np.abs(num) > tol)
    out[flat_nonzero] = np.sign(num[flat_nonzero]) * np.inf
    return out


def _oos_rank(oos: FloatArray, best: IntArray) -> FloatArray:
    """Rank (1 = worst, N = best, ties averaged) of ``oos[c, best[c]]`` within row ``c``."""
    chosen = oos[np.arange(oos.shape[0]), best][:, None]
    below = np.count_nonzero(oos < chosen, axis=1)
    equal = np.count_nonzero(oos == chosen, axis=1)  # includes the chosen one
    return below + (equal + 1) / 2.0


def pbo_cscv(returns_matrix: Any, n_splits: int = 16, metric: Metric = "sharpe") -> PBOResult:
    r"""Probability of Backtest Overfitting by combinatorially symmetric cross-validation.

    Source: D. H. Bailey, J. M. Borwein, M. López de Prado and Q. J. Zhu (2017),
    "The Probability of Backtest Overfitting", *Journal of Computational Finance*
    20(4), 39–69 (SSRN 2326253), section 2 (CSCV) and section 3 (statistics).

    Algorithm: split the ``T`` rows of the ``T × N`` matrix ``M`` into ``S``
    contiguous blocks of equal length. For every choice ``c`` of ``S/2`` blocks
    (``C(S, S/2)`` of them: 12,870 for ``S = 16``), the chosen rows form the
    in-sample set ``J`` and the others the out-of-sample set ``J̄``. Let ``R`` and
    ``R̄`` be the metric of every column on ``J`` and ``J̄``, ``n* = argmax R``,
    ``ω_c = rank(R̄_{n*}) / (N + 1)`` and ``λ_c = ln(ω_c / (1 - ω_c))``. Then

    .. math::

        \mathrm{PBO} = \int_{-\infty}^{0} f(\lambda)\,d\lambda
            \approx \frac{1}{C}\sum_c \mathbf 1[\lambda_c \le 0].

    Under pure noise ``PBO ≈ 0.5`` (DESIGN.md §6); a real, persistent edge drives
    it towards 0.

    Args:
        returns_matrix: ``(T, N)`` per-period returns, rows time, columns candidates.
        n_splits: ``S``, even, ``>= 2``, at most ``T``.
        metric: ``"sharpe"`` (per-period, ddof=1; default) or ``"mean"`` — both
            computed for all combinations at once from per-block sums — or a
            callable mapping a ``(t, N)`` sub-matrix to ``N`` scores (slower: one
            call per combination and side). Higher is better. A column with no
            variation in a sub-sample has Sharpe 0 if its mean is 0, ±inf otherwise.
    """
    m = _as_returns_2d(returns_matrix, "returns_matrix", min_rows=2, min_cols=2)
    s = int(n_splits)
    if s != n_splits or s < 2 or s % 2:
        raise ValueError(f"n_splits must be an even integer >= 2; got {n_splits!r}")
    t_all, n_cols = m.shape
    blen = t_all // s
    if blen < 1 or (metric == "sharpe" and blen * (s // 2) < 2):
        raise ValueError(f"returns_matrix has {t_all} rows, too few for n_splits={s}")
    dropped = t_all - blen * s
    m = m[dropped:]
    blocks = m.reshape(s, blen, n_cols)

    combos = np.array(list(itertools.combinations(range(s), s // 2)), dtype=np.int64)
    n_comb = combos.shape[0]
    is_perf = np.empty(n_comb)
    oos_perf = np.empty(n_comb)
    best = np.empty(n_comb, dtype=np.int64)
    rank = np.empty(n_comb)

    if callable(metric):
        for c, chosen in enumerate(combos):
            mask = np.zeros(s, dtype=bool)
            mask[chosen] = True
            r_is = np.asarray(metric(blocks[mask].reshape(-1, n_cols)), dtype=np.float64)
            r_oos = np.asarray(metric(blocks[~mask].reshape(-1, n_cols)), dtype=np.float64)
            if r_is.shape != (n_cols,) or r_oos.shape != (n_cols,):
                raise ValueError(
                    f"metric must return one score per column, shape ({n_cols},); got {r_is.shape}"
                )
            r_is = np.where(np.isnan(r_is), -np.inf, r_is)
            r_oos = np.where(np.isnan(r_oos), -np.inf, r_oos)
            b = int(np.argmax(r_is))
            best[c], is_perf[c], oos_perf[c] = b, r_is[b], r_oos[b]
            rank[c] = _oos_rank(r_oos[None, :], np.array([b]))[0]
    elif metric in ("sharpe", "mean"):
        # Sums of values centred on each column's mean, per block: robust and
        # exact; any combination's sums are indicator @ block sums.
        centre = m.mean(axis=0)
        x = blocks - centre
        b1 = x.sum(axis=1)  # (S, N)
        b2 = (x * x).sum(axis=1)
        tot1, tot2 = b1.sum(axis=0), b2.sum(axis=0)
        half = blen * (s // 2)
        scale = np.max(np.abs(m), axis=0)
        chunk = max(1, 2_000_000 // max(n_cols, 1))
        for start in range(0, n_comb, chunk):
            stop = min(start + chunk, n_comb)
            ind = np.zeros((stop - start, s))
            np.put_along_axis(ind, combos[start:stop], 1.0, axis=1)
            s1_is = ind @ b1
            s1_oos = tot1 - s1_is
            if metric == "mean":
                r_is = centre + s1_is / half
                r_oos = centre + s1_oos / half
            else:
                s2_is = ind @ b2
                s2_oos = tot2 - s2_is
                r_is = _sharpe_split(half, centre, s1_is, s2_is, scale)
                r_oos = _sharpe_split(half, centre, s1_oos, s2_oos, scale)
            bst = np.argmax(r_is, axis=1)
            rows = np.arange(stop - start)
            best[start:stop] = bst
            is_perf[start:stop] = r_is[rows, bst]
            oos_perf[start:stop] = r_oos[rows, bst]
            rank[start:stop] = _oos_rank(r_oos, bst)
    else:
        raise ValueError(f"metric must be 'sharpe', 'mean' or a callable; got {metric!r}")

    omega = rank / (n_cols + 1.0)
    logits = np.log(omega / (1.0 - omega))
    slope, intercept = _degradation_fit(is_perf, oos_perf)
    return PBOResult(
        pbo=float(np.mean(logits <= 0.0)),
        logits=logits,
        relative_rank=omega,
        best_is_index=best,
        is_performance=is_perf,
        oos_performance=oos_perf,
        degradation_slope=float(slope),
        degradation_intercept=float(intercept),
        prob_oos_loss=float(np.mean(oos_perf < 0.0)),
        n_splits=s,
        n_combinations=n_comb,
        block_length=blen,
        n_rows_dropped=dropped,
    )


def _degradation_fit(x: FloatArray, y: FloatArray) -> tuple[float, float]:
    """Least-squares ``y = a + b x`` over finite pairs; NaNs when ``x`` does not vary."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2:
        return math.nan, math.nan
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if sxx <= (1e-9 * float(np.max(np.abs(x)))) ** 2 * x.size:
        return math.nan, math.nan
    slope = float(dx @ (y - y.mean())) / sxx
    return slope, float(y.mean() - slope * x.mean())


def _sharpe_split(
    n: float, centre: FloatArray, s1: FloatArray, s2: FloatArray, scale: FloatArray
) -> FloatArray:
    """Sharpe (ddof=1) of a sub-sample of ``n`` rows from sums of values centred on ``centre``.

    A std within the rounding error of the sums (``8 sqrt(eps n) max|r|``) counts as 0.
    """
    dev = s1 / n  # sub-sample mean minus centre
    var = (s2 - s1 * dev) / (n - 1.0)
    tol = 8.0 * math.sqrt(float(np.finfo(np.float64).eps) * n) * scale
    return _safe_ratio(centre + dev, np.sqrt(np.maximum(var, 0.0)), tol)


# ---------------------------------------------------------------------------
# Hansen's SPA and White's Reality Check (arch.bootstrap.SPA)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SPAResult:
    """Outcome of :func:`spa_test`.

    Attributes:
        pvalue_lower, pvalue_consistent, pvalue_upper: Hansen's SPA p-values
            (``SPA_l``, ``SPA_c``, ``SPA_u``) for the null "no candidate beats the
            benchmark"; ``consistent`` is the one to report.
        reality_check_pvalue: White's (2000) Reality Check p-value.
        studentized: whether the SPA p-values use studentized statistics.
        block_size: expected block length of the stationary bootstrap.
        reps: bootstrap replications.
        mean_excess: mean of ``candidate - benchmark`` per candidate (per period).
        best_index: candidate with the largest mean excess return.
    """

    pvalue_lower: float
    pvalue_consistent: float
    pvalue_upper: float
    reality_check_pvalue: float
    studentized: bool
    block_size: int
    reps: int
    mean_excess: FloatArray
    best_index: int


def _resolve_block_size(block_size: float | None, x: FloatArray) -> int:
    """Explicit size, or the Politis–White (2004, corrected 2009) stationary-bootstrap
    length from ``arch.bootstrap.optimal_block_length`` (mean over columns), >= 1."""
    if block_size is not None:
        b = _finite("block_size", block_size)
        if b < 1:
            raise ValueError(f"block_size must be >= 1; got {block_size!r}")
        return round(b)
    cols = x if x.ndim == 2 else x[:, None]
    varying = cols[:, np.std(cols, axis=0) > 0]
    if varying.shape[1] == 0:
        return 1
    est = np.asarray(optimal_block_length(varying)["stationary"], dtype=np.float64)
    est = est[np.isfinite(est)]
    if est.size == 0:
        return 1
    return max(1, round(float(np.mean(est))))


def _stationary_bootstrap_variance(d: FloatArray, block_size: float) -> FloatArray:
    r"""Long-run variance of each column of ``d`` by the stationary-bootstrap kernel.

    .. math::

        \hat\omega^2 = \hat\gamma_0 + 2\sum_{i=1}^{T-1}\kappa(T, i)\hat\gamma_i,\quad
        \kappa(T, i) = \frac{T-i}{T}(1-q)^i + \frac{i}{T}(1-q)^{T-i},\ q = 1/b

    with ``γ̂_i`` the biased (``/T``) autocovariances. Hansen (2005), "A Test for
    Superior Predictive Ability", *JBES* 23(4), section 2.3 (after Politis and
    Romano 1994); the same estimator ``arch`` uses for its consistency threshold.
    """
    t = d.shape[0]
    x = d - d.mean(axis=0)
    nfft = 1 << (2 * t - 1).bit_length()
    f = np.fft.rfft(x, n=nfft, axis=0)
    acov = np.fft.irfft(f * np.conj(f), n=nfft, axis=0)[:t] / t
    i = np.arange(1, t, dtype=np.float64)
    q = 1.0 / block_size
    kappa = (t - i) / t * (1.0 - q) ** i + i / t * (1.0 - q) ** (t - i)
    out: FloatArray = acov[0] + 2.0 * (kappa @ acov[1:])
    return out


def spa_test(
    candidate_returns: Any,
    benchmark_returns: Any = None,
    reps: int = 1000,
    block_size: float | None = None,
    seed: int | np.random.Generator | None = None,
    *,
    studentize: bool = True,
) -> SPAResult:
    r"""Hansen's test for Superior Predictive Ability and White's Reality Check.

    Null hypothesis: no candidate has a higher expected return than the
    benchmark. With ``d_{k,t} = r_{k,t} - r_{b,t}`` (candidate minus benchmark
    return; the loss of each model is minus its return):

    - White's Reality Check: ``V = max_k √T d̄_k``; its bootstrap distribution
      ``max_k √T (d̄*_k - d̄_k)``; ``p = P*(V* > V)``. H. White (2000), "A Reality
      Check for Data Snooping", *Econometrica* 68(5), 1097–1126.
    - Hansen's SPA: ``T^SPA = max_k √T d̄_k / ω̂_k`` (studentized), bootstrap values
      recentred at ``d̄_k 1[d̄_k >= -ω̂_k sqrt(2 ln ln T / T)]`` (consistent), at
      ``max(d̄_k, 0)`` (lower) or at ``d̄_k`` (upper). P. R. Hansen (2005), "A Test
      for Superior Predictive Ability", *JBES* 23(4), 365–380.

    The bootstrap is ``arch.bootstrap.SPA`` with its stationary bootstrap
    (Politis and Romano 1994). ``arch`` (8.x) compares *un-studentized* means in
    ``SPA.compute`` whatever its ``studentize`` flag; its ``"upper"`` p-value is
    therefore exactly White's Reality Check, which is what
    ``reality_check_pvalue`` reports. For Hansen's studentized statistics this
    function divides each ``d_k`` by ``ω̂_k`` (the stationary-bootstrap long-run
    std, :func:`_stationary_bootstrap_variance`) before handing it to ``arch``:
    as ``ω̂_k`` is fixed across replications, this yields Hansen's ``T^SPA`` and its
    recentring thresholds exactly. Both runs share the seed and so the resampled
    indices. (Hansen floors ``T^SPA`` at 0; ``arch`` does not, which only raises
    p-values when every candidate is worse than the benchmark on average.)

    Args:
        candidate_returns: ``(T, N)`` per-period returns of the candidates.
        benchmark_returns: ``(T,)`` benchmark returns; ``None`` means 0 (cash).
        reps: bootstrap replications.
        block_size: expected block length; ``None`` picks the Politis–White
            estimate averaged over the columns of ``d``.
        seed: seed or generator for the bootstrap (required for reproducibility).
        studentize: ``False`` gives the SPA p-values without studentization.
    """
    cand = _as_returns_2d(candidate_returns, "candidate_returns", min_rows=3)
    t = cand.shape[0]
    if benchmark_returns is None:
        bench = np.zeros(t)
    else:
        bench = _as_returns_1d(benchmark_returns, "benchmark_returns", min_len=3)
        if bench.shape[0] != t:
            raise ValueError(
                f"benchmark_returns has {bench.shape[0]} periods but candidate_returns has {t}"
            )
    n_reps = int(reps)
    if n_reps < 1 or n_reps != reps:
        raise ValueError(f"reps must be a positive integer; got {reps!r}")
    d = cand - bench[:, None]
    b = _resolve_block_size(block_size, d)

    # Both arch runs must resample the same indices: fix one integer seed.
    if isinstance(seed, np.random.Generator):
        run_seed: int | None = int(seed.integers(0, 2**63 - 1))
    elif seed is None:
        run_seed = int(np.random.default_rng().integers(0, 2**63 - 1))
    else:
        run_seed = int(seed)

    # Losses are minus returns: benchmark loss 0, model loss -d  =>  arch's
    # loss differential (benchmark - model) is d.
    zeros = np.zeros(t)
    rc = SPA(zeros, -d, block_size=b, reps=n_reps, bootstrap="stationary", seed=run_seed)
    rc.compute()
    rc_p = rc.pvalues
    if studentize:
        omega = np.sqrt(np.maximum(_stationary_bootstrap_variance(d, b), 0.0))
        omega = np.where(omega > 0.0, omega, 1.0)
        spa = SPA(
            zeros, -(d / omega), block_size=b, reps=n_reps, bootstrap="stationary", seed=run_seed
        )
        spa.compute()
        p = spa.pvalues
    else:
        p = rc_p
    mean_excess = d.mean(axis=0)
    return SPAResult(
        pvalue_lower=float(p["lower"]),
        pvalue_consistent=float(p["consistent"]),
        pvalue_upper=float(p["upper"]),
        reality_check_pvalue=float(rc_p["upper"]),
        studentized=bool(studentize),
        block_size=b,
        reps=n_reps,
        mean_excess=mean_excess,
        best_index=int(np.argmax(mean_excess)),
    )


# ---------------------------------------------------------------------------
# Stationary-bootstrap confidence interval for the Sharpe ratio
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SharpeInterval:
    """A bootstrap confidence interval for the Sharpe ratio (annualized if asked)."""

    estimate: float
    lower: float
    upper: float
    level: float
    block_size: int
    reps: int
    periods_per_year: float | None


def sharpe_confidence_interval(
    returns: Any,
    level: float = 0.95,
    reps: int = 1000,
    block_size: float | None = None,
    seed: int | np.random.Generator | None = None,
    periods_per_year: float | None = None,
    *,
    method: Literal["percentile", "basic", "norm", "bc", "bca"] = "percentile",
) -> SharpeInterval:
    """Two-sided confidence interval for the Sharpe ratio by the stationary bootstrap.

    Resamples blocks of geometric length with mean ``block_size`` (D. N. Politis and
    J. P. Romano (1994), "The Stationary Bootstrap", *JASA* 89(428), 1303–1313),
    which keeps serial dependence that an IID bootstrap would destroy, via
    ``arch.bootstrap.StationaryBootstrap.conf_int``. ``block_size=None`` uses the
    Politis–White (2004) estimate (``arch.bootstrap.optimal_block_length``).

    The statistic is the per-period Sharpe ``mean / std(ddof=1)``; with
    ``periods_per_year`` the estimate and bounds are multiplied by
    ``sqrt(periods_per_year)``. ``method`` is passed to ``arch`` (percentile by
    default).
    """
    r = _as_returns_1d(returns, min_len=3)
    lvl = _check_prob("level", level)
    n_reps = int(reps)
    if n_reps < 2 or n_reps != reps:
        raise ValueError(f"reps must be an integer >= 2; got {reps!r}")
    factor = 1.0
    if periods_per_year is not None:
        ppy = _finite("periods_per_year", periods_per_year)
        if ppy <= 0:
            raise ValueError(f"periods_per_year must be positive; got {ppy!r}")
        factor = math.sqrt(ppy)
    estimate = float(_sharpe_columns(r[:, None])[0])
    if math.isnan(estimate):
        raise ValueError("returns are constant: the Sharpe ratio is undefined")
    b = _resolve_block_size(block_size, r)

    def _stat(x: FloatArray) -> FloatArray:
        sd = x.std(ddof=1)
        return np.array([x.mean() / sd if sd > 0 else 0.0])

    bs = StationaryBootstrap(b, r, seed=seed)
    ci = bs.conf_int(_stat, reps=n_reps, method=method, size=lvl, tail="two")
    return SharpeInterval(
        estimate=estimate * factor,
        lower=float(ci[0, 0]) * factor,
        upper=float(ci[1, 0]) * factor,
        level=lvl,
        block_size=b,
        reps=n_reps,
        periods_per_year=periods_per_year,
    )
