"""Live-promotion governance (seed §5): approvals, and switching a strategy's execution
target in two phases (plan, then apply with the plan's hash).

Fail-closed: ``allow_live: false`` blocks every switch to live whatever the mode or the
role; the paper evidence (fresh passed paper run, filled paper window, fresh risk
snapshot the run was judged on) is required in every mode, ``auto_apply`` included;
``manual_approval`` needs an approval under the current policy version (a policy
changed and changed back is a change) from an approver-role
token (named in ``approvers`` when the policy lists any); ``cooldown`` and ``max_live``
hold in every mode. A refused approval or apply stores its reasons on the strategy's
candidate row (shown by ``GET /worlds/{id}/campaign``) and is audited; switching back
to paper is always allowed (the safe direction).

The live target is a broker adapter (:class:`Broker`); the paper broker is the only one
built in, so "live" here still trades on paper.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from alphaloop.world import audit
from alphaloop.world.campaign import Campaigns, View
from alphaloop.world.errors import WorldError, invalid, not_found
from alphaloop.world.models import EvaluationRun, LiveApproval, LiveCandidate, table
from alphaloop.world.schemas import (
    ActivationOut,
    ApprovalIn,
    ApprovalOut,
    PlanOut,
)
from alphaloop.world.service import WorldState, ts


class Broker(Protocol):
    """Where a live strategy's orders go."""

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class PaperBroker:
    """Orders are filled by the paper runner on arriving bars; nothing leaves the machine."""

    name: str = "paper"


BROKERS: dict[str, Broker] = {"paper": PaperBroker()}


def _blocked(code: str, reasons: list[str], field: str | None = None) -> WorldError:
    return WorldError(f"refused: {', '.join(reasons)}", code=code, status=409, field=field)


def upsert_candidate(conn: Session, world_id: str, sid: str, actor: str, now: float,
                     **values: object) -> None:
    """Create or change the strategy's candidate row (target paper when new)."""
    found = conn.execute(select(LiveCandidate.strategy_id).where(
        LiveCandidate.world_id == world_id, LiveCandidate.strategy_id == sid)).first()
    if found is None:
        row: dict[str, object] = dict(world_id=world_id, strategy_id=sid, target="paper", broker="paper",
                   status="paper", reasons=[], plan_hash=None, last_live_at=None,
                   updated_at=now, actor=actor)
        conn.execute(insert(table(LiveCandidate)), {**row, **values})
        return
    conn.execute(update(LiveCandidate).where(
        LiveCandidate.world_id == world_id, LiveCandidate.strategy_id == sid)
        .values(updated_at=now, actor=actor, **values))


def plan_for(state: WorldState, view: View, target: str, broker: str) -> PlanOut:
    """The plan of switching the strategy of ``view`` to ``target``, with its hash."""
    if broker not in BROKERS:
        raise invalid("broker", f"{broker!r} is not a broker here (built in: "
                      f"{', '.join(BROKERS)})", "BROKER_UNKNOWN")
    phase = view.state.phase
    current = None if phase == "backtest_campaign" else (
        "live" if phase == "live_campaign" else "paper")
    reasons: list[str] = []
    if target == "live":
        if not state.policy.allow_live:
            reasons.append("LIVE_NOT_ALLOWED")
        if phase == "backtest_campaign":
            reasons.append("PAPER_CAMPAIGN_REQUIRED")
        elif phase == "paper_campaign":
            reasons += [r for r in view.state.reasons if r not in reasons]
        else:  # live already: what keeps it from trading live now (a trip, failed gates)
            reasons += [r for r in view.evidence if r not in reasons]
    sid = view.state.strategy_id
    plan_hash = audit.content_hash({
        "world_id": state.world.world_id, "strategy_id": sid, "current": current,
        "target": target, "broker": broker, "basis": view.live_basis,
        "policy_version": state.version, "ruleset_hash": state.ruleset_hash,
        "reasons": reasons})
    return PlanOut(world_id=state.world.world_id, strategy_id=sid, current=current,  # type: ignore[arg-type]
                   target=target, broker=broker, allowed=not reasons, reasons=reasons,  # type: ignore[arg-type]
                   plan_hash=plan_hash)


def switch(conn: Session, plan: PlanOut, actor: str, now: float) -> ActivationOut:
    """Apply an allowed plan: the candidate's target, its audit record and its event."""
    world_id, sid = plan.world_id, plan.strategy_id
    applied = plan.current != plan.target
    values: dict[str, object] = dict(target=plan.target, broker=plan.broker,
                                     status=plan.target, reasons=[], plan_hash=plan.plan_hash)
    if applied and plan.target == "live":
        values["last_live_at"] = now  # the world's cooldown starts again
    upsert_candidate(conn, world_id, sid, actor, now, **values)
    audit.record(conn, actor=actor, action="activation.apply", world_id=world_id,
                 target=f"{sid}:{plan.current}->{plan.target}@{plan.broker}",
                 before=audit.content_hash({"target": plan.current}), after=plan.plan_hash)
    audit.emit(conn, world_id, "activation_updated",
               {"strategy_id": sid, "from": plan.current, "to": plan.target,
                "broker": plan.broker, "plan_hash": plan.plan_hash, "applied": applied})
    return ActivationOut(world_id=world_id, strategy_id=sid, target=plan.target,
                         broker=plan.broker, plan_hash=plan.plan_hash, applied=applied,
                         updated_at=ts(now))


class Governance:
    def __init__(self, campaigns: Campaigns) -> None:
        self.campaigns = campaigns
        self.db = campaigns.service.db

    def _view(self, conn: Session, state: WorldState, sid: str, now: float) -> View:
        views = self.campaigns.views(conn, state, now, sid)
        if views:
            return views[0]
        stages = sorted(set(conn.execute(select(EvaluationRun.stage).where(
            EvaluationRun.world_id == state.world.world_id,
            EvaluationRun.strategy_id == sid)).scalars()))
        if stages:  # known here, but only from evaluations that start no campaign (live)
            raise WorldError(f"strategy_id: the strategy has no campaign in this world (its "
                             f"evaluations: {', '.join(stages)}); a campaign starts with a "
                             "backtest evaluation", code="NO_CAMPAIGN", status=409,
                             field="strategy_id")
        raise not_found("strategy", sid, "strategy_id")

    def plan(self, world_id: str, sid: str, target: str, broker: str,
             actor: str) -> PlanOut:
        """Phase one: what the switch would do and whether it may (audited; a blocked
        plan's reasons are stored on the candidate)."""
        now = time.time()
        with self.db.write() as conn:
            state = self.campaigns.service.load(conn, world_id)
            plan = plan_for(state, self._view(conn, state, sid, now), target, broker)
            if plan.current not in (None, plan.target):  # a switch to come (not a no-op)
                upsert_candidate(conn, world_id, sid, actor, now, plan_hash=plan.plan_hash,
                                 reasons=plan.reasons,
                                 status="planned" if plan.allowed else "blocked")
            audit.record(conn, actor=actor, action="activation.plan", world_id=world_id,
                         target=f"{sid}:{plan.current}->{target}@{broker}",
                         after=plan.plan_hash)
        return plan

    def apply(self, world_id: str, sid: str, target: str, broker: str, plan_hash: str,
              actor: str) -> ActivationOut:
        """Phase two: the plan, recomputed now, must have the same hash and be allowed."""
        now = time.time()
        refusal = None
        with self.db.write() as conn:
            state = self.campaigns.service.load(conn, world_id)
            done = conn.execute(select(LiveCandidate).where(
                LiveCandidate.world_id == world_id, LiveCandidate.strategy_id == sid)
            ).scalar_one_or_none()
            if done is not None and (done.plan_hash, done.status, done.target,
                                     done.broker) == (plan_hash, target, target, broker):
                # this very plan was applied: a retry answers it again and changes nothing
                return ActivationOut(world_id=world_id, strategy_id=sid, target=target,  # type: ignore[arg-type]
                                     broker=broker, plan_hash=plan_hash, applied=False,
                                     updated_at=ts(done.updated_at))
            plan = plan_for(state, self._view(conn, state, sid, now), target, broker)
            if plan.plan_hash != plan_hash:
                raise WorldError(f"plan_hash: not the hash of a plan for {target} at {broker} "
                                 "now (the state it was made from has changed, or it was "
                                 f"made for another target or broker; now "
                                 f"{', '.join(plan.reasons) or 'allowed'}); plan again",
                                 code="PLAN_STALE", status=409, field="plan_hash")
            if plan.allowed and plan.current == plan.target:  # nothing to switch or write
                return ActivationOut(world_id=world_id, strategy_id=sid, target=target,  # type: ignore[arg-type]
                                     broker=broker, plan_hash=plan_hash, applied=False,
                                     updated_at=ts(now if done is None else done.updated_at))
            if plan.allowed:
                return switch(conn, plan, actor, now)
            refusal = _blocked("PROMOTION_BLOCKED", plan.reasons)
            if plan.current not in (None, plan.target):
                upsert_candidate(conn, world_id, sid, actor, now, status="blocked",
                                 reasons=plan.reasons)
            audit.record(conn, actor=actor, action="activation.refused", world_id=world_id,
                         target=f"{sid}:{plan.current}->{target}@{broker}",
                         after=audit.content_hash(plan.reasons))
        raise refusal

    def approve(self, world_id: str, body: ApprovalIn, approver: str, actor: str) -> ApprovalOut:
        """Record an approver's decision on a paper-campaign strategy going live."""
        now = time.time()
        sid = body.strategy_id
        refusal = None
        with self.db.write() as conn:
            state = self.campaigns.service.load(conn, world_id)
            rules = state.policy.governance.live_promotion
            if rules.mode != "manual_approval":
                raise WorldError(f"decision: the world's live promotion mode is {rules.mode}, "
                                 "approvals apply to manual_approval only",
                                 code="APPROVAL_NOT_APPLICABLE", status=409, field="decision")
            if rules.approvers and approver not in rules.approvers:
                # an attempt on the live switch by someone not listed stays on record
                audit.record(conn, actor=actor, action="live.approve.refused",
                             world_id=world_id, target=sid,
                             after=audit.content_hash(["NOT_AN_APPROVER", approver]))
                refusal = WorldError(f"{approver!r} is not one of the world's approvers",
                                     code="NOT_AN_APPROVER", status=403)
            else:
                view = self._view(conn, state, sid, now)
                if view.state.phase != "paper_campaign":
                    raise WorldError(f"strategy_id: the strategy is in {view.state.phase}, "
                                     "not paper_campaign", code="NOT_A_CANDIDATE",
                                     status=409, field="strategy_id")
                if body.decision != "approve" or not view.evidence:
                    return self._record(conn, state, view, body, actor, now)
                upsert_candidate(conn, world_id, sid, actor, now, status="blocked",
                                 reasons=view.evidence)
                audit.record(conn, actor=actor, action="live.approve.refused",
                             world_id=world_id, target=sid,
                             after=audit.content_hash(view.evidence))
                refusal = _blocked("PROMOTION_BLOCKED", view.evidence)
        raise refusal

    @staticmethod
    def _record(conn: Session, state: WorldState, view: View, body: ApprovalIn, actor: str,
                now: float) -> ApprovalOut:
        world_id, sid = state.world.world_id, body.strategy_id
        values = dict(world_id=world_id, strategy_id=sid, decision=body.decision,
                      ruleset_hash=state.ruleset_hash, policy_version=state.version,
                      paper_run_id=view.state.run_id,
                      paper_revision=view.state.revision, comment=body.comment, actor=actor,
                      created_at=now)
        stmt = insert(table(LiveApproval)).returning(table(LiveApproval).c.approval_id)
        approval_id = conn.execute(stmt, values).scalar_one()
        upsert_candidate(conn, world_id, sid, actor, now,
                         status="approved" if body.decision == "approve" else "rejected",
                         reasons=[] if body.decision == "approve" else ["LIVE_APPROVAL_REJECTED"])
        audit.record(conn, actor=actor, action=f"live.{body.decision}", world_id=world_id,
                     target=f"{sid}#{approval_id}", after=audit.content_hash(values))
        audit.emit(conn, world_id, "approval_recorded",
                   {"approval_id": approval_id, "strategy_id": sid, "decision": body.decision})
        return ApprovalOut(approval_id=approval_id, world_id=world_id, strategy_id=sid,
                           decision=body.decision, ruleset_hash=state.ruleset_hash,
                           policy_version=state.version,
                           paper_run_id=str(view.state.run_id),
                           paper_revision=int(view.state.revision or 0),
                           comment=body.comment, actor=actor, created_at=ts(now))
