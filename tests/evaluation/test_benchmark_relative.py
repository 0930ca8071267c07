"""Benchmark-relative evaluation: beta is not alpha.

The three situations of issue 15's acceptance: a long-only rule riding a rising market
(passes against cash, fails against its benchmark, with a reason naming the benchmark
and both Sharpe ratios), a planted effect on a zero-drift panel (still passes) and pure
noise (nothing passes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphaloop.data import load_bars
from alphaloop.data.bars import Bars
from alphaloop.data.synthetic import PlantedEffect, generate
from alphaloop.engines import CostModel
from alphaloop.engines.benchmark import BenchmarkError, equal_weight_returns
from alphaloop.engines.metrics import relative_metrics
from alphaloop.engines.sweep import run_sweep
from alphaloop.evaluation.benchmark import resolve_benchmark
from alphaloop.evaluation.robustness import evaluate_candidates
from alphaloop.evaluation.scoring import load_policy
from alphaloop.strategy.spec import StrategySpec

COSTS = CostModel(fees_bps=1, slippage_bps=0)
TREND = StrategySpec(family="planted", name="trend20", entry="close > sma(close, 20)",
                     exit="close < sma(close, 20)", direction="long")


def _with(results: pd.DataFrame, spec: StrategySpec) -> pd.DataFrame:
    """The sweep's rows plus one row for ``spec`` (same data and costs)."""
    row = results.iloc[[0]].copy()
    row["strategy_id"], row["spec"] = spec.strategy_id, spec.model_dump_json()
    row["family"], row["params"] = spec.family, "{}"
    return pd.concat([row, results], ignore_index=True)


def _evaluate(bars: Bars, extra: StrategySpec | None = None, policy: str = "default",
              benchmark: str | None = None):  # type: ignore[no-untyped-def]
    results = run_sweep("sma_cross", bars, n=20, sampler="sobol", seed=1, costs=COSTS)
    if extra is not None:
        results = _with(results, extra)
    return evaluate_candidates(results, bars, load_policy(policy), top=2, detail=False,
                               spa_reps=100, benchmark=benchmark)


def test_long_only_rule_on_a_rising_market_is_beta_not_alpha() -> None:
    # no effect anywhere, a strong common drift: riding it looks like skill against cash
    bars = generate(8, 2520, seed=3, mu=0.3, correlation=0.6, name="rising")
    ride = StrategySpec(family="ride", name="ride", entry="close > sma(close, 200)",
                        exit="close < sma(close, 200)", direction="long")
    old = _evaluate(bars, ride, policy="score-v1")
    row = old.frame.set_index("family").loc["ride"]
    assert row["passed"]  # score-v1 measures against cash: it passes every gate
    assert row["excess_dsr"] < 0.95  # (its excess is reported, not gated)
    new = _evaluate(bars, ride)
    row = new.frame.set_index("family").loc["ride"]
    assert not row["passed"] and "min_excess_dsr" in row["failed_gates"]
    reason = next(r for r in row["reasons"] if r.startswith("excess_dsr"))
    assert "against benchmark equal-weight buy-and-hold of rising (8 symbols)" in reason
    assert f"(Sharpe {row['sharpe']:.2f} vs the benchmark's {row['benchmark_sharpe']:.2f})" \
        in reason
    assert 0.6 < row["beta"] < 1.1  # it is mostly the market
    assert not new.frame["passed"].any()


def test_planted_effect_on_zero_drift_panel_still_passes() -> None:
    planted = PlantedEffect(symbols=(0, 1, 2, 3), strength=0.08, lookback=20)
    bars = generate(8, 2520, seed=5, mu=0.0, planted=planted, name="planted0")
    ev = _evaluate(bars, TREND)
    row = ev.frame.set_index("family").loc["planted"]
    assert row["passed"], row["reasons"]
    assert row["excess_dsr"] >= 0.95 and row["information_ratio"] >= 0.3
    assert ev.frame.loc[ev.frame["passed"], "family"].tolist() == ["planted"]
    assert ev.extra["n_beat_benchmark"] >= 1


def test_pure_noise_nothing_passes() -> None:
    bars = generate(8, 2520, seed=5, mu=0.0, name="noise0")
    ev = _evaluate(bars, TREND)
    assert not ev.frame["passed"].any()
    assert (ev.frame["excess_dsr"] < 0.95).all()


def test_report_rows_carry_the_relative_fields_on_both_windows() -> None:
    bars = load_bars("us_indices")
    results = run_sweep("sma_cross", bars, n=12, sampler="sobol", seed=0, costs=COSTS)
    ev = evaluate_candidates(results, bars, load_policy("default"), top=2, detail=False,
                             spa_reps=50, holdout=0.3)
    split = bars.n_bars - round(0.3 * bars.n_bars)
    bench = equal_weight_returns(bars, COSTS)
    for rep in ev.reports:
        assert rep.benchmark == "equal_weight" and rep.excess_dsr is not None
        row = ev.frame.set_index("strategy_id").loc[rep.strategy_id]
        # one number, one source: the report shows the frame's (the evaluation's) value
        assert rep.beta == row["beta"] and rep.information_ratio == row["information_ratio"]
        assert rep.holdout_relative is not None
        assert rep.holdout_relative["benchmark_sharpe"] == pytest.approx(
            relative_metrics(bench[split:], bench[split:], 252)["benchmark_sharpe"])
        assert any(w.startswith("DQ_SURVIVORSHIP_UNKNOWN") for w in rep.data_warnings)
    assert ev.extra["benchmark_metrics"]["sharpe"] == pytest.approx(
        relative_metrics(bench[:split], bench[:split], 252)["benchmark_sharpe"])


def test_cash_benchmark_reduces_to_the_plain_statistics() -> None:
    bars = generate(4, 800, seed=2, name="c")
    results = run_sweep("sma_cross", bars, n=8, sampler="sobol", seed=0, costs=COSTS)
    ev = evaluate_candidates(results, bars, load_policy("default"), top=0, detail=False,
                             spa_reps=50, benchmark="cash")
    np.testing.assert_allclose(ev.frame["excess_dsr"], ev.frame["dsr"], atol=1e-12)
    np.testing.assert_allclose(ev.frame["information_ratio"], ev.frame["sharpe"], rtol=1e-12)
    assert (ev.frame["benchmark"] == "cash (zero return)").all()


def test_file_benchmark_is_close_to_close_on_the_panel_dates(tmp_path: Path) -> None:
    bars = load_bars("us_indices")
    spx = bars.select(["SPX"]).to_long()
    path = tmp_path / "spx.csv"
    spx.to_csv(path, index=False)
    b = resolve_benchmark(str(path), bars)
    close = bars.close[:, bars.symbols.index("SPX")]
    assert b.returns[0] == 0.0
    np.testing.assert_allclose(b.returns[1:], close[1:] / close[:-1] - 1.0, rtol=1e-12)
    spx.iloc[:-3].to_csv(path, index=False)  # three last dates missing
    with pytest.raises(BenchmarkError, match="no close on 2018-12-27"):
        resolve_benchmark(str(path), bars)
    with pytest.raises(BenchmarkError, match="unknown benchmark 'QQQ'"):
        resolve_benchmark("QQQ", bars)


def test_policy_names_the_default_benchmark(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "src/alphaloop/evaluation/policies"
    body = (src / "score-v2.yaml").read_text().replace("policy_version: score-v2",
                                                        "policy_version: t-spx\nbenchmark: SPX")
    (tmp_path / "p.yaml").write_text(body)
    pol = load_policy(str(tmp_path / "p.yaml"))
    assert pol.benchmark == "SPX" and pol.content_hash != load_policy("score-v2").content_hash
    bars = load_bars("us_indices")
    results = run_sweep("sma_cross", bars, n=4, sampler="sobol", seed=0, costs=COSTS)
    ev = evaluate_candidates(results, bars, pol, top=1, detail=False, spa_reps=20)
    assert ev.extra["benchmark"] == "SPX" and ev.reports[0].benchmark == "SPX"
    # a name given by the caller wins over the policy's
    ev = evaluate_candidates(results, bars, pol, top=1, detail=False, spa_reps=20,
                             benchmark="cash")
    assert ev.extra["benchmark"] == "cash"


def test_relative_columns_deflate_the_excess_by_all_trials() -> None:
    from alphaloop.evaluation.robustness import RELATIVE_COLUMNS, relative_columns
    from alphaloop.evaluation.statistics import deflated_sharpe_ratio, return_moments

    rng = np.random.default_rng(7)
    bench = rng.normal(0.0003, 0.01, 1000)
    rets = 0.8 * bench + rng.normal(0.0002, 0.004, (5, 1000))
    cols = relative_columns(rets, bench, "b", 40, 252)
    assert list(cols.columns) == list(RELATIVE_COLUMNS)
    moments = [return_moments(r - bench) for r in rets]
    var = float(np.var([m.sr for m in moments], ddof=1))  # sample variance, as documented
    for k, m in enumerate(moments):
        expected = deflated_sharpe_ratio(m.sr, m.n_obs, m.skew, m.kurtosis, 40, var)
        assert cols["excess_dsr"][k] == pytest.approx(expected, rel=1e-12)
