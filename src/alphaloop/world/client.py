"""The SDK: talk to a WorldService over HTTP (httpx) and submit strategies.

>>> from alphaloop.world.client import submit                       # doctest: +SKIP
>>> result = submit(spec, world="main", url="http://127.0.0.1:8080", token=tok)
>>> result.stage, result.downgraded, result.downgrade_reason

There is no client-side mode (seed §2): the stage comes from the world's decision
envelope. A missing, unreachable or stale envelope makes the client treat the
strategy as backtest-only (``downgraded`` with the reason); a client never climbs a
rung on its own.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from alphaloop.errors import AlphaloopError, ErrorClass
from alphaloop.world.schemas import (
    KEY_RULE,
    ActivationOut,
    ApprovalOut,
    AuditOut,
    BarOut,
    CampaignOut,
    CohortOut,
    DecidedStage,
    DecisionEnvelope,
    EvaluationOut,
    ExecutedOut,
    FillOut,
    FillsOut,
    GuardOut,
    Key,
    OrderOut,
    OrdersOut,
    PlanOut,
    PolicyOut,
    RunOut,
    SnapshotOut,
    TickOut,
    TripOut,
    WorldOut,
)

TOKEN_ENV = "ALPHALOOP_WORLD_TOKEN"
FUTURE_SKEW_S = 300.0  # an envelope dated further ahead than this is not trusted
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KEY: TypeAdapter[str] = TypeAdapter(Key)
M = TypeVar("M", bound=BaseModel)


def _seg(value: str) -> str:
    """An id as one path segment, checked as the server checks it before it is sent:
    the server decodes '%2F', so an id typed by hand with a '/' (or '..') would reach
    another endpoint, and a '?' or '#' would cut the path."""
    try:
        return _KEY.validate_python(value)
    except ValueError:
        raise WorldClientError(
            f"id {value!r}: {KEY_RULE}",
            code="INVALID_REQUEST", status=422) from None


def _world(world_id: str, tail: str = "") -> str:
    """The path of a world's resource: ``/worlds/<id><tail>``, the id checked."""
    return f"/worlds/{_seg(world_id)}{tail}"


class WorldClientError(AlphaloopError):
    """The service refused a request (``code`` is its error code) or could not be
    reached (``WORLD_UNREACHABLE``, TRANSIENT). 5xx and 429 are TRANSIENT; other
    refusals PERMANENT."""

    code = "WORLD_CLIENT_ERROR"

    def __init__(self, message: str, *, code: str, status: int | None,
                 field: str | None = None) -> None:
        transient = status is None or status >= 500 or status == 429
        super().__init__(message, code=code, error_class=ErrorClass.TRANSIENT if transient
                         else ErrorClass.PERMANENT)
        self.status = status
        self.field = field


class SubmitResult(BaseModel):
    """What a submission came to: the stage the strategy may run in *now*."""

    world_id: str
    strategy_id: str
    stage: DecidedStage
    reasons: list[str]
    decision: DecisionEnvelope | None
    evaluation: EvaluationOut
    downgraded: bool
    downgrade_reason: str | None


class WorldClient:
    """One connection to a service; every method is one request."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        if token and not token.isascii():  # an HTTP header cannot carry it
            raise WorldClientError("the token holds characters that are not ASCII; tokens "
                                   "are what `alphaloop world token create` printed",
                                   code="BAD_TOKEN", status=400)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers,
                                      timeout=timeout)
        except (httpx.InvalidURL, ValueError) as exc:
            raise WorldClientError(f"{url!r} is not a WorldService address ({exc}): use "
                                   "http(s)://host:port", code="BAD_URL", status=400) from None
        self.clock = clock

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WorldClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise WorldClientError(f"{method} {path}: {exc}", code="WORLD_UNREACHABLE",
                                   status=None) from exc
        if response.status_code >= 400:
            raise _refusal(method, path, response)
        return response.json()

    def _typed(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(self.request(method, path, **kwargs))

    # -- worlds and policies
    def create_world(self, world_id: str, *, name: str = "", data: str | None = None,
                     policy: Mapping[str, Any] | None = None) -> WorldOut:
        body = {"world_id": world_id, "name": name, "data": data,
                "policy": None if policy is None else dict(policy)}
        return self._typed(WorldOut, "POST", "/worlds", json=body)

    def get_world(self, world_id: str) -> WorldOut:
        return self._typed(WorldOut, "GET", _world(world_id))

    def put_policy(self, world_id: str, policy: Mapping[str, Any] | str) -> PolicyOut:
        """``policy`` as a mapping, or YAML text (sent as ``application/yaml``)."""
        if isinstance(policy, str):
            return self._typed(PolicyOut, "PUT", _world(world_id, "/policy"),
                               content=policy.encode(),
                               headers={"Content-Type": "application/yaml"})
        return self._typed(PolicyOut, "PUT", _world(world_id, "/policy"), json=dict(policy))

    # -- evaluation and decisions
    def evaluate(self, world_id: str, body: Mapping[str, Any]) -> EvaluationOut:
        return self._typed(EvaluationOut, "POST", _world(world_id, "/evaluate"), json=body)

    def evaluate_cohort(self, world_id: str, body: Mapping[str, Any]) -> CohortOut:
        return self._typed(CohortOut, "POST", _world(world_id, "/evaluate-cohort"), json=body)

    def get_run(self, world_id: str, run_id: str) -> RunOut:
        return self._typed(RunOut, "GET", _world(world_id, f"/runs/{_seg(run_id)}"))

    def decide(self, world_id: str, strategy_id: str) -> DecisionEnvelope:
        return self._typed(DecisionEnvelope, "GET", _world(world_id, "/decide"),
                           params={"strategy_id": strategy_id})

    # -- campaigns
    def campaign(self, world_id: str) -> CampaignOut:
        return self._typed(CampaignOut, "GET", _world(world_id, "/campaign"))

    def tick(self, world_id: str) -> TickOut:
        """The recommended actions (the service writes nothing for a tick)."""
        return self._typed(TickOut, "POST", _world(world_id, "/campaign/tick"))

    def execute_action(self, world_id: str, idempotency_key: str) -> ExecutedOut:
        """Execute a recommended action; the same key again has no effect
        (``executed`` False)."""
        return self._typed(ExecutedOut, "POST", _world(world_id, "/campaign/actions"),
                           json={"idempotency_key": idempotency_key})

    # -- live-promotion governance
    def approve(self, world_id: str, strategy_id: str, decision: str = "approve",
                comment: str = "") -> ApprovalOut:
        """An approver's ``approve`` or ``reject`` (approver-role token)."""
        return self._typed(ApprovalOut, "POST", _world(world_id, "/approvals"), json={
            "strategy_id": strategy_id, "decision": decision, "comment": comment})

    def plan_activation(self, world_id: str, strategy_id: str, target: str = "live",
                        broker: str = "paper") -> PlanOut:
        return self._typed(PlanOut, "POST", _world(world_id, "/activation"), json={
            "strategy_id": strategy_id, "target": target, "broker": broker})

    def apply(self, world_id: str, plan: PlanOut) -> ActivationOut:
        """Apply a plan from :meth:`plan_activation` (refused if its basis changed)."""
        return self._typed(ActivationOut, "POST", _world(world_id, "/apply"), json={
            "strategy_id": plan.strategy_id, "target": plan.target, "broker": plan.broker,
            "plan_hash": plan.plan_hash})

    # -- paper fills
    def post_fills(self, world_id: str, strategy_id: str,
                   fills: Sequence[Mapping[str, Any]]) -> FillsOut:
        return self._typed(FillsOut, "POST", _world(world_id, "/paper/fills"),
                           json={"strategy_id": strategy_id, "fills": list(fills)})

    def fills(self, world_id: str, strategy_id: str) -> list[FillOut]:
        rows = self.request("GET", _world(world_id, "/paper/fills"),
                            params={"strategy_id": strategy_id})
        return TypeAdapter(list[FillOut]).validate_python(rows)

    # -- paper orders
    def post_orders(self, world_id: str, strategy_id: str, as_of: str,
                    orders: Sequence[Mapping[str, Any]]) -> OrdersOut:
        return self._typed(OrdersOut, "POST", _world(world_id, "/paper/orders"),
                           json={"strategy_id": strategy_id, "as_of": as_of,
                                 "orders": list(orders)})

    def orders(self, world_id: str, strategy_id: str) -> list[OrderOut]:
        rows = self.request("GET", _world(world_id, "/paper/orders"),
                            params={"strategy_id": strategy_id})
        return TypeAdapter(list[OrderOut]).validate_python(rows)

    # -- risk guard
    def guard(self, world_id: str, strategy_id: str) -> GuardOut:
        return self._typed(GuardOut, "GET", _world(world_id, "/risk-guard"),
                           params={"strategy_id": strategy_id})

    def trip(self, world_id: str, body: Mapping[str, Any]) -> TripOut:
        return self._typed(TripOut, "POST", _world(world_id, "/risk-guard/trips"),
                           json=dict(body))

    def reset_guard(self, world_id: str, strategy_id: str | None) -> TripOut:
        """Re-activate a strategy the guard halted, or (None) the world (operator)."""
        body = {} if strategy_id is None else {"strategy_id": strategy_id}
        return self._typed(TripOut, "POST", _world(world_id, "/risk-guard/reset"),
                           json=body)

    def post_bar(self, world_id: str, body: Mapping[str, Any]) -> BarOut:
        """One paper bar; the answer says whether the strategy or its world is halted."""
        return self._typed(BarOut, "POST", _world(world_id, "/paper/bars"), json=dict(body))

    def bars(self, world_id: str, strategy_id: str) -> list[BarOut]:
        rows = self.request("GET", _world(world_id, "/paper/bars"),
                            params={"strategy_id": strategy_id})
        return TypeAdapter(list[BarOut]).validate_python(rows)

    # -- risk hub, audit, events
    def post_snapshot(self, body: Mapping[str, Any]) -> SnapshotOut:
        return self._typed(SnapshotOut, "POST", "/risk-hub/snapshots", json=body)

    def latest_snapshot(self, world_id: str, strategy_id: str = "") -> SnapshotOut:
        return self._typed(SnapshotOut, "GET", "/risk-hub/snapshots/latest",
                           params={"world": world_id, "strategy_id": strategy_id})

    def audit(self, world_id: str, *, after: int = 0, limit: int = 1000) -> list[AuditOut]:
        rows = self.request("GET", _world(world_id, "/audit"),
                            params={"after": after, "limit": limit})
        return TypeAdapter(list[AuditOut]).validate_python(rows)

    # -- the decision, judged on this side
    def stage_from(self, envelope: DecisionEnvelope | None,
                   missing: str = "DECISION_MISSING") -> tuple[DecidedStage, str | None]:
        """The stage a client may use, and why it was downgraded (None if it was not)."""
        if envelope is None:
            return "backtest", missing
        now = self.clock()
        as_of = envelope.as_of.timestamp()
        if now > as_of + envelope.ttl_s:
            return "backtest", (f"DECISION_STALE: decided at {envelope.as_of.isoformat()}, "
                                f"ttl {envelope.ttl_s:g}s, {now - as_of:.1f}s ago; "
                                f"treated as backtest-only")
        if as_of > now + FUTURE_SKEW_S:
            return "backtest", "DECISION_FROM_FUTURE: as_of is ahead of this clock"
        return envelope.stage, None

    def decision_for(self, world_id: str, strategy_id: str,
                     evaluation: EvaluationOut) -> SubmitResult:
        envelope: DecisionEnvelope | None = None
        missing = "DECISION_MISSING"
        try:
            envelope = self.decide(world_id, strategy_id)
        except WorldClientError as exc:  # unreachable or refused: default-safe, not fatal
            missing = f"DECISION_UNAVAILABLE: {exc.code}: {exc.message}"
        stage, why = self.stage_from(envelope, missing)
        reasons = list(envelope.reasons) if envelope is not None else []
        return SubmitResult(world_id=world_id, strategy_id=strategy_id, stage=stage,
                            reasons=reasons, decision=envelope, evaluation=evaluation,
                            downgraded=why is not None,
                            downgrade_reason=why)


class StepResult(BaseModel):
    """One campaign-loop step: what each recommended action came to."""

    executed: list[ExecutedOut]
    skipped: list[tuple[str, str]]  # (idempotency_key, error code): refused, not fatal


def campaign_step(client: WorldClient, world_id: str) -> StepResult:
    """Tick once and execute every recommended action through the service.

    An action the service no longer recommends (another loop executed it, or the state
    moved on: ``ACTION_NOT_RECOMMENDED``) is skipped; any other refusal or an
    unreachable service is raised.
    """
    executed: list[ExecutedOut] = []
    skipped: list[tuple[str, str]] = []
    for action in client.tick(world_id).actions:
        try:
            executed.append(client.execute_action(world_id, action.idempotency_key))
        except WorldClientError as exc:
            if exc.code != "ACTION_NOT_RECOMMENDED":
                raise
            skipped.append((action.idempotency_key, exc.code))
    return StepResult(executed=executed, skipped=skipped)


def _refusal(method: str, path: str, response: httpx.Response) -> WorldClientError:
    try:
        err = response.json()["error"]
        code, message, field = str(err["code"]), str(err["message"]), err.get("field")
    except (ValueError, KeyError, TypeError):
        code, message, field = f"HTTP_{response.status_code}", response.text[:200], None
    return WorldClientError(f"{method} {path}: {message}", code=code,
                            status=response.status_code, field=field)


def strategy_body(strategy: Any, kb_url: str | None = None) -> dict[str, Any]:
    """``{"spec": …}`` or ``{"strategy_id": …}`` for a StrategySpec, a spec file, or a
    strategy id (a unique prefix is resolved in the local knowledge base)."""
    from alphaloop.strategy.spec import StrategySpec

    if isinstance(strategy, StrategySpec):
        return {"spec": strategy.model_dump(mode="json")}
    text = str(strategy)
    if isinstance(strategy, Path) or Path(text).is_file():
        return {"spec": StrategySpec.from_yaml(text).model_dump(mode="json")}
    if _HEX64.match(text):
        return {"strategy_id": text}
    if re.fullmatch(r"[0-9a-f]{4,63}", text):
        from alphaloop.kb import KnowledgeBase

        with KnowledgeBase(kb_url) as kb:
            found = kb.strategy(text)
        return {"spec": found["spec"], "strategy_id": found["strategy_id"]}
    raise WorldClientError(f"strategy: {text!r} is neither a spec file nor a strategy id",
                           code="STRATEGY_UNKNOWN", status=422, field="strategy")


def submit(strategy: Any, world: str, *, url: str, token: str | None = None,
           run_id: str | None = None, stage: str = "backtest",
           metrics: Mapping[str, float | int | None] | None = None,
           realized_returns: Sequence[float] | None = None, kb_url: str | None = None,
           client: WorldClient | None = None) -> SubmitResult:
    """Submit one strategy to ``world``: evaluate it, then read the world's decision.

    ``strategy`` is a StrategySpec, a spec file or a strategy id. ``run_id`` defaults
    to ``submit:<strategy_id[:16]>:<stage>``, so submitting the same strategy again
    updates the same evaluation run (a new revision only if something changed).
    """
    body = strategy_body(strategy, kb_url)
    owned = client is None
    http = client or WorldClient(url, token)
    try:
        sid = body.get("strategy_id") or _spec_id(body["spec"])
        evaluation = http.evaluate(world, {
            **body, "stage": stage, "run_id": run_id or f"submit:{sid[:16]}:{stage}",
            "metrics": None if metrics is None else dict(metrics),
            "realized_returns": None if realized_returns is None else list(realized_returns)})
        return http.decision_for(world, evaluation.strategy_id, evaluation)
    finally:
        if owned:
            http.close()


def submit_many(url: str, world_id: str, token: str | None,
                specs: Sequence[Any], run_id: str, *,
                metrics: Mapping[str, Mapping[str, float | int | None]] | None = None,
                stage: str = "backtest") -> list[SubmitResult]:
    """Submit a research run's survivors in one cohort evaluation (one transaction).

    Each strategy's evaluation run is ``<run_id>:<strategy_id[:16]>``, so calling this
    again for the same iteration changes nothing. ``metrics`` maps strategy ids to
    metrics; a strategy without them has its metrics sourced by the world (engine B
    on the world's data for the backtest stage).
    """
    from alphaloop.strategy.spec import StrategySpec

    if not specs:
        return []
    parsed = [s if isinstance(s, StrategySpec) else StrategySpec.model_validate(s)
              for s in specs]
    items = [{"spec": s.model_dump(mode="json"),
              "metrics": None if metrics is None or s.strategy_id not in metrics
              else dict(metrics[s.strategy_id])} for s in parsed]
    with WorldClient(url, token) as http:
        cohort = http.evaluate_cohort(world_id, {"run_id": run_id, "stage": stage,
                                                 "items": items})
        return [http.decision_for(world_id, e.strategy_id, e) for e in cohort.results]


def _spec_id(spec: Mapping[str, Any]) -> str:
    from alphaloop.strategy.spec import StrategySpec

    return StrategySpec.model_validate(spec).strategy_id
