"""Tests for alphaloop.engines.metrics.

Expected values come from hand calculations written out below, or from an
independent peer computation (pandas / the math module) written in the test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from alphaloop.engines.metrics import (
    CORE_METRICS,
    core_metrics,
    return_metrics,
    to_jsonable,
    trade_metrics,
)

# ---------------------------------------------------------------------------
# Hand-calculated example
# ---------------------------------------------------------------------------
# r = [0.10, -0.05, 0.02, -0.08, 0.04], T = 5, periods_per_year = 4 (quarterly)
#
# Equity (starts at 1.0):
#   1.0 * 1.10 = 1.10
#   1.10 * 0.95 = 1.045
#   1.045 * 1.02 = 1.0659
#   1.0659 * 0.92 = 0.980628
#   0.980628 * 1.04 = 1.01985312
# total_return = 1.01985312 - 1 = 0.01985312
#
# years = 5 / 4 = 1.25 ; cagr = 1.01985312 ** (1 / 1.25) - 1 = 1.01985312 ** 0.8 - 1
#   ln(1.01985312) = 0.0196585...; * 0.8 = 0.0157268...; exp(.) - 1 = 0.0158512
#
# mean = (0.10 - 0.05 + 0.02 - 0.08 + 0.04) / 5 = 0.03 / 5 = 0.006
# deviations from mean: 0.094, -0.056, 0.014, -0.086, 0.034
# squares: 0.008836, 0.003136, 0.000196, 0.007396, 0.001156 ; sum = 0.02072
# sample variance = 0.02072 / 4 = 0.00518 ; std = sqrt(0.00518) = 0.0719722169
# ann_volatility = 0.0719722169 * sqrt(4) = 0.1439444337
# sharpe = 0.006 / 0.0719722169 * 2 = 0.1667310043
#
# downside: min(r, 0) = [0, -0.05, 0, -0.08, 0]; squares 0.0025 + 0.0064 = 0.0089
#   mean over all 5 periods = 0.00178 ; downside deviation = sqrt(0.00178) = 0.0421900462
# sortino = 0.006 / 0.0421900462 * 2 = 0.2844272779
#
# drawdown path (running max includes the initial 1.0):
#   t1: peak 1.10, 1.10/1.10 - 1 = 0
#   t2: peak 1.10, 1.045/1.10 - 1 = -0.05
#   t3: peak 1.10, 1.0659/1.10 - 1 = -0.031
#   t4: peak 1.10, 0.980628/1.10 - 1 = -0.10852
#   t5: peak 1.10, 1.01985312/1.10 - 1 = -0.0728608
# max_drawdown = -0.10852
# calmar = 0.0158512120 / 0.10852 = 0.1460671949
HAND_R = [0.10, -0.05, 0.02, -0.08, 0.04]
HAND_PPY = 4.0
HAND_EXPECTED = {
    "total_return": 0.01985312,
    "cagr": 0.0158512120,
    "ann_volatility": 0.1439444337,
    "sharpe": 0.1667310043,
    "sortino": 0.2844272779,
    "max_drawdown": -0.10852,
    "calmar": 0.1460671949,
}


def test_hand_calculated_return_metrics() -> None:
    m = return_metrics(np.array(HAND_R), HAND_PPY)
    assert set(m) == set(HAND_EXPECTED)
    for key, expected in HAND_EXPECTED.items():
        assert isinstance(m[key], float), key
        assert m[key] == pytest.approx(expected, rel=1e-9, abs=1e-12), key


def test_cagr_equals_total_return_for_exactly_one_year() -> None:
    # ppy = 5 with 5 returns -> years = 1, so cagr = total_return = 0.01985312.
    m = return_metrics(np.array(HAND_R), 5.0)
    assert m["cagr"] == pytest.approx(0.01985312, rel=1e-12)
    # ppy = 1.25 -> years = 4 -> cagr = 1.01985312 ** 0.25 - 1
    #   ln(1.01985312) / 4 = 0.0049146...; exp(.) - 1 = 0.0049267510
    m4 = return_metrics(np.array(HAND_R), 1.25)
    assert m4["cagr"] == pytest.approx(0.0049267510, rel=1e-8)


def test_initial_equity_counts_as_peak() -> None:
    # r = [-0.10, 0.05]: equity 0.9, 0.945. Running max includes the starting 1.0,
    # so drawdowns are 0.9/1 - 1 = -0.10 and 0.945/1 - 1 = -0.055 -> max_dd = -0.10.
    # (Were the initial 1.0 ignored, the first bar would be the peak and max_dd 0.)
    # total_return = 0.945 - 1 = -0.055; with ppy = 2, years = 1 -> cagr = -0.055
    # calmar = -0.055 / 0.10 = -0.55
    m = return_metrics(np.array([-0.10, 0.05]), 2.0)
    assert m["max_drawdown"] == pytest.approx(-0.10, rel=1e-12)
    assert m["total_return"] == pytest.approx(-0.055, rel=1e-12)
    assert m["cagr"] == pytest.approx(-0.055, rel=1e-12)
    assert m["calmar"] == pytest.approx(-0.55, rel=1e-12)


def test_recovery_then_new_drawdown() -> None:
    # r = [0.5, -0.5, 1.0, -0.25]
    # equity: 1.5, 0.75, 1.5, 1.125 ; running max: 1.5, 1.5, 1.5, 1.5
    # drawdowns: 0, -0.5, 0, -0.25 -> max_dd = -0.5
    # total_return = 1.125 - 1 = 0.125
    m = return_metrics(np.array([0.5, -0.5, 1.0, -0.25]), 4.0)
    assert m["max_drawdown"] == pytest.approx(-0.5, rel=1e-12)
    assert m["total_return"] == pytest.approx(0.125, rel=1e-12)


def test_never_below_peak_gives_zero_drawdown_and_nan_calmar() -> None:
    # r = [0.01, 0.0, 0.02]: equity 1.01, 1.01, 1.0302 — never below a peak.
    m = return_metrics(np.array([0.01, 0.0, 0.02]), 252.0)
    assert m["max_drawdown"] == 0.0
    assert math.isnan(m["calmar"])
    # no negative return -> downside deviation 0 -> sortino NaN
    assert math.isnan(m["sortino"])


def test_total_loss_and_beyond() -> None:
    # r = [0.1, -1.0, 0.5]: equity 1.1, 0.0, 0.0 -> total_return = -1, cagr = -1,
    # drawdown 0/1.1 - 1 = -1.
    m = return_metrics(np.array([0.1, -1.0, 0.5]), 3.0)
    assert m["total_return"] == pytest.approx(-1.0)
    assert m["cagr"] == -1.0
    assert m["max_drawdown"] == -1.0
    # r = [-1.5, 0.1]: equity -0.5, -0.55 -> 1 + total_return = -0.55 <= 0 -> cagr -1;
    # drawdown is floored at -1.
    m2 = return_metrics(np.array([-1.5, 0.1]), 2.0)
    assert m2["total_return"] == pytest.approx(-1.55)
    assert m2["cagr"] == -1.0
    assert m2["max_drawdown"] == -1.0


def test_constant_returns_have_zero_vol_and_nan_sharpe() -> None:
    # 0.001 repeated: the sample std is mathematically 0 (floating point may give
    # a few ulps); ann_volatility is reported as 0 and sharpe as NaN.
    for value in (0.001, 0.1, -0.003, 1e-9, 0.0):
        m = return_metrics(np.full(37, value), 252.0)
        assert m["ann_volatility"] == 0.0, value
        assert math.isnan(m["sharpe"]), value


def test_a_flat_equity_with_a_rounding_residue_has_no_sharpe() -> None:
    """Zero trades, one return of -1.1e-16 (an ulp of the equity 1.0, left by rounding):
    the sample Sharpe of that is -1/sqrt(n) (a black-box run found -1.02 annualized),
    which says nothing; the std is noise, so volatility is 0 and the Sharpe NaN. A real
    series of small returns (1e-9 a period) keeps its Sharpe."""
    r = np.zeros(240)
    r[100] = -1.1e-16
    m = return_metrics(r, 252.0)
    assert m["ann_volatility"] == 0.0 and math.isnan(m["sharpe"])
    small = np.random.default_rng(3).normal(0.0, 1e-9, 240)
    assert math.isfinite(return_metrics(small, 252.0)["sharpe"])


def test_single_period() -> None:
    # T = 1: the sample std (ddof=1) is undefined -> ann_volatility and sharpe NaN.
    # r = [-0.02], ppy = 4: downside deviation = sqrt(0.02^2 / 1) = 0.02,
    # sortino = -0.02 / 0.02 * 2 = -2; years = 0.25, cagr = 0.98 ** 4 - 1 = -0.07763184
    m = return_metrics(np.array([-0.02]), 4.0)
    assert math.isnan(m["ann_volatility"])
    assert math.isnan(m["sharpe"])
    assert m["sortino"] == pytest.approx(-2.0, rel=1e-12)
    assert m["cagr"] == pytest.approx(-0.07763184, rel=1e-9)
    assert m["max_drawdown"] == pytest.approx(-0.02, rel=1e-12)


# ---------------------------------------------------------------------------
# Independent peer computation (pandas / math) on a longer random series
# ---------------------------------------------------------------------------


def _peer_metrics(r: np.ndarray, ppy: float) -> dict[str, float]:
    s = pd.Series(r)
    equity = (1.0 + s).cumprod()
    # prepend the initial 1.0 to the running max
    running_max = pd.concat([pd.Series([1.0]), equity], ignore_index=True).cummax().iloc[1:]
    running_max.index = equity.index
    max_dd = float((equity / running_max - 1.0).min())
    total = float(equity.iloc[-1] - 1.0)
    years = len(r) / ppy
    cagr = (1.0 + total) ** (1.0 / years) - 1.0
    std = float(s.std())  # pandas' default is ddof=1
    downside = math.sqrt(math.fsum(min(x, 0.0) ** 2 for x in r) / len(r))
    mean = math.fsum(r) / len(r)
    return {
        "total_return": total,
        "cagr": cagr,
        "ann_volatility": std * math.sqrt(ppy),
        "sharpe": mean / std * math.sqrt(ppy),
        "sortino": mean / downside * math.sqrt(ppy),
        "max_drawdown": max_dd,
        "calmar": cagr / abs(max_dd),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pandas_peer(seed: int) -> None:
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0004, 0.012, size=2000)
    ppy = 252.0
    ours = return_metrics(r, ppy)
    peer = _peer_metrics(r, ppy)
    for key, expected in peer.items():
        assert ours[key] == pytest.approx(expected, rel=1e-9, abs=1e-12), key


# ---------------------------------------------------------------------------
# Vectorized (K, T) path
# ---------------------------------------------------------------------------


def test_vectorized_equals_per_row() -> None:
    rng = np.random.default_rng(42)
    r = rng.normal(0.0, 0.02, size=(7, 300))
    r[3] = 0.001  # constant row: zero vol, NaN sharpe
    r[4] = np.abs(r[4])  # no drawdown, NaN sortino and calmar
    r[5, 10] = -1.0  # total loss
    batch = return_metrics(r, 252.0)
    for key, values in batch.items():
        assert isinstance(values, np.ndarray), key
        assert values.shape == (7,), key
        rows = np.array([return_metrics(r[i], 252.0)[key] for i in range(7)])
        np.testing.assert_allclose(values, rows, rtol=1e-12, atol=0.0, equal_nan=True)


def test_core_metrics_scalar() -> None:
    m = core_metrics(
        np.array(HAND_R),
        HAND_PPY,
        n_trades=8,
        n_wins=5,
        gross_profit=300.0,
        gross_loss=120.0,
        turnover=3.5,
        exposure=0.8,
        effective_history_years=1.25,
    )
    assert tuple(m) == CORE_METRICS
    assert m["n_trades"] == 8 and isinstance(m["n_trades"], int)
    # win_rate = 5 / 8 = 0.625 ; profit_factor = 300 / 120 = 2.5
    assert m["win_rate"] == 0.625
    assert m["profit_factor"] == 2.5
    assert m["turnover"] == 3.5
    assert m["exposure"] == 0.8
    assert m["effective_history_years"] == 1.25
    for key, expected in HAND_EXPECTED.items():
        assert m[key] == pytest.approx(expected, rel=1e-9), key


def test_core_metrics_vectorized_equals_per_row() -> None:
    rng = np.random.default_rng(7)
    r = rng.normal(0.0005, 0.01, size=(4, 100))
    n_trades = np.array([10, 0, 3, 5])
    n_wins = np.array([6, 0, 3, 0])
    gross_profit = np.array([50.0, 0.0, 10.0, 0.0])
    gross_loss = np.array([20.0, 0.0, 0.0, 7.0])
    turnover = np.array([1.0, 2.0, 3.0, 4.0])
    batch = core_metrics(
        r,
        252.0,
        n_trades=n_trades,
        n_wins=n_wins,
        gross_profit=gross_profit,
        gross_loss=gross_loss,
        turnover=turnover,
        exposure=0.5,  # scalar is broadcast to K
        effective_history_years=100 / 252,
    )
    assert tuple(batch) == CORE_METRICS
    for key in CORE_METRICS:
        assert np.shape(batch[key]) == (4,), key
    for i in range(4):
        row = core_metrics(
            r[i],
            252.0,
            n_trades=int(n_trades[i]),
            n_wins=int(n_wins[i]),
            gross_profit=float(gross_profit[i]),
            gross_loss=float(gross_loss[i]),
            turnover=float(turnover[i]),
            exposure=0.5,
            effective_history_years=100 / 252,
        )
        for key in CORE_METRICS:
            np.testing.assert_allclose(
                np.asarray(batch[key])[i], row[key], rtol=1e-12, equal_nan=True, err_msg=key
            )
    # hand: win_rate = [6/10, NaN, 3/3, 0/5]; profit_factor = [50/20, NaN, inf, 0/7]
    np.testing.assert_array_equal(batch["win_rate"], [0.6, np.nan, 1.0, 0.0])
    np.testing.assert_array_equal(batch["profit_factor"], [2.5, np.nan, np.inf, 0.0])
    assert np.asarray(batch["n_trades"]).dtype.kind == "i"


# ---------------------------------------------------------------------------
# Trade metrics
# ---------------------------------------------------------------------------


def test_trade_metrics_hand_values() -> None:
    # 8 trades, 5 winners -> 0.625 ; profit 300, loss 120 -> 2.5
    m = trade_metrics(8, 5, 300.0, 120.0)
    assert m == {"win_rate": 0.625, "profit_factor": 2.5}
    assert isinstance(m["win_rate"], float)


def test_trade_metrics_edge_cases() -> None:
    none = trade_metrics(0, 0, 0.0, 0.0)
    assert math.isnan(none["win_rate"])
    assert math.isnan(none["profit_factor"])
    only_wins = trade_metrics(3, 3, 12.0, 0.0)
    assert only_wins["win_rate"] == 1.0
    assert only_wins["profit_factor"] == math.inf
    only_losses = trade_metrics(2, 0, 0.0, 4.0)
    assert only_losses["win_rate"] == 0.0
    assert only_losses["profit_factor"] == 0.0


def test_trade_metrics_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="gross_loss must be >= 0"):
        trade_metrics(2, 1, 5.0, -3.0)
    with pytest.raises(ValueError, match="n_wins must not exceed n_trades"):
        trade_metrics(2, 3, 5.0, 3.0)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_nan_returns_raise_with_count() -> None:
    r = np.array([0.01, np.nan, 0.02, np.nan, np.nan])
    with pytest.raises(ValueError, match=r"3 NaN value\(s\)"):
        return_metrics(r, 252.0)
    with pytest.raises(ValueError, match=r"1 NaN value\(s\)"):
        return_metrics(np.array([[0.01, 0.02], [np.nan, 0.0]]), 252.0)


def test_infinite_returns_raise() -> None:
    with pytest.raises(ValueError, match=r"1 infinite value\(s\)"):
        return_metrics(np.array([0.01, np.inf]), 252.0)


@pytest.mark.parametrize("empty", [np.array([]), np.empty((3, 0))])
def test_empty_returns_raise(empty: np.ndarray) -> None:
    with pytest.raises(ValueError, match="returns are empty"):
        return_metrics(empty, 252.0)


def test_bad_shape_and_ppy_raise() -> None:
    with pytest.raises(ValueError, match=r"shape \(T,\) or \(K, T\)"):
        return_metrics(np.zeros((2, 2, 2)), 252.0)
    for ppy in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="periods_per_year"):
            return_metrics(np.array([0.01, 0.02]), ppy)


def test_core_metrics_passthrough_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"turnover must be a scalar or have shape \(2,\)"):
        core_metrics(
            np.zeros((2, 5)),
            252.0,
            n_trades=0,
            n_wins=0,
            gross_profit=0.0,
            gross_loss=0.0,
            turnover=np.array([1.0, 2.0, 3.0]),
            exposure=0.0,
            effective_history_years=0.02,
        )


# ---------------------------------------------------------------------------
# to_jsonable
# ---------------------------------------------------------------------------


def test_to_jsonable() -> None:
    metrics = {
        "a": np.float64(1.5),
        "b": np.int64(3),
        "c": float("nan"),
        "d": np.float64(np.inf),
        "e": np.array([1.0, np.nan, -np.inf]),
        "f": 2,
        "g": np.bool_(True),
    }
    out = to_jsonable(metrics)
    assert out == {
        "a": 1.5,
        "b": 3,
        "c": None,
        "d": None,
        "e": [1.0, None, None],
        "f": 2,
        "g": True,
    }
    assert type(out["a"]) is float and type(out["b"]) is int and type(out["g"]) is bool
    json.dumps(out, allow_nan=False)  # must not raise


def test_to_jsonable_of_core_metrics_is_json() -> None:
    m = core_metrics(
        np.array([0.01, 0.02, 0.03]),
        252.0,
        n_trades=np.int64(0),
        n_wins=0,
        gross_profit=0.0,
        gross_loss=0.0,
        turnover=0.0,
        exposure=0.0,
        effective_history_years=3 / 252,
    )
    out = to_jsonable(m)
    text = json.dumps(out, allow_nan=False)
    back = json.loads(text)
    assert back["max_drawdown"] == 0.0
    assert back["calmar"] is None and back["sortino"] is None and back["win_rate"] is None
    assert back["n_trades"] == 0


# ---------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------

# Returns of magnitude below 1e-12 are excluded (0 is kept): their squares reach the
# subnormal range, where float64 loses relative precision; no real return is that small.
_ret = st.floats(min_value=-0.5, max_value=0.5, allow_nan=False, allow_infinity=False).filter(
    lambda x: x == 0.0 or abs(x) >= 1e-12
)
_series = hnp.arrays(np.float64, st.integers(min_value=1, max_value=60), elements=_ret)
_ppy = st.sampled_from([1.0, 12.0, 52.0, 252.0, 252.0 * 390])


@settings(max_examples=200, deadline=None)
@given(r=_series, c=st.floats(min_value=0.01, max_value=100.0), ppy=_ppy)
def test_sharpe_scale_invariant_and_vol_scales(r: np.ndarray, c: float, ppy: float) -> None:
    assume(len(r) >= 2)
    # keep clear of the "std is zero" tolerance band
    assume(np.std(r, ddof=1) > 1e-9 * max(np.abs(r).max(), 1e-300))
    base = return_metrics(r, ppy)
    scaled = return_metrics(r * c, ppy)
    assert scaled["sharpe"] == pytest.approx(base["sharpe"], rel=1e-7, abs=1e-9)
    assert scaled["ann_volatility"] == pytest.approx(c * base["ann_volatility"], rel=1e-7)


@settings(max_examples=200, deadline=None)
@given(
    r=hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(min_value=-1.0, max_value=1.0)),
    ppy=_ppy,
)
def test_max_drawdown_in_range(r: np.ndarray, ppy: float) -> None:
    mdd = return_metrics(r, ppy)["max_drawdown"]
    assert -1.0 <= mdd <= 0.0


@settings(max_examples=200, deadline=None)
@given(a=_series, b=_series)
def test_total_return_product_rule(a: np.ndarray, b: np.ndarray) -> None:
    # 1 + TR(a ++ b) = (1 + TR(a)) * (1 + TR(b))
    ta = return_metrics(a, 252.0)["total_return"]
    tb = return_metrics(b, 252.0)["total_return"]
    tab = return_metrics(np.concatenate([a, b]), 252.0)["total_return"]
    # total_return is "equity - 1", so it carries an absolute error of a few ulps of 1.0
    assert 1.0 + tab == pytest.approx((1.0 + ta) * (1.0 + tb), rel=1e-9, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    r=hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(min_value=0.0, max_value=0.5)),
    ppy=_ppy,
)
def test_non_negative_returns_have_no_drawdown(r: np.ndarray, ppy: float) -> None:
    m = return_metrics(r, ppy)
    assert m["max_drawdown"] == 0.0
    assert math.isnan(m["calmar"])


@settings(max_examples=100, deadline=None)
@given(r=hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 40)), elements=_ret))
def test_vectorized_property(r: np.ndarray) -> None:
    batch = return_metrics(r, 252.0)
    for key, values in batch.items():
        rows = np.array([return_metrics(row, 252.0)[key] for row in r])
        np.testing.assert_allclose(values, rows, rtol=1e-12, atol=1e-300, equal_nan=True)


def _path_by_numpy(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Total return and max drawdown written with numpy's array operations (the
    definitions of the module docstring, one (K, T) array per step)."""
    with np.errstate(all="ignore"):
        equity = np.cumprod(1.0 + r, axis=1)
        running_max = np.maximum(np.maximum.accumulate(equity, axis=1), 1.0)
        drawdown = (equity / running_max - 1.0).min(axis=1)
        return equity[:, -1] - 1.0, np.minimum(np.maximum(drawdown, -1.0), 0.0)


@settings(max_examples=300, deadline=None)
@given(r=hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 40)),
                    elements=st.one_of(st.floats(-3.0, 3.0),
                                       st.sampled_from([-1.0, 0.0, 1e300, 1e308]))))
def test_equity_path_is_numpys_array_arithmetic_bit_for_bit(r: np.ndarray) -> None:
    # the one-pass kernel does numpy's operations in numpy's order: the same bits,
    # overflowed (NaN) paths included
    total, mdd = return_metrics(r, 252.0)["total_return"], return_metrics(r, 252.0)["max_drawdown"]
    want_total, want_mdd = _path_by_numpy(r)
    np.testing.assert_array_equal(total, want_total)
    np.testing.assert_array_equal(mdd, want_mdd)
