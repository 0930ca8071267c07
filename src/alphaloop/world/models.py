"""The world service's tables, on the knowledge base's declarative ``Base``.

They live in the same database as the knowledge base and are created by migration
``0003`` (``kb/migrations/versions/v0003_world.py``); like the KB models, these describe
the schema at the newest migration and a test compares the two.

==========================  ======================================================
table                       key (what makes a write idempotent)
==========================  ======================================================
``worlds``                  ``world_id``
``world_policies``          ``(world_id, version)``; a version is never rewritten
``evaluation_runs``         ``(world_id, run_id)``: ``run_id`` is the client's key
``evaluation_revisions``    ``(world_id, run_id, revision)``; a revision whose
                            content equals the latest one is not written again
``risk_snapshots``          ``content_hash`` (re-posting the same content: no-op)
``control_events``          ``event_id`` (autoincrement; the SSE ``id``)
``api_tokens``              ``token_id``; the secret is stored as its sha256
``audit_log``               ``audit_id`` (append-only: no API updates or deletes)
``campaign_actions``        ``(world_id, idempotency_key)``: an executed campaign
                            action (migration ``0004``); a key is executed once
``live_approvals``          ``approval_id`` (append-only; migration ``0005``; the
                            policy version it holds under, ``0012``)
``live_candidates``         ``(world_id, strategy_id)``: the execution target, status
                            and last refusal reasons (migration ``0005``)
``risk_trips``              ``trip_id``; ``reset_at`` set once (migration ``0006``)
``paper_fills``             ``(world_id, strategy_id, fill_ts, seq)`` (migration ``0007``)
``paper_bars``              ``(world_id, strategy_id, bar_ts)``: a paper bar's equity,
                            exposure and order accounting (migration ``0009``)
``paper_orders``            ``(world_id, strategy_id, order_ts, symbol, seq)``: a paper
                            order and its outcome as of a bar; only a later bar's
                            report updates it (migration ``0010``)
``world_guard_marks``       ``world_id``: where the world's risk guard got to, so
                            that a new bar is summed from there (migration ``0011``)
==========================  ======================================================

Times are UNIX seconds (UTC) as doubles: the service, unlike the loop's store, must
record when it learned something (TTLs and the audit log are about wall time).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from alphaloop.kb.models import ID, NAME, Base

HASH = String(64)  # sha256 hex

WORLD_TABLES = ("worlds", "world_policies", "evaluation_runs", "evaluation_revisions",
                "risk_snapshots", "control_events", "api_tokens", "audit_log",
                "campaign_actions", "live_approvals", "live_candidates", "risk_trips",
                "paper_fills", "paper_bars", "paper_orders", "world_guard_marks")


class World(Base):
    __tablename__ = "worlds"

    world_id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    data: Mapped[str | None] = mapped_column(Text)  # dataset name or file for engine B
    policy_version: Mapped[int | None] = mapped_column(Integer)  # the current one
    created_at: Mapped[float] = mapped_column(Double)


class WorldPolicy(Base):
    __tablename__ = "world_policies"

    world_id: Mapped[str] = mapped_column(
        ID, ForeignKey("worlds.world_id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[dict[str, Any]]
    ruleset_hash: Mapped[str] = mapped_column(HASH)
    created_at: Mapped[float] = mapped_column(Double)
    actor: Mapped[str] = mapped_column(NAME)


class EvaluationRun(Base):
    __tablename__ = "evaluation_runs"
    __table_args__ = (
        # the sourcing and /decide lookup: a strategy's newest run in a world (per stage)
        Index("ix_evaluation_runs_lookup", "world_id", "strategy_id", "stage", "updated_at"),
    )

    world_id: Mapped[str] = mapped_column(
        ID, ForeignKey("worlds.world_id", ondelete="CASCADE"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ID, primary_key=True)
    strategy_id: Mapped[str] = mapped_column(ID)
    stage: Mapped[str] = mapped_column(NAME)
    spec: Mapped[dict[str, Any] | None]
    revision: Mapped[int] = mapped_column(Integer)  # the latest
    outcome: Mapped[str] = mapped_column(NAME)  # of the latest revision
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class EvaluationRevision(Base):
    __tablename__ = "evaluation_revisions"
    __table_args__ = (
        ForeignKeyConstraint(["world_id", "run_id"],
                             ["evaluation_runs.world_id", "evaluation_runs.run_id"],
                             ondelete="CASCADE"),
    )

    world_id: Mapped[str] = mapped_column(ID, primary_key=True)
    run_id: Mapped[str] = mapped_column(ID, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(HASH)
    policy_version: Mapped[int] = mapped_column(Integer)
    ruleset_hash: Mapped[str] = mapped_column(HASH)
    metrics: Mapped[dict[str, Any]]
    metric_sources: Mapped[list[str]]
    risk: Mapped[dict[str, Any] | None]
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON(none_as_null=True))
    outcome: Mapped[str] = mapped_column(NAME)
    actor: Mapped[str] = mapped_column(NAME)
    created_at: Mapped[float] = mapped_column(Double)


class RiskSnapshot(Base):
    __tablename__ = "risk_snapshots"
    __table_args__ = (
        Index("ix_risk_snapshots_latest", "world_id", "strategy_id", "snapshot_id"),
    )

    snapshot_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    content_hash: Mapped[str] = mapped_column(HASH, unique=True)
    world_id: Mapped[str] = mapped_column(
        ID, ForeignKey("worlds.world_id", ondelete="CASCADE"))
    strategy_id: Mapped[str] = mapped_column(ID)  # "" = the world's portfolio
    as_of: Mapped[float] = mapped_column(Double)
    ttl_s: Mapped[float] = mapped_column(Double)
    ingested_at: Mapped[float] = mapped_column(Double)
    body: Mapped[dict[str, Any]]


class ControlEvent(Base):
    __tablename__ = "control_events"

    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    world_id: Mapped[str] = mapped_column(ID, index=True)
    type: Mapped[str] = mapped_column(NAME)
    payload: Mapped[dict[str, Any]]
    ts: Mapped[float] = mapped_column(Double)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    token_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(NAME)
    role: Mapped[str] = mapped_column(NAME)
    secret_hash: Mapped[str] = mapped_column(HASH)
    created_at: Mapped[float] = mapped_column(Double)
    revoked: Mapped[bool] = mapped_column(Boolean)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    audit_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    world_id: Mapped[str | None] = mapped_column(ID, index=True)
    actor: Mapped[str] = mapped_column(NAME)
    action: Mapped[str] = mapped_column(NAME)
    target: Mapped[str] = mapped_column(Text)
    before_hash: Mapped[str | None] = mapped_column(HASH)
    after_hash: Mapped[str | None] = mapped_column(HASH)
    ts: Mapped[float] = mapped_column(Double)


class CampaignAction(Base):
    __tablename__ = "campaign_actions"

    world_id: Mapped[str] = mapped_column(
        ID, ForeignKey("worlds.world_id", ondelete="CASCADE"), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(HASH, primary_key=True)
    strategy_id: Mapped[str] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(NAME)
    run_id: Mapped[str] = mapped_column(ID)
    revision: Mapped[int] = mapped_column(Integer)  # of the run, after the action
    outcome: Mapped[str] = mapped_column(NAME)
    actor: Mapped[str] = mapped_column(NAME)
    executed_at: Mapped[float] = mapped_column(Double)


class LiveApproval(Base):
    __tablename__ = "live_approvals"
    __table_args__ = (
        Index("ix_live_approvals_lookup", "world_id", "strategy_id", "approval_id"),
    )

    approval_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    world_id: Mapped[str] = mapped_column(ID, ForeignKey("worlds.world_id", ondelete="CASCADE"))
    strategy_id: Mapped[str] = mapped_column(ID)
    decision: Mapped[str] = mapped_column(NAME)  # approve | reject
    ruleset_hash: Mapped[str] = mapped_column(HASH)  # the content of that policy version
    # an approval holds under this policy version only; None (given before migration
    # 0012) holds under none
    policy_version: Mapped[int | None] = mapped_column(Integer)
    paper_run_id: Mapped[str] = mapped_column(ID)
    paper_revision: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(NAME)
    created_at: Mapped[float] = mapped_column(Double)


class LiveCandidate(Base):
    __tablename__ = "live_candidates"

    world_id: Mapped[str] = mapped_column(
        ID, ForeignKey("worlds.world_id", ondelete="CASCADE"), primary_key=True)
    strategy_id: Mapped[str] = mapped_column(ID, primary_key=True)
    target: Mapped[str] = mapped_column(NAME)  # paper | live
    broker: Mapped[str] = mapped_column(NAME)
    status: Mapped[str] = mapped_column(NAME)  # blocked | planned | live | paper
    reasons: Mapped[list[str]] = mapped_column(JSON(none_as_null=True))  # of the last refusal
    plan_hash: Mapped[str | None] = mapped_column(HASH)
    last_live_at: Mapped[float | None] = mapped_column(Double)  # the cooldown's start
    updated_at: Mapped[float] = mapped_column(Double)
    actor: Mapped[str] = mapped_column(NAME)


class RiskTrip(Base):
    __tablename__ = "risk_trips"
    __table_args__ = (Index("ix_risk_trips_lookup", "world_id", "strategy_id", "trip_id"),)

    trip_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    world_id: Mapped[str] = mapped_column(ID, ForeignKey("worlds.world_id", ondelete="CASCADE"))
    strategy_id: Mapped[str] = mapped_column(ID)
    rule: Mapped[str] = mapped_column(NAME)
    value: Mapped[float] = mapped_column(Double)
    limit_value: Mapped[float] = mapped_column(Double)
    bar: Mapped[str] = mapped_column(Text)  # the bar it tripped on (ISO)
    tripped_at: Mapped[float] = mapped_column(Double)
    actor: Mapped[str] = mapped_column(NAME)
    reset_at: Mapped[float | None] = mapped_column(Double)
    reset_by: Mapped[str | None] = mapped_column(NAME)


class PaperFill(Base):
    __tablename__ = "paper_fills"

    world_id: Mapped[str] = mapped_column(
        ID, ForeignKey("worlds.world_id", ondelete="CASCADE"), primary_key=True)
    strategy_id: Mapped[str] = mapped_column(ID, primary_key=True)
    fill_ts: Mapped[str] = mapped_column(String(64), primary_key=True)  # ISO, UTC
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)  # among that bar's fills
    symbol: Mapped[str] = mapped_column(NAME)
    side: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[float] = mapped_column(Double)
    price: Mapped[float] = mapped_column(Double)
    fee: Mapped[float] = mapped_column(Double)
    slippage: Mapped[float] = mapped_column(Double)
    reason: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[float] = mapped_column(Double)


class PaperBar(Base):
    """One bar of a paper run as the runner reported it: equity, return and gross
    exposure at the close, and engine B's order accounting for the bar (orders sent,
    filled, partially filled, clipped, cancelled; the notional left unfilled and still
    pending; the held symbols that had no bar)."""

    __tablename__ = "paper_bars"

    world_id: Mapped[str] = mapped_column(
        ID, ForeignKey("worlds.world_id", ondelete="CASCADE"), primary_key=True)
    strategy_id: Mapped[str] = mapped_column(ID, primary_key=True)
    bar_ts: Mapped[str] = mapped_column(String(64), primary_key=True)  # ISO, UTC
    equity: Mapped[float] = mapped_column(Double)
    ret: Mapped[float] = mapped_column(Double)
    gross: Mapped[float] = mapped_column(Double)
    n_orders: Mapped[int] = mapped_column(Integer)
    n_fills: Mapped[int] = mapped_column(Integer)
    n_partial: Mapped[int] = mapped_column(Integer)
    n_clipped: Mapped[int] = mapped_column(Integer)
    n_cancelled: Mapped[int] = mapped_column(Integer)
    filled_notional: Mapped[float] = mapped_column(Double)
    unfilled_notional: Mapped[float] = mapped_column(Double)
    pending_notional: Mapped[float] = mapped_column(Double)
    untradable: Mapped[list[str]] = mapped_column(JSON(none_as_null=True))
    recorded_at: Mapped[float] = mapped_column(Double)


class PaperOrder(Base):
    """One order of a paper run's engine B (``VerificationResult.orders``): decided at
    ``order_ts`` (its bar), the ``seq``-th of its symbol's orders decided there; what it
    asked and its outcome as of the bar ``as_of_ts``."""

    __tablename__ = "paper_orders"

    world_id: Mapped[str] = mapped_column(
        ID, ForeignKey("worlds.world_id", ondelete="CASCADE"), primary_key=True)
    strategy_id: Mapped[str] = mapped_column(ID, primary_key=True)
    order_ts: Mapped[str] = mapped_column(String(64), primary_key=True)  # ISO, UTC
    symbol: Mapped[str] = mapped_column(NAME, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    side: Mapped[str | None] = mapped_column(String(16))  # None: not sized yet
    quantity: Mapped[float | None] = mapped_column(Double)  # None: not known yet
    target_weight: Mapped[float | None] = mapped_column(Double)
    reason: Mapped[str] = mapped_column(String(64))
    filled_quantity: Mapped[float] = mapped_column(Double)
    n_fills: Mapped[int] = mapped_column(Integer)
    last_fill_ts: Mapped[str | None] = mapped_column(String(64))
    ended_ts: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    as_of_ts: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class WorldGuardMark(Base):
    """The world's risk guard, summed up to a bar time (``riskguard.WorldBook``): the
    book after every paper bar before ``upto`` since the reset ``since`` ('' for none),
    under the world limits ``limits`` (their JSON). A new bar at ``upto`` or later is
    summed from here instead of from the reset."""

    __tablename__ = "world_guard_marks"

    world_id: Mapped[str] = mapped_column(
        ID, ForeignKey("worlds.world_id", ondelete="CASCADE"), primary_key=True)
    since: Mapped[str] = mapped_column(String(64))
    limits: Mapped[str] = mapped_column(Text)
    upto: Mapped[str] = mapped_column(String(64))  # ISO, UTC
    book: Mapped[str] = mapped_column(Text)  # JSON text: key order is summation order
    updated_at: Mapped[float] = mapped_column(Double)


def table(model: type[Base]) -> Table:
    """The Core table of a model: inserts through it skip the ORM's bulk machinery,
    which costs more than the insert itself on the service's hot path."""
    result: Table = model.__table__  # type: ignore[assignment]
    return result
