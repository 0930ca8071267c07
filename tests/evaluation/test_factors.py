"""Factor evaluation (issue 16, item 2) against scipy, statsmodels and hand calculations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.stats import pearsonr, spearmanr
from typer.testing import CliRunner

from alphaloop.cli import app
from alphaloop.data.bars import Bars
from alphaloop.data.synthetic import PlantedEffect, generate
from alphaloop.evaluation.factors import (
    MIN_NAMES,
    FactorError,
    cross_correlation,
    evaluate_factor,
    factor_columns,
    forward_returns,
    newey_west_t,
)


def test_cross_correlation_is_pearson_and_spearman_per_row() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12))
    y = 0.3 * x + rng.normal(size=(40, 12))
    x[0, :3] = np.nan  # gaps
    y[1, 5] = np.nan
    x[2] = np.round(x[2])  # ties: average ranks
    x[3, : 12 - MIN_NAMES + 1] = np.nan  # too few names: no IC
    ic = cross_correlation(x, y, ranks=False)
    ric = cross_correlation(x, y, ranks=True)
    for t in range(40):
        ok = np.isfinite(x[t]) & np.isfinite(y[t])
        if ok.sum() < MIN_NAMES:
            assert math.isnan(ic[t]) and math.isnan(ric[t])
            continue
        assert ic[t] == pytest.approx(pearsonr(x[t, ok], y[t, ok])[0], abs=1e-12)
        assert ric[t] == pytest.approx(spearmanr(x[t, ok], y[t, ok])[0], abs=1e-12)


def test_newey_west_t_matches_statsmodels_hac() -> None:
    rng = np.random.default_rng(1)
    e = rng.normal(size=600)
    series = 0.02 + np.convolve(e, np.ones(5) / 5, mode="same")  # autocorrelated
    for lags in (1, 5, 12):
        fit = sm.OLS(series, np.ones_like(series)).fit(
            cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": False})
        assert newey_west_t(series, lags) == pytest.approx(float(fit.tvalues[0]), rel=1e-9)


def _panel(opens: np.ndarray) -> Bars:
    t, n = opens.shape
    index = pd.date_range("2020-01-01", periods=t, freq="D", tz="UTC")
    return Bars(index=index, symbols=[f"S{i}" for i in range(n)], open=opens,
                high=opens * 1.01, low=opens * 0.99, close=opens, volume=np.ones_like(opens))


def test_forward_returns_start_at_the_next_open_and_ignore_the_rest() -> None:
    opens = np.array([[10.0], [11.0], [12.1], [13.31], [14.0]])
    fwd = forward_returns(_panel(opens), 2)
    # the decision at bar 0 fills at bar 1's open (11) and is marked at bar 3's (13.31)
    assert fwd[0, 0] == pytest.approx(13.31 / 11.0 - 1)
    assert fwd[1, 0] == pytest.approx(14.0 / 12.1 - 1)
    assert np.isnan(fwd[2:, 0]).all()  # beyond the data
    changed = opens.copy()
    changed[4] = 99.0  # a later bar changes no forward return that ends before it
    assert forward_returns(_panel(changed), 2)[0, 0] == fwd[0, 0]
    with pytest.raises(FactorError, match="horizon"):
        forward_returns(_panel(opens), 0)
    for horizon in (4, 5, 9):  # no forward return fits in 5 bars: all NaN, no crash
        assert np.isnan(forward_returns(_panel(opens), horizon)).all()


@pytest.mark.parametrize("horizon", [5, 6, 50])
def test_a_horizon_as_long_as_the_data_is_too_few_bars(horizon: int) -> None:
    """--horizon at or past the panel's length is refused as EVAL_TOO_FEW_BARS (a
    black-box report found a broadcasting ValueError at exactly the length)."""
    opens = np.linspace(10.0, 12.0, 6 * 4).reshape(6, 4)
    with pytest.raises(FactorError) as err:
        evaluate_factor("roc(close, 1)", _panel(opens), horizon=horizon)
    assert err.value.code == "EVAL_TOO_FEW_BARS"


def test_quantile_returns_match_a_pandas_hand_calculation() -> None:
    rng = np.random.default_rng(2)
    t, n, q = 30, 10, 5
    opens = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (t, n)), axis=0))
    bars = _panel(opens)
    rep = evaluate_factor("open", bars, horizon=1, quantiles=q)  # score: today's open
    score = pd.DataFrame(opens)
    fwd = pd.DataFrame(forward_returns(bars, 1))
    groups = []
    for row in range(t):
        ok = fwd.iloc[row].notna()
        if ok.sum() < q:
            continue
        ranks = score.iloc[row][ok].rank(method="first")
        bucket = pd.qcut(ranks, q, labels=False)  # 10 names: two per quantile
        groups.append(fwd.iloc[row][ok].groupby(bucket).mean())
    expected = pd.concat(groups, axis=1).mean(axis=1)
    assert rep.quantile_returns == pytest.approx(expected.tolist(), abs=1e-15)
    assert rep.spread == pytest.approx(expected.iloc[-1] - expected.iloc[0], abs=1e-15)


def test_a_planted_effect_is_significant_and_noise_is_not() -> None:
    effect = PlantedEffect(symbols=tuple(range(20)), strength=0.05, lookback=20)
    planted = generate(20, 2520, seed=31, mu=0.0, planted=effect)
    noise = generate(20, 2520, seed=31, mu=0.0)
    expr = "close / sma(close, 20)"  # where the planted drift comes from
    hit, none = evaluate_factor(expr, planted), evaluate_factor(expr, noise)
    assert hit.rank_ic_mean is not None and 0.02 < hit.rank_ic_mean < 0.08
    assert hit.rank_ic_t is not None and hit.rank_ic_t > 3
    assert none.rank_ic_t is not None and abs(none.rank_ic_t) < 2
    assert hit.spread is not None and hit.spread > 0


def test_the_cli_prints_json_writes_the_page_and_refuses_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    page = tmp_path / "factor.html"
    res = runner.invoke(app, ["factor", "roc(close, 20)", "--data", "synth_100",
                              "--out", str(page)])
    assert res.exit_code == 0, res.stderr
    text = page.read_text()
    assert all(f'id="figure-{f}"' in text for f in ("ic", "decay", "quantiles"))
    assert "roc(close, 20)" in text and "rank IC" in res.stdout
    res = runner.invoke(app, ["factor", "roc(close, 20)", "--data", "synth_100",
                              "--horizon", "5", "--json"])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert {"ic_mean", "rank_ic_mean", "rank_ic_t", "icir", "quantile_returns",
            "spread"} <= set(data)
    assert len(data["quantile_returns"]) == 5 and data["horizon"] == 5
    bad = runner.invoke(app, ["factor", "close > 1", "--data", "synth_100"])
    assert bad.exit_code == 2 and "must be a numeric expression" in bad.stderr


def test_factor_columns_are_the_books_factor_reports_at_their_horizon() -> None:
    """Each ranked book carries its score's rank IC at its rebalance horizon, as
    ``evaluate_factor`` reports it; a sleeve strategy has none (NaN)."""
    from alphaloop.strategy.spec import StrategySpec

    bars = generate(12, 400, seed=5)
    book = StrategySpec.from_dict({"portfolio": {
        "method": "cross_sectional", "score": "roc(close, 10)", "long": 3,
        "rebalance_every": 5}})
    sleeve = StrategySpec(entry="close > sma(close, 5)", exit="close < sma(close, 5)")
    cols = factor_columns([book, sleeve, book], bars)
    rep = evaluate_factor("roc(close, 10)", bars, horizon=5)
    assert cols["rank_ic_t"].iloc[0] == rep.rank_ic_t
    assert cols["rank_ic_mean"].iloc[2] == rep.rank_ic_mean
    assert math.isnan(cols["rank_ic_t"].iloc[1]) and math.isnan(cols["rank_ic_mean"].iloc[1])
    short = generate(MIN_NAMES - 1, 400, seed=5)  # too few names: no evidence, t = 0
    assert factor_columns([book], short)["rank_ic_t"].iloc[0] == 0.0
