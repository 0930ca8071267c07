"""Decisions (seed §2): where a strategy may run now, default-safe.

The ladder, each rung needing the one below it:

- ``backtest`` — always allowed (compute only);
- ``paper`` — its newest backtest-stage evaluation passed (or warned) and is fresh;
- ``live`` — ``allow_live`` is true, a paper/dryrun/shadow evaluation passed and is
  fresh, ``governance.live_promotion.mode`` is not ``disabled``, the strategy's risk
  hub snapshot exists and is fresh (fail-closed), and its execution target was switched
  to live: by ``/apply`` after an approval (``manual_approval``) or by the campaign
  loop's ``activate_live`` (``auto_apply``), both only once the paper window, the
  gates, ``cooldown`` and ``max_live`` allow (:mod:`alphaloop.world.governance`), so
  ``auto_apply`` never skips the paper window. ``allow_live: false`` ⇒ never live.

Every rung not climbed says why in ``reasons``. The envelope carries ``as_of`` and
``ttl_s``; a client must treat a missing or stale envelope as backtest-only.
"""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from alphaloop.world.hub import latest_row, stale_reasons
from alphaloop.world.models import EvaluationRun, LiveApproval, LiveCandidate
from alphaloop.world.riskguard import active_trip, trip_reason
from alphaloop.world.schemas import DecisionEnvelope
from alphaloop.world.service import WorldService, WorldState, ts
from alphaloop.world.sourcing import PAPER_LIKE


def _newest(conn: Session, world_id: str, strategy_id: str,
            stages: tuple[str, ...]) -> EvaluationRun | None:
    stmt = (select(EvaluationRun).where(EvaluationRun.world_id == world_id,
                                        EvaluationRun.strategy_id == strategy_id,
                                        EvaluationRun.stage.in_(stages))
            .order_by(EvaluationRun.updated_at.desc()).limit(1))
    return conn.execute(stmt).scalar_one_or_none()


def rung(run: EvaluationRun | None, stage: str, max_age: float, now: float) -> str | None:
    """Why ``run`` does not clear its rung, or None when it does."""
    if run is None:
        return f"NO_{stage.upper()}_EVALUATION"
    if now - run.updated_at > max_age:
        return f"{stage.upper()}_EVALUATION_STALE"
    if run.outcome == "fail":
        return f"{stage.upper()}_GATES_FAILED"
    return None


def _live_blocker(conn: Session, state: WorldState, strategy_id: str,
                  now: float) -> str | None:
    policy = state.policy
    if not policy.allow_live:
        return "LIVE_NOT_ALLOWED"
    paper = _newest(conn, state.world.world_id, strategy_id, PAPER_LIKE)
    blocked = rung(paper, "paper", policy.freshness.evaluation_max_age, now)
    if blocked:
        return blocked
    mode = policy.governance.live_promotion.mode
    if mode == "disabled":
        return "LIVE_PROMOTION_DISABLED"
    snapshot = latest_row(conn, state.world.world_id, strategy_id)
    if snapshot is None:
        return "RISK_SNAPSHOT_MISSING"
    stale = stale_reasons(snapshot, state, now)
    if stale:
        return f"RISK_SNAPSHOT_STALE:{','.join(stale)}"
    target = conn.execute(select(LiveCandidate.target).where(
        LiveCandidate.world_id == state.world.world_id,
        LiveCandidate.strategy_id == strategy_id)).scalar_one_or_none()
    if target != "live":
        if mode == "manual_approval" and not _approved(conn, state, strategy_id):
            return "LIVE_REQUIRES_APPROVAL"
        return "LIVE_ACTIVATION_PENDING"  # approved (or auto_apply): the plan is applied next
    return None


def _approved(conn: Session, state: WorldState, strategy_id: str) -> bool:
    newest = conn.execute(select(LiveApproval).where(
        LiveApproval.world_id == state.world.world_id,
        LiveApproval.strategy_id == strategy_id)
        .order_by(LiveApproval.approval_id.desc()).limit(1)).scalar_one_or_none()
    return approval_reason(newest, state.version) is None


def approval_reason(newest: LiveApproval | None, version: int) -> str | None:
    """Why the newest approval decision for a strategy does not let it go live under
    policy ``version`` (an approval holds under the version it was given under only),
    or None when it does."""
    if newest is None or newest.policy_version != version:
        return "LIVE_APPROVAL_MISSING"
    return None if newest.decision == "approve" else "LIVE_APPROVAL_REJECTED"


def decide(service: WorldService, world_id: str, strategy_id: str) -> DecisionEnvelope:
    now = time.time()
    with service.db.read() as conn:
        state = service.load(conn, world_id)
        backtest = _newest(conn, world_id, strategy_id, ("backtest",))
        reasons = []
        stage = "backtest"
        blocked = rung(backtest, "backtest", state.policy.freshness.evaluation_max_age, now)
        trip = active_trip(conn, world_id, strategy_id)
        if trip is not None:  # halted by the risk guard: compute only, until an operator
            reasons.append(trip_reason(trip))
        elif blocked:
            reasons.append(blocked)
        else:
            stage = "paper"
            reasons.append("BACKTEST_PASSED")
            live_blocked = _live_blocker(conn, state, strategy_id, now)
            if live_blocked:
                reasons.append(live_blocked)
            else:
                stage = "live"
                mode = state.policy.governance.live_promotion.mode
                reasons.append("LIVE_AUTO_APPLY" if mode == "auto_apply" else "LIVE_APPROVED")
    return DecisionEnvelope(world_id=world_id, strategy_id=strategy_id, stage=stage,  # type: ignore[arg-type]
                            reasons=reasons, as_of=ts(now),
                            ttl_s=state.policy.freshness.decision_ttl,
                            policy_version=state.version, ruleset_hash=state.ruleset_hash,
                            run_id=None if backtest is None else backtest.run_id)
