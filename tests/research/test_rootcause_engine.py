"""Root cause end to end: engine A and the scoring policy produce the evidence.

Two scenarios run through the real engine on a seeded synthetic panel: a rule that
can never enter (NO_TRADES), and a planted trend traded under heavy costs
(COST_DOMINATED). The gross-of-cost number comes once from an exact rerun with fees
and slippage at zero, once from :func:`estimate_gross`; the rerun is the reference.
"""

from __future__ import annotations

import pandas as pd
import pytest

from alphaloop.data.bars import Bars
from alphaloop.data.synthetic import PlantedEffect, generate
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import run_batch
from alphaloop.evaluation.scoring import load_policy, score_frame
from alphaloop.research.rootcause import (
    CandidateEvidence,
    GrossOfCost,
    ScoringEvidence,
    SearchMetrics,
    diagnose,
    estimate_gross,
)
from alphaloop.strategy.spec import StrategySpec

TREND = StrategySpec(entry="close > sma(close, 20)", exit="close < sma(close, 20)")
NEVER = StrategySpec(entry="close < 0", exit="close > 0")
HEAVY = CostModel(fees_bps=60, slippage_bps=40)
ZERO = CostModel(fees_bps=0, slippage_bps=0)
N_BARS = 1000


@pytest.fixture(scope="module")
def bars() -> Bars:
    # a weak planted trend: real before costs, not after 100 bps a side
    return generate(2, N_BARS, seed=3, planted=PlantedEffect(symbols=(0, 1), strength=0.05))


def evidence(row: pd.Series, scored: pd.Series, gross: GrossOfCost | None) -> CandidateEvidence:
    policy = load_policy("score-v1")
    sc = ScoringEvidence(metrics=SearchMetrics.of(row), failed_gates=tuple(scored["failed_gates"]),
                         gates=policy.gates.model_dump(), gross=gross,
                         score_total=float(scored["score_total"]), score_threshold=50.0)
    return CandidateEvidence(strategy_id=str(row.name), scoring=sc)


def scored_rows(bars: Bars, costs: CostModel) -> tuple[pd.DataFrame, pd.DataFrame]:
    metrics = run_batch([TREND, NEVER], bars, costs).metrics
    return metrics, score_frame(metrics.reset_index(), load_policy("score-v1"))


def test_a_rule_that_never_enters_is_no_trades(bars: Bars) -> None:
    metrics, scored = scored_rows(bars, CostModel())
    d = diagnose(evidence(metrics.iloc[1], scored.iloc[1], None))
    assert d is not None
    assert d.code == "NO_TRADES"
    assert "TOO_FEW_TRADES" not in d.codes  # the gate failed, but NO_TRADES says more


@pytest.mark.parametrize("how", ["rerun", "estimate"])
def test_heavy_costs_on_a_real_edge_are_cost_dominated(bars: Bars, how: str) -> None:
    metrics, scored = scored_rows(bars, HEAVY)
    net = metrics.iloc[0]
    exact = run_batch([TREND], bars, ZERO).metrics.iloc[0]
    assert exact["sharpe"] > 0 >= net["sharpe"]  # the scenario is what it claims
    gross: GrossOfCost
    if how == "rerun":
        gross = GrossOfCost(sharpe=float(exact["sharpe"]),
                            total_return=float(exact["total_return"]))
    else:
        gross = estimate_gross(SearchMetrics.of(net), HEAVY.fees_bps, HEAVY.slippage_bps,
                               years=N_BARS / 252)
    d = diagnose(evidence(net, scored.iloc[0], gross))
    assert d is not None
    assert d.code == "COST_DOMINATED"
    assert "LOW_SHARPE" in d.secondary


def test_estimate_tracks_the_zero_cost_rerun(bars: Bars) -> None:
    """The estimate against the exact rerun: close at default costs, looser at 100 bps
    a side (costs also move fills and compounding, which the estimate ignores)."""
    exact = run_batch([TREND], bars, ZERO).metrics.iloc[0]
    for costs, tol in ((CostModel(), 0.02), (HEAVY, 0.15)):
        net = SearchMetrics.of(run_batch([TREND], bars, costs).metrics.iloc[0])
        est = estimate_gross(net, costs.fees_bps, costs.slippage_bps)
        assert est.sharpe == pytest.approx(float(exact["sharpe"]), abs=tol)
        assert est.sharpe is not None and net.sharpe is not None and est.sharpe > net.sharpe
