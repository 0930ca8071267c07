"""Sweeps: deterministic, distinct, constraint-respecting, and able to find a planted edge."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alphaloop.data import load_bars
from alphaloop.engines import CostModel, backtest
from alphaloop.engines.sweep import RESULT_COLUMNS, run_sweep
from alphaloop.strategy.constraints import Clause, Constraint
from alphaloop.strategy.templates import get_family


@pytest.fixture(scope="module")
def spx():  # type: ignore[no-untyped-def]
    return load_bars("sp500")


def test_same_seed_same_results(spx) -> None:  # type: ignore[no-untyped-def]
    a = run_sweep("ema_cross", spx, n=30, sampler="random", seed=3)
    b = run_sweep("ema_cross", spx, n=30, sampler="random", seed=3)
    assert list(a.columns) == list(RESULT_COLUMNS)
    assert a["strategy_id"].tolist() == b["strategy_id"].tolist()
    np.testing.assert_array_equal(a["sharpe"].to_numpy(), b["sharpe"].to_numpy())
    c = run_sweep("ema_cross", spx, n=30, sampler="random", seed=4)
    assert set(c["strategy_id"]) != set(a["strategy_id"])


def test_rows_are_distinct_and_match_single_backtests(spx) -> None:  # type: ignore[no-untyped-def]
    frame = run_sweep("sma_cross", spx, n=12, sampler="sobol", seed=1)
    assert frame["strategy_id"].is_unique and len(frame) == 12
    fam = get_family("sma_cross")
    row = frame.iloc[5]
    single = backtest(fam.build(json.loads(row["params"])), spx, CostModel())
    assert single.metrics["total_return"] == pytest.approx(row["total_return"], rel=1e-12)
    assert single.metrics["n_trades"] == row["n_trades"]


def test_grid_is_exhausted_at_its_size(spx) -> None:  # type: ignore[no-untyped-def]
    frame = run_sweep("sma_cross", spx, n=10_000, sampler="grid")
    assert len(frame) == get_family("sma_cross").size() == 174


def test_constraints_are_respected(spx) -> None:  # type: ignore[no-untyped-def]
    rule = Constraint(rule_id="no_fast_below_20", family="sma_cross",
                      clauses=[Clause(param="fast", op="<", value=20)])
    for sampler in ("grid", "random", "sobol", "tpe"):
        frame = run_sweep("sma_cross", spx, n=40, sampler=sampler, seed=0, constraints=[rule])
        fast = [json.loads(p)["fast"] for p in frame["params"]]
        assert len(fast) > 0 and min(fast) >= 20, sampler


def test_tpe_runs_in_rounds_and_reports_progress(spx) -> None:  # type: ignore[no-untyped-def]
    seen: list[int] = []
    frame = run_sweep("rsi_reversion", spx, n=40, sampler="tpe", seed=0, round_size=16,
                      progress=seen.append)
    assert len(frame) == 40
    assert seen == sorted(seen) and seen[-1] == 40


def test_search_finds_the_planted_effect() -> None:
    """On synth_planted only SYN000..SYN003 carry a trend effect: a trend-following
    sweep must do clearly better on them than on the pure-GBM symbols."""
    bars = load_bars("synth_planted")
    planted = bars.select(list(bars.symbols[:4]))
    null = bars.select(list(bars.symbols[4:8]))
    best = {name: run_sweep("sma_cross", b, n=60, sampler="sobol", seed=0,
                            costs=CostModel(fees_bps=1, slippage_bps=0))["sharpe"].max()
            for name, b in (("planted", planted), ("null", null))}
    assert best["planted"] > best["null"] + 0.5
