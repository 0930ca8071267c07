"""relative_metrics: beta, alpha and their t against statsmodels OLS; IR, tracking
error and capture ratios against hand calculations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st

from alphaloop.engines.metrics import (
    BENCHMARK_METRICS,
    RELATIVE_METRICS,
    excess_returns,
    relative_metrics,
    return_metrics,
)


def _series(seed: int, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bench = rng.normal(0.0004, 0.011, n)
    return 0.5 * bench + rng.normal(0.0, 0.004, n), bench


def test_half_the_benchmark_plus_noise_has_beta_half_and_no_alpha() -> None:
    strat, bench = _series(1)
    m = relative_metrics(strat, bench, 252)
    assert m["beta"] == pytest.approx(0.5, abs=0.03)
    # no alpha was planted: its t-statistic is not significant
    assert abs(m["alpha_t"]) < 2.0


def test_beta_alpha_and_t_match_statsmodels_ols() -> None:
    strat, bench = _series(2)
    strat = strat + 0.0003  # a planted alpha of 3 bp a bar
    fit = sm.OLS(strat, sm.add_constant(bench)).fit()
    m = relative_metrics(strat, bench, 252)
    assert m["beta"] == pytest.approx(fit.params[1], rel=1e-10)
    assert m["alpha_ann"] == pytest.approx(fit.params[0] * 252, rel=1e-10)
    assert m["alpha_t"] == pytest.approx(fit.tvalues[0], rel=1e-9)
    assert m["beta_t"] == pytest.approx(fit.tvalues[1], rel=1e-9)
    assert m["alpha_t"] > 2.0  # 3 bp a bar over 1500 bars with 0.4 % noise is visible


def test_rows_match_single_series() -> None:
    a, bench = _series(3)
    b = -0.2 * bench + 0.001
    both = relative_metrics(np.vstack([a, b]), bench, 252)
    for k, row in enumerate((a, b)):
        one = relative_metrics(row, bench, 252)
        for name in (*RELATIVE_METRICS, *BENCHMARK_METRICS):
            x, y = float(np.asarray(both[name])[k]), float(one[name])
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-12)


def test_information_ratio_tracking_error_and_capture_by_hand() -> None:
    r = np.array([0.02, -0.01, 0.03, 0.00, -0.02])
    b = np.array([0.01, -0.02, 0.01, 0.01, -0.01])
    m = relative_metrics(r, b, 4)
    # e = r - b = [0.01, 0.01, 0.02, -0.01, -0.01]; mean 0.004
    # sample std: deviations .006 .006 .016 -.014 -.014 → sum sq 7.2e-4 / 4 = 1.8e-4
    sd = math.sqrt(1.8e-4)
    assert m["active_return"] == pytest.approx(0.004 * 4)
    assert m["tracking_error"] == pytest.approx(sd * 2)  # sqrt(ppy) = 2
    assert m["information_ratio"] == pytest.approx(0.004 / sd * 2)
    # up bars of b: 0.01, 0.01, 0.01 → r 0.02, 0.03, 0.00: mean .05/3 over mean .01
    assert m["up_capture"] == pytest.approx((0.05 / 3) / 0.01)
    # down bars: -0.02, -0.01 → r -0.01, -0.02: mean -0.015 over -0.015
    assert m["down_capture"] == pytest.approx(1.0)
    assert m["benchmark_sharpe"] == return_metrics(b, 4)["sharpe"]


def test_cash_benchmark_leaves_sharpe_and_no_beta() -> None:
    r, _ = _series(4)
    m = relative_metrics(r, np.zeros_like(r), 252)
    assert m["information_ratio"] == pytest.approx(return_metrics(r, 252)["sharpe"], rel=1e-12)
    assert math.isnan(m["beta"]) and math.isnan(m["alpha_t"])
    assert math.isnan(m["up_capture"]) and math.isnan(m["down_capture"])


def test_the_benchmark_at_a_stated_net_exposure() -> None:
    """e = r - x·b, x per row: x = 0 (a dollar-neutral book) is the cash yardstick, x =
    0.5 half the benchmark; beta and alpha still regress on b itself."""
    r = np.array([[0.02, -0.01, 0.03, 0.00, -0.02]] * 3)
    b = np.array([0.01, -0.02, 0.01, 0.01, -0.01])
    x = np.array([1.0, 0.0, 0.5])
    e = excess_returns(r, b, x)
    np.testing.assert_array_equal(e[0], r[0] - b)
    np.testing.assert_array_equal(e[1], r[1])
    # by hand: r - 0.5 b = [0.015, 0.0, 0.025, -0.005, -0.015]
    np.testing.assert_allclose(e[2], [0.015, 0.0, 0.025, -0.005, -0.015], atol=1e-15)
    m = relative_metrics(r, b, 4, exposure=x)
    assert m["information_ratio"][1] == pytest.approx(return_metrics(r[1], 4)["sharpe"])
    assert m["active_return"][2] == pytest.approx(0.004 * 4)  # mean(e[2]) = 0.02 / 5, x ppy
    assert m["beta"][0] == m["beta"][1] == m["beta"][2]  # the regression ignores x
    with pytest.raises(ValueError, match="one per row"):
        excess_returns(r, b, np.ones(2))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="shape"):
        excess_returns(np.zeros(5), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        relative_metrics(np.zeros(5), np.array([0, 0, np.nan, 0, 0]), 252)


@settings(max_examples=40, deadline=None)
@given(st.floats(-2.0, 2.0), st.floats(-0.001, 0.001), st.integers(0, 10_000))
def test_exact_linear_relation_recovers_beta_and_alpha(beta: float, alpha: float,
                                                       seed: int) -> None:
    """r = alpha + beta * b exactly: OLS returns both (alpha annualized by ppy)."""
    bench = np.random.default_rng(seed).normal(0.0, 0.01, 200)
    m = relative_metrics(alpha + beta * bench, bench, 252)
    assert m["beta"] == pytest.approx(beta, abs=1e-9)
    assert m["alpha_ann"] == pytest.approx(alpha * 252, abs=1e-9)
