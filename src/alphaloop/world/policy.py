"""A world's policy: stage gates, campaign windows, ``allow_live``, live-promotion
governance and freshness limits, validated by pydantic (unknown keys are refused with
their dotted path).

::

    gates:
      backtest: {min_sharpe: 0.5, max_drawdown: 0.3, min_trades: 20}
      paper:    {min_sharpe: 0.3, warn_only: [min_trades]}
    campaign:
      backtest: {window: {min_days: 365, min_samples: 252, min_trades: 20}}
      paper:    {window: {min_days: 30, min_samples: 20}}
    allow_live: false
    governance:
      live_promotion: {mode: manual_approval, cooldown: 7d, max_live: 3, approvers: [alice]}
    freshness: {decision_ttl: 5m, evaluation_max_age: 7d, snapshot_ttl: 1h,
                snapshot_max_age: 2d}
    risk_guard: {max_drawdown: 0.2, max_daily_loss: 0.05, max_leverage: 2,
                 max_order_adv_share: 0.1, max_orders_per_day: 50,
                 world: {max_drawdown: 0.1, max_daily_loss: 0.03, max_leverage: 1.5,
                         max_orders_per_day: 200}}

Durations are seconds or ``<number><s|m|h|d>``. A gate left out is not checked; a gate
whose metric is missing fails (fail-closed, reason ``METRIC_MISSING``). ``max_drawdown``
is a positive fraction compared with ``|max_drawdown|``. ``shadow`` and ``dryrun``
evaluations are judged by the ``paper`` gates (the seed's "paper(dryrun)").
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError

from alphaloop.world.audit import content_hash
from alphaloop.world.errors import WorldError

Stage = Literal["backtest", "paper", "live", "shadow", "dryrun"]
Outcome = Literal["pass", "warn", "fail"]
GateName = Literal["min_sharpe", "max_drawdown", "min_dsr", "min_psr", "min_trades",
                   "min_effective_history_years", "min_total_return", "max_ann_volatility"]
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def _number_only(value: Any) -> Any:
    """JSON numbers only: ``"0.5"``, ``true`` and ``false`` are refused, not converted
    (a quoted or mistyped threshold must not pass for a number)."""
    if isinstance(value, bool | str):
        raise ValueError(f"must be a number, got {type(value).__name__} {value!r}")
    return value


Number = Annotated[float, BeforeValidator(_number_only)]
"""A float field that takes a JSON number only (an integer is a number)."""
Integer = Annotated[int, BeforeValidator(_number_only)]
"""An int field that takes a JSON number only (a whole float such as 7.0 is one)."""


def _seconds(value: Any) -> Any:
    """``"7d"`` → 604800.0; numbers pass through (pydantic then checks them)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (seconds or <number><s|m|h|d>)")
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration (seconds or <number><s|m|h|d>)")
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(_seconds), Field(ge=0, allow_inf_nan=False)]
PositiveDuration = Annotated[float, BeforeValidator(_seconds), Field(gt=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StageGates(_Strict):
    """Thresholds over the core metrics and robustness statistics of one stage."""

    min_sharpe: Number | None = None
    max_drawdown: Number | None = Field(default=None, ge=0, le=1)
    min_dsr: Number | None = Field(default=None, ge=0, le=1)
    min_psr: Number | None = Field(default=None, ge=0, le=1)
    min_trades: Integer | None = Field(default=None, ge=0)
    min_effective_history_years: Number | None = Field(default=None, ge=0)
    min_total_return: Number | None = None
    max_ann_volatility: Number | None = Field(default=None, ge=0)
    warn_only: list[GateName] = Field(default_factory=list)


class Window(_Strict):
    """The minimum observation a campaign phase needs before it may be left."""

    min_days: Number | None = Field(default=None, ge=0)
    min_samples: Integer | None = Field(default=None, ge=0)
    min_trades: Integer | None = Field(default=None, ge=0)


class CampaignPhase(_Strict):
    window: Window = Field(default_factory=Window)


class Campaign(_Strict):
    backtest: CampaignPhase = Field(default_factory=CampaignPhase)
    paper: CampaignPhase = Field(default_factory=CampaignPhase)


class LivePromotion(_Strict):
    mode: Literal["disabled", "manual_approval", "auto_apply"] = "disabled"
    cooldown: Duration = 0.0
    max_live: Integer | None = Field(default=None, ge=0)
    approvers: list[str] = Field(default_factory=list)


class Governance(_Strict):
    live_promotion: LivePromotion = Field(default_factory=LivePromotion)


class Freshness(_Strict):
    """How old a decision, an evaluation and a risk snapshot may be."""

    decision_ttl: PositiveDuration = 300.0
    evaluation_max_age: PositiveDuration = 7 * 86400.0
    snapshot_ttl: PositiveDuration = 3600.0  # default TTL of a snapshot posted without one
    snapshot_max_age: PositiveDuration = 2 * 86400.0  # age of its as_of


class WorldGuard(_Strict):
    """Limits on all of a world's paper and live strategies together, checked by the
    service on every bar a paper runner reports (:mod:`alphaloop.world.riskguard`); a
    breach halts every strategy of the world until an operator resets the world."""

    max_drawdown: Number | None = Field(default=None, gt=0, le=1)  # of the summed equity
    max_daily_loss: Number | None = Field(default=None, gt=0, le=1)  # one bar's world loss
    max_leverage: Number | None = Field(default=None, gt=0)  # summed gross / summed equity
    max_orders_per_day: Integer | None = Field(default=None, ge=0)  # fills on one bar, summed


class RiskGuard(_Strict):
    """Per-strategy limits checked by the paper runner after every bar (MOD-482), and
    the world's limits over all its strategies (``world``); a breach halts the strategy
    (or, for ``world``, every strategy of the world) until an operator resets it. A
    limit left out is not checked."""

    max_drawdown: Number | None = Field(default=None, gt=0, le=1)  # since start or reset
    max_daily_loss: Number | None = Field(default=None, gt=0, le=1)  # one bar's loss
    max_leverage: Number | None = Field(default=None, gt=0)  # gross exposure / equity
    max_order_adv_share: Number | None = Field(default=None, gt=0, le=1)  # one fill vs ADV
    max_orders_per_day: Integer | None = Field(default=None, ge=0)  # fills on one bar
    world: WorldGuard = Field(default_factory=WorldGuard)


class Gates(_Strict):
    backtest: StageGates = Field(default_factory=StageGates)
    paper: StageGates = Field(default_factory=StageGates)
    live: StageGates = Field(default_factory=StageGates)


class WorldPolicy(_Strict):
    """A world policy. ``allow_live`` defaults to false: nothing goes live unless said."""

    gates: Gates = Field(default_factory=Gates)
    campaign: Campaign = Field(default_factory=Campaign)
    allow_live: StrictBool = False
    governance: Governance = Field(default_factory=Governance)
    freshness: Freshness = Field(default_factory=Freshness)
    risk_guard: RiskGuard = Field(default_factory=RiskGuard)

    def ruleset_hash(self) -> str:
        """sha256 of the canonical JSON form: what an evaluation was judged under. An
        empty risk guard is left out, so policies stored before it existed keep their
        hash."""
        data = self.model_dump(mode="json")
        if self.risk_guard == RiskGuard():
            data.pop("risk_guard")
        elif self.risk_guard.world == WorldGuard():
            data["risk_guard"].pop("world")
        return content_hash(data)

    def gates_for(self, stage: Stage) -> StageGates:
        if stage in ("shadow", "dryrun"):
            return self.gates.paper
        gates: StageGates = getattr(self.gates, stage)
        return gates


def parse_policy(data: Any, *, where: str = "policy") -> WorldPolicy:
    """A policy from a parsed YAML/JSON mapping; errors name the dotted field."""
    if not isinstance(data, dict):
        raise WorldError(f"{where}: a policy must be a mapping, got {type(data).__name__}",
                         code="POLICY_INVALID", field=where)
    try:
        return WorldPolicy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or where
        message = err["msg"].removeprefix("Value error, ")
        raise WorldError(f"{where}.{field}: {message}", code="POLICY_INVALID",
                         field=f"{where}.{field}") from None


# ----------------------------------------------------------------------- judging


class RuleResult(BaseModel):
    """One gate's verdict. ``reason`` is a stable code (``PASSED``, ``BELOW_MIN``, ...)."""

    rule: str
    metric: str
    threshold: float
    value: float | None
    outcome: Outcome
    reason: str


# gate → (metric, sense): "min" passes when value >= threshold, "max" when value <= it
_GATES: dict[str, tuple[str, str]] = {
    "min_sharpe": ("sharpe", "min"), "max_drawdown": ("max_drawdown", "max"),
    "min_dsr": ("dsr", "min"), "min_psr": ("psr", "min"), "min_trades": ("n_trades", "min"),
    "min_effective_history_years": ("effective_history_years", "min"),
    "min_total_return": ("total_return", "min"), "max_ann_volatility": ("ann_volatility", "max"),
}


def _judge(gate: str, threshold: float, value: float | None, warn_only: bool) -> RuleResult:
    metric, sense = _GATES[gate]
    failed: Outcome = "warn" if warn_only else "fail"
    if value is None or not math.isfinite(value):
        return RuleResult(rule=gate, metric=metric, threshold=threshold, value=None,
                          outcome=failed, reason="METRIC_MISSING")
    seen = abs(value) if gate == "max_drawdown" else value
    ok = seen >= threshold if sense == "min" else seen <= threshold
    reason = "PASSED" if ok else ("BELOW_MIN" if sense == "min" else "ABOVE_MAX")
    outcome: Outcome = "pass" if ok else failed
    return RuleResult(rule=gate, metric=metric, threshold=threshold, value=value,
                      outcome=outcome, reason=reason)


def judge(gates: StageGates, metrics: dict[str, float | None]) -> tuple[Outcome, list[RuleResult]]:
    """Every configured gate of a stage over ``metrics``; the worst outcome wins.

    No metrics at all is a failure even without gates (``NO_METRICS``): a world never
    lets through what it could not look at.
    """
    results = [_judge(gate, float(threshold), metrics.get(_GATES[gate][0]),
                      gate in gates.warn_only)
               for gate, threshold in gates.model_dump(exclude={"warn_only"}).items()
               if threshold is not None]
    if not any(v is not None for v in metrics.values()):
        results.append(RuleResult(rule="metrics_present", metric="*", threshold=1.0, value=0.0,
                                  outcome="fail", reason="NO_METRICS"))
    outcomes = {r.outcome for r in results}
    worst: Outcome = "fail" if "fail" in outcomes else "warn" if "warn" in outcomes else "pass"
    return worst, results
