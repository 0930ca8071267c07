"""Issue 12's first acceptance test, literally: a real uvicorn server on loopback with a
SQLite file; one strategy walked from ``Runner.submit`` through backtest_campaign,
paper_campaign (the replay feed), a manual approval and live activation on the paper
broker; then every refusal: a stale snapshot, a snapshot stale by its ``as_of``, a
missing snapshot, ``allow_live=false`` in every mode, a window not yet filled, a
missing approval, the cooldown, ``max_live``, a wrong role (403), no token (401), the
same ``idempotency_key`` twice (one effect) and a tick that changes nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import Server, checkpoint_and_dump, sqlite_files
from typer.testing import CliRunner

from alphaloop.cli import app
from alphaloop.data.loaders import load_bars
from alphaloop.engines.engine_b import verify
from alphaloop.orchestrator.runner import Runner
from alphaloop.strategy.spec import StrategySpec
from alphaloop.world.client import WorldClient, WorldClientError, campaign_step

DATA, START = "synth_planted", 2480  # the backtest sees bars [0, START); paper the rest
W = "acceptance"


def _spec(fast: int, slow: int) -> StrategySpec:
    return StrategySpec.model_validate({"entry": f"sma(close, {fast}) > sma(close, {slow})",
                                        "exit": f"sma(close, {fast}) < sma(close, {slow})"})


A, B = _spec(10, 50), _spec(3, 30)
MANUAL = {"mode": "manual_approval", "cooldown": "1h", "max_live": 1,
          "approvers": ["test-approver"]}


def _policy(allow_live: bool = True, **live: Any) -> dict[str, Any]:
    return {"gates": {"backtest": {"min_trades": 1}},
            "campaign": {"backtest": {"window": {"min_days": 365, "min_trades": 1}},
                         "paper": {"window": {"min_samples": 20}}},
            "allow_live": allow_live,
            "governance": {"live_promotion": {**MANUAL, **live}}}


class World:
    """The test's view of the service: one client per role, the CLI and raw HTTP."""

    def __init__(self, srv: Server, toks: dict[str, str], tmp: Path) -> None:
        self.srv, self.toks, self.tmp = srv, toks, tmp

    def client(self, role: str) -> WorldClient:
        return WorldClient(self.srv.url, self.toks[role])

    def http(self, method: str, path: str, role: str | None, body: Any = None) -> Any:
        headers = {} if role is None else {"Authorization": f"Bearer {self.toks[role]}"}
        return httpx.request(method, f"{self.srv.url}{path}", json=body, headers=headers)

    def entry(self, sid: str) -> Any:
        with self.client("viewer") as c:
            return next(s for s in c.campaign(W).strategies if s.strategy_id == sid)

    def paper(self, spec: StrategySpec, *args: str) -> None:
        """``alphaloop world paper`` on the replay feed of the held-out bars."""
        spec_file = self.tmp / f"{spec.strategy_id[:8]}.yaml"
        spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
        done = CliRunner().invoke(app, [
            "world", "paper", "--world", W, "--strategy", str(spec_file), "--feed",
            f"replay:{DATA}", "--state", str(self.tmp / f"{spec.strategy_id[:8]}.json"),
            "--url", self.srv.url, *args], env={"ALPHALOOP_WORLD_TOKEN": self.toks["operator"]})
        assert done.exit_code == 0, done.output

    def step(self) -> list[tuple[str, str]]:
        """One campaign-loop step (operator): the actions executed."""
        with self.client("operator") as c:
            return [(d.kind, d.strategy_id) for d in campaign_step(c, W).executed]

    def refused(self, role: str, call: Any) -> tuple[int | None, str, str]:
        with self.client(role) as c, pytest.raises(WorldClientError) as exc:
            call(c)
        return exc.value.status, exc.value.code, exc.value.message

    def blocked(self, sid: str, expected: list[str]) -> None:
        """The campaign's reasons are ``expected``; a plan says so, its apply is refused,
        and the refusal's reasons are stored on the candidate."""
        assert self.entry(sid).reasons == expected
        with self.client("operator") as op:
            plan = op.plan_activation(W, sid)
            assert (plan.allowed, plan.reasons) == (False, expected)
        status, code, message = self.refused("operator", lambda c: c.apply(W, plan))
        assert (status, code) == (409, "PROMOTION_BLOCKED")
        assert all(r in message for r in expected)
        candidate = self.entry(sid).candidate
        assert (candidate.status, candidate.reasons) == ("blocked", expected)
        with self.client("viewer") as c:
            assert c.decide(W, sid).stage != "live"

    def tick_writes_nothing(self) -> list[Any]:
        db = self.srv.db
        assert isinstance(db, Path)
        dump, files = checkpoint_and_dump(db), sqlite_files(db)
        with self.client("viewer") as c:
            ticks = [c.tick(W) for _ in range(3)]
            c.campaign(W)
        assert sqlite_files(db) == files  # neither the main file nor the WAL changed
        assert checkpoint_and_dump(db) == dump
        assert [t.actions for t in ticks[1:]] == [ticks[0].actions] * 2  # same state, same keys
        return ticks[0].actions


def test_one_strategy_from_submit_to_live_then_every_refusal(
        sqlite_server: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    srv, toks = sqlite_server
    world = World(srv, toks, tmp_path)
    bars = load_bars(DATA)
    bars.slice(0, START).to_long().to_parquet(srv.refs_root / "backtest.parquet")
    with world.client("operator") as op:
        op.create_world(W, name=W, data="backtest.parquet", policy=_policy())

    # ---- backtest_campaign: Runner.submit, engine B on the world's (backtest) bars
    submitted = Runner.submit(A, W, url=srv.url, token=toks["submitter"])
    assert (submitted.strategy_id, submitted.stage, submitted.downgraded) == (
        A.strategy_id, "paper", False)
    own = verify(A, bars.slice(0, START), capacity=False).metrics
    assert submitted.evaluation.latest.metrics["n_trades"] == own["n_trades"]
    assert submitted.evaluation.latest.metrics["sharpe"] == pytest.approx(own["sharpe"])
    entry = world.entry(A.strategy_id)
    assert (entry.phase, entry.run_id, entry.window.filled, entry.promotable) == (
        "backtest_campaign", submitted.evaluation.run_id, True, True)

    # ---- the tick changes nothing; its action, executed twice, has one effect
    (action,) = world.tick_writes_nothing()
    assert (action.kind, action.strategy_id) == ("start_paper", A.strategy_id)
    key = action.idempotency_key
    assert world.http("POST", f"/worlds/{W}/campaign/tick", None).status_code == 401
    for role in (None, "viewer", "submitter", "approver"):
        r = world.http("POST", f"/worlds/{W}/campaign/actions", role, {"idempotency_key": key})
        assert r.status_code == (401 if role is None else 403), role
    with world.client("operator") as op:
        first = op.execute_action(W, key)
        again = op.execute_action(W, key)
        run = op.get_run(W, action.suggested_run_id)
        audit = [e.action for e in op.audit(W)]
    assert (first.executed, again.executed, again.revision) == (True, False, first.revision)
    assert (run.stage, len(run.revisions)) == ("paper", 1)
    assert audit.count("campaign.execute") == 1

    # ---- paper_campaign on the replay feed: the window is not filled after 15 bars
    world.paper(A, "--start", str(START), "--max-bars", "15")
    assert world.step() == [("evaluate_paper", A.strategy_id)]
    assert world.entry(A.strategy_id).window.samples.observed == 15.0
    world.blocked(A.strategy_id, ["PAPER_WINDOW_SAMPLES_SHORT", "LIVE_APPROVAL_MISSING"])
    status, code, message = world.refused("approver", lambda c: c.approve(W, A.strategy_id))
    assert (status, code) == (409, "PROMOTION_BLOCKED") and "SAMPLES_SHORT" in message
    world.paper(A, "--max-bars", "10")  # resumes at bar 16
    assert world.step() == [("evaluate_paper", A.strategy_id)]
    assert world.entry(A.strategy_id).window.samples.observed == 25.0
    with world.client("viewer") as c:  # its bars and fills are in the knowledge base
        recorded, fills = c.bars(W, A.strategy_id), c.fills(W, A.strategy_id)
        assert c.decide(W, A.strategy_id).reasons[-1] == "LIVE_REQUIRES_APPROVAL"
    assert len(recorded) == 25 and sum(b.orders.filled for b in recorded) == len(fills) > 0

    # ---- the approval is missing; only an approver-role token named in the policy
    world.blocked(A.strategy_id, ["LIVE_APPROVAL_MISSING"])
    body = {"strategy_id": A.strategy_id, "decision": "approve"}
    assert world.http("POST", f"/worlds/{W}/approvals", None, body).status_code == 401
    for role in ("viewer", "submitter", "operator"):
        r = world.http("POST", f"/worlds/{W}/approvals", role, body)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")
    plan_body = {"strategy_id": A.strategy_id, "target": "live", "broker": "paper"}
    for path in ("activation", "apply"):
        full = {**plan_body, "plan_hash": "0" * 64} if path == "apply" else plan_body
        assert world.http("POST", f"/worlds/{W}/{path}", None, full).status_code == 401
        for role in ("viewer", "submitter", "approver"):
            r = world.http("POST", f"/worlds/{W}/{path}", role, full)
            assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN"), path

    # ---- manual approval, then live activation on the paper broker (plan, apply)
    with world.client("approver") as ap:
        ap.approve(W, A.strategy_id, comment="25 paper bars")
    with world.client("operator") as op:
        plan = op.plan_activation(W, A.strategy_id)
        assert (plan.allowed, plan.reasons, plan.current) == (True, [], "paper")
        done = op.apply(W, plan)
    assert (done.target, done.broker, done.applied) == ("live", "paper", True)
    with world.client("viewer") as c:
        decision = c.decide(W, A.strategy_id)
    assert (decision.stage, decision.reasons[-1]) == ("live", "LIVE_APPROVED")
    assert world.entry(A.strategy_id).phase == "live_campaign"

    # ---- a second strategy: a missing snapshot, then the cooldown and max_live
    assert Runner.submit(B, W, url=srv.url, token=toks["submitter"]).stage == "paper"
    assert world.step() == [("start_paper", B.strategy_id)]
    # its paper run has no paper evidence yet: its gates fail until a snapshot comes in
    world.blocked(B.strategy_id, ["PAPER_GATES_FAILED", "RISK_SNAPSHOT_MISSING",
                                  "PAPER_WINDOW_SAMPLES_UNKNOWN", "LIVE_APPROVAL_MISSING",
                                  "LIVE_COOLDOWN", "LIVE_MAX_REACHED"])
    status, code, message = world.refused("approver", lambda c: c.approve(W, B.strategy_id))
    assert (status, code) == (409, "PROMOTION_BLOCKED") and "RISK_SNAPSHOT_MISSING" in message
    world.paper(B, "--start", str(START), "--max-bars", "25")
    assert world.step() == [("evaluate_paper", B.strategy_id)]
    with world.client("approver") as ap:
        ap.approve(W, B.strategy_id)
    world.blocked(B.strategy_id, ["LIVE_COOLDOWN", "LIVE_MAX_REACHED"])
    with world.client("operator") as op:  # back to paper: always allowed, frees the slot
        back = op.apply(W, op.plan_activation(W, A.strategy_id, target="paper"))
    assert (back.target, back.applied) == ("paper", True)
    world.blocked(B.strategy_id, ["LIVE_COOLDOWN"])  # A went live less than 1h ago
    with world.client("operator") as op:
        op.put_policy(W, _policy(cooldown=0, max_live=0))
    world.blocked(B.strategy_id, ["LIVE_APPROVAL_MISSING", "LIVE_MAX_REACHED"])  # new rules
    with world.client("approver") as ap:
        ap.approve(W, B.strategy_id)
    world.blocked(B.strategy_id, ["LIVE_MAX_REACHED"])
    with world.client("operator") as op:
        op.put_policy(W, _policy(cooldown=0))
    with world.client("approver") as ap:
        ap.approve(W, B.strategy_id)
    assert (world.entry(B.strategy_id).promotable, world.entry(B.strategy_id).reasons) == (
        True, [])

    # ---- stale snapshots block: by TTL since ingestion, and by the age of as_of
    with world.client("operator") as op:
        returns = op.latest_snapshot(W, B.strategy_id).body["realized_returns"]
        op.post_snapshot({"world_id": W, "strategy_id": B.strategy_id, "ttl_s": 0.5,
                          "as_of": datetime.now(UTC).isoformat(),
                          "realized_returns": returns})
    time.sleep(0.7)
    world.blocked(B.strategy_id, ["RISK_SNAPSHOT_STALE:TTL_EXPIRED",
                                  "PAPER_WINDOW_SAMPLES_UNKNOWN"])
    with world.client("operator") as op:
        old = op.post_snapshot({"world_id": W, "strategy_id": B.strategy_id,
                                "as_of": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
                                "realized_returns": returns})
    assert (old.created, old.stale, old.stale_reasons) == (True, True, ["AS_OF_TOO_OLD"])
    world.blocked(B.strategy_id, ["RISK_SNAPSHOT_STALE:AS_OF_TOO_OLD",
                                  "PAPER_WINDOW_SAMPLES_UNKNOWN"])
    world.paper(B, "--max-bars", "1")  # the runner's next bar: a fresh snapshot
    assert world.step() == [("evaluate_paper", B.strategy_id)]
    assert world.entry(B.strategy_id).reasons == []

    # ---- allow_live false blocks every switch to live, whatever the mode or the role
    for mode in ("disabled", "manual_approval", "auto_apply"):
        with world.client("operator") as op:
            op.put_policy(W, _policy(allow_live=False, mode=mode, cooldown=0))
        assert world.tick_writes_nothing() == []
        assert world.step() == []
        with world.client("admin") as admin:
            plan = admin.plan_activation(W, B.strategy_id)
            assert (plan.allowed, plan.reasons[0]) == (False, "LIVE_NOT_ALLOWED")
        status, code, _ = world.refused("admin", lambda c, plan=plan: c.apply(W, plan))
        assert (status, code) == (409, "PROMOTION_BLOCKED")
        status, code, message = world.refused("approver",
                                              lambda c: c.approve(W, B.strategy_id))
        assert status == 409 and (code == "APPROVAL_NOT_APPLICABLE"
                                  or "LIVE_NOT_ALLOWED" in message)
        with world.client("viewer") as c:
            assert [c.decide(W, s.strategy_id).stage for s in (A, B)] == ["paper", "paper"]
        assert "LIVE_NOT_ALLOWED" in world.entry(B.strategy_id).reasons

    # ---- allowed again under auto_apply: each may go live alone (max_live 1); the
    # loop activates B, its key twice is one effect, and A's key is then refused
    with world.client("operator") as op:
        op.put_policy(W, _policy(mode="auto_apply", cooldown=0))
    actions = {a.strategy_id: a for a in world.tick_writes_nothing()}
    assert {(a.kind, sid) for sid, a in actions.items()} == {
        ("activate_live", A.strategy_id), ("activate_live", B.strategy_id)}
    with world.client("operator") as op:
        once = op.execute_action(W, actions[B.strategy_id].idempotency_key)
        twice = op.execute_action(W, actions[B.strategy_id].idempotency_key)
        audit = [e.action for e in op.audit(W)]
    assert (once.executed, twice.executed) == (True, False)
    assert audit.count("activation.apply") == 3  # A live, A back to paper, B live
    status, code, _ = world.refused(
        "operator", lambda c: c.execute_action(W, actions[A.strategy_id].idempotency_key))
    assert (status, code) == (409, "ACTION_NOT_RECOMMENDED")
    assert world.entry(A.strategy_id).reasons == ["LIVE_MAX_REACHED"]
    with world.client("viewer") as c:
        assert [c.decide(W, s.strategy_id).stage for s in (A, B)] == ["paper", "live"]
    assert world.tick_writes_nothing() == []
    with world.client("viewer") as c:
        audit = [e.action for e in c.audit(W)]
    # every step is audited
    for step in ("world.create", "evaluation.create", "evaluation.revise", "campaign.execute",
                 "paper.fills", "paper.bar", "snapshot.post", "activation.plan",
                 "activation.refused", "live.approve.refused", "live.approve",
                 "activation.apply", "policy.update"):
        assert step in audit, step
