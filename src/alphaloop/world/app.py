"""The WorldService HTTP app (FastAPI).

Every error answers ``{"error": {"code", "message", "field"}}`` with a stable code:
401 without a valid bearer token, 403 when the token's role does not allow the action,
404 for unknown worlds/runs, 409 for conflicting writes, 413 for bodies over the size
limit, 422 for invalid bodies (the message names the field), 503 when the database is
unavailable (retry). Endpoints are synchronous functions: FastAPI runs them in its
thread pool, so a blocking database call never stalls the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alphaloop.world import audit, tokens
from alphaloop.world.campaign import Campaigns
from alphaloop.world.db import Database
from alphaloop.world.decide import decide
from alphaloop.world.errors import WorldError, invalid
from alphaloop.world.fills import list_fills, record_fills
from alphaloop.world.governance import Governance
from alphaloop.world.hub import latest_snapshot, post_snapshot
from alphaloop.world.orders import list_orders, record_orders
from alphaloop.world.riskguard import RiskGuard
from alphaloop.world.schemas import (
    SQL_INT_MAX,
    ActivationIn,
    ActivationOut,
    ApplyIn,
    ApprovalIn,
    ApprovalOut,
    AuditOut,
    BarIn,
    BarOut,
    CampaignOut,
    CohortIn,
    CohortOut,
    DecisionEnvelope,
    ErrorOut,
    EvaluateIn,
    EvaluationOut,
    ExecutedOut,
    ExecuteIn,
    FillOut,
    FillsIn,
    FillsOut,
    GuardOut,
    OrderOut,
    OrdersIn,
    OrdersOut,
    PlanOut,
    PolicyOut,
    ResetIn,
    RunOut,
    SnapshotIn,
    SnapshotOut,
    TickOut,
    TokenIn,
    TokenOut,
    TripIn,
    TripOut,
    WorldIn,
    WorldOut,
    nul_at,
)
from alphaloop.world.service import WorldService, ts

log = logging.getLogger("alphaloop.world")
MAX_BODY_BYTES = 4 * 1024 * 1024
_KEY = r"^[A-Za-z0-9._:@+-]{1,128}$"
WorldId = Annotated[str, PathParam(pattern=_KEY)]
# `Authorization: Bearer <token>`, published as the API's security scheme (so a client
# generated from the OpenAPI document sends it); a missing or other scheme reaches the
# check as None, which answers 401 in the API's error shape
Bearer = Annotated[HTTPAuthorizationCredentials | None,
                   Depends(HTTPBearer(auto_error=False, description="a token from "
                                      "`alphaloop world token create`"))]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text} for code, text in (
        (400, "the body is not valid JSON (MALFORMED_BODY)"),
        (401, "no valid bearer token"), (403, "the token's role does not allow this"),
        (404, "unknown world, run or snapshot"), (409, "conflicts with stored data"),
        (413, "body too large"), (422, "invalid request: the message names the field"),
        (503, "database unavailable; retry"))}


def _answer(model: BaseModel) -> Response:
    """``model`` as its route's ``response_model`` answers it (the same bytes: pydantic's
    JSON of the model), for a model the service has just built and so validated: FastAPI
    would validate it once more, in a second trip to the thread pool."""
    return Response(model.__pydantic_serializer__.to_json(model), media_type="application/json")


def _error(status: int, code: str, message: str, field: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimit:
    """Refuse bodies over ``limit`` bytes (413) before the app reads them whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _error(413, "BODY_TOO_LARGE", f"body over {self.limit} bytes")(
                scope, receive, send)
            return
        over = False
        seen = 0

        async def counting() -> Message:
            # past the limit the app is told the client left, and what it answers to
            # that is replaced by the 413 below
            nonlocal over, seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                over = True
                return {"type": "http.disconnect"}
            return message

        async def sending(message: Message) -> None:
            if not over:
                await send(message)

        try:
            await self.app(scope, counting, sending)
        except Exception:
            if not over:
                raise
        if over:
            await _error(413, "BODY_TOO_LARGE", f"body over {self.limit} bytes")(
                scope, receive, send)


def _type_tag(part: object) -> bool:
    """pydantic's name for the member of a type that refused a value, in an error's
    location (``constrained-str``, ``function-after[...]``, ``[key]``): not a field."""
    return isinstance(part, str) and ("[" in part or "-" in part or part in _TYPE_NAMES)


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _validation_message(exc: RequestValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = [str(x) for x in err.get("loc", ())
           if x not in ("body", "query", "path", "header") and not _type_tag(x)]
    field = ".".join(loc) or "body"
    return field, f"{field}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}"


def _damaged(exc: BaseException) -> bool:
    """SQLite's word for a file whose pages do not hold together (found when a request
    reads them: the header check at start-up passes)."""
    import sqlite3

    from sqlalchemy import exc as sa_exc

    inner = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    return isinstance(inner, sqlite3.DatabaseError) and "malformed" in str(inner)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(WorldError)
    async def _world(_: Request, exc: WorldError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":  # not a field's fault: the body's
            at = next((x for x in first.get("loc", ()) if isinstance(x, int)), None)
            where = "" if at is None else f" at character {at}"
            return _error(400, "MALFORMED_BODY", f"the body is not valid JSON{where}",
                          "body")
        field, message = _validation_message(exc)
        return _error(422, "INVALID_REQUEST", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "MALFORMED_BODY", 404: "NOT_FOUND",
                405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:  # a bug: say so
        if _damaged(exc):  # not a bug of ours: the file's pages are (CRITICAL)
            log.critical("the database file is damaged: %s", exc)
            return _error(503, "KB_CORRUPT", "the database file is damaged (SQLite: "
                          "malformed disk image); restore it from a backup")
        log.exception("unhandled error")
        return _error(500, "INTERNAL", f"internal error ({type(exc).__name__})")


@dataclass(frozen=True)
class Identity:
    token_id: str
    role: str
    name: str

    @property
    def actor(self) -> str:
        return f"{self.name[:100]}#{self.token_id}"


class Auth:
    """Dependencies that check the bearer token's role for one action.

    A token found valid is remembered for ``cache_s`` seconds (keyed by its sha256, the
    secret itself is not kept), so a request costs no token query: a token revoked
    through the API is refused at once, one revoked on the database (``alphaloop world
    token revoke``) within ``cache_s``.
    """

    def __init__(self, db: Database, cache_s: float = 2.0) -> None:
        self.db = db
        self.cache_s = cache_s
        self._cache: dict[str, tuple[Identity, float]] = {}

    def forget(self, token_id: str) -> None:
        for key, (who, _) in list(self._cache.items()):
            if who.token_id == token_id:
                self._cache.pop(key, None)

    def _cached(self, token: str) -> Identity | None:
        cached = self._cache.get(hashlib.sha256(token.encode()).hexdigest())
        return cached[0] if cached is not None and cached[1] > time.monotonic() else None

    def _lookup(self, token: str) -> Identity | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        with self.db.read() as conn:
            row = tokens.authenticate(conn, token)
        if row is None:
            return None
        who = Identity(row.token_id, row.role, row.name)
        self._cache[key] = (who, time.monotonic() + self.cache_s)
        return who

    async def _identity(self, bearer: HTTPAuthorizationCredentials | None,
                        action: str) -> Identity:
        token = bearer.credentials.strip() if bearer is not None else ""
        if not token:
            raise WorldError("a bearer token is required (Authorization: Bearer …)",
                             code="UNAUTHENTICATED", status=401, field="authorization")
        who = self._cached(token) or await anyio.to_thread.run_sync(self._lookup, token)
        if who is None:
            raise WorldError("the bearer token is unknown or revoked",
                             code="UNAUTHENTICATED", status=401, field="authorization")
        if not tokens.allowed(who.role, action):
            raise WorldError(f"role {who.role!r} may not {action}", code="FORBIDDEN",
                             status=403)
        return who

    def require(self, action: str) -> Callable[..., Awaitable[str]]:
        """A dependency answering the actor (``name#token_id``) allowed to do ``action``."""
        async def check(bearer: Bearer) -> str:
            return (await self._identity(bearer, action)).actor
        return check

    def identity(self, action: str) -> Callable[..., Awaitable[Identity]]:
        async def check(bearer: Bearer) -> Identity:
            return await self._identity(bearer, action)
        return check


def _evidence_allowed(who: Identity, stage: str, evidence: bool,
                      world_data: Callable[[], bool]) -> None:
    """Metrics or returns a client asserts would let it write its own way up the ladder:
    only producers (operator, admin) may post them for a paper/live stage, and for the
    backtest stage of a world with data (the service runs engine B on it); submitters
    get those judged on what the world sources (the risk hub, engine B). A world without
    data takes a submitter's backtest metrics: it has nothing else to judge."""
    if not evidence or tokens.allowed(who.role, "evaluation.evidence"):
        return
    if stage != "backtest":
        raise WorldError(f"role {who.role!r} may not supply metrics or realized returns for "
                         f"stage {stage}; post them to the risk hub as a producer, or leave "
                         "them out to have them sourced", code="FORBIDDEN", status=403,
                         field="metrics")
    if world_data():
        raise WorldError(f"role {who.role!r} may not supply backtest metrics in a world with "
                         "data: leave them out, and the service runs engine B on the "
                         "world's data", code="FORBIDDEN", status=403, field="metrics")


THREADS = int(os.environ.get("ALPHALOOP_WORLD_THREADS", "8"))


@contextlib.asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    # Few threads: the work is CPU under one GIL plus one SQLite writer, and 40 threads
    # (anyio's default) only fight over both, which stretches tail latencies.
    anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
    yield


_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum",
           "lt": "exclusiveMaximum"}


def _standard_bounds(node: Any) -> None:
    """pydantic writes a bound on a validated number type (the policy's ``Number``) under
    its Python name (``ge``); validators and client generators know JSON Schema's."""
    if isinstance(node, list):
        for item in node:
            _standard_bounds(item)
    elif isinstance(node, dict):
        for key, value in list(node.items()):
            if key in _BOUNDS and isinstance(value, int | float) \
                    and _BOUNDS[key] not in node:
                node[_BOUNDS[key]] = node.pop(key)
            elif key == "properties" and isinstance(value, dict):
                for field in value.values():  # a field may be named "ge"
                    _standard_bounds(field)
            else:
                _standard_bounds(value)


def _publish_standard_bounds(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = build()  # FastAPI keeps it after the first call
        if fresh:
            _standard_bounds(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(db_url: str, *, refs_root: Path | None = None,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The app on the knowledge base at ``db_url`` (migrated on open)."""
    db = Database(db_url)
    root = refs_root or (Path.cwd() / "refs")
    service = WorldService(db, root)
    app = FastAPI(title="alphaloop WorldService", version="1", description=__doc__,
                  responses=ERRORS, lifespan=_lifespan)
    app.state.service = service
    _publish_standard_bounds(app)
    _install_handlers(app)
    _routes(app, service, Auth(db))
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    return app


def _routes(app: FastAPI, service: WorldService, auth: Auth) -> None:
    _world_routes(app, service, auth)
    campaigns = Campaigns(service)
    _campaign_routes(app, campaigns, auth)
    _governance_routes(app, Governance(campaigns), auth)
    _guard_routes(app, RiskGuard(service), auth)
    _fill_routes(app, service, auth)
    _hub_routes(app, service, auth)
    _admin_routes(app, service, auth)


def _world_routes(app: FastAPI, service: WorldService, auth: Auth) -> None:
    reader = Depends(auth.require("read"))
    submitter = Depends(auth.identity("evaluation.submit"))

    @app.get("/health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/worlds", response_model=WorldOut, tags=["worlds"])
    def create_world(body: WorldIn,
                     actor: str = Depends(auth.require("world.create"))) -> WorldOut:
        """Create a world; its policy (default if omitted) becomes version 1."""
        return service.create_world(body, actor)

    @app.get("/worlds/{world_id}", response_model=WorldOut, tags=["worlds"])
    def get_world(world_id: WorldId, _: str = reader) -> WorldOut:
        return service.get_world(world_id)

    @app.put("/worlds/{world_id}/policy", response_model=PolicyOut, tags=["worlds"],
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"example": POLICY_EXAMPLE},
                 "application/yaml": {"example": "allow_live: false\n"}}}})
    async def put_policy(world_id: WorldId, request: Request,
                         actor: str = Depends(auth.require("policy.update"))) -> PolicyOut:
        """A new policy version (JSON or YAML body); unknown keys are refused by path."""
        data = await _policy_body(request)
        result: PolicyOut = await anyio.to_thread.run_sync(
            service.put_policy, world_id, data, actor)
        return result

    @app.post("/worlds/{world_id}/evaluate", response_model=EvaluationOut, tags=["evaluation"])
    def evaluate(world_id: WorldId, body: EvaluateIn, who: Identity = submitter) -> Response:
        """Judge one strategy; the same ``run_id`` adds a revision to the same run."""
        _evidence_allowed(who, body.stage, body.metrics is not None
                          or body.realized_returns is not None,
                          lambda: service.get_world(world_id).data is not None)
        return _answer(service.evaluate(world_id, body, who.actor))

    @app.post("/worlds/{world_id}/evaluate-cohort", response_model=CohortOut,
              tags=["evaluation"])
    def evaluate_cohort(world_id: WorldId, body: CohortIn, who: Identity = submitter) -> Response:
        _evidence_allowed(who, body.stage, any(i.metrics is not None
                                               or i.realized_returns is not None
                                               for i in body.items),
                          lambda: service.get_world(world_id).data is not None)
        return _answer(service.evaluate_cohort(world_id, body, who.actor))

    @app.get("/worlds/{world_id}/runs/{run_id}", response_model=RunOut, tags=["evaluation"])
    def get_run(world_id: WorldId, run_id: Annotated[str, PathParam(pattern=_KEY)],
                _: str = reader) -> RunOut:
        return service.get_run(world_id, run_id)

    @app.get("/worlds/{world_id}/decide", response_model=DecisionEnvelope, tags=["evaluation"])
    def get_decision(world_id: WorldId,
                     strategy_id: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
                     _: str = reader) -> Response:
        """Where the strategy may run now; stale after ``as_of + ttl_s``."""
        return _answer(decide(service, world_id, strategy_id))

    @app.get("/worlds/{world_id}/audit", response_model=list[AuditOut], tags=["audit"])
    def world_audit(world_id: WorldId, after: Annotated[int, Query(ge=0, le=SQL_INT_MAX)] = 0,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                    _: str = reader) -> list[AuditOut]:
        """The world's append-only audit log, oldest first (page with ``after``)."""
        with service.db.read() as conn:
            service.load(conn, world_id)
            rows = audit.entries(conn, world_id, after, limit)
        return [_audit_out(r) for r in rows]


def _audit_out(row: Any) -> AuditOut:
    return AuditOut(audit_id=row.audit_id, world_id=row.world_id, actor=row.actor,
                    action=row.action, target=row.target, before_hash=row.before_hash,
                    after_hash=row.after_hash, ts=ts(row.ts))


async def _policy_body(request: Request) -> Any:
    from alphaloop.yamlio import parse_yaml

    raw = await request.body()
    kind = request.headers.get("content-type", "application/json").lower()
    if "json" not in kind and "yaml" not in kind:  # the two the contract names
        raise WorldError(f"policy: Content-Type {kind[:80]!r} is neither application/json "
                         "nor application/yaml", code="INVALID_REQUEST", field="policy")
    try:
        text = raw.decode()
        data = (parse_yaml(text, "policy", WorldError, "POLICY_MALFORMED") if "yaml" in kind
                else json.loads(text))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise WorldError(f"policy: body is not valid JSON or YAML ({why})",
                         code="POLICY_MALFORMED", field="policy") from None
    where = nul_at(data, "policy")  # as every JSON body: PostgreSQL cannot store one
    if where is not None:
        raise WorldError(f"{where} holds a NUL character (\\x00), which no text may hold",
                         code="POLICY_INVALID", field="policy")
    return data


def _campaign_routes(app: FastAPI, campaigns: Campaigns, auth: Auth) -> None:
    reader = Depends(auth.require("read"))

    @app.get("/worlds/{world_id}/campaign", response_model=CampaignOut, tags=["campaign"])
    def campaign(world_id: WorldId, _: str = reader) -> CampaignOut:
        """Per strategy: phase, window progress, key metrics, promotable or every reason
        it is not."""
        return campaigns.campaign(world_id)

    @app.post("/worlds/{world_id}/campaign/tick", response_model=TickOut, tags=["campaign"])
    def tick(world_id: WorldId, _: str = reader) -> TickOut:
        """The recommended next actions. No side effects: nothing is written."""
        return campaigns.tick(world_id)

    @app.post("/worlds/{world_id}/campaign/actions", response_model=ExecutedOut,
              tags=["campaign"])
    def execute(world_id: WorldId, body: ExecuteIn,
                actor: str = Depends(auth.require("campaign.execute"))) -> ExecutedOut:
        """Execute a recommended action by its key; the same key again has no effect
        (``executed: false``); a key no longer recommended is a 409."""
        return campaigns.execute(world_id, body.idempotency_key, actor)


def _governance_routes(app: FastAPI, gov: Governance, auth: Auth) -> None:
    operator = Depends(auth.require("activation.apply"))
    approver = Depends(auth.identity("live.approve"))

    @app.post("/worlds/{world_id}/approvals", response_model=ApprovalOut, tags=["governance"])
    def approve(world_id: WorldId, body: ApprovalIn,
                who: Identity = approver) -> ApprovalOut:
        """An approver's approve or reject of a paper-campaign strategy going live
        (``manual_approval`` worlds; the token's name must be in ``approvers`` when the
        policy lists any). An approval holds under the policy version it was given under."""
        return gov.approve(world_id, body, who.name, who.actor)

    @app.post("/worlds/{world_id}/activation", response_model=PlanOut, tags=["governance"])
    def activation(world_id: WorldId, body: ActivationIn, actor: str = operator) -> PlanOut:
        """Phase one: plan switching a strategy's execution target; nothing switches."""
        return gov.plan(world_id, body.strategy_id, body.target, body.broker, actor)

    @app.post("/worlds/{world_id}/apply", response_model=ActivationOut, tags=["governance"])
    def apply(world_id: WorldId, body: ApplyIn, actor: str = operator) -> ActivationOut:
        """Phase two: apply the plan with this hash, recomputed now (``PLAN_STALE`` if
        its basis changed, ``PROMOTION_BLOCKED`` with every reason if it may not)."""
        return gov.apply(world_id, body.strategy_id, body.target, body.broker,
                         body.plan_hash, actor)


def _guard_routes(app: FastAPI, guard: RiskGuard, auth: Auth) -> None:
    reader = Depends(auth.require("read"))

    @app.post("/worlds/{world_id}/risk-guard/trips", response_model=TripOut,
              tags=["risk guard"])
    def trip(world_id: WorldId, body: TripIn,
             actor: str = Depends(auth.require("risk.trip"))) -> TripOut:
        """A breach (CRITICAL, never retried): the strategy is halted until reset."""
        return guard.trip(world_id, body, actor)

    @app.get("/worlds/{world_id}/risk-guard", response_model=GuardOut, tags=["risk guard"])
    def guard_status(world_id: WorldId,
                     strategy_id: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
                     _: str = reader) -> GuardOut:
        return guard.status(world_id, strategy_id)

    @app.post("/worlds/{world_id}/risk-guard/reset", response_model=TripOut,
              tags=["risk guard"])
    def reset(world_id: WorldId, body: ResetIn,
              actor: str = Depends(auth.require("risk.reset"))) -> TripOut:
        """Re-activate a halted strategy, or the world when ``strategy_id`` is left out
        (operator); audited."""
        return guard.reset(world_id, body.strategy_id, actor)

    @app.post("/worlds/{world_id}/paper/bars", response_model=BarOut, tags=["paper"])
    def post_bar(world_id: WorldId, body: BarIn,
                 actor: str = Depends(auth.require("paper.record"))) -> BarOut:
        """A paper run's bar: equity, exposure and engine B's order accounting (a bar
        already stored is left as it is). The world's risk-guard limits are checked on
        it; ``halted`` says whether the strategy or its world is halted."""
        return guard.record_bar(world_id, body, actor)

    @app.get("/worlds/{world_id}/paper/bars", response_model=list[BarOut], tags=["paper"])
    def get_bars(world_id: WorldId,
                 strategy_id: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
                 _: str = reader) -> list[BarOut]:
        return guard.bars(world_id, strategy_id)


def _fill_routes(app: FastAPI, service: WorldService, auth: Auth) -> None:
    reader = Depends(auth.require("read"))

    @app.post("/worlds/{world_id}/paper/fills", response_model=FillsOut, tags=["paper"])
    def post_fills(world_id: WorldId, body: FillsIn,
                   actor: str = Depends(auth.require("paper.record"))) -> FillsOut:
        """A paper run's fills; those already stored are left as they are."""
        return record_fills(service, world_id, body, actor)

    @app.get("/worlds/{world_id}/paper/fills", response_model=list[FillOut], tags=["paper"])
    def get_fills(world_id: WorldId,
                  strategy_id: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
                  _: str = reader) -> list[FillOut]:
        return list_fills(service, world_id, strategy_id)

    @app.post("/worlds/{world_id}/paper/orders", response_model=OrdersOut, tags=["paper"])
    def post_orders(world_id: WorldId, body: OrdersIn,
                    actor: str = Depends(auth.require("paper.record"))) -> OrdersOut:
        """A paper run's orders as of one bar (``as_of``): new ones are inserted, ones
        stored as of an earlier bar updated (fills, end, status); as of the same or a
        later bar they are left as they are, so a bar posted again adds nothing."""
        return record_orders(service, world_id, body, actor)

    @app.get("/worlds/{world_id}/paper/orders", response_model=list[OrderOut],
             tags=["paper"])
    def get_orders(world_id: WorldId,
                   strategy_id: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
                   _: str = reader) -> list[OrderOut]:
        """A paper run's orders, one per order, by the bar they were decided at:
        each with its outcome as of the last bar that reported it."""
        return list_orders(service, world_id, strategy_id)


def _hub_routes(app: FastAPI, service: WorldService, auth: Auth) -> None:
    reader = Depends(auth.require("read"))

    @app.post("/risk-hub/snapshots", response_model=SnapshotOut, tags=["risk hub"])
    def post(body: SnapshotIn,
             actor: str = Depends(auth.require("snapshot.post"))) -> Response:
        """Store a snapshot; the same content again is a no-op (``created: false``)."""
        return _answer(post_snapshot(service, body, actor))

    @app.get("/risk-hub/snapshots/latest", response_model=SnapshotOut, tags=["risk hub"])
    def latest(world: Annotated[str, Query(pattern=_KEY)],
               strategy_id: Annotated[str, Query(pattern=r"^([0-9a-f]{64})?$")] = "",
               _: str = reader) -> Response:
        """The newest snapshot of a world's strategy (``strategy_id`` empty: the
        portfolio), with ``stale`` and why (TTL since ingestion, age of ``as_of``)."""
        return _answer(latest_snapshot(service, world, strategy_id))

    @app.get("/events", tags=["control bus"], response_class=EventSourceResponse,
             responses={200: {"description": "Server-Sent Events: `id:` (the event's "
                              "number, for Last-Event-ID), `event:` and `data:` (JSON)",
                              "content": {"text/event-stream": {
                                  "schema": {"type": "string"}}}}})
    async def events(world: Annotated[str, Query(pattern=_KEY)],
                     last_event_id: Annotated[str | None, Header()] = None,
                     follow: bool = True, _: str = reader) -> EventSourceResponse:
        """Server-Sent Events of one world, resumable with ``Last-Event-ID``;
        ``follow=false`` sends what is stored and ends."""
        if last_event_id is not None and not (
                last_event_id.isascii() and last_event_id.isdigit()
                and int(last_event_id) <= SQL_INT_MAX):
            raise invalid("Last-Event-ID", f"{last_event_id[:40]!r} is not an event id (a "
                          "whole number this stream sent)")
        after = int(last_event_id) if last_event_id else 0
        await anyio.to_thread.run_sync(service.get_world, world)  # 404 for an unknown world
        return EventSourceResponse(_stream(service, world, after, follow), ping=15)


async def _stream(service: WorldService, world: str, after: int,
                  follow: bool) -> AsyncIterator[dict[str, Any]]:
    def page(since: int) -> list[Any]:
        with service.db.read() as conn:
            return audit.events(conn, world, since, 500)

    while True:
        rows = await anyio.to_thread.run_sync(page, after)
        for row in rows:
            after = row.event_id
            yield {"id": str(row.event_id), "event": row.type,
                   "data": json.dumps({"world_id": row.world_id, "ts": row.ts, **row.payload})}
        if not rows and not follow:
            return
        if not rows:
            await anyio.sleep(0.2)


def _admin_routes(app: FastAPI, service: WorldService, auth: Auth) -> None:
    admin = Depends(auth.require("token.manage"))

    @app.post("/tokens", response_model=TokenOut, tags=["admin"])
    def create_token(body: TokenIn, actor: str = admin) -> TokenOut:
        """A new token; its secret is in this answer only (stored as a hash)."""
        with service.db.write() as conn:
            token_id, token = tokens.create(conn, body.role, body.name, actor)
        return TokenOut(token_id=token_id, role=body.role, name=body.name, token=token)

    @app.delete("/tokens/{token_id}", response_model=TokenOut, tags=["admin"])
    def revoke_token(token_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{1,32}$")],
                     actor: str = admin) -> TokenOut:
        with service.db.write() as conn:
            row = tokens.revoke(conn, token_id, actor)
        auth.forget(token_id)
        return TokenOut(token_id=row.token_id, role=row.role, name=row.name)  # type: ignore[arg-type]

    @app.get("/audit", response_model=list[AuditOut], tags=["admin"])
    def global_audit(after: Annotated[int, Query(ge=0, le=SQL_INT_MAX)] = 0,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                     _: str = Depends(auth.require("audit.read_all"))) -> list[AuditOut]:
        """Audit records of no single world (token changes)."""
        with service.db.read() as conn:
            return [_audit_out(r) for r in audit.entries(conn, None, after, limit)]


POLICY_EXAMPLE = {
    "gates": {"backtest": {"min_sharpe": 0.5, "max_drawdown": 0.3, "min_trades": 20},
              "paper": {"min_sharpe": 0.3, "warn_only": ["min_trades"]}},
    "campaign": {"backtest": {"window": {"min_days": 365}},
                 "paper": {"window": {"min_days": 30, "min_samples": 20}}},
    "allow_live": False,
    "governance": {"live_promotion": {"mode": "manual_approval", "cooldown": "7d",
                                      "max_live": 3, "approvers": ["alice"]}},
    "freshness": {"decision_ttl": "5m", "snapshot_ttl": "1h", "snapshot_max_age": "2d"},
}
