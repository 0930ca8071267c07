"""evaluate_candidates: scores, deflates by the trial count, ranks, reports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from alphaloop.data import load_bars
from alphaloop.data.bars import Bars
from alphaloop.engines import CostModel
from alphaloop.engines.sweep import run_sweep
from alphaloop.evaluation.robustness import EvaluationError, evaluate_candidates
from alphaloop.evaluation.scoring import load_policy
from alphaloop.evaluation.statistics import deflated_sharpe_ratio, return_moments


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    bars = load_bars("sp500")
    results = run_sweep("sma_cross", bars, n=24, sampler="sobol", seed=2,
                        costs=CostModel(fees_bps=5, slippage_bps=0))
    return bars, results, load_policy("default")


def test_ranked_with_dsr_counted_over_all_trials(setup) -> None:  # type: ignore[no-untyped-def]
    bars, results, policy = setup
    ev = evaluate_candidates(results, bars, policy, top=2, spa_reps=100)
    frame = ev.frame
    assert len(frame) == 24 and ev.n_trials == 24
    assert frame["rank"].tolist() == list(range(1, 25))
    # passed candidates first, then by score
    key = list(zip(~frame["passed"], -frame["score_total"], strict=True))
    assert key == sorted(key)
    # deflating by 24 trials can only lower the probability: DSR <= PSR
    ok = frame["dsr"].notna()
    assert (frame.loc[ok, "dsr"] <= frame.loc[ok, "psr"] + 1e-12).all()
    # the DSR of the top row, recomputed independently from its own returns
    top = ev.reports[0]
    from alphaloop.engines import backtest
    from alphaloop.strategy import StrategySpec

    spec = StrategySpec.model_validate_json(frame["spec"].iloc[0])
    rets = backtest(spec, bars, CostModel(fees_bps=5, slippage_bps=0)).returns.to_numpy()
    m = return_moments(rets)
    expected = deflated_sharpe_ratio(m.sr, m.n_obs, m.skew, m.kurtosis, 24,
                                     ev.extra["var_trial_sharpe"])
    assert top.dsr == pytest.approx(expected, rel=1e-9)
    assert 0.0 <= (ev.pbo or 0.0) <= 1.0
    assert top.selection_split is not None and top.cost_stress is not None
    assert top.stability is not None and top.subperiods is not None
    json.loads(top.to_json())  # serializable


def test_windows_are_named_and_dated(setup) -> None:  # type: ignore[no-untyped-def]
    """sharpe_sel / sharpe_holdout / selection_split: no name that means two windows;
    sub-periods carry their first and last bar."""
    bars, results, policy = setup
    whole = json.loads(evaluate_candidates(results, bars, policy, top=1,
                                           spa_reps=50).reports[0].to_json())
    assert "sharpe" not in whole and "out_of_sample" not in whole
    assert whole["sharpe_holdout"] is None and whole["holdout_metrics"] is None
    parts = whole["subperiods"]["parts"]
    # sp500 runs 1999-01-04 .. 2018-12-31: the halves start and end there
    assert parts[0]["window"]["first"].startswith("1999-01-04")
    assert parts[1]["window"]["last"].startswith("2018-12-31")
    assert parts[0]["window"]["last"] < parts[1]["window"]["first"]
    held = json.loads(evaluate_candidates(results, bars, policy, top=1, spa_reps=50,
                                          holdout=0.3).reports[0].to_json())
    assert held["sharpe_holdout"] == held["holdout_metrics"]["sharpe"]
    assert held["sharpe_sel"] is not None
    # the selection window is the first 70 % of 20 years: it ends late in 2012
    last = held["subperiods"]["parts"][1]["window"]["last"]
    assert "2012-06" < last < "2013-06"
    assert held["selection_split"]["out_of_sample"]["last"] == last


def test_more_trials_deflate_more(setup) -> None:  # type: ignore[no-untyped-def]
    bars, results, policy = setup
    few = evaluate_candidates(results, bars, policy, top=0, detail=False, spa_reps=50)
    many = evaluate_candidates(results, bars, policy, top=0, detail=False, spa_reps=50,
                               n_trials=5000)
    a = few.frame.set_index("strategy_id")["dsr"]
    b = many.frame.set_index("strategy_id")["dsr"].reindex(a.index)
    ok = a.notna()
    assert (b[ok] < a[ok]).all()
    assert many.n_trials == 5000


def test_dsr_gate_reason_names_the_value(setup) -> None:  # type: ignore[no-untyped-def]
    bars, results, policy = setup
    ev = evaluate_candidates(results, bars, policy, top=0, detail=False, spa_reps=50)
    failing = ev.frame[ev.frame["dsr"] < policy.gates.min_dsr]
    assert len(failing) > 0
    assert all(any(r.startswith("dsr ") for r in reasons) for reasons in failing["reasons"])


def test_bad_inputs(setup) -> None:  # type: ignore[no-untyped-def]
    bars, results, policy = setup
    with pytest.raises(EvaluationError, match="computed on data"):
        evaluate_candidates(results, load_bars("us_indices"), policy)
    with pytest.raises(EvaluationError, match="spec"):
        evaluate_candidates(results.drop(columns=["spec"]), bars, policy)
    mixed = results.copy()
    mixed.loc[0, "fees_bps"] = 99.0
    with pytest.raises(EvaluationError, match="mix cost settings"):
        evaluate_candidates(mixed, bars, policy)
    with pytest.raises(EvaluationError, match="no candidates"):
        evaluate_candidates(results.iloc[:0], bars, policy)


def test_noise_candidates_do_not_pass_dsr() -> None:
    """A sweep on pure-GBM synthetic data: nothing should survive deflation."""
    bars = load_bars("synth_100").select([f"SYN{i:03d}" for i in range(10)])
    results = run_sweep("sma_cross", bars, n=40, sampler="sobol", seed=0,
                        costs=CostModel(fees_bps=5, slippage_bps=0))
    ev = evaluate_candidates(results, bars, load_policy("default"), top=0, detail=False,
                             spa_reps=100)
    assert (ev.frame["dsr"].fillna(0) < 0.95).all()
    assert not ev.frame["passed"].any()
    assert np.isfinite(ev.pbo)


def test_edge_cases_fail_closed(setup) -> None:  # type: ignore[no-untyped-def]
    bars, results, policy = setup
    # one candidate deflated by many trials: the trials' variance is unknown
    with pytest.raises(EvaluationError, match="cannot deflate by 1000 trials"):
        evaluate_candidates(results.iloc[[0]], bars, policy, n_trials=1000, spa_reps=50)
    # one candidate alone: nothing was selected, DSR is its PSR
    alone = evaluate_candidates(results.iloc[[0]], bars, policy, top=1, detail=False)
    assert alone.frame["dsr"].iloc[0] == pytest.approx(alone.frame["psr"].iloc[0])
    # duplicates count once
    doubled = pd.concat([results, results])
    assert evaluate_candidates(doubled, bars, policy, top=0, detail=False,
                               spa_reps=50).n_trials == len(results)
    bad = results.copy()
    bad.loc[0, "spec"] = "{bad"
    with pytest.raises(EvaluationError, match="results row 0: spec is not valid JSON"):
        evaluate_candidates(bad, bars, policy)
    with pytest.raises(EvaluationError, match="n_trials must be at least 1"):
        evaluate_candidates(results, bars, policy, n_trials=0)


def test_never_trading_candidate_has_no_evidence() -> None:
    """A candidate that never trades has constant returns: DSR 0, so the DSR gate
    fails it instead of skipping it."""
    bars = load_bars("sp500")
    results = run_sweep("sma_cross", bars, n=6, sampler="grid",
                        costs=CostModel(fees_bps=5, slippage_bps=0))
    never = results.iloc[[0]].copy()
    spec = json.loads(never["spec"].iloc[0])
    spec["entry"] = "close < 0"
    never["spec"] = json.dumps(spec)
    never["strategy_id"] = "never"
    mixed = pd.concat([results, never], ignore_index=True)
    ev = evaluate_candidates(mixed, bars, load_policy("default"), top=0, detail=False,
                             spa_reps=50)
    row = ev.frame[ev.frame["strategy_id"] == "never"].iloc[0]
    assert row["dsr"] == 0.0 and not row["passed"]
    assert any(r.startswith("dsr 0 <") for r in row["reasons"])


def _rewrite_holdout(bars: Bars, split: int, seed: int) -> Bars:
    """The same panel with every bar from ``split`` on replaced by random, internally
    consistent OHLCV (a different random walk per symbol)."""
    rng = np.random.default_rng(seed)
    n = bars.n_bars - split
    shape = (n, bars.n_symbols)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.03, shape), axis=0))
    open_ = close * np.exp(rng.normal(0.0, 0.01, shape))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, shape))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, shape))
    fields = {"open": open_, "high": high, "low": low, "close": close,
              "volume": rng.uniform(1e5, 1e7, shape)}
    new = {f: np.concatenate([np.asarray(getattr(bars, f))[:split], v])
           for f, v in fields.items()}
    return Bars(index=bars.index, symbols=bars.symbols, **new, name=bars.name,
                annualization=bars.annualization)


def test_holdout_is_untouched_by_selection(setup) -> None:  # type: ignore[no-untyped-def]
    """With a 30 % holdout the ranking depends only on the first 70 % of the bars:
    rewriting every bar of the holdout with random values leaves the ranking, scores,
    DSR, PBO and SPA unchanged, while the reported holdout metrics follow the holdout's
    own returns."""
    bars, results, policy = setup
    kw = {"top": 3, "detail": False, "spa_reps": 50, "holdout": 0.3}
    ev = evaluate_candidates(results, bars, policy, **kw)
    split = bars.n_bars - round(0.3 * bars.n_bars)
    rewritten = _rewrite_holdout(bars, split, seed=7)
    assert rewritten.data_ref != bars.data_ref
    assert not np.allclose(rewritten.close[split:], bars.close[split:], equal_nan=True)
    np.testing.assert_array_equal(rewritten.close[:split], bars.close[:split])
    other = evaluate_candidates(results.assign(data_ref=rewritten.data_ref), rewritten,
                                policy, **kw)
    assert other.frame["strategy_id"].tolist() == ev.frame["strategy_id"].tolist()
    for col in ("rank", "score_total", "passed", "psr", "dsr", "sharpe"):
        np.testing.assert_array_equal(other.frame[col], ev.frame[col], err_msg=col)
    assert (other.pbo, other.spa_pvalue, other.n_trials) == (ev.pbo, ev.spa_pvalue, ev.n_trials)
    # the holdout metrics did see the rewrite: they come from the holdout's returns
    assert ev.reports[0].holdout_metrics is not None
    assert other.reports[0].holdout_metrics is not None
    assert other.reports[0].holdout_metrics["sharpe"] != ev.reports[0].holdout_metrics["sharpe"]
    # ... namely from a full-data backtest's returns after the split
    from alphaloop.engines import backtest
    from alphaloop.engines.metrics import return_metrics
    from alphaloop.strategy import StrategySpec

    spec = StrategySpec.model_validate_json(ev.frame["spec"].iloc[0])
    full = backtest(spec, bars, CostModel(fees_bps=5, slippage_bps=0)).returns.to_numpy()
    expected = return_metrics(full[split:], bars.periods_per_year)["sharpe"]
    top = ev.reports[0]
    assert top.holdout_fraction == 0.3
    assert top.holdout_metrics["sharpe"] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(EvaluationError, match="holdout must be a fraction"):
        evaluate_candidates(results, bars, policy, holdout=1.5)


def test_a_scored_frame_evaluates_like_its_sweep(setup) -> None:  # type: ignore[no-untyped-def]
    """evaluate_candidates on its own output (rank, score, DSR columns present) gives
    the same ranking as on the sweep's rows: the evaluation's columns are recomputed."""
    bars, results, policy = setup
    first = evaluate_candidates(results, bars, policy, detail=False)
    again = evaluate_candidates(first.frame, bars, policy, detail=False)
    pd.testing.assert_frame_equal(again.frame, first.frame)


@pytest.mark.parametrize(("n_bars", "holdout", "window"), [
    (10, 0.3, "selection"), (19, 0.0, "selection"), (60, 0.3, "holdout")])
def test_a_window_of_fewer_than_20_bars_is_refused(setup, n_bars: int, holdout: float,  # type: ignore[no-untyped-def]
                                                   window: str) -> None:
    """A selection or holdout window under 20 bars is EVAL_TOO_FEW_BARS, the loop's own
    floor (a black-box report: 10 bars crashed in the SPA bootstrap's block length;
    30 bars reported a 9-bar holdout without a word)."""
    bars, results, policy = setup
    short = bars.slice(0, n_bars)
    with pytest.raises(EvaluationError) as err:
        evaluate_candidates(results.assign(data_ref=short.data_ref), short, policy,
                            holdout=holdout, spa_reps=20)
    assert err.value.code == "EVAL_TOO_FEW_BARS" and f"the {window} window" in str(err.value)
