"""Campaigns (seed §4): each strategy's phase, window progress and what to do next.

The phase is derived from what the world stores, never kept apart from it:

- ``live_campaign`` — its execution target was switched to live (``/apply``);
- ``paper_campaign`` — it has a paper, dryrun or shadow evaluation run here;
- ``backtest_campaign`` — otherwise (it has only backtest runs).

A phase's window (``campaign.<stage>.window``) is measured on:

- backtest: the newest backtest revision's metrics — days = ``effective_history_years``
  × 365.25, samples = ``effective_history_years`` × 252 (the engines' daily bars),
  trades = ``n_trades``;
- paper: the realized returns of the strategy's newest *fresh* risk-hub snapshot —
  samples = their number, days = samples / ``periods_per_year`` × 365.25, trades =
  the snapshot's ``provenance.n_trades`` (posted by the producer; unknown otherwise).

A minimum on an unknown measure is not met (fail-closed). ``tick`` reads only; its
actions carry an ``idempotency_key`` = sha256 of what they were computed from (world,
strategy, kind, run, the revision or snapshot hashes and the ruleset hash), so the same
state gives the same key and a changed state a new one. :func:`execute` runs an action
and stores its key in the same transaction: a key is executed once.

Live promotion (seed §5) is judged here too, fail-closed, in this order: the paper
evidence (fresh passed paper run, filled window, fresh risk snapshot the run was judged
on), ``allow_live`` (false blocks whatever the mode or role), the mode (``disabled``
never promotes; ``manual_approval`` needs the newest approval under the current policy version
to be ``approve``), ``cooldown`` since the world's last live activation and ``max_live``
strategies live at once. ``auto_apply`` skips only the approval.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from alphaloop.world import audit
from alphaloop.world.decide import PAPER_LIKE, approval_reason, rung
from alphaloop.world.errors import WorldError
from alphaloop.world.hub import hub_view, latest_row, stale_reasons
from alphaloop.world.models import (
    CampaignAction,
    EvaluationRun,
    LiveApproval,
    LiveCandidate,
    table,
)
from alphaloop.world.policy import Window
from alphaloop.world.riskguard import active_trip, trip_reason
from alphaloop.world.schemas import (
    CampaignActionOut,
    CampaignOut,
    CandidateOut,
    ExecutedOut,
    StrategyCampaign,
    TickOut,
    WindowMeasure,
    WindowProgress,
)
from alphaloop.world.service import Revision, WorldService, WorldState, ts

DAYS_PER_YEAR = 365.25
BACKTEST_PPY = 252.0


@dataclass(frozen=True)
class View:
    """One strategy's campaign as one read sees it, with the action it calls for."""

    state: StrategyCampaign
    action: CampaignActionOut | None
    evidence: list[str]  # the reasons before governance (approval, cooldown, max_live)
    live_basis: dict[str, Any] | None  # what a live activation plan is computed from


@dataclass(frozen=True)
class Live:
    """The world's governance state, read once per campaign read."""

    candidates: dict[str, LiveCandidate]
    approvals: dict[str, LiveApproval]  # the newest per strategy
    n_live: int
    last_live_at: float | None

    @classmethod
    def read(cls, conn: Session, world_id: str) -> Live:
        candidates = {c.strategy_id: c for c in conn.execute(select(LiveCandidate).where(
            LiveCandidate.world_id == world_id)).scalars()}
        approvals: dict[str, LiveApproval] = {}
        for a in conn.execute(select(LiveApproval).where(LiveApproval.world_id == world_id)
                              .order_by(LiveApproval.approval_id)).scalars():
            approvals[a.strategy_id] = a
        starts = [c.last_live_at for c in candidates.values() if c.last_live_at is not None]
        return cls(candidates, approvals,
                   sum(c.target == "live" for c in candidates.values()),
                   max(starts) if starts else None)

    def blockers(self, state: WorldState, sid: str, now: float) -> list[str]:
        """Governance's reasons against activating ``sid`` live now."""
        rules = state.policy.governance.live_promotion
        reasons = []
        if rules.mode == "manual_approval":
            missing = approval_reason(self.approvals.get(sid), state.version)
            if missing is not None:
                reasons.append(missing)
        if self.last_live_at is not None and now - self.last_live_at < rules.cooldown:
            reasons.append("LIVE_COOLDOWN")
        if rules.max_live is not None and self.n_live >= rules.max_live:
            reasons.append("LIVE_MAX_REACHED")
        return reasons


def _measure(required: float | None, observed: float | None) -> WindowMeasure:
    filled = required is None or (observed is not None and observed >= required)
    return WindowMeasure(required=required, observed=observed, filled=filled)


def _window(stage: str, window: Window, days: float | None, samples: float | None,
            trades: float | None, reasons: list[str]) -> WindowProgress:
    measures = {"days": _measure(window.min_days, days),
                "samples": _measure(None if window.min_samples is None
                                    else float(window.min_samples), samples),
                "trades": _measure(None if window.min_trades is None
                                   else float(window.min_trades), trades)}
    for name, m in measures.items():
        if not m.filled:
            why = "UNKNOWN" if m.observed is None else "SHORT"
            reasons.append(f"{stage.upper()}_WINDOW_{name.upper()}_{why}")
    return WindowProgress(stage=stage, filled=all(m.filled for m in measures.values()),  # type: ignore[arg-type]
                          **measures)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def action_key(world_id: str, strategy_id: str, kind: str, run_id: str,
               basis: dict[str, Any]) -> str:
    return audit.content_hash({"world_id": world_id, "strategy_id": strategy_id,
                               "kind": kind, "run_id": run_id, "basis": basis})


def _action(state: WorldState, sid: str, kind: str, phase: str, run_id: str, stage: str,
            basis: dict[str, Any], reason: str,
            body: dict[str, Any] | None = None) -> CampaignActionOut:
    world_id = state.world.world_id
    basis = {**basis, "ruleset_hash": state.ruleset_hash}
    return CampaignActionOut(
        idempotency_key=action_key(world_id, sid, kind, run_id, basis), kind=kind,  # type: ignore[arg-type]
        strategy_id=sid, phase=phase, suggested_run_id=run_id,  # type: ignore[arg-type]
        suggested_body=body or {"run_id": run_id, "stage": stage, "strategy_id": sid},
        reason=reason)


def _candidate_out(row: LiveCandidate | None) -> CandidateOut | None:
    if row is None:
        return None
    return CandidateOut(target=row.target, broker=row.broker, status=row.status,  # type: ignore[arg-type]
                        reasons=row.reasons, plan_hash=row.plan_hash,
                        last_live_at=None if row.last_live_at is None else ts(row.last_live_at),
                        updated_at=ts(row.updated_at))


class Campaigns:
    """The campaign reads of one world service."""

    def __init__(self, service: WorldService) -> None:
        self.service = service

    def views(self, conn: Session, state: WorldState, now: float,
              strategy_id: str | None = None) -> list[View]:
        stmt = select(EvaluationRun).where(EvaluationRun.world_id == state.world.world_id)
        if strategy_id is not None:
            stmt = stmt.where(EvaluationRun.strategy_id == strategy_id)
        newest: dict[tuple[str, str], EvaluationRun] = {}
        for run in conn.execute(stmt.order_by(EvaluationRun.updated_at,
                                               EvaluationRun.run_id)).scalars():
            kind = "paper" if run.stage in PAPER_LIKE else run.stage
            newest[(run.strategy_id, kind)] = run  # the last one is the newest
        sids = sorted({sid for sid, _ in newest})
        live = Live.read(conn, state.world.world_id)
        out = []
        for sid in sids:
            paper = newest.get((sid, "paper"))
            if paper is not None:
                out.append(self._paper(conn, state, sid, paper, now, live,
                                       newest.get((sid, "backtest"))))
            elif (sid, "backtest") in newest:
                out.append(self._backtest(conn, state, sid, newest[(sid, "backtest")], now,
                                          live))
        return out

    def _judged(self, conn: Session, state: WorldState, run: EvaluationRun, stage: str,
                now: float) -> tuple[Revision, list[str]]:
        """The run's newest revision, and why its rung is not cleared (stale, failed)."""
        blocked = rung(run, stage, state.policy.freshness.evaluation_max_age, now)
        latest = WorldService._revision(conn, run.world_id, run.run_id, run.revision)
        return latest, [blocked] if blocked else []

    def _backtest(self, conn: Session, state: WorldState, sid: str, run: EvaluationRun,
                  now: float, live: Live) -> View:
        policy = state.policy
        rev, reasons = self._judged(conn, state, run, "backtest", now)
        years = _number(rev.metrics.get("effective_history_years"))
        window = _window("backtest", policy.campaign.backtest.window,
                         None if years is None else years * DAYS_PER_YEAR,
                         None if years is None else float(round(years * BACKTEST_PPY)),
                         _number(rev.metrics.get("n_trades")), reasons)
        view = StrategyCampaign(strategy_id=sid, phase="backtest_campaign", run_id=run.run_id,
                                revision=rev.revision, outcome=rev.outcome,  # type: ignore[arg-type]
                                window=window, metrics=rev.metrics, promotable=not reasons,
                                next_phase="paper_campaign", reasons=reasons,
                                candidate=_candidate_out(live.candidates.get(sid)))
        action = None
        if not reasons:
            action = _action(state, sid, "start_paper", "backtest_campaign",
                             f"campaign:{sid[:16]}:paper", "paper",
                             {"backtest": f"{run.run_id}@{rev.revision}:{rev.content_hash}"},
                             "BACKTEST_WINDOW_FILLED")
        return View(view, action, list(reasons), None)

    def _paper(self, conn: Session, state: WorldState, sid: str, run: EvaluationRun,
               now: float, live: Live, backtest: EvaluationRun | None) -> View:
        policy = state.policy
        rev, reasons = self._judged(conn, state, run, "paper", now)
        # the ladder's first rung holds here too: no paper campaign goes live without a
        # fresh passed backtest (what /decide reads), however the paper run came about
        below = rung(backtest, "backtest", policy.freshness.evaluation_max_age, now)
        if below:
            reasons.insert(0, below)
        samples = days = trades = None
        fresh_hash = None
        row = latest_row(conn, state.world.world_id, sid)
        if row is None:
            reasons.append("RISK_SNAPSHOT_MISSING")
        elif stale := stale_reasons(row, state, now):
            reasons.append(f"RISK_SNAPSHOT_STALE:{','.join(stale)}")
        else:
            try:
                hub = hub_view(conn, self.service.refs_root, state, sid)
            except WorldError:  # its returns file went missing or unreadable
                hub = None
                reasons.append("RISK_SNAPSHOT_UNREADABLE")
            if hub is not None and hub.returns is not None:
                samples = float(len(hub.returns))
                days = samples / hub.periods_per_year * DAYS_PER_YEAR
                fresh_hash = hub.content_hash
            trades = _number((row.body.get("provenance") or {}).get("n_trades"))
        used = (rev.risk or {}).get("snapshot_hash")
        behind = fresh_hash is not None and used != fresh_hash
        if behind:
            reasons.append("PAPER_EVALUATION_BEHIND_SNAPSHOT")
        window = _window("paper", policy.campaign.paper.window, days, samples, trades, reasons)
        trip = active_trip(conn, state.world.world_id, sid)
        if trip is not None:
            reasons.append(trip_reason(trip))
        if not policy.allow_live:
            reasons.append("LIVE_NOT_ALLOWED")
        if policy.governance.live_promotion.mode == "disabled":
            reasons.append("LIVE_PROMOTION_DISABLED")
        evidence = list(reasons)
        candidate = live.candidates.get(sid)
        is_live = candidate is not None and candidate.target == "live"
        if not is_live:
            reasons += live.blockers(state, sid, now)
        paper = {"paper": f"{run.run_id}@{rev.revision}:{rev.content_hash}",
                 "snapshot": fresh_hash}
        approval = live.approvals.get(sid)
        basis = {**paper, "approval": None if approval is None else approval.approval_id,
                 "n_live": live.n_live, "last_live_at": live.last_live_at, "live": is_live}
        view = StrategyCampaign(strategy_id=sid, phase="live_campaign" if is_live
                                else "paper_campaign", run_id=run.run_id,
                                revision=rev.revision, outcome=rev.outcome,  # type: ignore[arg-type]
                                window=window, metrics=rev.metrics,
                                promotable=not reasons and not is_live,
                                next_phase=None if is_live else "live_campaign",
                                reasons=reasons, candidate=_candidate_out(candidate))
        action = None
        if behind:
            action = _action(state, sid, "evaluate_paper", view.phase, run.run_id,
                             run.stage, paper, "NEW_REALIZED_RETURNS")
        elif view.promotable:
            action = _action(state, sid, "activate_live", "paper_campaign", run.run_id,
                             run.stage, basis, "PROMOTABLE",
                             {"strategy_id": sid, "target": "live", "broker": "paper"})
        return View(view, action, evidence, basis)

    # ------------------------------------------------------------- endpoints

    def campaign(self, world_id: str) -> CampaignOut:
        now = time.time()
        with self.service.db.read() as conn:
            state = self.service.load(conn, world_id)
            views = self.views(conn, state, now)
        live = state.policy.governance.live_promotion
        return CampaignOut(world_id=world_id, policy_version=state.version,
                           ruleset_hash=state.ruleset_hash, governance_mode=live.mode,
                           allow_live=state.policy.allow_live, as_of=ts(now),
                           strategies=[v.state for v in views])

    def tick(self, world_id: str) -> TickOut:
        """The recommended actions; reads only (one read transaction, nothing written)."""
        now = time.time()
        with self.service.db.read() as conn:
            state = self.service.load(conn, world_id)
            views = self.views(conn, state, now)
        return TickOut(world_id=world_id, policy_version=state.version,
                       ruleset_hash=state.ruleset_hash, as_of=ts(now),
                       actions=[v.action for v in views if v.action is not None])

    # -------------------------------------------------------------- execution

    @staticmethod
    def _executed(conn: Session, world_id: str, key: str) -> CampaignAction | None:
        return conn.execute(select(CampaignAction).where(
            CampaignAction.world_id == world_id,
            CampaignAction.idempotency_key == key)).scalar_one_or_none()

    @staticmethod
    def _out(row: CampaignAction, executed: bool) -> ExecutedOut:
        return ExecutedOut(world_id=row.world_id, idempotency_key=row.idempotency_key,
                           kind=row.kind, strategy_id=row.strategy_id,  # type: ignore[arg-type]
                           run_id=row.run_id, revision=row.revision,
                           outcome=row.outcome, actor=row.actor,  # type: ignore[arg-type]
                           executed_at=ts(row.executed_at), executed=executed)

    def _recommended(self, conn: Session, state: WorldState, key: str,
                     strategy_id: str | None = None) -> View | None:
        for view in self.views(conn, state, time.time(), strategy_id):
            if view.action is not None and view.action.idempotency_key == key:
                return view
        return None

    def execute(self, world_id: str, key: str, actor: str) -> ExecutedOut:
        """Execute the recommended action ``key``: its effect (an evaluation, or the
        switch to live), its key, its audit record and its event in one transaction. A
        key executed before changes nothing (``executed: false``); a key no tick
        recommends now is refused (409)."""
        service = self.service
        judged = None
        with service.db.read() as conn:
            done = self._executed(conn, world_id, key)
            if done is not None:
                return self._out(done, executed=False)
            state = service.load(conn, world_id)
            found = self._recommended(conn, state, key)
            if found is None or found.action is None:
                # a concurrent execution of the key may have committed between the two
                # reads (each statement sees the latest commit): it moved the strategy on
                done = self._executed(conn, world_id, key)
                if done is not None:
                    return self._out(done, executed=False)
                raise _not_recommended(key)
            action = found.action
            body = action.suggested_body
            if action.kind != "activate_live":
                subj = service.subject(conn, run_id=body["run_id"], stage=body["stage"],
                                       strategy_id=body["strategy_id"], spec=None,
                                       metrics=None, returns=None, ppy=BACKTEST_PPY)
                judged = service.judge(conn, state, subj)  # sourcing: not under the lock
        with service.db.write() as conn:
            done = self._executed(conn, world_id, key)
            if done is not None:  # a concurrent execution of the same key came first
                return self._out(done, executed=False)
            now_state = service.load(conn, world_id)
            view = self._recommended(conn, now_state, key, action.strategy_id)
            if now_state.ruleset_hash != state.ruleset_hash or view is None:
                raise _not_recommended(key)
            if judged is not None:
                rev, _ = service.write(conn, judged, actor)
                revision, outcome = rev.revision, rev.outcome
            else:
                from alphaloop.world.governance import plan_for, switch

                now = time.time()
                switch(conn, plan_for(now_state, view, "live", body["broker"]), actor, now)
                revision, outcome = int(view.state.revision or 0), str(view.state.outcome)
            values = dict(world_id=world_id, idempotency_key=key,
                          strategy_id=action.strategy_id, kind=action.kind,
                          run_id=action.suggested_run_id, revision=revision,
                          outcome=outcome, actor=actor, executed_at=time.time())
            conn.execute(insert(table(CampaignAction)), values)
            row = CampaignAction(**values)
            audit.record(conn, actor=actor, action="campaign.execute", world_id=world_id,
                         target=f"{action.kind}:{action.suggested_run_id}@{revision}",
                         after=key)
            audit.emit(conn, world_id, "campaign_action_executed",
                       {"idempotency_key": key, "kind": action.kind,
                        "strategy_id": action.strategy_id, "run_id": action.suggested_run_id,
                        "revision": revision, "outcome": outcome})
        return self._out(row, executed=True)


def _not_recommended(key: str) -> WorldError:
    return WorldError(f"idempotency_key: {key[:16]}… is not an action the campaign "
                      "recommends now (the state it was computed from has changed); tick "
                      "again", code="ACTION_NOT_RECOMMENDED", status=409,
                      field="idempotency_key")
