"""The WorldService over HTTP: a real uvicorn process on loopback and a SQLite file."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import SMA, Server

from alphaloop.engines.metrics import return_metrics
from alphaloop.strategy.spec import StrategySpec
from alphaloop.world.client import (
    WorldClient,
    WorldClientError,
    campaign_step,
    submit,
    submit_many,
)

RNG = np.random.default_rng(5)


def _spec(fast: int) -> StrategySpec:
    return StrategySpec.model_validate({"entry": f"sma(close, {fast}) > sma(close, 50)",
                                        "exit": f"sma(close, {fast}) < sma(close, 50)"})


def _client(server: tuple[Server, dict[str, str]], role: str = "admin",
            **kwargs: Any) -> WorldClient:
    srv, toks = server
    return WorldClient(srv.url, toks[role], **kwargs)


def _world(server: tuple[Server, dict[str, str]], world_id: str,
           policy: dict[str, Any] | None = None, data: str | None = None) -> None:
    with _client(server, "operator") as c:
        c.create_world(world_id, name=world_id, data=data, policy=policy)


def _raw(server: tuple[Server, dict[str, str]], method: str, path: str,
         role: str | None = None, **kwargs: Any) -> httpx.Response:
    srv, toks = server
    headers = {"Authorization": f"Bearer {toks[role]}"} if role else {}
    headers.update(kwargs.pop("headers", {}))
    return httpx.request(method, srv.url + path, headers=headers, timeout=30, **kwargs)


def _actions(server: tuple[Server, dict[str, str]], world_id: str) -> list[str]:
    with _client(server, "viewer") as c:
        return [a.action for a in c.audit(world_id)]


# ------------------------------------------------------------------ worlds, policies


def test_create_world_and_version_its_policy(world_server: Any) -> None:
    with _client(world_server, "operator") as c:
        made = c.create_world("w-policy", name="policy world")
        assert (made.created, made.policy_version, made.policy["allow_live"]) == (True, 1, False)
        assert c.create_world("w-policy", name="policy world").created is False  # a retry
        new = c.put_policy("w-policy", {"gates": {"backtest": {"min_sharpe": 1.0}}})
        assert (new.created, new.version) == (True, 2)
        again = c.put_policy("w-policy", "gates:\n  backtest:\n    min_sharpe: 1.0\n")  # YAML
        assert (again.created, again.version, again.ruleset_hash) == (False, 2, new.ruleset_hash)
        world = c.get_world("w-policy")
        assert (world.policy_version, world.ruleset_hash) == (2, new.ruleset_hash)
        with pytest.raises(WorldClientError) as exc:
            c.put_policy("w-policy", {"governance": {"live_promotion": {"mdoe": "auto_apply"}}})
        assert (exc.value.status, exc.value.code) == (422, "POLICY_INVALID")
        assert exc.value.field == "policy.governance.live_promotion.mdoe"
        with pytest.raises(WorldClientError) as exc:
            c.create_world("w-policy", name="another name")
        assert (exc.value.status, exc.value.code) == (409, "WORLD_EXISTS")
    assert _actions(world_server, "w-policy") == ["world.create", "policy.update"]


def test_a_policy_change_is_audited_with_before_and_after_hashes(world_server: Any) -> None:
    with _client(world_server, "admin") as c:
        first = c.create_world("w-audit-hash")
        second = c.put_policy("w-audit-hash", {"allow_live": True})
        entries = c.audit("w-audit-hash")
    change = entries[-1]
    assert (change.action, change.before_hash, change.after_hash) == (
        "policy.update", first.ruleset_hash, second.ruleset_hash)
    assert change.actor.startswith("test-admin#")


# ------------------------------------------------------------------- evaluation runs


def test_supplied_metrics_are_judged_and_recorded_with_the_policy(world_server: Any) -> None:
    policy = {"gates": {"backtest": {"min_sharpe": 1.0, "max_drawdown": 0.2, "min_trades": 30,
                                     "warn_only": ["min_trades"]}}}
    _world(world_server, "w-gates", policy)
    spec = _spec(11).model_dump()
    with _client(world_server, "submitter") as c:
        good = c.evaluate("w-gates", {"run_id": "good", "spec": spec, "metrics": {
            "sharpe": 1.5, "max_drawdown": -0.1, "n_trades": 10}})
        bad = c.evaluate("w-gates", {"run_id": "bad", "spec": spec, "metrics": {
            "sharpe": 0.5, "max_drawdown": -0.25}})
        version = c.get_world("w-gates")
    assert good.latest.outcome == "warn"
    assert {r.rule: (r.outcome, r.reason) for r in good.latest.rules} == {
        "min_sharpe": ("pass", "PASSED"), "max_drawdown": ("pass", "PASSED"),
        "min_trades": ("warn", "BELOW_MIN")}
    assert bad.latest.outcome == "fail"
    assert {r.rule: r.reason for r in bad.latest.rules} == {
        "min_sharpe": "BELOW_MIN", "max_drawdown": "ABOVE_MAX", "min_trades": "METRIC_MISSING"}
    assert good.latest.metric_sources == ["request"]
    assert (good.latest.policy_version, good.latest.ruleset_hash) == (
        version.policy_version, version.ruleset_hash)


def test_the_same_run_id_twice_is_one_run_with_two_revisions(world_server: Any) -> None:
    _world(world_server, "w-rev")
    body: dict[str, Any] = {"run_id": "rerun", "spec": _spec(12).model_dump(),
                            "metrics": {"sharpe": 0.4}}
    with _client(world_server, "submitter") as c:
        first = c.evaluate("w-rev", body)
        second = c.evaluate("w-rev", {**body, "metrics": {"sharpe": 0.9}})
        retry = c.evaluate("w-rev", {**body, "metrics": {"sharpe": 0.9}})  # nothing new
        run = c.get_run("w-rev", "rerun")
    assert (first.written, second.written, retry.written) == (True, True, False)
    assert [r.revision for r in run.revisions] == [1, 2]
    assert [r.metrics["sharpe"] for r in run.revisions] == [0.4, 0.9]
    assert _actions(world_server, "w-rev") == ["world.create", "evaluation.create",
                                               "evaluation.revise"]
    with _client(world_server, "submitter") as c, pytest.raises(WorldClientError) as exc:
        c.evaluate("w-rev", {**body, "spec": _spec(13).model_dump()})
    assert (exc.value.status, exc.value.code) == (409, "RUN_ID_CONFLICT")


def test_only_producers_may_assert_paper_or_live_evidence(world_server: Any) -> None:
    _world(world_server, "w-evidence")
    spec = _spec(28).model_dump()
    for extra in ({"metrics": {"sharpe": 3.0}}, {"realized_returns": [0.01, 0.02, 0.01]}):
        r = _raw(world_server, "POST", "/worlds/w-evidence/evaluate", "submitter",
                 json={"run_id": "claim", "stage": "paper", "spec": spec, **extra})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")
    cohort = _raw(world_server, "POST", "/worlds/w-evidence/evaluate-cohort", "submitter",
                  json={"run_id": "c", "stage": "live",
                        "items": [{"spec": spec, "metrics": {"sharpe": 3.0}}]})
    assert cohort.status_code == 403
    sourced = _raw(world_server, "POST", "/worlds/w-evidence/evaluate", "submitter",
                   json={"run_id": "claim", "stage": "paper", "spec": spec})
    assert sourced.status_code == 200  # without claims: judged on what the world sources
    assert _raw(world_server, "POST", "/worlds/w-evidence/evaluate", "operator",
                json={"run_id": "producer", "stage": "paper", "spec": spec,
                      "metrics": {"sharpe": 3.0}}).status_code == 200


def test_an_invalid_spec_is_refused_by_the_strategy_language(world_server: Any) -> None:
    _world(world_server, "w-spec")
    hostile = {"entry": "__import__('os').system('touch /tmp/pwned') > 0", "exit": "close > 1"}
    r = _raw(world_server, "POST", "/worlds/w-spec/evaluate", "submitter",
             json={"run_id": "x", "spec": hostile, "metrics": {"sharpe": 1.0}})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "SPEC_INVALID"
    assert r.json()["error"]["field"] == "spec"
    assert "entry" in r.json()["error"]["message"]


# -------------------------------------------------------------------- metric sourcing


def _returns(n: int = 300, drift: float = 0.001) -> list[float]:
    return list(RNG.normal(drift, 0.01, n))


def _snapshot(world_id: str, strategy_id: str, **extra: Any) -> dict[str, Any]:
    return {"world_id": world_id, "strategy_id": strategy_id,
            "as_of": datetime.now(UTC).isoformat(), **extra}


def test_sourcing_1_the_latest_run_of_the_same_stage(world_server: Any) -> None:
    _world(world_server, "w-src1")
    spec = _spec(14).model_dump()
    with _client(world_server, "operator") as c:
        c.evaluate("w-src1", {"run_id": "other-stage", "stage": "paper", "spec": spec,
                              "metrics": {"sharpe": 0.2}})
        c.evaluate("w-src1", {"run_id": "first", "spec": spec, "metrics": {"sharpe": 1.2,
                                                                           "n_trades": 40}})
        c.evaluate("w-src1", {"run_id": "paper-again", "stage": "paper", "spec": spec,
                              "metrics": {"sharpe": 0.3}})
        sourced = c.evaluate("w-src1", {"run_id": "second", "spec": spec})
    assert sourced.latest.metric_sources == ["previous_run:first@1"]  # same stage wins
    assert (sourced.latest.metrics["sharpe"], sourced.latest.metrics["n_trades"]) == (1.2, 40)
    with _client(world_server, "operator") as c:  # a shadow run: paper's kind, not backtest's
        shadow = c.evaluate("w-src1", {"run_id": "shadow", "stage": "shadow", "spec": spec})
        live = c.evaluate("w-src1", {"run_id": "live", "stage": "live", "spec": spec})
    assert shadow.latest.metric_sources == ["previous_run:paper-again@1"]
    assert live.latest.metric_sources == []  # no live run, and a backtest is no evidence
    assert live.latest.metrics == {}


def test_sourcing_2_the_risk_hub_snapshot_and_its_realized_returns(world_server: Any) -> None:
    _world(world_server, "w-src2")
    spec = _spec(15)
    returns = _returns()
    with _client(world_server, "operator") as c:
        snap = c.post_snapshot(_snapshot("w-src2", spec.strategy_id, realized_returns=returns,
                                         covariance=[[0.1]], stress={"crash_2008": -0.2}))
        out = c.evaluate("w-src2", {"run_id": "p1", "stage": "paper",
                                    "spec": spec.model_dump()})
    assert out.latest.metric_sources == [f"risk_hub:{snap.content_hash[:16]}",
                                         "realized_returns:risk_hub"]
    expected = return_metrics(np.asarray(returns), 252.0)
    assert out.latest.metrics["sharpe"] == pytest.approx(expected["sharpe"], rel=1e-12)
    assert out.latest.metrics["effective_history_years"] == pytest.approx(len(returns) / 252)
    assert out.latest.risk is not None and out.latest.risk["stress"] == {"crash_2008": -0.2}


def test_sourcing_3_realized_returns_in_the_request(world_server: Any) -> None:
    _world(world_server, "w-src3")
    returns = _returns(drift=-0.002)
    with _client(world_server, "operator") as c:
        out = c.evaluate("w-src3", {"run_id": "p", "stage": "dryrun",
                                    "spec": _spec(16).model_dump(),
                                    "realized_returns": returns, "periods_per_year": 52})
    assert out.latest.metric_sources == ["realized_returns:request"]
    expected = return_metrics(np.asarray(returns), 52.0)
    assert out.latest.metrics["max_drawdown"] == pytest.approx(expected["max_drawdown"])


def test_sourcing_in_order_reused_then_hub_then_returns(world_server: Any) -> None:
    _world(world_server, "w-order")
    spec = _spec(17)
    returns = _returns()
    with _client(world_server, "operator") as c:
        c.evaluate("w-order", {"run_id": "old", "stage": "paper", "spec": spec.model_dump(),
                               "metrics": {"sharpe": 9.0, "n_trades": 12}})
        snap = c.post_snapshot(_snapshot("w-order", spec.strategy_id, realized_returns=returns))
        out = c.evaluate("w-order", {"run_id": "new", "stage": "paper",
                                     "strategy_id": spec.strategy_id})
    assert out.latest.metric_sources == ["previous_run:old@1",
                                         f"risk_hub:{snap.content_hash[:16]}",
                                         "realized_returns:risk_hub"]
    # the realized returns are newer evidence: they replace the reused sharpe; the
    # reused trade count, which returns cannot give, stays
    assert out.latest.metrics["sharpe"] == pytest.approx(
        return_metrics(np.asarray(returns), 252.0)["sharpe"])
    assert out.latest.metrics["n_trades"] == 12


def test_sourcing_for_backtest_runs_engine_b_on_the_worlds_data(world_server: Any) -> None:
    from alphaloop.data import load_bars
    from alphaloop.engines.engine_b import verify

    _world(world_server, "w-engine", {"gates": {"backtest": {"min_sharpe": -5}}},
           data="synth_planted")
    spec = StrategySpec.model_validate(SMA)
    with _client(world_server, "submitter") as c:
        out = c.evaluate("w-engine", {"run_id": "bt", "spec": spec.model_dump()})
    local = verify(spec, load_bars("synth_planted"), capacity=False)
    assert out.latest.metric_sources == [f"engine_b:{local.data_ref[:16]}"]
    assert out.latest.metrics["sharpe"] == pytest.approx(local.metrics["sharpe"], rel=1e-12)
    assert out.latest.metrics["n_trades"] == local.metrics["n_trades"]
    with _client(world_server, "submitter") as c:  # a retry finds what the first try found
        again = [c.evaluate("w-engine", {"run_id": "bt", "spec": spec.model_dump()})
                 for _ in range(2)]
    assert [(a.written, a.latest.revision) for a in again] == [(False, 1)] * 2


def test_a_backtest_without_world_data_says_why_it_has_no_metrics(world_server: Any) -> None:
    _world(world_server, "w-nodata")
    with _client(world_server, "submitter") as c:
        out = c.evaluate("w-nodata", {"run_id": "bt", "spec": _spec(27).model_dump()})
    assert out.latest.metric_sources == ["engine_b:unavailable:world_has_no_data"]
    assert (out.latest.outcome, [r.reason for r in out.latest.rules]) == ("fail", ["NO_METRICS"])


def test_a_stale_snapshot_is_named_and_not_used(world_server: Any) -> None:
    _world(world_server, "w-stale-src")
    spec = _spec(18)
    old = (datetime.now(UTC) - timedelta(days=5)).isoformat()
    with _client(world_server, "operator") as c:
        c.post_snapshot({**_snapshot("w-stale-src", spec.strategy_id,
                                     realized_returns=_returns()), "as_of": old})
        out = c.evaluate("w-stale-src", {"run_id": "p", "stage": "paper",
                                         "spec": spec.model_dump()})
    assert out.latest.metric_sources == ["risk_hub:stale:AS_OF_TOO_OLD"]
    assert out.latest.outcome == "fail"
    assert [r.reason for r in out.latest.rules] == ["NO_METRICS"]


def test_returns_by_reference_to_a_stored_parquet(world_server: Any) -> None:
    srv, _ = world_server
    _world(world_server, "w-ref")
    spec = _spec(19)
    returns = _returns()
    pd.DataFrame({"returns": returns}).to_parquet(srv.refs_root / "r19.parquet")
    with _client(world_server, "operator") as c:
        c.post_snapshot(_snapshot("w-ref", spec.strategy_id, realized_returns_ref="r19.parquet"))
        out = c.evaluate("w-ref", {"run_id": "p", "stage": "live", "spec": spec.model_dump()})
        with pytest.raises(WorldClientError) as exc:
            c.post_snapshot(_snapshot("w-ref", spec.strategy_id,
                                      realized_returns_ref="../kb.sqlite"))
    assert out.latest.metrics["sharpe"] == pytest.approx(
        return_metrics(np.asarray(returns), 252.0)["sharpe"])
    assert (exc.value.status, exc.value.code, exc.value.field) == (
        422, "REF_OUTSIDE_ROOT", "realized_returns_ref")


# --------------------------------------------------------------- decisions, the SDK


def test_submit_returns_a_typed_result_with_the_worlds_decision(world_server: Any) -> None:
    srv, toks = world_server
    _world(world_server, "w-submit", {"gates": {"backtest": {"min_sharpe": 0.5}}})
    result = submit(_spec(20), "w-submit", url=srv.url, token=toks["submitter"],
                    metrics={"sharpe": 0.8})
    assert (result.stage, result.downgraded, result.reasons) == (
        "paper", False, ["BACKTEST_PASSED", "LIVE_NOT_ALLOWED"])
    assert result.evaluation.run_id == f"submit:{result.strategy_id[:16]}:backtest"
    again = submit(_spec(20), "w-submit", url=srv.url, token=toks["submitter"],
                   metrics={"sharpe": 0.8})
    assert again.evaluation.written is False  # submitting twice changes nothing
    failing = submit(_spec(21), "w-submit", url=srv.url, token=toks["submitter"],
                     metrics={"sharpe": 0.1})
    assert (failing.stage, failing.reasons) == ("backtest", ["BACKTEST_GATES_FAILED"])


def test_a_stale_decision_downgrades_the_client_to_backtest(world_server: Any) -> None:
    srv, toks = world_server
    _world(world_server, "w-ttl", {"freshness": {"decision_ttl": "2s"}})
    later = WorldClient(srv.url, toks["submitter"], clock=lambda: time.time() + 10)
    with later:
        result = submit(_spec(22), "w-ttl", url=srv.url, metrics={"sharpe": 1.0}, client=later)
    assert result.decision is not None and result.decision.stage == "paper"
    assert (result.stage, result.downgraded) == ("backtest", True)
    assert result.downgrade_reason is not None
    assert result.downgrade_reason.startswith("DECISION_STALE")


def test_an_unreachable_decision_downgrades_to_backtest(world_server: Any) -> None:
    srv, toks = world_server
    _world(world_server, "w-unreach")
    with _client(world_server, "submitter") as c:
        evaluation = c.evaluate("w-unreach", {"run_id": "unreach",
                                              "spec": _spec(23).model_dump(),
                                              "metrics": {"sharpe": 1.0}})
    with WorldClient(f"http://127.0.0.1:{srv.port + 1}", toks["submitter"], timeout=2) as gone:
        result = gone.decision_for("w-unreach", evaluation.strategy_id, evaluation)
    assert (result.stage, result.downgraded, result.decision) == ("backtest", True, None)
    assert result.downgrade_reason is not None
    assert result.downgrade_reason.startswith("DECISION_UNAVAILABLE: WORLD_UNREACHABLE")


def test_live_needs_allow_live_auto_apply_and_a_fresh_snapshot(world_server: Any) -> None:
    live = {"allow_live": True, "governance": {"live_promotion": {"mode": "auto_apply"}}}
    for world_id, policy in (("w-live", live), ("w-nolive", {**live, "allow_live": False})):
        _world(world_server, world_id, policy)
    spec = _spec(24)
    body = {"spec": spec.model_dump(), "metrics": {"sharpe": 1.0}}
    with _client(world_server, "operator") as c:
        for world_id in ("w-live", "w-nolive"):
            c.evaluate(world_id, {**body, "run_id": "bt"})
            c.evaluate(world_id, {**body, "run_id": "pp", "stage": "paper"})
        blocked = c.decide("w-live", spec.strategy_id)
        for world_id in ("w-live", "w-nolive"):
            c.post_snapshot(_snapshot(world_id, spec.strategy_id, weights={"SPX": 1.0}))
        pending = c.decide("w-live", spec.strategy_id)
        for world_id in ("w-live", "w-nolive"):  # auto_apply: the campaign loop switches it
            campaign_step(c, world_id)
        allowed = c.decide("w-live", spec.strategy_id)
        never = c.decide("w-nolive", spec.strategy_id)
    assert (blocked.stage, blocked.reasons[-1]) == ("paper", "RISK_SNAPSHOT_MISSING")
    assert (pending.stage, pending.reasons[-1]) == ("paper", "LIVE_ACTIVATION_PENDING")
    assert (allowed.stage, allowed.reasons) == ("live", ["BACKTEST_PASSED", "LIVE_AUTO_APPLY"])
    assert (never.stage, never.reasons[-1]) == ("paper", "LIVE_NOT_ALLOWED")


def test_cohorts_and_submit_many_are_idempotent(world_server: Any) -> None:
    srv, toks = world_server
    _world(world_server, "w-cohort")
    specs = [_spec(25), _spec(26)]
    metrics = {s.strategy_id: {"sharpe": 1.0} for s in specs}
    first = submit_many(srv.url, "w-cohort", toks["submitter"], specs, "run-9:it-1",
                        metrics=metrics)
    again = submit_many(srv.url, "w-cohort", toks["submitter"], specs, "run-9:it-1",
                        metrics=metrics)
    assert [r.evaluation.written for r in first] == [True, True]
    assert [r.evaluation.written for r in again] == [False, False]
    assert [r.evaluation.run_id for r in first] == [f"run-9:it-1:{s.strategy_id[:16]}"
                                                    for s in specs]
    assert [r.stage for r in first] == ["paper", "paper"]


# ------------------------------------------------------------------------ risk hub


def test_a_snapshot_with_an_old_as_of_is_stale_though_just_posted(world_server: Any) -> None:
    _world(world_server, "w-hub", {"freshness": {"snapshot_max_age": "1d"}})
    old = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    body = {"world_id": "w-hub", "as_of": old, "ttl_s": 3600, "weights": {"A": 0.5}}
    with _client(world_server, "operator") as c:
        posted = c.post_snapshot(body)
        repost = c.post_snapshot(body)
        latest = c.latest_snapshot("w-hub")
        fresh = c.post_snapshot({**body, "as_of": datetime.now(UTC).isoformat(), "ttl_s": 0.5})
        time.sleep(0.7)
        expired = c.latest_snapshot("w-hub")
    assert (posted.created, posted.stale, posted.stale_reasons) == (True, True, ["AS_OF_TOO_OLD"])
    assert (repost.created, repost.snapshot_id) == (False, posted.snapshot_id)
    assert (latest.snapshot_id, latest.stale) == (posted.snapshot_id, True)
    assert (fresh.stale, expired.snapshot_id, expired.stale_reasons) == (
        False, fresh.snapshot_id, ["TTL_EXPIRED"])
    assert _actions(world_server, "w-hub") == ["world.create", "snapshot.post", "snapshot.post"]


def test_events_are_streamed_and_resumable_with_last_event_id(world_server: Any) -> None:
    _world(world_server, "w-events")
    with _client(world_server, "operator") as c:
        c.post_snapshot(_snapshot("w-events", "", weights={"A": 1.0}))
    r = _raw(world_server, "GET", "/events", "viewer", params={"world": "w-events",
                                                              "follow": "false"})
    ids = [int(line[4:]) for line in r.text.splitlines() if line.startswith("id: ")]
    kinds = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert kinds == ["world_created", "risk_snapshot_updated"]
    resumed = _raw(world_server, "GET", "/events", "viewer",
                   params={"world": "w-events", "follow": "false"},
                   headers={"Last-Event-ID": str(ids[0])})
    assert [line for line in resumed.text.splitlines() if line.startswith("event: ")] == [
        "event: risk_snapshot_updated"]
    bad = _raw(world_server, "GET", "/events", "viewer",  # not an id: not "from the start"
               params={"world": "w-events", "follow": "false"}, headers={"Last-Event-ID": "abc"})
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "Last-Event-ID")
    audit = _raw(world_server, "GET", "/audit", "operator")
    assert audit.status_code == 403 and "audit.read_all" in audit.json()["error"]["message"]


def test_a_followed_stream_delivers_an_event_posted_later(world_server: Any) -> None:
    srv, toks = world_server
    _world(world_server, "w-follow")
    seen: list[str] = []
    headers = {"Authorization": f"Bearer {toks['viewer']}"}
    with httpx.stream("GET", f"{srv.url}/events", params={"world": "w-follow"},
                      headers=headers, timeout=10) as stream:
        lines = stream.iter_lines()
        for line in lines:
            if line.startswith("event: "):
                seen.append(line[7:])
                if len(seen) == 1:
                    with _client(world_server, "operator") as c:
                        c.post_snapshot(_snapshot("w-follow", "", weights={"B": 1.0}))
                else:
                    break
    assert seen == ["world_created", "risk_snapshot_updated"]


# -------------------------------------------------------------------- security, audit


MUTATIONS = [("POST", "/worlds", "world.create"), ("PUT", "/worlds/w-auth/policy", "policy"),
             ("POST", "/worlds/w-auth/evaluate", "evaluate"),
             ("POST", "/worlds/w-auth/evaluate-cohort", "cohort"),
             ("POST", "/risk-hub/snapshots", "snapshot"), ("POST", "/tokens", "token"),
             ("DELETE", "/tokens/abc", "revoke")]


@pytest.mark.parametrize(("method", "path", "what"), MUTATIONS, ids=[m[2] for m in MUTATIONS])
def test_no_token_is_401(world_server: Any, method: str, path: str, what: str) -> None:
    r = _raw(world_server, method, path, json={})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(("role", "method", "path"), [
    ("viewer", "POST", "/worlds/w-auth/evaluate"), ("submitter", "POST", "/worlds"),
    ("submitter", "PUT", "/worlds/w-auth/policy"), ("submitter", "POST", "/risk-hub/snapshots"),
    ("approver", "POST", "/worlds/w-auth/evaluate"), ("operator", "POST", "/tokens"),
    ("operator", "GET", "/audit")])
def test_a_role_that_may_not_act_is_403(world_server: Any, role: str, method: str,
                                        path: str) -> None:
    r = _raw(world_server, method, path, role, json={})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "FORBIDDEN"


def test_a_submitter_cannot_assert_backtest_metrics_where_the_world_runs_engine_b(
        world_server: Any) -> None:
    """In a world with data the service runs engine B itself: a submitter's own
    backtest numbers would override its verdict (a black-box report took a strategy
    with engine B's Sharpe -6.8 to paper by posting sharpe 9). Refused (403, nothing
    stored); an operator, a producer, may still assert them; a world without data has
    only the submitter's numbers, and takes them."""
    _world(world_server, "w-assert", data="synth_planted")
    _world(world_server, "w-nodata")
    spec = StrategySpec.model_validate(SMA).model_dump()
    fake = {"sharpe": 9.0, "effective_history_years": 5.0, "n_trades": 100}
    body = {"run_id": "fake", "spec": spec, "metrics": fake}
    r = _raw(world_server, "POST", "/worlds/w-assert/evaluate", "submitter", json=body)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN"), r.text
    assert "engine B" in r.json()["error"]["message"]
    cohort = {"run_id": "fake-c", "items": [{"spec": spec, "metrics": fake}]}
    r = _raw(world_server, "POST", "/worlds/w-assert/evaluate-cohort", "submitter",
             json=cohort)
    assert r.status_code == 403, r.text
    assert _raw(world_server, "GET", "/worlds/w-assert/runs/fake", "viewer").status_code == 404
    r = _raw(world_server, "POST", "/worlds/w-assert/evaluate", "operator", json=body)
    assert r.status_code == 200, r.text
    r = _raw(world_server, "POST", "/worlds/w-nodata/evaluate", "submitter", json=body)
    assert r.status_code == 200, r.text


def test_tokens_are_created_revoked_and_audited(world_server: Any) -> None:
    _world(world_server, "w-tokens")
    made = _raw(world_server, "POST", "/tokens", "admin", json={"role": "viewer", "name": "tmp"})
    assert made.status_code == 200
    token, token_id = made.json()["token"], made.json()["token_id"]
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    srv, _ = world_server
    ok = httpx.get(f"{srv.url}/worlds/w-tokens", headers={"Authorization": f"Bearer {token}"})
    bad = httpx.get(f"{srv.url}/worlds/w-tokens", headers={"Authorization": f"Bearer {forged}"})
    assert (ok.status_code, bad.status_code) == (200, 401)
    assert _raw(world_server, "DELETE", f"/tokens/{token_id}", "admin").status_code == 200
    # revoking it again answers the same and records nothing more
    assert _raw(world_server, "DELETE", f"/tokens/{token_id}", "admin").status_code == 200
    gone = httpx.get(f"{srv.url}/worlds/w-tokens", headers={"Authorization": f"Bearer {token}"})
    assert gone.status_code == 401
    log = _raw(world_server, "GET", "/audit", "admin", params={"limit": 1000}).json()
    mine = [(e["action"], e["target"]) for e in log if e["target"] == token_id]
    assert mine == [("token.create", token_id), ("token.revoke", token_id)]
    # a name of spaces only names no holder: refused over HTTP as on the CLI
    blank = _raw(world_server, "POST", "/tokens", "admin", json={"role": "viewer", "name": " "})
    assert (blank.status_code, blank.json()["error"]["code"]) == (422, "INVALID_NAME")


def test_the_audit_log_cannot_be_edited_through_the_api(world_server: Any) -> None:
    for method in ("PUT", "DELETE", "POST", "PATCH"):
        r = _raw(world_server, method, "/worlds/w-policy/audit", "admin", json={})
        assert r.status_code == 405
        assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_the_token_secret_is_stored_only_as_a_hash(world_server: Any) -> None:
    import sqlite3

    srv, toks = world_server
    if isinstance(srv.db, str):  # PostgreSQL: every table as text, read with psycopg
        import psycopg

        with psycopg.connect(srv.db.replace("+psycopg", "", 1)) as pg:
            names = [r[0] for r in pg.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            dump = "\n".join(str(pg.execute(f'SELECT * FROM "{n}"').fetchall())
                             for n in names)
            stored = pg.execute("SELECT count(*) FROM api_tokens").fetchone()
        assert stored is not None and stored[0] >= len(toks)  # the tokens are there, hashed
    else:
        con = sqlite3.connect(srv.db)
        dump = "\n".join(con.iterdump())
        con.close()
    for token in toks.values():
        assert token not in dump and token.split("_", 2)[2] not in dump


def test_a_body_over_the_limit_is_413(world_server: Any) -> None:
    r = _raw(world_server, "POST", "/worlds/w-policy/evaluate", "admin",
             content=b"{" + b" " * (5 * 1024 * 1024) + b"}",
             headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "BODY_TOO_LARGE"


def test_a_chunked_body_over_the_limit_is_413(world_server: Any) -> None:
    def chunks() -> Any:
        for _ in range(6):
            yield b" " * (1024 * 1024)

    r = _raw(world_server, "POST", "/worlds/w-policy/evaluate", "admin", content=chunks(),
             headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "BODY_TOO_LARGE"


def test_events_of_an_unknown_world_are_404(world_server: Any) -> None:
    r = _raw(world_server, "GET", "/events", "viewer", params={"world": "nope"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "WORLD_NOT_FOUND")


def test_docs_document_every_endpoint(world_server: Any) -> None:
    srv, _ = world_server
    spec = httpx.get(f"{srv.url}/openapi.json").json()
    assert httpx.get(f"{srv.url}/docs").status_code == 200
    assert set(spec["paths"]) >= {"/worlds", "/worlds/{world_id}", "/worlds/{world_id}/policy",
                                  "/worlds/{world_id}/evaluate",
                                  "/worlds/{world_id}/evaluate-cohort",
                                  "/worlds/{world_id}/runs/{run_id}",
                                  "/worlds/{world_id}/decide", "/worlds/{world_id}/audit",
                                  "/risk-hub/snapshots", "/risk-hub/snapshots/latest",
                                  "/events"}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path != "/health":
                assert {"400", "401", "422"} <= set(op["responses"]), (method, path)
                # the token is the API's security scheme, not a free-text header argument
                assert op["security"] == [{"HTTPBearer": []}], (method, path)
                assert "authorization" not in {p["name"].lower()
                                               for p in op.get("parameters", [])}
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    events = spec["paths"]["/events"]["get"]["responses"]["200"]["content"]
    assert list(events) == ["text/event-stream"]


def test_docs_bounds_and_examples_are_json_schema(world_server: Any) -> None:
    """A black-box report: bounds were published under pydantic's names (`ge`, `le`), which
    validators and client generators ignore, and one example failed its own schema."""
    jsonschema = pytest.importorskip("jsonschema")
    spec = httpx.get(f"{world_server[0].url}/openapi.json").json()

    def bounds(node: Any) -> list[str]:
        if isinstance(node, list):
            return [b for item in node for b in bounds(item)]
        if not isinstance(node, dict):
            return []
        own = [k for k in ("ge", "le", "gt", "lt") if isinstance(node.get(k), int | float)]
        return own + [b for k, v in node.items() if k != "properties" for b in bounds(v)] \
            + [b for v in node.get("properties", {}).values() for b in bounds(v)]

    assert bounds(spec) == []
    ppy = spec["components"]["schemas"]["EvaluateIn"]["properties"]["periods_per_year"]
    assert (ppy["exclusiveMinimum"], ppy["maximum"]) == (0, 1_000_000)
    for name, schema in spec["components"]["schemas"].items():
        for example in schema.get("examples", []):
            jsonschema.validate(example, {"$ref": f"#/components/schemas/{name}",
                                          "components": spec["components"]})


def test_docs_carry_request_examples(world_server: Any) -> None:
    srv, _ = world_server
    spec = httpx.get(f"{srv.url}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("WorldIn", "EvaluateIn", "CohortIn", "SnapshotIn", "TokenIn", "WorldOut",
                 "PolicyOut", "SnapshotOut", "TokenOut", "AuditOut", "DecisionEnvelope",
                 "ErrorOut"):
        assert schemas[name].get("examples"), name
    policy_body = spec["paths"]["/worlds/{world_id}/policy"]["put"]["requestBody"]["content"]
    assert {"application/json", "application/yaml"} <= set(policy_body)


def test_answers_serialized_by_the_routes_are_their_response_models_json(
        world_server: Any) -> None:
    """The hot routes answer the service's model serialized at once (no second validation):
    the same bytes FastAPI's ``response_model`` would send, and the docs still name it."""
    from alphaloop.world.schemas import CohortOut, DecisionEnvelope, EvaluationOut, SnapshotOut

    _world(world_server, "w-bytes")
    spec = _spec(12).model_dump()
    metrics = {"sharpe": 1e-7, "max_drawdown": -0.1, "n_trades": 40, "cagr": 1.2345678901234567e16}
    snap = {"world_id": "w-bytes", "as_of": "2026-11-30T10:00:00+09:00", "weights": {"é": 0.5},
            "realized_returns": [1e-9, 0.25], "provenance": {"note": "ü\u2028", "n": None}}
    answers = [
        (EvaluationOut, _raw(world_server, "POST", "/worlds/w-bytes/evaluate", "operator",
                             json={"run_id": "r", "spec": spec, "metrics": metrics})),
        (EvaluationOut, _raw(world_server, "POST", "/worlds/w-bytes/evaluate", "operator",
                             json={"run_id": "r", "spec": spec, "metrics": metrics})),
        (CohortOut, _raw(world_server, "POST", "/worlds/w-bytes/evaluate-cohort", "operator",
                         json={"run_id": "c", "items": [{"spec": spec, "metrics": metrics}]})),
        (SnapshotOut, _raw(world_server, "POST", "/risk-hub/snapshots", "operator", json=snap)),
        (SnapshotOut, _raw(world_server, "GET", "/risk-hub/snapshots/latest", "viewer",
                           params={"world": "w-bytes"})),
        (DecisionEnvelope, _raw(world_server, "GET", "/worlds/w-bytes/decide", "viewer",
                                params={"strategy_id": _spec(12).strategy_id}))]
    for model, r in answers:
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.content == model.model_validate_json(r.content).model_dump_json().encode()
    assert [r.json()["written"] for _, r in answers[:2]] == [True, False]
    docs = httpx.get(f"{world_server[0].url}/openapi.json").json()["paths"]
    for path, method, name in (("/worlds/{world_id}/evaluate", "post", "EvaluationOut"),
                               ("/worlds/{world_id}/evaluate-cohort", "post", "CohortOut"),
                               ("/worlds/{world_id}/decide", "get", "DecisionEnvelope"),
                               ("/risk-hub/snapshots", "post", "SnapshotOut"),
                               ("/risk-hub/snapshots/latest", "get", "SnapshotOut")):
        schema = docs[path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{name}"}, path


def test_concurrent_writes_to_one_run_number_its_revisions_without_gaps(
        world_server: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _world(world_server, "w-race")
    spec = _spec(29).model_dump()

    def post(i: int) -> bool:
        with _client(world_server, "submitter") as c:
            return c.evaluate("w-race", {"run_id": "race", "spec": spec,
                                         "metrics": {"sharpe": i / 10}}).written

    with ThreadPoolExecutor(8) as pool:
        written = list(pool.map(post, range(16)))
    with _client(world_server, "viewer") as c:
        run = c.get_run("w-race", "race")
    assert all(written)
    assert [r.revision for r in run.revisions] == list(range(1, 17))
    assert sorted(r.metrics["sharpe"] for r in run.revisions) == [i / 10 for i in range(16)]
    assert _actions(world_server, "w-race").count("evaluation.revise") == 15


# ------------------------------------------------- numbers a database cannot hold, lax types

BIG = 10**20  # beyond a 64-bit integer column (SQLite INTEGER, PostgreSQL BIGINT)


def test_integers_beyond_a_database_column_are_a_422_naming_the_field(
        world_server: Any) -> None:
    _world(world_server, "w-big")
    sid = _spec(31).strategy_id
    now = "2026-11-30T00:00:00Z"
    bodies = {
        "/worlds/w-big/paper/fills": ({"strategy_id": sid, "fills": [{
            "ts": now, "seq": BIG, "symbol": "SPX", "side": "buy", "quantity": 1.0,
            "price": 1.0}]}, "fills.0.seq"),
        "/worlds/w-big/paper/orders": ({"strategy_id": sid, "as_of": now, "orders": [{
            "ts": now, "symbol": "SPX", "seq": BIG}]}, "orders.0.seq"),
        "/worlds/w-big/paper/bars": ({"strategy_id": sid, "ts": now, "equity": 1.0,
                                      "ret": 0.0, "gross": 0.0, "orders": {"placed": BIG}},
                                     "orders.placed"),
    }
    for path, (body, field) in bodies.items():
        r = _raw(world_server, "POST", path, "operator", json=body)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["field"] == field, r.text
    for path in ("/audit", "/worlds/w-big/audit"):
        r = _raw(world_server, "GET", f"{path}?after={BIG}", "admin")
        assert (r.status_code, r.json()["error"]["field"]) == (422, "after"), r.text
    # too large; '²' (sent as latin-1, as HTTP headers are read): a digit to str.isdigit
    for bad in (str(BIG).encode(), "²".encode("latin-1")):
        r = _raw(world_server, "GET", "/events?world=w-big&follow=false", "viewer",
                 headers={"Last-Event-ID": bad})
        assert (r.status_code, r.json()["error"]["field"]) == (422, "Last-Event-ID"), bad
    with _client(world_server, "operator") as c:  # nothing was stored by any of them
        assert (c.fills("w-big", sid), c.orders("w-big", sid), c.bars("w-big", sid)) == (
            [], [], [])


@pytest.mark.parametrize(("policy", "field"), [
    ({"allow_live": "yes"}, "policy.allow_live"),
    ({"allow_live": 1}, "policy.allow_live"),
    ({"gates": {"paper": {"min_sharpe": "0.5"}}}, "policy.gates.paper.min_sharpe"),
    ({"gates": {"backtest": {"min_trades": "10"}}}, "policy.gates.backtest.min_trades"),
    ({"governance": {"live_promotion": {"max_live": True}}},
     "policy.governance.live_promotion.max_live"),
    ({"governance": {"live_promotion": {"cooldown": True}}},
     "policy.governance.live_promotion.cooldown"),
])
def test_a_policy_value_of_the_wrong_type_is_refused_not_converted(
        world_server: Any, policy: dict[str, Any], field: str) -> None:
    r = _raw(world_server, "POST", "/worlds", "operator",
             json={"world_id": "w-lax", "policy": policy})
    assert r.status_code == 422, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["field"]) == ("POLICY_INVALID", field)
    assert _raw(world_server, "GET", "/worlds/w-lax", "viewer").status_code == 404


@pytest.mark.parametrize(("word", "world"), [("yes", "w-yaml-1"), ("on", "w-yaml-2"),
                                             ("no", "w-yaml-3"), ("off", "w-yaml-4"),
                                             ("Yes", "w-yaml-5")])
def test_a_yaml_policy_switches_live_with_true_or_false_only(world_server: Any, word: str,
                                                             world: str) -> None:
    """YAML 1.1 reads yes/on/no/off as booleans; the policy's live switch takes the
    words true/false only, as JSON does (a black-box report had `allow_live: yes`
    switch live on)."""
    _world(world_server, world)
    put = f"/worlds/{world}/policy"
    yaml_body = {"headers": {"Content-Type": "application/yaml"}}
    r = _raw(world_server, "PUT", put, "operator", content=f"allow_live: {word}\n".encode(),
             **yaml_body)
    assert r.status_code == 422, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["field"]) == (
        "POLICY_INVALID", "policy.allow_live")
    r = _raw(world_server, "PUT", put, "operator", content=b"allow_live: true\n", **yaml_body)
    assert r.status_code == 200 and r.json()["policy"]["allow_live"] is True, r.text


@pytest.mark.parametrize("metrics", [{"sharpe": True}, {"n_trades": "7"}, {"sharpe": "1.2"}])
def test_metrics_of_the_wrong_type_are_refused_not_converted(world_server: Any,
                                                             metrics: dict[str, Any]) -> None:
    _world(world_server, "w-laxm")
    r = _raw(world_server, "POST", "/worlds/w-laxm/evaluate", "operator",
             json={"run_id": "m", "spec": _spec(32).model_dump(), "metrics": metrics})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == f"metrics.{next(iter(metrics))}"
    assert _raw(world_server, "GET", "/worlds/w-laxm/runs/m", "viewer").status_code == 404


def test_a_snapshots_trade_count_must_be_a_count(world_server: Any) -> None:
    """provenance.n_trades is the paper window's trade count: text or a number beyond a
    database integer is a 422 at the hub (it was stored, then every campaign read of
    the world failed with a 500); metrics.n_trades beyond one is a 422 too."""
    _world(world_server, "w-prov")
    sid = _spec(33).strategy_id
    base = {"world_id": "w-prov", "strategy_id": sid,
            "as_of": datetime.now(UTC).isoformat(), "realized_returns": [0.01, -0.01, 0.0]}
    for bad in ("lots", BIG, -1, 2.5, True):
        r = _raw(world_server, "POST", "/risk-hub/snapshots", "operator",
                 json={**base, "provenance": {"n_trades": bad}})
        assert (r.status_code, r.json()["error"]["field"]) == (422, "provenance"), (bad, r.text)
    ok = _raw(world_server, "POST", "/risk-hub/snapshots", "operator",
              json={**base, "provenance": {"n_trades": 12, "producer": "test"}})
    assert ok.status_code == 200, ok.text
    r = _raw(world_server, "POST", "/worlds/w-prov/evaluate", "operator",
             json={"run_id": "big", "spec": _spec(33).model_dump(), "metrics": {"n_trades": BIG}})
    assert (r.status_code, r.json()["error"]["field"]) == (422, "metrics.n_trades"), r.text
    assert _raw(world_server, "GET", "/worlds/w-prov/campaign", "viewer").status_code == 200
