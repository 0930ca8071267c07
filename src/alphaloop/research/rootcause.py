"""Root cause of a rejected candidate (MOD-441/442 → MOD-440 failure records).

The loop rejects candidates at several stages; each stage leaves *evidence*: the
search-window metrics and the gates the scoring policy failed (S60), a lookahead
verdict (S65), engine B's failure codes (S70), the out-of-sample Sharpe on the
validation window and the parameter-neighbourhood stability (S75). :func:`diagnose`
reads all of it and names one **primary** failure code, the **secondary** codes and
the numbers behind each (value, threshold, the stage that saw it)::

    >>> ev = CandidateEvidence(
    ...     strategy_id="s1", family="sma_cross", params={"fast": 5, "slow": 20},
    ...     scoring=ScoringEvidence(
    ...         metrics=SearchMetrics(n_trades=210, sharpe=-0.4, max_drawdown=-0.2,
    ...                               turnover=80.0, ann_volatility=0.12),
    ...         gross=GrossOfCost(sharpe=0.6), failed_gates=("min_sharpe", "max_turnover"),
    ...         gates={"min_sharpe": 0.5, "max_turnover": 50.0}))
    >>> d = diagnose(ev)
    >>> d.code, d.secondary, d.stage_id
    ('COST_DOMINATED', ('EXCESSIVE_TURNOVER', 'LOW_SHARPE'), 'S60')

Precedence (:data:`PRECEDENCE`). Several codes usually hold at once; the primary one
is the most *fundamental*: the cause that, removed, could change the others, and the
one whose lesson the constraint learner should draw. In order:

1. ``LOOKAHEAD``, ``DATA_FAILURE`` -- every other number is fiction or rests on bad data;
2. ``NO_TRADES``, ``TOO_FEW_TRADES``, ``SHORT_HISTORY`` -- too little evidence for any
   other statistic to mean anything;
3. ``DUPLICATE`` -- a copy of a known strategy teaches nothing about its own region;
4. ``COST_DOMINATED`` -- the gross edge is real and costs explain the low net
   numbers, so ``LOW_SHARPE``/``EXCESSIVE_TURNOVER`` are its symptoms;
   ``EXCESSIVE_TURNOVER`` next (the cost model decides the result);
5. ``EXECUTION_INFEASIBLE``, ``RISK_MODEL_FAILURE`` -- engine B could not trade it or
   its risk controls did not hold;
6. ``DRAWDOWN_BREACH`` before ``LOW_SHARPE`` (the risk lever, stops and sizing, is
   the one to change first), then ``LOW_INFORMATION_RATIO`` (the excess over the
   benchmark is small before any deflation);
7. ``OVERFIT_DSR``, ``OVERFIT_PBO`` -- a Sharpe that looked fine but not after
   deflation by the number of trials; then ``BENCHMARK_NOT_BEATEN``, the deflated
   excess over the benchmark: a candidate whose Sharpe does not survive deflation
   against cash fails for that reason first, whatever its margin over the benchmark;
8. ``UNSTABLE_PARAMS``, ``OOS_DECAY`` -- robustness diagnoses of candidates that got
   that far;
9. ``LOW_SCORE`` -- every gate passed but the score stayed below the threshold.

``stage_id`` is the *rejecting* stage: the first stage (in pipeline order) whose
evidence holds a failure. Each code's entry in ``evidence`` names its own stage.

Infrastructure errors are never failure records, by construction: the evidence
types hold only outcomes a stage *measured* -- there is no field for an exception,
a timeout or an I/O error, so a stage that crashed has no evidence to give and its
candidates are not diagnosed (the loop retries the stage instead). Engine B codes
are checked against :data:`STRATEGY_ENGINE_B_CODES`; ``NON_DETERMINISTIC`` (an engine
fault, CRITICAL) or any other code is refused with a ``ValueError``. A candidate
whose evidence shows no failure gets no diagnosis (``None``): not having been
shortlisted because the top-k was full is not a property of the strategy.

One mapping from scoring gate names to failure codes, :data:`GATE_FAILURE_CODES`,
serves the loop and ``evaluate`` alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

GATE_FAILURE_CODES: dict[str, str] = {
    "min_trades": "TOO_FEW_TRADES",
    "min_sharpe": "LOW_SHARPE",
    "max_drawdown": "DRAWDOWN_BREACH",
    "max_turnover": "EXCESSIVE_TURNOVER",
    "min_history_years": "SHORT_HISTORY",
    "min_dsr": "OVERFIT_DSR",
    "max_pbo": "OVERFIT_PBO",
    "min_excess_dsr": "BENCHMARK_NOT_BEATEN",
    "min_information_ratio": "LOW_INFORMATION_RATIO",
}
"""A failed scoring gate (score-v1/score-v2 ``gates``) → the failure code it stands for."""

STRATEGY_ENGINE_B_CODES = ("EXECUTION_INFEASIBLE", "DATA_FAILURE", "RISK_MODEL_FAILURE")
"""Engine B failure codes that describe the strategy (see ``engines.verification``)."""

PRECEDENCE: tuple[str, ...] = (
    "LOOKAHEAD", "DATA_FAILURE",
    "NO_TRADES", "TOO_FEW_TRADES", "SHORT_HISTORY",
    "DUPLICATE",
    "COST_DOMINATED", "EXCESSIVE_TURNOVER",
    "EXECUTION_INFEASIBLE", "RISK_MODEL_FAILURE",
    "DRAWDOWN_BREACH", "LOW_SHARPE", "LOW_INFORMATION_RATIO",
    "OVERFIT_DSR", "OVERFIT_PBO", "BENCHMARK_NOT_BEATEN",
    "UNSTABLE_PARAMS", "OOS_DECAY",
    "LOW_SCORE",
)
"""Every failure code, most fundamental first: the first present is the primary code."""

FAILURE_CODES: frozenset[str] = frozenset(PRECEDENCE)


def gate_code(gate: str) -> str:
    """The failure code of a scoring gate; an unknown gate's name in capitals."""
    return GATE_FAILURE_CODES.get(str(gate), str(gate).upper())


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchMetrics(_In):
    """Engine A's core metrics on the search window (``max_drawdown <= 0``; turnover is
    traded notional / equity per year, both sides; ``None``: undefined)."""

    n_trades: int = Field(ge=0)
    sharpe: float | None = None
    max_drawdown: float | None = None
    turnover: float | None = None
    total_return: float | None = None
    ann_volatility: float | None = None
    effective_history_years: float | None = None

    @classmethod
    def of(cls, metrics: Mapping[str, Any]) -> SearchMetrics:
        """From a row of engine A's metrics (a dict or a pandas row): NaN and missing
        values become None, as "undefined" is what they mean there."""
        values: dict[str, float | None] = {}
        for name in ("sharpe", "max_drawdown", "turnover", "total_return", "ann_volatility",
                     "effective_history_years"):
            v = float(metrics.get(name, math.nan))
            values[name] = v if math.isfinite(v) else None
        return cls(n_trades=int(metrics["n_trades"]), **values)


class GrossOfCost(_In):
    """The same candidate with fees and slippage at zero: an exact rerun
    (``method="zero-cost rerun"``) or :func:`estimate_gross` from the metrics."""

    sharpe: float | None = None
    total_return: float | None = None
    method: str = "zero-cost rerun"


class ScoringEvidence(_In):
    """S60: metrics, the scoring policy's failed gates and thresholds, the score, and
    the return correlation with the closest known strategy."""

    stage_id: str = "S60"
    metrics: SearchMetrics
    failed_gates: tuple[str, ...] = ()
    gates: Mapping[str, float | None] = Field(default_factory=dict)
    score_total: float | None = None
    score_threshold: float | None = None
    gross: GrossOfCost | None = None
    dsr: float | None = None
    pbo: float | None = None
    excess_dsr: float | None = None
    information_ratio: float | None = None
    correlated_with: str | None = None
    correlation: float | None = None
    correlation_threshold: float | None = None


class LookaheadEvidence(_In):
    """S65: the lookahead check found the signals change when future bars are cut."""

    stage_id: str = "S65"
    message: str


class EngineBFailure(_In):
    """One of engine B's failures (``VerificationFailure.to_dict()`` fits)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    code: str
    message: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)

    @field_validator("code")
    @classmethod
    def _strategy_code(cls, code: str) -> str:
        # why: an engine fault is not a fact about the strategy (never a failure record)
        if code not in STRATEGY_ENGINE_B_CODES:
            raise ValueError(f"{code!r} is not a failure of the strategy (expected one of "
                             f"{', '.join(STRATEGY_ENGINE_B_CODES)}); NON_DETERMINISTIC and "
                             "infrastructure errors are the loop's to handle")
        return code


class VerificationEvidence(_In):
    """S70: engine B's failures and its Sharpe (``<= 0`` fails as ``LOW_SHARPE``)."""

    stage_id: str = "S70"
    failures: tuple[EngineBFailure, ...] = ()
    sharpe: float | None = None


class ValidationEvidence(_In):
    """S75: out-of-sample decay; passes when the validation Sharpe is positive and at
    least ``min_ratio`` × the search Sharpe."""

    stage_id: str = "S75"
    sharpe_search: float
    sharpe_validation: float
    min_ratio: float


class StabilityEvidence(_In):
    """S75: the share of ±1-step neighbours that hold up (``evaluation.validation``'s
    ``StabilityResult``); unstable below ``min_fraction`` or when ``stable`` is false."""

    stage_id: str = "S75"
    fraction_ok: float | None
    min_fraction: float
    stable: bool


class CandidateEvidence(_In):
    """Everything the loop measured about one candidate; later stages optional."""

    strategy_id: str = Field(min_length=1)
    family: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    scoring: ScoringEvidence
    lookahead: LookaheadEvidence | None = None
    verification: VerificationEvidence | None = None
    validation: ValidationEvidence | None = None
    stability: StabilityEvidence | None = None


class Diagnosis(_In):
    """One rejected candidate's failure record (MOD-440) without run and iteration."""

    strategy_id: str
    family: str | None
    params: dict[str, Any]
    stage_id: str
    code: str
    secondary: tuple[str, ...]
    evidence: dict[str, Any]

    @property
    def codes(self) -> tuple[str, ...]:
        return (self.code, *self.secondary)

    def record_fields(self) -> dict[str, Any]:
        """The ``FailureRecord`` fields it fills: strategy_id, stage_id, code,
        secondary, evidence (family and params inside the evidence)."""
        return {"strategy_id": self.strategy_id, "stage_id": self.stage_id,
                "code": self.code, "secondary": list(self.secondary),
                "evidence": {**self.evidence, "family": self.family, "params": self.params}}


Found = dict[str, dict[str, Any]]  # code -> its evidence (with "stage")


# ------------------------------------------------------------------ checks
def _scoring_codes(s: ScoringEvidence) -> Found:
    found: Found = {}
    m = s.metrics
    for gate in s.failed_gates:
        found[gate_code(gate)] = {"gate": gate, "threshold": s.gates.get(gate),
                                  "value": _gate_value(s, gate)}
    if m.n_trades == 0:  # why: zero trades is its own lesson, not "a few too few"
        found.pop("TOO_FEW_TRADES", None)
        found["NO_TRADES"] = {"value": 0}
    if _cost_dominated(m, s.gross):
        assert s.gross is not None
        found["COST_DOMINATED"] = {
            "net_sharpe": m.sharpe, "gross_sharpe": s.gross.sharpe,
            "net_total_return": m.total_return, "gross_total_return": s.gross.total_return,
            "turnover": m.turnover, "method": s.gross.method}
    if _is_duplicate(s):
        found["DUPLICATE"] = {"correlated_with": s.correlated_with, "value": s.correlation,
                              "threshold": s.correlation_threshold}
    if not found and _below(s.score_total, s.score_threshold):
        found["LOW_SCORE"] = {"value": s.score_total, "threshold": s.score_threshold}
    return found


def _gate_value(s: ScoringEvidence, gate: str) -> float | int | None:
    m = s.metrics
    values: dict[str, float | int | None] = {
        "min_trades": m.n_trades, "min_sharpe": m.sharpe, "max_drawdown": m.max_drawdown,
        "max_turnover": m.turnover, "min_history_years": m.effective_history_years,
        "min_dsr": s.dsr, "max_pbo": s.pbo,
        "min_excess_dsr": s.excess_dsr, "min_information_ratio": s.information_ratio}
    return values.get(gate)


def _cost_dominated(m: SearchMetrics, gross: GrossOfCost | None) -> bool:
    """Gross edge positive, net not: by Sharpe, or by total return when both are known."""
    if gross is None:
        return False
    by_sharpe = _pos(gross.sharpe) and _nonpos(m.sharpe)
    by_return = _pos(gross.total_return) and _nonpos(m.total_return)
    return by_sharpe or by_return


def _is_duplicate(s: ScoringEvidence) -> bool:
    if s.correlated_with is None:
        return False
    if s.correlation is None or s.correlation_threshold is None:
        return True  # the shortlist's cluster rule said so without the number
    return s.correlation >= s.correlation_threshold


def _verification_codes(v: VerificationEvidence) -> Found:
    found: Found = {f.code: {"message": f.message, **f.evidence} for f in v.failures}
    if v.sharpe is None or not v.sharpe > 0:
        found["LOW_SHARPE"] = {"engine": "B", "value": v.sharpe, "threshold": 0.0}
    return found


def _validation_codes(v: ValidationEvidence) -> Found:
    ratio = v.sharpe_validation / v.sharpe_search if v.sharpe_search > 0 else math.nan
    if v.sharpe_validation > 0 and math.isfinite(ratio) and ratio >= v.min_ratio:
        return {}
    return {"OOS_DECAY": {"sharpe_search": v.sharpe_search,
                          "sharpe_validation": v.sharpe_validation,
                          "oos_ratio": ratio if math.isfinite(ratio) else None,
                          "threshold": v.min_ratio}}


def _stability_codes(v: StabilityEvidence) -> Found:
    low = v.fraction_ok is None or v.fraction_ok < v.min_fraction
    if v.stable and not low:
        return {}
    return {"UNSTABLE_PARAMS": {"value": v.fraction_ok, "threshold": v.min_fraction}}


def _stage_codes(ev: CandidateEvidence) -> list[tuple[str, Found]]:
    """(stage id, codes found) for each stage with evidence, in pipeline order."""
    out: list[tuple[str, Found]] = [(ev.scoring.stage_id, _scoring_codes(ev.scoring))]
    if ev.lookahead is not None:
        out.append((ev.lookahead.stage_id, {"LOOKAHEAD": {"message": ev.lookahead.message}}))
    if ev.verification is not None:
        out.append((ev.verification.stage_id, _verification_codes(ev.verification)))
    if ev.validation is not None:
        out.append((ev.validation.stage_id, _validation_codes(ev.validation)))
    if ev.stability is not None:
        out.append((ev.stability.stage_id, _stability_codes(ev.stability)))
    return out


# ------------------------------------------------------------------ public
def diagnose(ev: CandidateEvidence) -> Diagnosis | None:
    """The failure record of one candidate, or None when its evidence shows no failure.

    Primary code: the first of :data:`PRECEDENCE` present; secondary: the others, in
    precedence order. ``evidence[code]`` holds each code's numbers and its stage;
    ``evidence["metrics"]`` the search metrics.
    """
    found: Found = {}
    rejecting: str | None = None
    for stage, codes in _stage_codes(ev):
        if codes and rejecting is None:
            rejecting = stage
        for code, detail in codes.items():
            found.setdefault(code, {"stage": stage, **detail})
    if rejecting is None:
        return None
    ordered = sorted(found, key=_rank)
    evidence: dict[str, Any] = {"metrics": ev.scoring.metrics.model_dump(), **found}
    return Diagnosis(strategy_id=ev.strategy_id, family=ev.family, params=dict(ev.params),
                     stage_id=rejecting, code=ordered[0], secondary=tuple(ordered[1:]),
                     evidence=evidence)


def diagnose_all(evidence: Iterable[CandidateEvidence]) -> list[Diagnosis]:
    """:func:`diagnose` of each candidate, keeping only those that failed."""
    return [d for d in map(diagnose, evidence) if d is not None]


def estimate_gross(metrics: SearchMetrics, fees_bps: float, slippage_bps: float,
                   *, years: float | None = None) -> GrossOfCost:
    """Gross-of-cost Sharpe (and total return with ``years``) from net metrics alone.

    Engine A charges ``fee + slippage`` per side on traded notional, and ``turnover``
    is traded notional / equity per year with both sides counted, so costs take about
    ``drag = turnover × (fee + slippage)`` a year off the mean return and leave the
    volatility almost unchanged: ``gross_sharpe ≈ sharpe + drag / ann_volatility``.
    With ``years`` the total return is grossed up by compounding the drag
    (``(1 + R) × exp(drag × years) − 1``; an approximation of the same order).
    ``None`` where an input is missing or the volatility is zero.
    """
    drag, sharpe, vol = metrics.turnover, metrics.sharpe, metrics.ann_volatility
    cost = (float(fees_bps) + float(slippage_bps)) / 1e4
    g_sharpe = None
    if drag is not None and sharpe is not None and vol:
        g_sharpe = sharpe + drag * cost / vol
    total = metrics.total_return
    g_total = None
    if drag is not None and total is not None and years is not None:
        g_total = (1.0 + total) * math.exp(drag * cost * years) - 1.0
    return GrossOfCost(sharpe=g_sharpe, total_return=g_total, method="turnover estimate")


def _rank(code: str) -> tuple[int, str]:
    # unknown codes (a gate not in the mapping) go after the known ones, by name
    return (PRECEDENCE.index(code), "") if code in FAILURE_CODES else (len(PRECEDENCE), code)


def _pos(v: float | None) -> bool:
    return v is not None and math.isfinite(v) and v > 0


def _nonpos(v: float | None) -> bool:
    return v is not None and math.isfinite(v) and v <= 0


def _below(v: float | None, threshold: float | None) -> bool:
    return v is not None and threshold is not None and v < threshold
