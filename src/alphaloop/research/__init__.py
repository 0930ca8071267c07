"""Research: learning from failure (MOD-440/441/442, MOD-450/451).

A library on the evaluation floor: it takes evidence and records as arguments and
knows neither the knowledge base nor the loop. Three modules:

- :mod:`~alphaloop.research.rootcause` -- one primary failure code, secondary codes
  and evidence per rejected candidate (:func:`diagnose`), and the one mapping from
  scoring gates to codes (:data:`GATE_FAILURE_CODES`);
- :mod:`~alphaloop.research.learning` -- rules over a family's parameters learned from
  failures (:func:`learn`), versioned constraint sets with re-tests and expiry
  (:func:`update_set`);
- :mod:`~alphaloop.research.space` -- the share of a family's space the rules forbid
  (:func:`forbidden_share`);
- :mod:`~alphaloop.research.features` -- numbers a parameter set implies before any
  backtest (warm-up, stop distance, ...), for rules that span parameters
  (:func:`spec_features`).

Usage, one iteration (analysis, then the constraint update)::

    from alphaloop.research import (CandidateEvidence, ScoringEvidence, SearchMetrics,
        Observation, diagnose, constraint_update, retests_of, forbidden_share)
    from alphaloop.strategy.samplers import make_sampler
    from alphaloop.strategy.templates import FAMILIES

    # ANALYSIS: evidence per candidate -> failure records
    ev = CandidateEvidence(strategy_id=sid, family="sma_cross", params=params,
                           scoring=ScoringEvidence(
                               metrics=SearchMetrics(n_trades=4, sharpe=0.1,
                                                     max_drawdown=-0.1, turnover=3.0),
                               failed_gates=("min_trades",), gates={"min_trades": 30}))
    d = diagnose(ev)                       # None when nothing failed
    record = d.record_fields()             # + run_id, iteration -> FailureRecord

    # CONSTRAINT_UPDATE: every evaluated candidate so far is an observation (failed
    # or not); re-tests are this iteration's proposals that broke a soft rule
    obs += [Observation.of(d, iteration=i) for d in diagnoses] + [
        Observation(family=f, params=p, iteration=i) for f, p in not_rejected]
    retests = retests_of(broken, outcomes, current.rules)
    new_set = constraint_update(current, obs, FAMILIES, retests=retests, iteration=i)

    # GENERATION: samplers get the rules in force; soft ones may be broken at the
    # exploration share, and ``sampler.soft_breaks`` says which proposals did
    sampler = make_sampler("sobol", "sma_cross", seed=1, constraints=new_set.active)
    sampler.set_constraints(new_set.active)          # or update a sampler in place
    forbidden_share(FAMILIES["sma_cross"], new_set.active, seed=1).share
"""

from alphaloop.research.features import FEATURES, spec_features
from alphaloop.research.learning import (
    Change,
    ConstraintSet,
    LearningConfig,
    Observation,
    Retest,
    constraint_update,
    contradiction,
    duplicate_rules,
    learn,
    learn_rules,
    retests_of,
    structural_rule,
    update_set,
    wilson_interval,
)
from alphaloop.research.rootcause import (
    FAILURE_CODES,
    GATE_FAILURE_CODES,
    PRECEDENCE,
    CandidateEvidence,
    Diagnosis,
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
    estimate_gross,
    gate_code,
)
from alphaloop.research.space import SpaceShare, forbidden_share

__all__ = [
    "FAILURE_CODES",
    "FEATURES",
    "GATE_FAILURE_CODES",
    "PRECEDENCE",
    "CandidateEvidence",
    "Change",
    "ConstraintSet",
    "Diagnosis",
    "EngineBFailure",
    "GrossOfCost",
    "LearningConfig",
    "LookaheadEvidence",
    "Observation",
    "Retest",
    "ScoringEvidence",
    "SearchMetrics",
    "SpaceShare",
    "StabilityEvidence",
    "ValidationEvidence",
    "VerificationEvidence",
    "constraint_update",
    "contradiction",
    "diagnose",
    "diagnose_all",
    "duplicate_rules",
    "estimate_gross",
    "forbidden_share",
    "gate_code",
    "learn",
    "learn_rules",
    "retests_of",
    "spec_features",
    "structural_rule",
    "update_set",
    "wilson_interval",
]
