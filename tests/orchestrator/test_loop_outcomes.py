"""What the loop finds, and what it must not: nothing on pure noise, a planted effect
that survives the holdout, a holdout that feeds nothing back, budgets kept, the same
RunSummary whatever the run id or the number of workers."""

from __future__ import annotations

import gc
import json
import pickle
import sqlite3
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphaloop.data.bars import Bars
from alphaloop.kb.store import KnowledgeBase
from alphaloop.orchestrator.config import ConfigError, RunConfig
from alphaloop.orchestrator.runner import RUN_GC_THRESHOLD, Runner, runs_root

Make = Callable[..., RunConfig]


def test_pure_noise_gives_no_survivor(make_config: Make, noise_path: Path) -> None:
    summary = Runner(make_config(noise_path, budgets={"max_iterations": 4})).run()
    assert summary.stats.backtests > 0 and summary.stats.trials > 0
    assert summary.best_strategies == ()


def test_a_planted_effect_is_found_and_survives_the_holdout(make_config: Make,
                                                            planted_path: Path) -> None:
    cfg = make_config(planted_path, budgets={"max_iterations": 4})
    summary = Runner(cfg).run()
    assert summary.best_strategies, summary.iterations
    for best in summary.best_strategies:
        assert best.sharpe_holdout > 0 and best.sharpe_validation > 0
        assert best.dsr >= 0.95 and best.engine_b_sharpe > 0
    # the planted effect is a trend: the survivors are trend followers
    assert {b.family for b in summary.best_strategies} <= {"sma_cross", "momentum"}
    # an engine B record fills its own columns from its metrics, as engine A's do (a
    # black-box report found them empty in `kb show`)
    verified = KnowledgeBase(cfg.kb.url).backtests(cfg.run_id).query("engine == 'B'")
    assert len(verified) >= len(summary.best_strategies)
    for row in verified.to_dict("records"):
        m = row["metrics"]
        assert (row["total_return"], row["max_drawdown"], row["n_trades"]) == (
            m["total_return"], m["max_drawdown"], m["n_trades"]), row
        assert row["n_trades"] > 0


def _rewrite_holdout(src: Path, dst: Path, holdout: float) -> Path:
    """The same panel with every holdout bar replaced by random prices."""
    long = pd.read_parquet(src)
    bars = Bars.from_long(long)
    n = bars.n_bars
    start = n - round(holdout * n)
    rng = np.random.default_rng(99)
    arrays = {f: np.array(getattr(bars, f)) for f in ("open", "high", "low", "close",
                                                       "volume")}
    k = n - start
    close = 80.0 * np.exp(np.cumsum(rng.normal(0, 0.03, (k, bars.n_symbols)), axis=0))
    arrays["close"][start:] = close
    arrays["open"][start:] = close * np.exp(rng.normal(0, 0.01, close.shape))
    arrays["high"][start:] = np.maximum(arrays["open"][start:], close) * 1.01
    arrays["low"][start:] = np.minimum(arrays["open"][start:], close) * 0.99
    arrays["volume"][start:] = rng.uniform(1e3, 1e6, close.shape)
    Bars(index=bars.index, symbols=bars.symbols, **arrays).to_long().to_parquet(dst)
    return dst


def test_a_symbol_listed_in_the_holdout_is_not_in_the_search_universe(
        make_config: Make, planted_path: Path, tmp_path: Path) -> None:
    """NEWCO trades only in the holdout window: the search window (engine A and B) must
    not know it exists, so engine B's data gate never sees it empty."""
    long = pd.read_parquet(planted_path)
    first = long[long["symbol"] == long["symbol"].iloc[0]]
    late = first.iloc[-round(0.1 * len(first)):].assign(symbol="NEWCO")
    path = tmp_path / "newco.parquet"
    pd.concat([long, late], ignore_index=True).to_parquet(path)
    run = Runner(make_config(path, budgets={"max_iterations": 2}))
    assert "NEWCO" in run.bars.symbols and "NEWCO" not in run.search.symbols
    assert "NEWCO" not in run.validation.symbols
    summary = run.run()
    assert sum(it.promoted_to_B for it in summary.iterations) > 0
    failures = KnowledgeBase(run.cfg.kb.url).failures(run.cfg.run_id)
    codes = set(failures["code"]).union(*(s or [] for s in failures["secondary"]))
    assert "DATA_FAILURE" not in codes


def _generated(cfg: RunConfig) -> list[list[str]]:
    root = runs_root(cfg.out_dir) / cfg.run_id
    out = []
    for folder in sorted(root.glob("iter_*/S20")):
        with open(folder / "output.pkl", "rb") as fh:
            out.append([c["strategy_id"] for c in pickle.load(fh)])
    return out


def test_rewriting_the_holdout_changes_no_candidate_and_no_learned_record(
        make_config: Make, planted_path: Path, tmp_path: Path) -> None:
    cfg = make_config(planted_path, budgets={"max_iterations": 3},
                      generation={"sampler": "tpe"})  # TPE learns from what it is told
    other_src = _rewrite_holdout(planted_path, tmp_path / "rewritten.parquet",
                                 cfg.data.windows.holdout)
    other = make_config(other_src, run_id="r2", budgets={"max_iterations": 3},
                        generation={"sampler": "tpe"},
                        kb={"url": f"sqlite:///{tmp_path / 'other.sqlite'}"})
    Runner(cfg).run()
    Runner(other).run()
    assert _generated(cfg) == _generated(other)

    assert sorted(_failures(cfg)) == sorted(_failures(other))
    assert len(_failures(cfg)) > 0
    learned = _constraints(cfg)  # what the learner made of them: the same rules
    assert learned and learned == _constraints(other)
    # the versions form a chain the KB resolves: each parent is a stored set, or None
    # for the first version (grown from no rule; a black-box report found the parent
    # named a set that was never stored)
    ids = {row[0] for row in learned}
    parents = [row[1] for row in learned]
    assert None in parents and all(p is None or p in ids for p in parents)


def _constraints(cfg: RunConfig) -> list[tuple[object, ...]]:
    """(set id, parent, iteration, rule) of every constraint set version of a run."""
    kb = KnowledgeBase(cfg.kb.url)
    sets = kb.constraint_sets(cfg.run_id)
    return sorted((s["constraint_set_id"], s["parent_id"], s["iteration"],
                   json.dumps(r["rule"], sort_keys=True))
                  for s in sets.to_dict("records")
                  for r in kb.constraints(str(s["constraint_set_id"])))


def _failures(cfg: RunConfig) -> list[tuple[object, ...]]:
    """(iteration, strategy, stage, code, evidence) of every failure record of a run."""
    import sqlite3

    db = sqlite3.connect(cfg.kb.url.removeprefix("sqlite:///"))
    rows = db.execute("SELECT iteration, strategy_id, stage_id, code, evidence FROM failures "
                      "WHERE run_id = ?", (cfg.run_id,)).fetchall()
    db.close()
    return [(i, s, st, c, json.dumps(json.loads(e), sort_keys=True)) for i, s, st, c, e in rows]


def test_what_a_run_froze_out_of_the_collector_is_collectable_after_it(
        make_config: Make, noise_path: Path) -> None:
    """The loop hides what it holds from the cyclic collector at each iteration
    (gc.freeze, for speed); when the run ends, a reference cycle that was garbage at
    a freeze must be collectable again, or every run would leak its cycles."""
    class Cycle:
        me: object

    enabled = gc.isenabled()
    gc.disable()  # so that nothing collects the cycle before the loop freezes it
    before = gc.get_threshold()
    during: list[tuple[int, ...]] = []
    try:
        cycle = Cycle()
        cycle.me = cycle
        ref = weakref.ref(cycle)
        del cycle
        runner = Runner(make_config(noise_path, budgets={"max_iterations": 1}))
        runner.progress = lambda _: during.append(gc.get_threshold())
        runner.run()
    finally:
        if enabled:
            gc.enable()
    assert gc.get_freeze_count() == 0
    # the run's own thresholds held while it ran, and the caller's are back
    assert during and set(during) == {RUN_GC_THRESHOLD} != {before}
    assert gc.get_threshold() == before
    gc.collect()
    assert ref() is None


def test_max_backtests_is_never_exceeded(make_config: Make, planted_path: Path) -> None:
    for limit in (30, 55):
        cfg = make_config(planted_path, run_id=f"b{limit}",
                          budgets={"max_iterations": 10, "max_backtests": limit})
        summary = Runner(cfg).run()
        assert summary.stats.backtests <= limit
        assert summary.status == "DONE_BUDGET_EXHAUSTED"


def test_the_same_config_gives_the_same_summary_for_any_run_id_and_workers(
        make_config: Make, planted_path: Path, tmp_path: Path) -> None:
    gen = {"candidates_per_iteration": 80}  # several chunks: the pool really splits them
    one = Runner(make_config(planted_path, budgets={"max_iterations": 2},
                             generation=gen)).run()
    two = Runner(make_config(planted_path, run_id="w2", budgets={"max_iterations": 2},
                             executor={"kind": "local", "workers": 2}, generation=gen,
                             kb={"url": f"sqlite:///{tmp_path / 'w2.sqlite'}"})).run()
    assert one.comparable() == two.comparable()
    assert one.run_id != two.run_id


def test_verification_mode_verifies_the_best_earlier_candidates(make_config: Make,
                                                                planted_path: Path) -> None:
    """An exploration run (engine A only) maps the space; a verification run on the same
    knowledge base takes its best candidates through engine B, robustness and the
    holdout, without generating new ones. Before any run backtested on the data there
    is nothing to verify: refused before anything is written (a black-box report saw
    three empty iterations end as DONE_EARLY_STOPPED)."""
    early = make_config(planted_path, run_id="v0", mode="verification")
    with pytest.raises(ConfigError) as nothing:
        Runner(early)
    assert "holds none" in nothing.value.message
    assert not Path(early.kb.url.removeprefix("sqlite:///")).exists()
    explore = Runner(make_config(planted_path, mode="exploration",
                                 budgets={"max_iterations": 2})).run()
    assert explore.best_strategies == ()  # no engine B in exploration
    assert all(it.promoted_to_B == 0 for it in explore.iterations)
    cfg = make_config(planted_path, run_id="v1", mode="verification",
                      budgets={"max_iterations": 1})
    verify = Runner(cfg).run()
    kb = KnowledgeBase(cfg.kb.url)
    earlier = set(kb.tested(Runner(cfg).search_ref, exclude_run="v1")["strategy_id"])
    mine = set(kb.backtests("v1")["strategy_id"])
    assert mine and mine <= earlier  # nothing new was generated
    assert verify.iterations[0].promoted_to_B > 0
    assert verify.best_strategies  # the planted effect, now verified


def test_the_loop_does_not_promote_beta(make_config: Make, tmp_path: Path) -> None:
    """A rising, correlated market and no edge: trend rules that ride it have a fine
    Sharpe and DSR against cash, but not against the equal-weight buy-and-hold of the
    same symbols; the default policy's relative gates reject them and say so."""
    from alphaloop.data.synthetic import generate

    path = tmp_path / "drift.parquet"
    generate(4, 2520, seed=5, mu=0.25, sigma=0.2, correlation=0.6).to_long().to_parquet(path)
    cfg = make_config(path, budgets={"max_iterations": 3})
    summary = Runner(cfg).run()
    assert summary.best_strategies == ()
    db = sqlite3.connect(cfg.kb.url.removeprefix("sqlite:///"))
    rows = db.execute("SELECT code, secondary, evidence FROM failures WHERE run_id = ? "
                      "AND stage_id = 'S60'", (cfg.run_id,)).fetchall()
    db.close()
    relative = {"BENCHMARK_NOT_BEATEN", "LOW_INFORMATION_RATIO"}
    beta = [(c, json.loads(sec), json.loads(e)) for c, sec, e in rows
            if {c, *json.loads(sec)} <= relative
            and "BENCHMARK_NOT_BEATEN" in {c, *json.loads(sec)}]
    assert beta, "no candidate was rejected by the relative gates alone"
    for _, _, e in beta:  # score-v1's gates (against cash) hold: min_sharpe 0.5, min_trades 30
        assert e["metrics"]["sharpe"] >= 0.5 and e["metrics"]["n_trades"] >= 30
        assert e["BENCHMARK_NOT_BEATEN"]["threshold"] == 0.95  # score-v2's min_excess_dsr
        assert any(r.startswith("excess_dsr") and "against benchmark equal_weight" in r
                   for r in e["reasons"])


def test_a_strategy_tested_before_and_again_is_one_trial_in_the_variance() -> None:
    """The DSR's trial count counts a strategy an earlier run tested once, also when a
    verification run backtests it again; its trial-Sharpe variance must use the same
    trials (a black-box report found 156 trials deflated with the variance of 216)."""
    from alphaloop.orchestrator.runner import trial_sharpes

    prior = np.array([0.1, 0.2])  # earlier runs: a and b
    got = trial_sharpes(prior, {"a", "b"}, {"a": 0.1000001, "c": 0.3})
    assert got == [0.1, 0.2, 0.3]  # a once (the earlier run's), c new
    assert trial_sharpes(np.array([]), set(), {"c": 0.3}) == [0.3]
