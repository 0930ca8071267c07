"""Classify engine B results into failure codes for the orchestrator (seed 004 §6.4).

A verification can fail in four ways, each with evidence the orchestrator branches on
(execution failures → tighten the execution model and shrink the candidates; data
failures → exclude the symbol/period; risk-model failures → adjust the stop ranges):

``EXECUTION_INFEASIBLE`` (PERMANENT)
    The strategy cannot be traded as simulated: fill rate below ``min_fill_rate``,
    participation p95 above ``max_participation_p95``, ADV utilization p95 above
    ``max_adv_utilization_p95``, more than ``max_clipped_share`` of orders cut by
    the cash/leverage limits, or a capacity below ``min_capacity``.
``DATA_FAILURE`` (PERMANENT)
    Symbols failed the data-quality gate and were excluded (the result is
    ``PARTIAL``); one record lists them with their ``DQ_*`` reasons.
``RISK_MODEL_FAILURE`` (PERMANENT)
    The risk controls did not hold: the portfolio or a sleeve was ruined, a stop
    loss lost more than ``(1 + max_stop_overshoot)`` × its stop distance (gaps
    through the stop), or gross leverage at a close exceeded the execution model's
    cap by more than ``leverage_tolerance``.
``NON_DETERMINISTIC`` (CRITICAL)
    Two runs of the same inputs gave different output hashes: nothing the engine
    says about this candidate can be trusted.

The policy is a versioned YAML document like the scoring policy::

    policy_version: verify-v1
    min_fill_rate: 0.95
    max_participation_p95: 0.05
    ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from alphaloop.errors import ErrorClass, ExecutionConfigError
from alphaloop.yamlio import read_yaml, validate_mapping

FAILURE_CODES = ("EXECUTION_INFEASIBLE", "DATA_FAILURE", "RISK_MODEL_FAILURE",
                 "NON_DETERMINISTIC")
_CLASS = {"EXECUTION_INFEASIBLE": ErrorClass.PERMANENT, "DATA_FAILURE": ErrorClass.PERMANENT,
          "RISK_MODEL_FAILURE": ErrorClass.PERMANENT,
          "NON_DETERMINISTIC": ErrorClass.CRITICAL}


class VerificationPolicy(BaseModel):
    """Thresholds that turn an engine B result into failures (``null`` = check off)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    policy_version: str = Field(default="verify-v1", min_length=1)
    min_fill_rate: float | None = Field(default=0.95, ge=0, le=1)
    max_participation_p95: float | None = Field(default=0.05, gt=0, le=1)
    max_adv_utilization_p95: float | None = Field(default=0.10, gt=0)
    max_clipped_share: float | None = Field(default=0.20, ge=0, le=1)
    min_capacity: float | None = Field(default=None, gt=0)
    max_stop_overshoot: float | None = Field(default=1.0, ge=0)
    leverage_tolerance: float | None = Field(default=0.5, ge=0)
    check_determinism: bool = True

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "verification policy") -> VerificationPolicy:
        return validate_mapping(cls, data, source=source, what="a verification policy",
                                error=ExecutionConfigError, code="VERIFY_POLICY_INVALID")

    @classmethod
    def from_yaml(cls, path: str | Path) -> VerificationPolicy:
        data = read_yaml(path, ExecutionConfigError, what="verification policy",
                         not_found="VERIFY_POLICY_NOT_FOUND",
                         malformed="VERIFY_POLICY_MALFORMED_YAML")
        return cls.from_dict(data, source=str(path))


@dataclass(frozen=True)
class VerificationFailure:
    """One failure: its code, how bad, a one-line message and the numbers behind it."""

    code: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def error_class(self) -> ErrorClass:
        return _CLASS[self.code]

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "error_class": str(self.error_class),
                "message": self.message, "evidence": self.evidence}


def classify_failures(result: Any, policy: VerificationPolicy | None = None, *,
                      rerun: Callable[[], Any] | None = None) -> list[VerificationFailure]:
    """Every failure of an engine B ``result`` (a :class:`VerificationResult`).

    ``rerun`` (a zero-argument callable returning a fresh result of the same inputs)
    is called once when the policy checks determinism.
    """
    policy = policy or VerificationPolicy()
    out: list[VerificationFailure] = []
    out += _execution_failures(result, policy)
    if result.excluded:
        out.append(VerificationFailure(
            "DATA_FAILURE",
            f"{len(result.excluded)} symbol(s) failed the data gate and were excluded: "
            + ", ".join(e["symbol"] for e in result.excluded),
            {"excluded": result.excluded, "status": result.status}))
    out += _risk_failures(result, policy)
    if policy.check_determinism and rerun is not None:
        again = rerun()
        if again.output_hash != result.output_hash:
            out.append(VerificationFailure(
                "NON_DETERMINISTIC", "two runs of the same inputs gave different outputs",
                {"hash_1": result.output_hash, "hash_2": again.output_hash}))
    return out


def _execution_failures(result: Any, p: VerificationPolicy) -> list[VerificationFailure]:
    ex = result.execution
    reasons: list[str] = []
    evidence: dict[str, Any] = {}

    def check(name: str, value: Any, limit: float | None, worse: str) -> None:
        if limit is None or value is None or not np.isfinite(value):
            return
        bad = value < limit if worse == "below" else value > limit
        if bad:
            reasons.append(f"{name} {value:.4g} is {worse} the policy's {limit:.4g}")
            evidence[name] = {"value": float(value), "limit": limit}

    check("fill_rate", ex["fill_rate"], p.min_fill_rate, "below")
    if p.min_fill_rate is not None and ex["n_orders"] > 0 and ex["n_fills"] == 0:
        # orders for no whole unit (a sleeve smaller than one share's price) have no
        # notional, so no fill rate: a strategy that never traded is not feasible
        reasons.append(f"none of its {ex['n_orders']} orders filled")
        evidence["n_fills"] = {"value": 0, "n_orders": int(ex["n_orders"])}
    check("participation_p95", ex["participation_p95"], p.max_participation_p95, "above")
    check("adv_utilization_p95", ex["adv_utilization_p95"], p.max_adv_utilization_p95,
          "above")
    if ex["n_orders"] > 0:
        check("clipped_share", ex["n_clipped"] / ex["n_orders"], p.max_clipped_share, "above")
    cap = ex.get("capacity", {}).get("capital")
    if p.min_capacity is not None and cap is not None:
        check("capacity", cap, p.min_capacity, "below")
    if not reasons:
        return []
    return [VerificationFailure("EXECUTION_INFEASIBLE", "; ".join(reasons), evidence)]


def _risk_failures(result: Any, p: VerificationPolicy) -> list[VerificationFailure]:
    reasons: list[str] = []
    evidence: dict[str, Any] = {}
    ruined = int(result.extra.get("ruined_bar", -1))
    if ruined >= 0:
        reasons.append(f"the portfolio was ruined at {result.returns.index[ruined]}")
        evidence["ruined_at"] = str(result.returns.index[ruined])
    trades = result.trades
    n_ruin = int((trades["reason"] == "ruin").sum()) if len(trades) else 0
    if n_ruin:
        reasons.append(f"{n_ruin} sleeve(s) lost their whole equity (ruin stop)")
        evidence["n_ruin_exits"] = n_ruin
    sl = result.spec.risk.stop_loss
    if sl is not None and p.max_stop_overshoot is not None and len(trades):
        stops = trades[trades["reason"] == "stop_loss"]
        if len(stops):
            sign = np.where(stops["side"] == "long", 1.0, -1.0)
            loss = -sign * (stops["exit_price"] / stops["entry_price"] - 1.0)
            worst = float(loss.max())
            if worst > sl * (1.0 + p.max_stop_overshoot):
                reasons.append(f"a stop loss of {sl:g} lost {worst:.4g} (gap through the "
                               f"stop beyond {1 + p.max_stop_overshoot:g}x its distance)")
                evidence["worst_stop_loss"] = worst
    cap = result.model.max_leverage
    lev = float(result.extra.get("realized_leverage", 0.0))
    if cap is not None and p.leverage_tolerance is not None \
            and lev > cap * (1.0 + p.leverage_tolerance):
        reasons.append(f"gross leverage reached {lev:.3g}, above the cap {cap:g} "
                       f"by more than {p.leverage_tolerance:.0%}")
        evidence["max_leverage"] = lev
    if not reasons:
        return []
    return [VerificationFailure("RISK_MODEL_FAILURE", "; ".join(reasons), evidence)]
