"""Root cause: each failure code from a scenario built to cause it, the precedence
between codes, the rejecting stage, and the refusal of engine faults."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from alphaloop.research.rootcause import (
    FAILURE_CODES,
    GATE_FAILURE_CODES,
    PRECEDENCE,
    CandidateEvidence,
    EngineBFailure,
    GrossOfCost,
    LookaheadEvidence,
    ScoringEvidence,
    SearchMetrics,
    StabilityEvidence,
    ValidationEvidence,
    VerificationEvidence,
    diagnose,
    diagnose_all,
    gate_code,
)

GATES = {"min_trades": 30, "min_sharpe": 0.5, "max_drawdown": 0.35, "max_turnover": 50.0,
         "min_history_years": 3.0, "min_dsr": 0.95, "max_pbo": 0.3}
HEALTHY = SearchMetrics(n_trades=120, sharpe=1.2, max_drawdown=-0.15, turnover=8.0,
                        total_return=0.9, ann_volatility=0.12)


def scoring(metrics: SearchMetrics = HEALTHY, **kw: Any) -> ScoringEvidence:
    return ScoringEvidence(metrics=metrics, gates=GATES, score_total=kw.pop("score", 70.0),
                           score_threshold=50.0, **kw)


def candidate(sc: ScoringEvidence | None = None, **stages: Any) -> CandidateEvidence:
    return CandidateEvidence(strategy_id="s1", family="sma_cross",
                             params={"fast": 10, "slow": 50}, scoring=sc or scoring(), **stages)


# one scenario per code: the evidence a candidate with that defect leaves behind
SCENARIOS: dict[str, CandidateEvidence] = {
    "NO_TRADES": candidate(scoring(
        SearchMetrics(n_trades=0, sharpe=None, max_drawdown=0.0, turnover=0.0),
        failed_gates=("min_trades", "min_sharpe"), score=0.0)),
    "TOO_FEW_TRADES": candidate(scoring(
        SearchMetrics(n_trades=7, sharpe=0.9, max_drawdown=-0.1, turnover=1.0),
        failed_gates=("min_trades",))),
    "COST_DOMINATED": candidate(scoring(
        SearchMetrics(n_trades=400, sharpe=-0.3, max_drawdown=-0.3, turnover=40.0),
        gross=GrossOfCost(sharpe=0.8), failed_gates=("min_sharpe",), score=20.0)),
    "DRAWDOWN_BREACH": candidate(scoring(
        SearchMetrics(n_trades=90, sharpe=0.7, max_drawdown=-0.55, turnover=6.0),
        failed_gates=("max_drawdown",))),
    "LOW_SHARPE": candidate(scoring(
        SearchMetrics(n_trades=90, sharpe=0.2, max_drawdown=-0.2, turnover=6.0),
        gross=GrossOfCost(sharpe=0.3), failed_gates=("min_sharpe",), score=30.0)),
    "OOS_DECAY": candidate(validation=ValidationEvidence(
        sharpe_search=1.2, sharpe_validation=0.2, min_ratio=0.5)),
    "UNSTABLE_PARAMS": candidate(stability=StabilityEvidence(
        fraction_ok=0.25, min_fraction=0.5, stable=False)),
    "OVERFIT_DSR": candidate(scoring(failed_gates=("min_dsr",), dsr=0.61)),
    "EXECUTION_INFEASIBLE": candidate(verification=VerificationEvidence(
        failures=(EngineBFailure(code="EXECUTION_INFEASIBLE", message="fill_rate 0.5",
                                 evidence={"fill_rate": {"value": 0.5, "limit": 0.95}}),),
        sharpe=0.9)),
    "RISK_MODEL_FAILURE": candidate(verification=VerificationEvidence(
        failures=(EngineBFailure(code="RISK_MODEL_FAILURE", message="ruined"),), sharpe=0.4)),
    "DATA_FAILURE": candidate(verification=VerificationEvidence(
        failures=(EngineBFailure(code="DATA_FAILURE", message="1 symbol excluded"),),
        sharpe=0.8)),
    "LOOKAHEAD": candidate(lookahead=LookaheadEvidence(message="signal changed at bar 40")),
    "DUPLICATE": candidate(scoring(correlated_with="s0", correlation=0.97,
                                   correlation_threshold=0.9)),
}


@pytest.mark.parametrize("code", sorted(SCENARIOS))
def test_each_scenario_gives_its_code(code: str) -> None:
    d = diagnose(SCENARIOS[code])
    assert d is not None
    assert d.code == code
    assert code in d.evidence


def test_the_issue_codes_are_all_known() -> None:
    issue = {"NO_TRADES", "TOO_FEW_TRADES", "COST_DOMINATED", "DRAWDOWN_BREACH", "LOW_SHARPE",
             "OOS_DECAY", "UNSTABLE_PARAMS", "OVERFIT_DSR", "EXECUTION_INFEASIBLE",
             "RISK_MODEL_FAILURE", "DATA_FAILURE", "LOOKAHEAD", "DUPLICATE"}
    assert issue <= FAILURE_CODES
    assert issue == set(SCENARIOS)
    assert len(PRECEDENCE) == len(set(PRECEDENCE))


def test_evidence_carries_value_threshold_and_stage() -> None:
    d = diagnose(SCENARIOS["DRAWDOWN_BREACH"])
    assert d is not None
    assert d.evidence["DRAWDOWN_BREACH"] == {"stage": "S60", "gate": "max_drawdown",
                                             "threshold": 0.35, "value": -0.55}
    oos = diagnose(SCENARIOS["OOS_DECAY"])
    assert oos is not None and oos.stage_id == "S75"
    # 0.2 / 1.2 by hand
    assert oos.evidence["OOS_DECAY"]["oos_ratio"] == pytest.approx(1 / 6)
    assert oos.evidence["OOS_DECAY"]["threshold"] == 0.5


def test_relative_gates_carry_their_values() -> None:
    # the excess DSR and information ratio a relative gate read are its evidence,
    # as the plain DSR is for min_dsr (they were recorded as None before)
    gates = {**GATES, "min_excess_dsr": 0.95, "min_information_ratio": 0.2}
    sc = ScoringEvidence(metrics=HEALTHY, gates=gates, score_total=70.0, score_threshold=50.0,
                         failed_gates=("min_excess_dsr", "min_information_ratio"),
                         excess_dsr=0.92, information_ratio=0.05)
    d = diagnose(candidate(sc))
    # an information ratio this small is the undeflated lesson, so it comes first
    assert d is not None and d.codes == ("LOW_INFORMATION_RATIO", "BENCHMARK_NOT_BEATEN")
    assert d.evidence["BENCHMARK_NOT_BEATEN"] == {"stage": "S60", "gate": "min_excess_dsr",
                                                  "threshold": 0.95, "value": 0.92}
    assert d.evidence["LOW_INFORMATION_RATIO"]["value"] == 0.05


def test_a_short_history_carries_the_history_it_measured() -> None:
    """The evidence of SHORT_HISTORY is the effective history the gate read, from the
    same metrics row (it was recorded as None)."""
    short = SearchMetrics.of({"n_trades": 60, "sharpe": 1.0, "max_drawdown": -0.1,
                              "turnover": 4.0, "effective_history_years": 0.892857})
    d = diagnose(candidate(scoring(short, failed_gates=("min_history_years",))))
    assert d is not None and d.codes == ("SHORT_HISTORY",)
    assert d.evidence["SHORT_HISTORY"] == {"stage": "S60", "gate": "min_history_years",
                                           "threshold": 3.0, "value": 0.892857}


def test_the_loop_learns_no_rule_from_the_datas_short_span() -> None:
    """Data too short for every candidate: TOO_FEW_TRADES comes first in precedence, so
    SHORT_HISTORY is the primary code exactly where enough trades happen, and a rule
    learned from it would forbid that region (a black-box run's). The loop's learner
    learns the trade sparsity and nothing from the span."""
    from alphaloop.orchestrator.stages import LEARNING
    from alphaloop.research.learning import Observation, learn
    from alphaloop.strategy.templates import FAMILIES

    obs = [Observation(family="momentum", params={"window": w, "threshold": t},
                       codes=("TOO_FEW_TRADES", "SHORT_HISTORY") if w > 30
                       else ("SHORT_HISTORY",))
           for w in range(5, 121, 5) for t in (0.0, 0.01, 0.02, 0.03)]
    codes = {r.code for r in learn(obs, {"momentum": FAMILIES["momentum"]}, config=LEARNING)}
    assert codes == {"TOO_FEW_TRADES"}


def test_deflation_against_cash_comes_before_the_benchmark() -> None:
    # Sharpe 4.1 against a benchmark's -0.3 (a loop's planted panel): the candidate beats
    # the benchmark by far; what rejects it is deflation by the number of trials
    gates = {**GATES, "min_excess_dsr": 0.95}
    sc = ScoringEvidence(metrics=HEALTHY, gates=gates, score_total=70.0, score_threshold=50.0,
                         failed_gates=("min_dsr", "min_excess_dsr"), dsr=0.70, excess_dsr=0.92)
    d = diagnose(candidate(sc))
    assert d is not None and d.codes == ("OVERFIT_DSR", "BENCHMARK_NOT_BEATEN")


def test_no_trades_replaces_too_few_trades() -> None:
    d = diagnose(SCENARIOS["NO_TRADES"])
    assert d is not None
    assert d.codes == ("NO_TRADES", "LOW_SHARPE")


def test_cost_dominated_is_primary_and_low_sharpe_its_symptom() -> None:
    d = diagnose(SCENARIOS["COST_DOMINATED"])
    assert d is not None
    assert d.secondary == ("LOW_SHARPE",)
    assert d.evidence["COST_DOMINATED"]["gross_sharpe"] == 0.8


@pytest.mark.parametrize(("net", "gross", "dominated"), [
    (-0.3, 0.8, True), (0.0, 0.1, True),   # gross edge positive, net not
    (0.2, 0.3, False),                     # net still positive: low, not cost-dominated
    (-0.3, -0.1, False),                   # no edge even before costs
    (-0.3, None, False),                   # gross unknown: no claim
])
def test_cost_dominated_needs_positive_gross_and_non_positive_net(
        net: float, gross: float | None, dominated: bool) -> None:
    m = SearchMetrics(n_trades=300, sharpe=net, max_drawdown=-0.2, turnover=30.0)
    d = diagnose(candidate(scoring(m, gross=GrossOfCost(sharpe=gross),
                                   failed_gates=("min_sharpe",))))
    assert d is not None
    assert (d.code == "COST_DOMINATED") is dominated


def test_cost_dominated_by_total_return() -> None:
    m = SearchMetrics(n_trades=300, sharpe=0.1, max_drawdown=-0.2, turnover=30.0,
                      total_return=-0.05)
    d = diagnose(candidate(scoring(m, gross=GrossOfCost(sharpe=0.4, total_return=0.3),
                                   failed_gates=("min_sharpe",))))
    assert d is not None and d.code == "COST_DOMINATED"


def test_precedence_orders_the_codes() -> None:
    """A candidate with several defects: the primary code is the most fundamental."""
    m = SearchMetrics(n_trades=12, sharpe=0.1, max_drawdown=-0.6, turnover=80.0)
    d = diagnose(candidate(scoring(m, failed_gates=(
        "min_sharpe", "max_drawdown", "max_turnover", "min_trades", "min_dsr"))))
    assert d is not None
    assert d.codes == ("TOO_FEW_TRADES", "EXCESSIVE_TURNOVER", "DRAWDOWN_BREACH",
                       "LOW_SHARPE", "OVERFIT_DSR")


def test_lookahead_outranks_everything_and_stage_is_the_first_failing() -> None:
    sc = scoring(SearchMetrics(n_trades=5, sharpe=0.1, max_drawdown=-0.1, turnover=1.0),
                 failed_gates=("min_trades",))
    d = diagnose(candidate(sc, lookahead=LookaheadEvidence(message="future bar used")))
    assert d is not None
    assert d.code == "LOOKAHEAD"
    assert d.stage_id == "S60"  # scoring rejected it first
    assert d.evidence["LOOKAHEAD"]["stage"] == "S65"


def test_engine_b_low_sharpe_and_duplicate_without_number() -> None:
    d = diagnose(candidate(verification=VerificationEvidence(sharpe=-0.1)))
    assert d is not None and d.code == "LOW_SHARPE" and d.stage_id == "S70"
    dup = diagnose(candidate(scoring(correlated_with="s0")))
    assert dup is not None and dup.code == "DUPLICATE"


def test_correlation_below_threshold_is_no_duplicate() -> None:
    assert diagnose(candidate(scoring(correlated_with="s0", correlation=0.5,
                                      correlation_threshold=0.9))) is None


def test_low_score_only_when_every_gate_passed() -> None:
    d = diagnose(candidate(scoring(score=30.0)))
    assert d is not None
    assert d.code == "LOW_SCORE"
    assert d.evidence["LOW_SCORE"] == {"stage": "S60", "value": 30.0, "threshold": 50.0}


def test_nothing_failed_gives_no_record() -> None:
    ok = candidate(validation=ValidationEvidence(sharpe_search=1.0, sharpe_validation=0.6,
                                                 min_ratio=0.5),
                   stability=StabilityEvidence(fraction_ok=0.75, min_fraction=0.5,
                                               stable=True))
    assert diagnose(ok) is None
    assert [d.strategy_id for d in diagnose_all([ok, SCENARIOS["LOOKAHEAD"]])] == ["s1"]


@pytest.mark.parametrize("code", ["NON_DETERMINISTIC", "TIMEOUT", "IO_ERROR"])
def test_engine_faults_are_refused(code: str) -> None:
    with pytest.raises(ValidationError, match="not a failure of the strategy"):
        EngineBFailure(code=code, message="boom")


def test_evidence_has_no_room_for_an_exception() -> None:
    with pytest.raises(ValidationError):
        CandidateEvidence(strategy_id="s1", scoring=scoring(),
                          error="TimeoutError")  # type: ignore[call-arg]


def test_one_gate_mapping() -> None:
    for gate in ("min_trades", "min_sharpe", "max_drawdown", "max_turnover",
                 "min_history_years", "min_dsr", "max_pbo", "min_excess_dsr",
                 "min_information_ratio"):
        assert gate_code(gate) in FAILURE_CODES
    assert GATE_FAILURE_CODES["min_dsr"] == "OVERFIT_DSR"
    assert gate_code("max_leverage") == "MAX_LEVERAGE"


def test_record_fields_fit_the_failure_record() -> None:
    from alphaloop.kb.records import FailureRecord

    d = diagnose(SCENARIOS["TOO_FEW_TRADES"])
    assert d is not None
    rec = FailureRecord(run_id="r", iteration=1, **d.record_fields())
    assert rec.code == "TOO_FEW_TRADES"
    assert rec.evidence["params"] == {"fast": 10, "slow": 50}


def test_engine_b_failures_fit_as_the_engine_reports_them() -> None:
    from alphaloop.engines.verification import VerificationFailure

    raw = VerificationFailure("RISK_MODEL_FAILURE", "a stop lost 0.3", {"worst_stop_loss": 0.3})
    v = VerificationEvidence(failures=(EngineBFailure(**raw.to_dict()),), sharpe=0.5)
    d = diagnose(candidate(verification=v))
    assert d is not None
    assert d.evidence["RISK_MODEL_FAILURE"] == {"stage": "S70", "message": "a stop lost 0.3",
                                                "worst_stop_loss": 0.3}


def test_search_metrics_from_an_engine_row() -> None:
    m = SearchMetrics.of({"n_trades": 0, "sharpe": float("nan"), "max_drawdown": 0.0,
                          "turnover": 0.0, "ann_volatility": 0.0})
    assert (m.n_trades, m.sharpe, m.max_drawdown, m.total_return) == (0, None, 0.0, None)


def test_estimate_gross_by_hand() -> None:
    """turnover 20/yr at 15 bps a side costs 0.03 a year; over a 0.15 volatility that is
    0.2 of Sharpe. Over 2 years the return is grossed up by exp(0.06)."""
    from alphaloop.research.rootcause import estimate_gross

    m = SearchMetrics(n_trades=50, sharpe=-0.1, turnover=20.0, ann_volatility=0.15,
                      total_return=-0.02)
    g = estimate_gross(m, 10, 5, years=2.0)
    assert g.sharpe == pytest.approx(0.1)
    assert g.total_return == pytest.approx(0.98 * math.exp(0.06) - 1)
    assert estimate_gross(m.model_copy(update={"ann_volatility": 0.0}), 10, 5).sharpe is None
