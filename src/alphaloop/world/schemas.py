"""Typed bodies of every endpoint: what the service accepts and what it answers.

Requests are strict (unknown keys refused, no NaN or infinity, bounded sizes) so that
a malformed or hostile body is a 422 naming the field, never a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from alphaloop.world.policy import Integer, Number, Outcome, RuleResult, Stage


def _not_dots(value: str) -> str:
    # "." and ".." are path steps, not names: a URL holding them reaches another resource
    if set(value) == {"."}:
        raise ValueError(f"{value!r} is not a name (it is a path step)")
    return value


def _in_utc(value: datetime) -> datetime:
    # the service keeps times in UTC: one whose UTC form leaves years 1..9999
    # (0001-01-01T00:00:00+01:00) cannot be stored, which is the request's fault
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the times UTC can represent (years 1 to 9999)") from None
    return value


When = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""A time in a request: with its zone, and one UTC can represent."""
KEY_RULE = "1 to 128 of A-Z a-z 0-9 . _ : @ + - (not only dots)"  # Key, in words
Key = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@+-]+$"),
                AfterValidator(_not_dots)]
StrategyId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Role = Literal["viewer", "submitter", "operator", "approver", "admin"]
DecidedStage = Literal["backtest", "paper", "live"]
# numbers in requests are JSON numbers (Number, Integer): never their text ("0.5") or a
# boolean (``true`` taken as 1.0 would be a 100 % return). A period return below -100 %
# would leave negative equity: no series holds one
Returns = Annotated[list[Annotated[Number, Field(gt=-1)]], Field(min_length=2,
                                                               max_length=200_000)]
Ppy = Annotated[Number, Field(gt=0, le=1_000_000)]  # a number, never its text
Name = Annotated[str, Field(max_length=200)]
SQL_INT_MAX = 2**63 - 1
"""The largest integer a database column holds (SQLite INTEGER, PostgreSQL BIGINT)."""
Index = Annotated[Integer, Field(ge=0, le=SQL_INT_MAX)]
"""A count, sequence number or row id in a request: beyond it a 422, not a database error."""
_SMA: dict[str, Any] = {"entry": "sma(close, 10) > sma(close, 50)", "exit": "sma(close, 10) < sma(close, 50)"}


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        """No text of a request holds a NUL character: PostgreSQL cannot store one, and a
        path cannot name one (both were a 500)."""
        where = nul_at(data, "body")
        if where is not None:
            raise ValueError(f"{where} holds a NUL character (\\x00), which no text may hold")
        return data


def nul_at(value: Any, where: str) -> str | None:
    """The first place in ``value`` (dicts, lists, keys too) with a NUL character."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = nul_at(key, f"{where}: a key") or nul_at(item, f"{where}.{key}")
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = nul_at(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


class Metrics(_In):
    """The v1 core metrics plus the robustness statistics gates may use; None = unknown."""

    total_return: Number | None = None
    cagr: Number | None = None
    ann_volatility: Number | None = None
    sharpe: Number | None = None
    sortino: Number | None = None
    max_drawdown: Number | None = Field(default=None, ge=-1, le=0)
    calmar: Number | None = None
    turnover: Number | None = Field(default=None, ge=0)
    exposure: Number | None = Field(default=None, ge=0)
    n_trades: Integer | None = Field(default=None, ge=0, le=SQL_INT_MAX)
    win_rate: Number | None = Field(default=None, ge=0, le=1)
    profit_factor: Number | None = Field(default=None, ge=0)
    effective_history_years: Number | None = Field(default=None, ge=0)
    dsr: Number | None = Field(default=None, ge=0, le=1)
    psr: Number | None = Field(default=None, ge=0, le=1)
    pbo: Number | None = Field(default=None, ge=0, le=1)


class WorldIn(_In):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{"world_id": "main", "name": "main world", "data": "us_indices",
                                                     "policy": {"allow_live": False}}]})
    world_id: Key
    name: Name = ""
    data: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    policy: dict[str, Any] | None = None


class WorldOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "world_id": "main", "name": "main world", "data": "us_indices", "policy_version": 2,
        "ruleset_hash": "1f3a" + "0" * 60, "policy": {"allow_live": False},
        "created_at": "2026-12-01T00:00:00Z", "created": True}]})

    world_id: str
    name: str
    data: str | None
    policy_version: int | None
    ruleset_hash: str | None
    policy: dict[str, Any] | None
    created_at: datetime
    created: bool = False


class PolicyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "world_id": "main", "version": 2, "ruleset_hash": "1f3a" + "0" * 60,
        "policy": {"allow_live": False}, "created": True}]})

    world_id: str
    version: int
    ruleset_hash: str
    policy: dict[str, Any]
    created: bool


class EvaluateIn(_In):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{
        "run_id": "submit:4d512c22:backtest", "stage": "backtest",
        "spec": _SMA, "metrics": {"sharpe": 1.1, "max_drawdown": -0.12, "n_trades": 40}}]})
    """One strategy to judge. ``run_id`` is the idempotency key of the evaluation run.

    Give ``spec`` (parsed by the strategy language; its id is computed) or
    ``strategy_id`` of a strategy the world or the knowledge base knows. Without
    ``metrics`` the service sources them (seed §3).
    """

    run_id: Key
    stage: Stage = "backtest"
    strategy_id: StrategyId | None = None
    spec: dict[str, Any] | None = None
    metrics: Metrics | None = None
    realized_returns: Returns | None = None
    periods_per_year: Ppy = 252.0


class CohortItem(_In):
    run_id: Key | None = None  # default: "<cohort run_id>:<strategy_id>"
    strategy_id: StrategyId | None = None
    spec: dict[str, Any] | None = None
    metrics: Metrics | None = None
    realized_returns: Returns | None = None


class CohortIn(_In):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{
        "run_id": "run-7:it-3", "stage": "backtest", "items": [{"spec": _SMA}]}]})
    run_id: Key
    stage: Stage = "backtest"
    periods_per_year: Ppy = 252.0
    items: Annotated[list[CohortItem], Field(min_length=1, max_length=500)]


class RevisionOut(BaseModel):
    revision: int
    content_hash: str
    policy_version: int
    ruleset_hash: str
    metrics: dict[str, float | int | None]
    metric_sources: list[str]
    risk: dict[str, Any] | None
    rules: list[RuleResult]
    outcome: Outcome
    actor: str
    created_at: datetime


class EvaluationOut(BaseModel):
    """The run after this request; ``written`` is False when nothing changed."""

    world_id: str
    run_id: str
    strategy_id: str
    stage: Stage
    written: bool
    latest: RevisionOut


class RunOut(BaseModel):
    world_id: str
    run_id: str
    strategy_id: str
    stage: Stage
    outcome: Outcome
    revisions: list[RevisionOut]


class CohortOut(BaseModel):
    world_id: str
    run_id: str
    results: list[EvaluationOut]


class DecisionEnvelope(BaseModel):
    """Where a strategy may run now, and why. Stale after ``as_of + ttl_s``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "world_id": "main", "strategy_id": "4d512c22" + "0" * 56, "stage": "paper",
        "reasons": ["BACKTEST_PASSED", "LIVE_NOT_ALLOWED"], "as_of": "2026-12-01T00:00:00Z",
        "ttl_s": 300.0, "policy_version": 2, "ruleset_hash": "1f3a" + "0" * 60,
        "run_id": "submit:4d512c22:backtest"}]})

    world_id: str
    strategy_id: str
    stage: DecidedStage
    reasons: list[str]
    as_of: datetime
    ttl_s: float
    policy_version: int | None
    ruleset_hash: str | None
    run_id: str | None


class SnapshotIn(_In):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{
        "world_id": "main", "strategy_id": "", "as_of": "2026-12-01T00:00:00Z",
        "ttl_s": 3600, "weights": {"SPX": 0.6, "IXIC": 0.4},
        "realized_returns": [0.001, -0.002, 0.0005], "stress": {"crash_2008": -0.21},
        "provenance": {"producer": "paper-runner"}}]})
    """A risk signal hub snapshot: stored as given (producers compute, the hub keeps)."""

    world_id: Key
    strategy_id: StrategyId | Literal[""] = ""
    as_of: When
    ttl_s: Annotated[Number, Field(gt=0, le=365 * 86400)] | None = None
    weights: Annotated[dict[Annotated[str, Field(max_length=128)], Number],
                       Field(max_length=10_000)] = Field(default_factory=dict)
    realized_returns: Returns | None = None
    realized_returns_ref: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    periods_per_year: Ppy = 252.0
    covariance: Annotated[list[list[Number]], Field(max_length=1000)] | None = None
    stress: Annotated[dict[Annotated[str, Field(max_length=128)], Number],
                      Field(max_length=1000)] | None = None
    provenance: Annotated[dict[Annotated[str, Field(max_length=128)],
                               Annotated[str, Field(max_length=1024)] | float | bool | None],
                          Field(max_length=100)] = Field(default_factory=dict)

    @field_validator("provenance", mode="before")
    @classmethod
    def _trade_count(cls, value: Any) -> Any:
        # n_trades is read as the paper window's trade count: a count, or absent
        n = value.get("n_trades") if isinstance(value, dict) else None
        if n is not None and (isinstance(n, bool) or not isinstance(n, int | float)
                              or n != n or n < 0 or n > SQL_INT_MAX or int(n) != n):
            raise ValueError(f"n_trades must be a whole number of trades in 0..{SQL_INT_MAX}, "
                             f"got {n!r}")
        return value


class SnapshotOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "snapshot_id": 7, "content_hash": "9c1e" + "0" * 60, "world_id": "main",
        "strategy_id": "", "as_of": "2026-12-01T00:00:00Z", "ttl_s": 3600.0,
        "ingested_at": "2026-12-01T00:00:05Z", "body": {"weights": {"SPX": 1.0}},
        "created": True, "stale": False, "stale_reasons": []}]})

    snapshot_id: int
    content_hash: str
    world_id: str
    strategy_id: str
    as_of: datetime
    ttl_s: float
    ingested_at: datetime
    body: dict[str, Any]
    created: bool
    stale: bool
    stale_reasons: list[str]


MAX_TOKEN_NAME = 128
"""The longest token name (the audit trail and the approvers list name holders by it)."""


class TokenIn(_In):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{"role": "submitter", "name": "ci"}]})
    role: Role
    name: Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_NAME)]


class TokenOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "token_id": "3a58fc902436d8f1", "role": "submitter", "name": "ci",
        "token": "alw_3a58fc902436d8f1_<secret shown once>"}]})

    token_id: str
    role: Role
    name: str
    token: str | None = None  # the secret: shown once, when created


class AuditOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "audit_id": 12, "world_id": "main", "actor": "alice#3a58fc902436d8f1",
        "action": "policy.update", "target": "v2", "before_hash": "1f3a" + "0" * 60,
        "after_hash": "77b0" + "0" * 60, "ts": "2026-12-01T00:00:00Z"}]})

    audit_id: int
    world_id: str | None
    actor: str
    action: str
    target: str
    before_hash: str | None
    after_hash: str | None
    ts: datetime


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"error": {
        "code": "POLICY_INVALID", "field": "policy.governance.live_promotion.mdoe",
        "message": "policy.governance.live_promotion.mdoe: Extra inputs are not permitted"}}]})

    error: ErrorBody


# ------------------------------------------------------------------ campaigns (seed §4)

Phase = Literal["backtest_campaign", "paper_campaign", "live_campaign"]
ActionKind = Literal["start_paper", "evaluate_paper", "activate_live"]
Target = Literal["paper", "live"]
IdempotencyKey = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class WindowMeasure(BaseModel):
    """One condition of a campaign window: what the policy asks, what was observed."""

    required: float | None  # None: the policy sets no minimum
    observed: float | None  # None: not known (a minimum on it is then not met)
    filled: bool


class WindowProgress(BaseModel):
    """A phase's window (``campaign.<stage>.window``) against what was observed."""

    stage: Literal["backtest", "paper"]
    days: WindowMeasure
    samples: WindowMeasure
    trades: WindowMeasure
    filled: bool


class CandidateOut(BaseModel):
    """A strategy's execution target and the reasons of its last refused step."""

    target: Target
    broker: str
    status: Literal["blocked", "planned", "approved", "rejected", "live", "paper"]
    reasons: list[str]
    plan_hash: str | None
    last_live_at: datetime | None
    updated_at: datetime


class StrategyCampaign(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "strategy_id": "4d512c22" + "0" * 56, "phase": "backtest_campaign",
        "run_id": "submit:4d512c22:backtest", "revision": 1, "outcome": "pass",
        "window": {"stage": "backtest", "filled": False,
                   "days": {"required": 365, "observed": 182.6, "filled": False},
                   "samples": {"required": 60, "observed": 126, "filled": True},
                   "trades": {"required": 20, "observed": 31, "filled": True}},
        "metrics": {"sharpe": 1.1, "n_trades": 31, "effective_history_years": 0.5},
        "promotable": False, "next_phase": "paper_campaign",
        "reasons": ["BACKTEST_WINDOW_DAYS_SHORT"]}]})

    strategy_id: str
    phase: Phase
    run_id: str | None  # the evaluation run the phase is judged on
    revision: int | None
    outcome: Outcome | None
    window: WindowProgress
    metrics: dict[str, float | int | None]  # of that run's newest revision
    promotable: bool  # to next_phase; every reason it is not is in reasons
    next_phase: Phase | None
    reasons: list[str]
    candidate: CandidateOut | None = None  # live governance: target, status, stored reasons


class CampaignOut(BaseModel):
    world_id: str
    policy_version: int
    ruleset_hash: str
    governance_mode: Literal["disabled", "manual_approval", "auto_apply"]
    allow_live: bool
    as_of: datetime
    strategies: list[StrategyCampaign]


class CampaignActionOut(BaseModel):
    """A recommended action. ``suggested_body`` is a ``POST /worlds/{id}/evaluate`` body
    without metrics (the world sources them); the key changes when what it was computed
    from changes, so executing it twice is recognized as the same action."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "idempotency_key": "5be1" + "0" * 60, "kind": "start_paper",
        "strategy_id": "4d512c22" + "0" * 56, "phase": "backtest_campaign",
        "suggested_run_id": "campaign:4d512c2200000000:paper",
        "suggested_body": {"run_id": "campaign:4d512c2200000000:paper", "stage": "paper",
                           "strategy_id": "4d512c22" + "0" * 56},
        "reason": "BACKTEST_WINDOW_FILLED"}]})

    idempotency_key: str
    kind: ActionKind
    strategy_id: str
    phase: Phase
    suggested_run_id: str
    suggested_body: dict[str, Any]
    reason: str


class TickOut(BaseModel):
    world_id: str
    policy_version: int
    ruleset_hash: str
    as_of: datetime
    actions: list[CampaignActionOut]


class ExecuteIn(_In):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{"idempotency_key": "5be1" + "0" * 60}]})
    idempotency_key: IdempotencyKey


class ExecutedOut(BaseModel):
    """An executed action; ``executed`` is False when the key had been executed before
    (this answer then describes that first execution)."""

    world_id: str
    idempotency_key: str
    kind: ActionKind
    strategy_id: str
    run_id: str
    revision: int
    outcome: Outcome
    actor: str
    executed_at: datetime
    executed: bool


# --------------------------------------------------------- live governance (seed §5)


class ApprovalIn(_In):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{
        "strategy_id": "4d512c22" + "0" * 56, "decision": "approve",
        "comment": "paper window looks sane"}]})
    strategy_id: StrategyId
    decision: Literal["approve", "reject"]
    comment: Annotated[str, Field(max_length=2000)] = ""


class ApprovalOut(BaseModel):
    approval_id: int
    world_id: str
    strategy_id: str
    decision: Literal["approve", "reject"]
    ruleset_hash: str  # the content of the policy it was given under
    policy_version: int  # the approval holds while the policy is this version
    paper_run_id: str
    paper_revision: int
    comment: str
    actor: str
    created_at: datetime


class ActivationIn(_In):
    """Plan switching a strategy's execution target (phase one of two)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{
        "strategy_id": "4d512c22" + "0" * 56, "target": "live", "broker": "paper"}]})
    strategy_id: StrategyId
    target: Target
    broker: Annotated[str, Field(min_length=1, max_length=64)] = "paper"


class PlanOut(BaseModel):
    """What ``/apply`` with ``plan_hash`` would do, and whether it may; a plan whose
    basis changed before it is applied is refused (``PLAN_STALE``)."""

    world_id: str
    strategy_id: str
    current: Target | None
    target: Target
    broker: str
    allowed: bool
    reasons: list[str]
    plan_hash: str


class ApplyIn(_In):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{
        "strategy_id": "4d512c22" + "0" * 56, "target": "live", "broker": "paper",
        "plan_hash": "77b0" + "0" * 60}]})
    strategy_id: StrategyId
    target: Target
    broker: Annotated[str, Field(min_length=1, max_length=64)] = "paper"
    plan_hash: IdempotencyKey


class ActivationOut(BaseModel):
    world_id: str
    strategy_id: str
    target: Target
    broker: str
    plan_hash: str
    applied: bool  # False: the strategy already had this target (nothing changed)
    updated_at: datetime


# ------------------------------------------------------------- risk guard (MOD-482)

GuardRule = Literal["max_drawdown", "max_daily_loss", "max_leverage", "max_order_adv_share",
                    "max_orders_per_day"]


class TripIn(_In):
    """A breach seen by a producer (the paper runner) on one bar."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{
        "strategy_id": "4d512c22" + "0" * 56, "rule": "max_drawdown", "value": 0.21,
        "limit": 0.2, "bar": "2026-11-30T00:00:00Z"}]})
    strategy_id: StrategyId
    rule: GuardRule
    value: Number
    limit: Number
    bar: When


class TripOut(BaseModel):
    trip_id: int
    world_id: str
    strategy_id: str  # "" for a trip of the world's limits (every strategy halted)
    rule: GuardRule
    value: float
    limit: float
    bar: datetime
    tripped_at: datetime
    actor: str
    reset_at: datetime | None
    reset_by: str | None
    created: bool = False


class GuardOut(BaseModel):
    world_id: str
    strategy_id: str
    halted: bool
    trip: TripOut | None  # the active trip, or the newest one


class ResetIn(_In):
    """The strategy to re-activate; left out, the world (a trip of its world limits)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{
        "strategy_id": "4d512c22" + "0" * 56}, {}]})
    strategy_id: StrategyId | None = None


# ------------------------------------------------------------------- paper fills

Side = Literal["buy", "sell"]


class FillIn(_In):
    ts: When
    seq: Index
    symbol: Annotated[str, Field(min_length=1, max_length=128)]
    side: Side
    quantity: Number
    price: Number
    fee: Number = 0.0
    slippage: Number = 0.0
    reason: Annotated[str, Field(max_length=64)] = ""


class FillsIn(_In):
    """Fills of a paper run (a producer's, operator role); a fill already stored (same
    strategy, time and ``seq``) is left as it is."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{
        "strategy_id": "4d512c22" + "0" * 56, "fills": [{
            "ts": "2026-11-30T00:00:00Z", "seq": 0, "symbol": "SPX", "side": "buy",
            "quantity": 10.0, "price": 101.5, "fee": 1.0, "slippage": 0.2,
            "reason": "entry"}]}]})
    strategy_id: StrategyId
    fills: Annotated[list[FillIn], Field(max_length=10_000)]


class FillsOut(BaseModel):
    world_id: str
    strategy_id: str
    inserted: int
    existing: int


class FillOut(BaseModel):
    ts: datetime
    seq: int
    symbol: str
    side: Side
    quantity: float
    price: float
    fee: float
    slippage: float
    reason: str


# ------------------------------------------------------------------ paper orders

OrderStatus = Literal["pending", "filled", "partial_cancelled", "cancelled", "no_trade"]
OptionalNumber = Number | None


class OrderIn(_In):
    """One engine B order (``VerificationResult.orders``) as of the posted bar: the bar
    it was decided at (``ts``), its symbol and ``seq`` (its place among that symbol's
    orders decided at that bar); side and quantity asked (None while not known: a
    rebalance, or a cross-sectional target, is sized at the next open), the target
    weight, the reason; then quantity filled, fills, last fill, end and status
    (pending; filled; partial_cancelled: part filled, the rest cancelled or dropped;
    cancelled: nothing filled; no_trade: once sized, nothing to trade)."""

    ts: When
    symbol: Annotated[str, Field(min_length=1, max_length=128)]
    seq: Index = 0
    side: Side | None = None
    quantity: Annotated[Number, Field(ge=0)] | None = None
    target_weight: OptionalNumber = None
    reason: Annotated[str, Field(max_length=64)] = ""
    filled_quantity: Annotated[Number, Field(ge=0)] = 0.0
    n_fills: Index = 0
    last_fill: When | None = None
    ended: When | None = None
    status: OrderStatus = "pending"


class OrdersIn(_In):
    """A paper run's orders as of one bar (``as_of``; a producer's, operator role): an
    order not stored yet is inserted; one stored as of an earlier bar is updated; as of
    the same or a later bar it is left as it is (a bar posted again adds nothing)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{
        "strategy_id": "4d512c22" + "0" * 56, "as_of": "2026-11-30T00:00:00Z", "orders": [{
            "ts": "2026-11-27T00:00:00Z", "symbol": "SPX", "seq": 0, "side": "buy",
            "quantity": 120.0, "target_weight": 1.0, "reason": "entry",
            "filled_quantity": 80.0, "n_fills": 2, "last_fill": "2026-11-30T00:00:00Z",
            "status": "pending"}]}]})
    strategy_id: StrategyId
    as_of: When
    orders: Annotated[list[OrderIn], Field(max_length=10_000)]


class OrdersOut(BaseModel):
    world_id: str
    strategy_id: str
    inserted: int
    updated: int
    existing: int


class OrderOut(BaseModel):
    ts: datetime
    symbol: str
    seq: int
    side: Side | None
    quantity: float | None
    target_weight: float | None
    reason: str
    filled_quantity: float
    n_fills: int
    last_fill: datetime | None
    ended: datetime | None
    status: OrderStatus
    as_of: datetime


# -------------------------------------------------------------------- paper bars

NonNegative = Annotated[Number, Field(ge=0)]
Count = Index


class BarOrders(_In):
    """Engine B's order accounting for one bar: orders sent for the bar (decided at
    the previous close, plus stops triggered in it and positions closed or resized
    because the universe changed; each is a record of ``paper/orders``), fills, partial fills (the volume
    cap left a remainder, carried to later bars), orders clipped by the leverage cap,
    orders cancelled; the notional filled, left unfilled (clipped or cancelled) and
    still pending after the bar, each valued at the reference price (the bar's open,
    before spread and impact: engine B's ``ref_price``, so a bar's ``filled_notional``
    is the sum of its fills' quantity × ``ref_price``, not × ``price``); and the held
    symbols that had no bar (not tradable)."""

    placed: Count = 0
    filled: Count = 0
    partial: Count = 0
    clipped: Count = 0
    cancelled: Count = 0
    filled_notional: NonNegative = 0.0
    unfilled_notional: NonNegative = 0.0
    pending_notional: NonNegative = 0.0
    untradable: Annotated[list[Annotated[str, Field(max_length=128)]],
                          Field(max_length=10_000)] = Field(default_factory=list)


class BarIn(_In):
    """One bar of a paper run (a producer's, operator role): equity and gross exposure
    at the close, the bar's return and its orders. The same bar again is left as it is."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"examples": [{
        "strategy_id": "4d512c22" + "0" * 56, "ts": "2026-11-30T00:00:00Z",
        "equity": 101_250.0, "ret": -0.004, "gross": 98_000.0,
        "orders": {"placed": 3, "filled": 2, "partial": 1, "pending_notional": 1_200.0,
                   "untradable": ["XYZ"]}}]})
    strategy_id: StrategyId
    ts: When
    equity: Annotated[Number, Field(gt=0)]
    ret: Annotated[Number, Field(gt=-1)]
    gross: NonNegative
    orders: BarOrders = Field(default_factory=BarOrders)


class BarOut(BaseModel):
    """A stored bar; with ``halted`` and the trip when the strategy or its world is
    halted by the risk guard (a world limit is checked on every bar recorded)."""

    world_id: str
    strategy_id: str
    ts: datetime
    equity: float
    ret: float
    gross: float
    orders: BarOrders
    created: bool = False
    halted: bool = False
    trip: TripOut | None = None
