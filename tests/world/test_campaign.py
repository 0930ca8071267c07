"""Campaigns (seed §4) over HTTP: a real uvicorn process on loopback and a SQLite file in
WAL mode. Campaign state, a tick that writes nothing, and actions executed once per key."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    Server,
    checkpoint_and_dump,
    create_database,
    make_tokens,
    sqlite_files,
)
from typer.testing import CliRunner

from alphaloop.cli import app
from alphaloop.kb import dispose_engines
from alphaloop.strategy.spec import StrategySpec
from alphaloop.world.client import WorldClient, WorldClientError, campaign_step

POLICY = {
    "gates": {"backtest": {"min_sharpe": 0.5}, "paper": {"min_sharpe": 0.0}},
    "campaign": {"backtest": {"window": {"min_days": 365, "min_trades": 20}},
                 "paper": {"window": {"min_samples": 20}}},
}
# every reason a paper-phase strategy has with no snapshot under POLICY (allow_live false,
# mode disabled), in the order the campaign lists them: without paper evidence its paper
# run's gates fail (a backtest's numbers are not paper evidence)
NO_SNAPSHOT = ["PAPER_GATES_FAILED", "RISK_SNAPSHOT_MISSING", "PAPER_WINDOW_SAMPLES_UNKNOWN", "LIVE_NOT_ALLOWED",
               "LIVE_PROMOTION_DISABLED"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Server, dict[str, str]]]:
    base = tmp_path_factory.mktemp("campaign")
    (base / "refs").mkdir()
    db: Path | str = base / "kb.sqlite"
    if request.param == "postgresql":
        db = create_database(request.getfixturevalue("postgres_server"), f"campaign_{base.name}")
    srv = Server(db, base / "refs")
    made = make_tokens(srv.db_url)
    dispose_engines()
    srv.start()
    yield srv, made
    srv.stop()


def _sid(fast: int) -> tuple[str, dict[str, Any]]:
    spec = StrategySpec.model_validate({"entry": f"sma(close, {fast}) > sma(close, 50)",
                                        "exit": f"sma(close, {fast}) < sma(close, 50)"})
    return spec.strategy_id, spec.model_dump(mode="json")


def _client(server: tuple[Server, dict[str, str]], role: str) -> WorldClient:
    srv, toks = server
    return WorldClient(srv.url, toks[role])


def _backtest(server: tuple[Server, dict[str, str]], world: str, fast: int,
              metrics: dict[str, Any]) -> str:
    sid, spec = _sid(fast)
    with _client(server, "submitter") as c:
        c.evaluate(world, {"run_id": f"bt:{fast}", "spec": spec, "metrics": metrics})
    return sid


READY = {"sharpe": 1.0, "n_trades": 30, "effective_history_years": 2.0}  # window filled


def _ready(server: tuple[Server, dict[str, str]], world: str, fast: int) -> tuple[str, str]:
    """A new world with one strategy whose backtest window is filled: its id and the
    key of the start_paper action a tick recommends."""
    _world(server, world)
    sid = _backtest(server, world, fast, READY)
    with _client(server, "viewer") as c:
        return sid, c.tick(world).actions[0].idempotency_key


def _world(server: tuple[Server, dict[str, str]], world: str) -> None:
    with _client(server, "operator") as c:
        c.create_world(world, name=world, policy=POLICY)


def _by_id(server: tuple[Server, dict[str, str]], world: str) -> dict[str, Any]:
    with _client(server, "viewer") as c:
        return {s.strategy_id: s for s in c.campaign(world).strategies}


def _rows(url: str) -> dict[str, list[Any]]:
    """Every row of every table of the database (a logical dump), in a stable order."""
    from sqlalchemy import MetaData, create_engine, select

    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        out = {name: sorted((tuple(r) for r in conn.execute(select(t))), key=repr)
               for name, t in sorted(meta.tables.items())}
    engine.dispose()
    return out


def _snapshot(server: tuple[Server, dict[str, str]], world: str, sid: str, returns: list[float],
              as_of: datetime | None = None, trades: int | None = None) -> None:
    body: dict[str, Any] = {"world_id": world, "strategy_id": sid,
                            "as_of": (as_of or datetime.now(UTC)).isoformat(),
                            "realized_returns": returns, "periods_per_year": 252}
    if trades is not None:
        body["provenance"] = {"n_trades": trades}
    with _client(server, "operator") as c:
        c.post_snapshot(body)


# -------------------------------------------------------------------------- state


def test_backtest_campaign_window_progress_and_every_reason(server: Any) -> None:
    _world(server, "c-state")
    a = _backtest(server, "c-state", 11, READY)
    b = _backtest(server, "c-state", 12, {"sharpe": 1.0, "n_trades": 5,
                                          "effective_history_years": 0.5})
    c = _backtest(server, "c-state", 13, {"sharpe": 0.1, "n_trades": 40,
                                          "effective_history_years": 3.0})
    d = _backtest(server, "c-state", 14, {"sharpe": 1.0})
    got = _by_id(server, "c-state")
    assert set(got) == {a, b, c, d}
    assert {s.phase for s in got.values()} == {"backtest_campaign"}
    wa = got[a].window
    assert (wa.days.required, wa.days.observed, wa.days.filled) == (365.0, 730.5, True)
    assert (wa.samples.required, wa.samples.observed, wa.samples.filled) == (None, 504.0, True)
    assert (wa.trades.required, wa.trades.observed, wa.trades.filled) == (20.0, 30.0, True)
    assert (got[a].promotable, got[a].reasons, got[a].next_phase) == (True, [], "paper_campaign")
    assert got[a].metrics["sharpe"] == 1.0 and got[a].run_id == "bt:11"
    wb = got[b].window
    assert (wb.days.observed, wb.samples.observed, wb.trades.observed) == (182.625, 126.0, 5.0)
    assert (got[b].promotable, got[b].reasons) == (
        False, ["BACKTEST_WINDOW_DAYS_SHORT", "BACKTEST_WINDOW_TRADES_SHORT"])
    assert (got[c].outcome, got[c].reasons) == ("fail", ["BACKTEST_GATES_FAILED"])
    assert got[d].reasons == ["BACKTEST_WINDOW_DAYS_UNKNOWN", "BACKTEST_WINDOW_TRADES_UNKNOWN"]
    assert got[d].window.filled is False and got[d].window.samples.filled is True


def test_campaign_of_an_unknown_world_is_404_and_needs_a_token(server: Any) -> None:
    srv, toks = server
    r = httpx.get(f"{srv.url}/worlds/nope/campaign",
                  headers={"Authorization": f"Bearer {toks['viewer']}"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "WORLD_NOT_FOUND")
    assert httpx.post(f"{srv.url}/worlds/nope/campaign/tick").status_code == 401


# --------------------------------------------------------------------------- tick


def test_tick_recommends_start_paper_and_writes_nothing(server: Any) -> None:
    srv, _ = server
    if not isinstance(srv.db, Path):  # PostgreSQL: every row of every table, before and after
        _world(server, "c-tick")
        _backtest(server, "c-tick", 21, READY)
        rows = _rows(srv.db_url)
        with _client(server, "viewer") as c:
            assert len(c.tick("c-tick").actions) == 1
        assert _rows(srv.db_url) == rows
        _backtest(server, "c-tick", 23, {"sharpe": 2.0})
        assert _rows(srv.db_url) != rows  # the comparison sees a write
        return
    _world(server, "c-tick")
    a = _backtest(server, "c-tick", 21, READY)
    _backtest(server, "c-tick", 22, {"sharpe": 1.0, "n_trades": 5,
                                     "effective_history_years": 2.0})
    dump = checkpoint_and_dump(srv.db)
    files = sqlite_files(srv.db)
    with _client(server, "viewer") as c:
        ticks = [c.tick("c-tick") for _ in range(3)]
        c.campaign("c-tick")
    assert sqlite_files(srv.db) == files  # neither the main file nor the WAL changed
    assert checkpoint_and_dump(srv.db) == dump and sqlite_files(srv.db) == files
    actions = ticks[0].actions
    assert [(x.kind, x.strategy_id) for x in actions] == [("start_paper", a)]
    run_id = f"campaign:{a[:16]}:paper"
    assert actions[0].suggested_run_id == run_id
    assert actions[0].suggested_body == {"run_id": run_id, "stage": "paper", "strategy_id": a}
    assert len(actions[0].idempotency_key) == 64
    assert [t.actions for t in ticks[1:]] == [actions, actions]  # same state, same key
    # the measurement sees a write: one evaluation changes both
    _backtest(server, "c-tick", 23, {"sharpe": 2.0})
    assert checkpoint_and_dump(srv.db) != dump and sqlite_files(srv.db) != files


# ----------------------------------------------------------------------- execution


def test_the_same_key_twice_has_one_effect(server: Any) -> None:
    a, key = _ready(server, "c-exec", 31)
    with _client(server, "operator") as c:
        first = c.execute_action("c-exec", key)
        second = c.execute_action("c-exec", key)
        run = c.get_run("c-exec", f"campaign:{a[:16]}:paper")
        audit = [e.action for e in c.audit("c-exec")]
        after = c.tick("c-exec").actions
    # the paper run starts with no paper evidence yet (a backtest's numbers are none):
    # its gates fail (NO_METRICS) until the risk hub's realized returns come in
    assert (first.executed, first.kind, first.revision, first.outcome) == (
        True, "start_paper", 1, "fail")
    assert (second.executed, second.revision, second.executed_at) == (
        False, 1, first.executed_at)
    assert (run.stage, len(run.revisions)) == ("paper", 1)
    assert audit.count("campaign.execute") == 1 and audit.count("evaluation.create") == 2
    assert after == []
    state = _by_id(server, "c-exec")[a]
    assert (state.phase, state.run_id, state.promotable, state.reasons) == (
        "paper_campaign", f"campaign:{a[:16]}:paper", False, NO_SNAPSHOT)


def test_concurrent_executions_of_one_key_make_one_revision(server: Any) -> None:
    a, key = _ready(server, "c-race", 41)
    results: list[bool] = []

    def go() -> None:
        with _client(server, "operator") as c:
            results.append(c.execute_action("c-race", key).executed)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    with _client(server, "viewer") as c:
        assert len(c.get_run("c-race", f"campaign:{a[:16]}:paper").revisions) == 1
        assert [e.action for e in c.audit("c-race")].count("campaign.execute") == 1


def test_refusals_of_execution(server: Any) -> None:
    srv, toks = server
    _, key = _ready(server, "c-refuse", 51)
    url = f"{srv.url}/worlds/c-refuse/campaign/actions"
    for role, status in (("viewer", 403), ("submitter", 403), ("approver", 403)):
        r = httpx.post(url, json={"idempotency_key": key},
                       headers={"Authorization": f"Bearer {toks[role]}"})
        assert (r.status_code, r.json()["error"]["code"]) == (status, "FORBIDDEN")
    assert httpx.post(url, json={"idempotency_key": key}).status_code == 401
    op = {"Authorization": f"Bearer {toks['operator']}"}
    r = httpx.post(url, json={"idempotency_key": "0" * 64}, headers=op)
    assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["field"]) == (
        409, "ACTION_NOT_RECOMMENDED", "idempotency_key")
    r = httpx.post(url, json={"idempotency_key": "not-a-key"}, headers=op)
    assert (r.status_code, r.json()["error"]["field"]) == (422, "idempotency_key")
    with _client(server, "viewer") as c:  # nothing of that was executed
        assert [e.action for e in c.audit("c-refuse")] == ["world.create", "evaluation.create"]
    # a policy change moves the state on: the old key is no longer recommended
    with _client(server, "operator") as c:
        c.put_policy("c-refuse", {**POLICY, "allow_live": True})
        with pytest.raises(WorldClientError) as exc:
            c.execute_action("c-refuse", key)
        assert (exc.value.status, exc.value.code) == (409, "ACTION_NOT_RECOMMENDED")
        assert c.tick("c-refuse").actions[0].idempotency_key != key


# ------------------------------------------------------------------- paper phase


def test_paper_window_from_realized_returns_and_fail_closed_snapshots(server: Any) -> None:
    _world(server, "c-paper")
    a = _backtest(server, "c-paper", 61, READY)
    with _client(server, "operator") as c:
        assert len(campaign_step(c, "c-paper").executed) == 1  # start_paper
    _snapshot(server, "c-paper", a, [0.01, -0.005] * 12 + [0.002], trades=3)  # 25 returns
    with _client(server, "viewer") as c:
        actions = c.tick("c-paper").actions
    assert [(x.kind, x.suggested_run_id) for x in actions] == [
        ("evaluate_paper", f"campaign:{a[:16]}:paper")]
    behind = _by_id(server, "c-paper")[a]
    assert "PAPER_EVALUATION_BEHIND_SNAPSHOT" in behind.reasons
    with _client(server, "operator") as c:
        done = campaign_step(c, "c-paper").executed
        run = c.get_run("c-paper", f"campaign:{a[:16]}:paper")
        assert campaign_step(c, "c-paper").executed == []  # nothing left to do
    assert [(d.kind, d.revision) for d in done] == [("evaluate_paper", 2)]
    assert "realized_returns:risk_hub" in run.revisions[-1].metric_sources
    state = _by_id(server, "c-paper")[a]
    w = state.window
    assert (w.samples.required, w.samples.observed, w.trades.observed) == (20.0, 25.0, 3.0)
    assert w.days.observed == pytest.approx(25 / 252 * 365.25)
    assert (state.promotable, state.reasons) == (
        False, ["LIVE_NOT_ALLOWED", "LIVE_PROMOTION_DISABLED"])
    with _client(server, "operator") as c:
        c.put_policy("c-paper", {**POLICY, "allow_live": True,
                                 "governance": {"live_promotion": {"mode": "manual_approval"}}})
    state = _by_id(server, "c-paper")[a]  # the evidence is complete: approval is what is left
    assert (state.promotable, state.reasons) == (False, ["LIVE_APPROVAL_MISSING"])
    # a snapshot whose as_of is older than snapshot_max_age (2d) blocks, fail-closed
    _snapshot(server, "c-paper", a, [0.01] * 30, as_of=datetime.now(UTC) - timedelta(days=3))
    state = _by_id(server, "c-paper")[a]
    assert (state.promotable, state.reasons) == (
        False, ["RISK_SNAPSHOT_STALE:AS_OF_TOO_OLD", "PAPER_WINDOW_SAMPLES_UNKNOWN",
                "LIVE_APPROVAL_MISSING"])
    with _client(server, "viewer") as c:
        assert c.tick("c-paper").actions == []  # stale returns are not evaluated


def test_a_paper_window_short_of_samples_is_not_promotable(server: Any) -> None:
    _world(server, "c-short")
    a = _backtest(server, "c-short", 71, READY)
    with _client(server, "operator") as c:
        c.put_policy("c-short", {**POLICY, "allow_live": True,
                                 "governance": {"live_promotion": {"mode": "auto_apply"}}})
        campaign_step(c, "c-short")
    _snapshot(server, "c-short", a, [0.01, -0.004] * 5)  # 10 returns < min_samples 20
    with _client(server, "operator") as c:
        campaign_step(c, "c-short")
    state = _by_id(server, "c-short")[a]
    assert (state.window.samples.observed, state.promotable, state.reasons) == (
        10.0, False, ["PAPER_WINDOW_SAMPLES_SHORT"])


# ----------------------------------------------------------------------------- CLI


def test_campaign_loop_once_executes_then_finds_nothing(server: Any) -> None:
    srv, toks = server
    _world(server, "c-cli")
    a = _backtest(server, "c-cli", 81, READY)
    runner = CliRunner()
    args = ["world", "campaign-loop", "--world", "c-cli", "--once", "--url", srv.url]
    env = {"ALPHALOOP_WORLD_TOKEN": toks["operator"]}
    first = runner.invoke(app, args, env=env)
    assert first.exit_code == 0, first.output
    assert f"executed start_paper {a[:12]} -> campaign:{a[:16]}:paper rev 1 fail" in first.output
    second = runner.invoke(app, args, env=env)
    assert (second.exit_code, second.output.strip()) == (0, "no actions")
    bad = runner.invoke(app, [*args[:-2], "--url", srv.url, "--every", "soon"], env=env)
    assert bad.exit_code != 0 and "--every" in bad.output
    _backtest(server, "c-cli", 82, READY)  # one more action
    denied = runner.invoke(app, args, env={"ALPHALOOP_WORLD_TOKEN": toks["viewer"]})
    assert denied.exit_code != 0 and "FORBIDDEN" in denied.output.upper()


# -------------------------------------------------------- live governance (seed §5)

RETURNS = [0.01, -0.005] * 12 + [0.002]  # 25 > min_samples 20


def _paper_ready(server: tuple[Server, dict[str, str]], world: str, fast: int,
                 returns: list[float] | None = RETURNS, **policy: Any) -> str:
    """A strategy walked by the campaign loop into paper_campaign, its paper run judged
    on a fresh snapshot of ``returns`` (none: no snapshot)."""
    with _client(server, "operator") as c:
        c.create_world(world, name=world, policy={**POLICY, **policy})
    sid = _backtest(server, world, fast, READY)
    with _client(server, "operator") as c:
        assert [d.kind for d in campaign_step(c, world).executed] == ["start_paper"]
    if returns is not None:
        _snapshot(server, world, sid, returns)
        with _client(server, "operator") as c:
            assert [d.kind for d in campaign_step(c, world).executed] == ["evaluate_paper"]
    return sid


def _manual(approvers: list[str], **rules: Any) -> dict[str, Any]:
    return {"allow_live": True, "governance": {"live_promotion": {
        "mode": "manual_approval", "approvers": approvers, **rules}}}


def _refused(call: Any) -> tuple[int | None, str, str]:
    with pytest.raises(WorldClientError) as exc:
        call()
    return exc.value.status, exc.value.code, exc.value.message


def test_manual_approval_walk_with_every_refusal_on_the_way(server: Any) -> None:
    srv, toks = server
    w = "g-manual"
    a = _paper_ready(server, w, 91, **_manual(["test-approver"], cooldown="1h", max_live=1))
    assert _by_id(server, w)[a].reasons == ["LIVE_APPROVAL_MISSING"]
    with _client(server, "operator") as op:
        assert op.tick(w).actions == []  # nothing to do before the approval
        blocked = op.plan_activation(w, a)
        assert (blocked.current, blocked.allowed, blocked.reasons) == (
            "paper", False, ["LIVE_APPROVAL_MISSING"])
        status, code, _ = _refused(lambda: op.apply(w, blocked))
        assert (status, code) == (409, "PROMOTION_BLOCKED")
    cand = _by_id(server, w)[a].candidate  # the refusal is stored on the candidate
    assert cand is not None and (cand.status, cand.reasons, cand.target) == (
        "blocked", ["LIVE_APPROVAL_MISSING"], "paper")
    url = f"{srv.url}/worlds/{w}/approvals"
    body = {"strategy_id": a, "decision": "approve"}
    assert httpx.post(url, json=body).status_code == 401
    for role in ("viewer", "submitter", "operator"):
        r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {toks[role]}"})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")
    r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {toks['admin']}"})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "NOT_AN_APPROVER")  # not listed
    with _client(server, "admin") as ad:  # the attempt is on record, nothing else changed
        refused = [e for e in ad.audit(w) if e.action == "live.approve.refused"]
    assert len(refused) == 1 and refused[0].target == a
    with _client(server, "approver") as ap:
        approval = ap.approve(w, a, comment="ok")
    assert (approval.decision, approval.paper_run_id, approval.paper_revision) == (
        "approve", f"campaign:{a[:16]}:paper", 2)
    assert (_by_id(server, w)[a].promotable, _by_id(server, w)[a].reasons) == (True, [])
    with _client(server, "viewer") as c:
        # approved, not applied: pending (a black-box report found it still said the
        # approval was required, while the campaign said promotable)
        assert c.decide(w, a).reasons[-1] == "LIVE_ACTIVATION_PENDING"
        assert [x.kind for x in c.tick(w).actions] == ["activate_live"]
    with _client(server, "operator") as op:
        status, code, _ = _refused(lambda: op.apply(w, blocked))  # made before the approval
        assert (status, code) == (409, "PLAN_STALE")
        plan = op.plan_activation(w, a)
        done = op.apply(w, plan)
        again = op.apply(w, plan)  # a retry of the applied plan: the same answer, no change
    assert (done.target, done.broker, done.applied) == ("live", "paper", True)
    assert (again.target, again.applied, again.plan_hash) == ("live", False, done.plan_hash)
    state = _by_id(server, w)[a]
    assert (state.phase, state.promotable, state.next_phase) == ("live_campaign", False, None)
    with _client(server, "viewer") as c:
        decision = c.decide(w, a)
        assert (decision.stage, decision.reasons[-1]) == ("live", "LIVE_APPROVED")
        actions = [e.action for e in c.audit(w)]
    for action in ("activation.plan", "activation.refused", "live.approve", "activation.apply"):
        assert action in actions
    assert actions.count("activation.apply") == 1
    # a second approved strategy meets the cooldown (1h) and max_live (1)
    b = _backtest(server, w, 92, READY)
    with _client(server, "operator") as op:
        campaign_step(op, w)
    _snapshot(server, w, b, RETURNS[::-1])
    with _client(server, "operator") as op:
        campaign_step(op, w)
    with _client(server, "approver") as ap:
        ap.approve(w, b)
    assert _by_id(server, w)[b].reasons == ["LIVE_COOLDOWN", "LIVE_MAX_REACHED"]
    # switching back to paper is always allowed, and frees the slot
    with _client(server, "operator") as op:
        op.put_policy(w, {**POLICY, **_manual(["test-approver"], max_live=1)})  # no cooldown
        back = op.apply(w, op.plan_activation(w, a, target="paper"))
    assert (back.target, back.applied) == ("paper", True)
    assert _by_id(server, w)[b].reasons == ["LIVE_APPROVAL_MISSING"]  # new ruleset: approve again


def test_allow_live_false_blocks_in_every_mode(server: Any) -> None:
    for i, mode in enumerate(("disabled", "manual_approval", "auto_apply")):
        w = f"g-nolive-{mode}"
        a = _paper_ready(server, w, 101 + i, allow_live=False,
                         governance={"live_promotion": {"mode": mode}})
        with _client(server, "admin") as c:
            plan = c.plan_activation(w, a)
            assert plan.allowed is False and plan.reasons[0] == "LIVE_NOT_ALLOWED"
            assert _refused(lambda c=c, w=w, plan=plan: c.apply(w, plan))[:2] == (
                409, "PROMOTION_BLOCKED")
            assert c.tick(w).actions == []
            assert c.decide(w, a).stage == "paper"
            refusal = _refused(lambda c=c, w=w, a=a: c.approve(w, a))
        if mode == "manual_approval":
            assert refusal[:2] == (409, "PROMOTION_BLOCKED") and "LIVE_NOT_ALLOWED" in refusal[2]
        else:
            assert refusal[:2] == (409, "APPROVAL_NOT_APPLICABLE")
        assert _by_id(server, w)[a].phase == "paper_campaign"


def test_auto_apply_goes_live_through_the_loop_once(server: Any) -> None:
    w = "g-auto"
    a = _paper_ready(server, w, 111, allow_live=True,
                     governance={"live_promotion": {"mode": "auto_apply"}})
    with _client(server, "viewer") as c:
        (action,) = c.tick(w).actions
        assert c.decide(w, a).reasons[-1] == "LIVE_ACTIVATION_PENDING"
    assert (action.kind, action.suggested_body) == (
        "activate_live", {"strategy_id": a, "target": "live", "broker": "paper"})
    with _client(server, "operator") as op:
        first = op.execute_action(w, action.idempotency_key)
        again = op.execute_action(w, action.idempotency_key)
        assert op.tick(w).actions == []
        audit = [e.action for e in op.audit(w)]
    assert (first.executed, again.executed) == (True, False)
    assert audit.count("activation.apply") == 1
    assert _by_id(server, w)[a].phase == "live_campaign"
    with _client(server, "viewer") as c:
        decision = c.decide(w, a)
    assert (decision.stage, decision.reasons[-1]) == ("live", "LIVE_AUTO_APPLY")


def test_auto_apply_never_skips_the_paper_window_or_the_snapshot(server: Any) -> None:
    w = "g-auto-gates"
    auto = {"allow_live": True, "governance": {"live_promotion": {"mode": "auto_apply"}}}
    short = _paper_ready(server, w, 121, returns=[0.01, -0.004] * 5, **auto)  # 10 < 20
    with _client(server, "operator") as op:
        missing = _backtest(server, w, 122, READY)
        campaign_step(op, w)  # start_paper, no snapshot ever posted
        stale = _backtest(server, w, 123, READY)
        campaign_step(op, w)
    _snapshot(server, w, stale, RETURNS)
    with _client(server, "operator") as op:
        campaign_step(op, w)
        op.post_snapshot({"world_id": w, "strategy_id": stale, "ttl_s": 0.3,
                          "as_of": datetime.now(UTC).isoformat(), "realized_returns": RETURNS})
    import time

    time.sleep(0.4)
    with _client(server, "operator") as op:
        plans = {sid: op.plan_activation(w, sid) for sid in (short, missing, stale)}
        assert op.tick(w).actions == []
    assert plans[short].reasons == ["PAPER_WINDOW_SAMPLES_SHORT"]
    assert plans[missing].reasons == ["PAPER_GATES_FAILED", "RISK_SNAPSHOT_MISSING",
                                      "PAPER_WINDOW_SAMPLES_UNKNOWN"]
    assert plans[stale].reasons == ["RISK_SNAPSHOT_STALE:TTL_EXPIRED",
                                    "PAPER_WINDOW_SAMPLES_UNKNOWN"]
    assert not any(p.allowed for p in plans.values())
    with _client(server, "viewer") as c:  # and the decision never says live for them
        assert [c.decide(w, sid).stage for sid in (short, missing, stale)] == ["paper"] * 3
        assert c.decide(w, short).reasons[-1] == "LIVE_ACTIVATION_PENDING"


def test_a_failed_backtest_never_goes_live_through_a_paper_evaluation(server: Any) -> None:
    """A submitter asks for a paper evaluation of a strategy whose backtest failed: the
    backtest's numbers are not paper evidence, the campaign names the failed rung, and
    no tick, however long the loop runs, activates it (auto_apply included)."""
    w = "g-bypass"
    with _client(server, "operator") as op:
        op.create_world(w, name=w, policy={**POLICY, "allow_live": True,
                                           "governance": {"live_promotion":
                                                          {"mode": "auto_apply"}}})
    sid = _backtest(server, w, 131, {**READY, "sharpe": 0.2})  # min_sharpe 0.5: fails
    with _client(server, "submitter") as c:
        sneaked = c.evaluate(w, {"run_id": "sneak", "strategy_id": sid, "stage": "paper"})
    assert sneaked.latest.metric_sources == [] and sneaked.latest.outcome == "fail"
    _snapshot(server, w, sid, RETURNS, trades=25)
    with _client(server, "operator") as op:
        for _ in range(3):  # evaluate_paper runs; activate_live must never be offered
            campaign_step(op, w)
        assert "activate_live" not in [a.kind for a in op.tick(w).actions]
    view = _by_id(server, w)[sid]
    assert view.phase == "paper_campaign" and view.reasons[0] == "BACKTEST_GATES_FAILED"
    assert not view.promotable and view.candidate is None
    with _client(server, "viewer") as c:
        assert c.decide(w, sid).stage == "backtest"


def test_paper_metrics_come_from_paper_evidence_only(server: Any) -> None:
    """The paper run's trade count is the snapshot producer's, not the backtest's."""
    w = "g-paper-trades"
    a = _paper_ready(server, w, 141)
    _snapshot(server, w, a, [*RETURNS, 0.001], trades=5)
    with _client(server, "operator") as op:
        assert [d.kind for d in campaign_step(op, w).executed] == ["evaluate_paper"]
    view = _by_id(server, w)[a]
    assert view.metrics["n_trades"] == 5 != READY["n_trades"]
    assert view.window.trades.observed == 5


def test_cli_status_approve_and_apply(server: Any) -> None:
    srv, toks = server
    w = "g-cli"
    a = _paper_ready(server, w, 131, **_manual(["test-approver"]))
    runner = CliRunner()

    def cli(role: str, *args: str) -> Any:
        return runner.invoke(app, ["world", *args, "--url", srv.url],
                             env={"ALPHALOOP_WORLD_TOKEN": toks[role]})

    shown = cli("viewer", "status", w)
    assert shown.exit_code == 0, shown.output
    assert a[:12] in shown.output and "25/20" in shown.output
    assert "LIVE_APPROVAL_MISSING" in shown.output
    blocked = cli("operator", "apply", w, a)
    assert blocked.exit_code == 2 and "LIVE_APPROVAL_MISSING" in blocked.output
    assert cli("operator", "approve", w, a).exit_code == 2  # FORBIDDEN: not an approver role
    # the 12 characters `status` prints are enough, as everywhere an id is asked for
    approved = cli("approver", "approve", w, a[:12], "--comment", "fine")
    assert approved.exit_code == 0 and re.match(rf"approve #\d+ of {a[:12]} in {w}",
                                                approved.output)
    unknown = cli("operator", "apply", w, "zz")
    assert unknown.exit_code == 2 and "STRATEGY_NOT_FOUND" in unknown.output
    done = cli("operator", "apply", w, a[:12])
    assert done.exit_code == 0, done.output
    assert f"switched {a[:12]} -> live on broker paper" in done.output
    status = json.loads(cli("viewer", "status", w, "--json").output)
    assert [(s["strategy_id"], s["phase"]) for s in status["strategies"]] == [
        (a, "live_campaign")]


def test_concurrent_applies_never_exceed_max_live(server: Any) -> None:
    w = "g-race"
    a = _paper_ready(server, w, 141, **_manual([], max_live=1))
    b = _backtest(server, w, 142, READY)
    with _client(server, "operator") as op:
        campaign_step(op, w)
    _snapshot(server, w, b, RETURNS[::-1])
    with _client(server, "operator") as op:
        campaign_step(op, w)
    with _client(server, "approver") as ap:  # no approvers listed: any approver token
        ap.approve(w, a)
        ap.approve(w, b)
    with _client(server, "operator") as op:
        plans = [op.plan_activation(w, sid) for sid in (a, b)]
    assert [p.allowed for p in plans] == [True, True]  # each alone may go live
    outcomes: list[str] = []

    def go(plan: Any) -> None:
        with _client(server, "operator") as op:
            try:
                outcomes.append(op.apply(w, plan).target)
            except WorldClientError as exc:
                outcomes.append(exc.code)

    threads = [threading.Thread(target=go, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["PLAN_STALE", "live"]
    phases = sorted(s.phase for s in _by_id(server, w).values())
    assert phases == ["live_campaign", "paper_campaign"]
    loser = next(s for s in _by_id(server, w).values() if s.phase == "paper_campaign")
    assert loser.reasons == ["LIVE_MAX_REACHED"]


def test_a_rejection_blocks_until_a_newer_approval(server: Any) -> None:
    w = "g-reject"
    a = _paper_ready(server, w, 151, **_manual([]))
    with _client(server, "approver") as ap:
        rejected = ap.approve(w, a, "reject", comment="drawdown too deep")
        state = _by_id(server, w)[a]
        assert (state.promotable, state.reasons) == (False, ["LIVE_APPROVAL_REJECTED"])
        assert state.candidate is not None and state.candidate.status == "rejected"
        approved = ap.approve(w, a)
    assert approved.approval_id > rejected.approval_id
    assert _by_id(server, w)[a].promotable is True
    with _client(server, "viewer") as c:
        actions = [e.action for e in c.audit(w)]
    assert actions.count("live.reject") == 1 and actions.count("live.approve") == 1


def _go_live(server: Any, w: str, a: str) -> None:
    """Approve ``a`` and apply its live plan (a manual_approval world)."""
    with _client(server, "approver") as ap:
        ap.approve(w, a)
    with _client(server, "operator") as op:
        assert op.apply(w, op.plan_activation(w, a)).applied is True
        assert op.decide(w, a).stage == "live"


def test_a_policy_changed_and_changed_back_asks_for_a_new_approval(server: Any) -> None:
    """An approval holds under the policy version it was given under: the same content
    again (a later version) is a change, and a plan made before it is stale."""
    w = "g-revert"
    first = {**POLICY, **_manual([])}
    a = _paper_ready(server, w, 161, **_manual([]))
    with _client(server, "approver") as ap:
        approval = ap.approve(w, a)
    with _client(server, "operator") as op:
        old_plan = op.plan_activation(w, a)
        assert old_plan.allowed is True
        changed = op.put_policy(w, {**POLICY, **_manual([], max_live=5)})
        back = op.put_policy(w, first)
        assert (approval.policy_version, changed.version, back.version) == (1, 2, 3)
        assert back.ruleset_hash == approval.ruleset_hash  # the same content as v1
        assert _by_id(server, w)[a].reasons == ["LIVE_APPROVAL_MISSING"]
        assert _refused(lambda: op.apply(w, old_plan))[:2] == (409, "PLAN_STALE")
        plan = op.plan_activation(w, a)
        assert (plan.allowed, plan.reasons) == (False, ["LIVE_APPROVAL_MISSING"])
        assert op.decide(w, a).stage == "paper"
    with _client(server, "approver") as ap:
        assert ap.approve(w, a).policy_version == 3
    with _client(server, "operator") as op:
        assert op.apply(w, op.plan_activation(w, a)).applied is True


def test_switching_live_off_and_on_again_takes_a_new_activation(server: Any) -> None:
    """``allow_live: false`` (or mode disabled) sends every live target back to paper,
    audited; switching live on again does not revive the old approval or target."""
    w = "g-toggle"
    a = _paper_ready(server, w, 171, **_manual([]))
    _go_live(server, w, a)
    on = {**POLICY, **_manual([])}
    with _client(server, "operator") as op:
        op.put_policy(w, {**on, "allow_live": False})
        assert (op.decide(w, a).stage, op.decide(w, a).reasons[-1]) == (
            "paper", "LIVE_NOT_ALLOWED")
        cand = _by_id(server, w)[a].candidate
        assert cand is not None and (cand.target, cand.status, cand.reasons) == (
            "paper", "paper", ["LIVE_NOT_ALLOWED"])
        op.put_policy(w, on)  # live allowed again: a new version
        decision = op.decide(w, a)
        assert (decision.stage, decision.reasons[-1]) == ("paper", "LIVE_REQUIRES_APPROVAL")
        assert _by_id(server, w)[a].reasons == ["LIVE_APPROVAL_MISSING"]
        # the same for mode disabled, under auto_apply: no activation comes back by itself
        op.put_policy(w, {**POLICY, "allow_live": True,
                          "governance": {"live_promotion": {"mode": "disabled"}}})
        actions = [e.action for e in op.audit(w)]
    assert actions.count("activation.revoke") == 1  # the second switch-off found none live
    assert actions.count("activation.apply") == 1


def test_a_plan_for_the_target_a_strategy_has_changes_nothing(server: Any) -> None:
    """Live already: a live plan says what keeps it from trading live now (a risk trip),
    and applying an allowed one writes nothing (no audit record, the candidate as is)."""
    w = "g-noop"
    a = _paper_ready(server, w, 181, **_manual([]))
    _go_live(server, w, a)
    with _client(server, "operator") as op:
        before = _by_id(server, w)[a].candidate
        n_audit = len(op.audit(w))
        plan = op.plan_activation(w, a)
        assert (plan.current, plan.allowed, plan.reasons) == ("live", True, [])
        done = op.apply(w, plan)
        assert (done.applied, done.target) == (False, "live")
        assert [e.action for e in op.audit(w)][n_audit:] == ["activation.plan"]
        assert _by_id(server, w)[a].candidate == before
        op.trip(w, {"strategy_id": a, "rule": "max_drawdown", "value": 0.3, "limit": 0.2,
                    "bar": datetime.now(UTC).isoformat()})
        halted = op.plan_activation(w, a)
        assert halted.allowed is False and halted.reasons == ["RISK_GUARD_TRIPPED:max_drawdown"]
        assert _refused(lambda: op.apply(w, halted))[:2] == (409, "PROMOTION_BLOCKED")
        cand = _by_id(server, w)[a].candidate
        assert cand is not None and (cand.target, cand.status) == ("live", "live")
        stale = _refused(lambda: op.apply(w, plan.model_copy(update={"target": "paper"})))
    assert stale[:2] == (409, "PLAN_STALE") and "another target" in stale[2]


def test_a_strategy_with_live_evaluations_only_has_no_campaign(server: Any) -> None:
    w = "g-liveonly"
    with _client(server, "operator") as op:
        op.create_world(w, name=w, policy=POLICY)
        sid, spec = _sid(191)
        op.evaluate(w, {"run_id": "l1", "stage": "live", "spec": spec,
                        "metrics": {"sharpe": 1.0}})
        status, code, message = _refused(lambda: op.plan_activation(w, sid))
    assert (status, code) == (409, "NO_CAMPAIGN") and "live" in message
