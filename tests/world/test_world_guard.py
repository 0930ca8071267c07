"""The risk guard's world limits (MOD-482, issue 12 item 5): all of a world's paper
strategies summed. Two strategies paper-trade in one world (a real server on loopback,
on SQLite and on PostgreSQL); the world's drawdown crosses its limit though the first
strategy alone never did; the world halts every strategy, on the bar computed here by
hand; the halt survives a restart and only an operator re-activates the world."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from conftest import Server
from typer.testing import CliRunner

from alphaloop.cli import app
from alphaloop.data.loaders import load_bars
from alphaloop.engines.engine_b import verify
from alphaloop.strategy.spec import StrategySpec
from alphaloop.world.client import WorldClient

DATA, START, N = "synth_planted", 2480, 40


def _spec(fast: int, slow: int) -> StrategySpec:
    return StrategySpec.model_validate({"entry": f"sma(close, {fast}) > sma(close, {slow})",
                                        "exit": f"sma(close, {fast}) < sma(close, {slow})"})


FIRST, SECOND = _spec(3, 30), _spec(10, 50)


def _drawdowns(total: np.ndarray) -> np.ndarray:
    """The drawdown at each bar of an equity path (its first value: before the bars)."""
    index = total / total[0]
    return 1.0 - index / np.maximum(1.0, np.maximum.accumulate(index))


def _paper(srv: Server, world: str, spec: StrategySpec, tmp: Path, env: dict[str, str],
           *extra: str) -> tuple[Any, Path]:
    spec_file = tmp / f"{spec.strategy_id[:8]}.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    state = tmp / f"{spec.strategy_id[:8]}.json"
    done = CliRunner().invoke(app, [
        "world", "paper", "--world", world, "--strategy", str(spec_file), "--feed",
        f"replay:{DATA}", "--state", str(state), "--url", srv.url, *extra], env=env)
    return done, state


def test_the_worlds_drawdown_over_all_its_strategies_halts_every_one(
        world_server: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    srv, toks = world_server  # on SQLite and on PostgreSQL
    w = "world-guard"
    bars = load_bars(DATA)
    x = verify(FIRST, bars, capacity=False).equity.to_numpy()[START - 1:START + N]
    y = verify(SECOND, bars, capacity=False).equity.to_numpy()[START - 1:START + N]
    # FIRST runs all N bars, then SECOND bar by bar: when SECOND has reported k bars the
    # world is FIRST's whole path plus SECOND's first k bars (flat after: unreported)
    alone = float(_drawdowns(x).max())
    paths = []
    for k in range(1, N + 1):
        flat = y.copy()
        flat[k + 1:] = y[k]
        paths.append(_drawdowns(x + flat))
    worst = max(float(p.max()) for p in paths)
    assert worst > alone  # the world goes deeper than FIRST alone ever did
    limit = (alone + worst) / 2
    k = next(i for i, p in enumerate(paths, start=1) if p.max() > limit)
    t = int(np.argmax(paths[k - 1] > limit))  # the first bar over the limit (1 = START)
    tripped_on = bars.index[START + t - 1].isoformat()

    with WorldClient(srv.url, toks["operator"]) as op:
        op.create_world(w, policy={"risk_guard": {"world": {"max_drawdown": limit}}})
    env = {"ALPHALOOP_WORLD_TOKEN": toks["operator"]}
    first, first_state = _paper(srv, w, FIRST, tmp_path, env, "--start", str(START),
                                "--max-bars", str(N))
    assert first.exit_code == 0, first.output  # alone, FIRST stays within the limit
    second, second_state = _paper(srv, w, SECOND, tmp_path, env, "--start", str(START),
                                  "--max-bars", str(N))
    assert second.exit_code == 2 and "RISK_GUARD_TRIPPED: world max_drawdown" in second.output
    saved = json.loads(second_state.read_text())
    assert len(saved["returns"]) == k  # halted on the bar whose report crossed the limit
    assert saved["halted"]["scope"] == "world"

    srv.stop()  # the halt survives a restart
    srv.start()
    with WorldClient(srv.url, toks["viewer"]) as c:
        status = {s.strategy_id[:8]: c.guard(w, s.strategy_id) for s in (FIRST, SECOND)}
        decisions = [c.decide(w, s.strategy_id) for s in (FIRST, SECOND)]
        audit = [e.action for e in c.audit(w)]
        bars_first = c.bars(w, FIRST.strategy_id)
    for got in status.values():  # every strategy of the world, FIRST's too
        assert got.halted and got.trip is not None
        assert (got.trip.strategy_id, got.trip.rule, got.trip.bar.isoformat(),
                got.trip.limit) == ("", "max_drawdown", tripped_on, limit)
        assert got.trip.value == pytest.approx(float(paths[k - 1][t]), rel=1e-9)
    assert [(d.stage, d.reasons) for d in decisions] == [
        ("backtest", ["RISK_GUARD_TRIPPED:world:max_drawdown"])] * 2
    assert audit.count("risk_guard.trip") == 1
    # every bar FIRST reported is in the knowledge base: its equity, bar by bar
    assert [b.equity for b in bars_first] == pytest.approx(list(x[1:]), rel=1e-12)
    events = httpx.get(f"{srv.url}/events", params={"world": w, "follow": "false"},
                       headers={"Authorization": f"Bearer {toks['viewer']}"}).text
    assert "event: RISK_GUARD_TRIPPED" in events and '"scope": "world"' in events

    more, _ = _paper(srv, w, FIRST, tmp_path, env, "--max-bars", "1")  # refuses to go on
    assert more.exit_code == 2 and "RISK_GUARD_TRIPPED" in more.output
    assert len(json.loads(first_state.read_text())["returns"]) == N

    url = f"{srv.url}/worlds/{w}/risk-guard/reset"
    assert httpx.post(url, json={}).status_code == 401
    for role in ("viewer", "submitter", "approver"):
        r = httpx.post(url, json={}, headers={"Authorization": f"Bearer {toks[role]}"})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "FORBIDDEN")
    op_auth = {"Authorization": f"Bearer {toks['operator']}"}
    r = httpx.post(url, json={"strategy_id": FIRST.strategy_id}, headers=op_auth)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "WORLD_HALTED")
    reset = CliRunner().invoke(app, ["world", "guard-reset", w, "--url", srv.url], env=env)
    assert reset.exit_code == 0 and "of the world" in reset.output, reset.output
    with WorldClient(srv.url, toks["viewer"]) as c:
        assert not any(c.guard(w, s.strategy_id).halted for s in (FIRST, SECOND))
        assert [e.action for e in c.audit(w)].count("risk_guard.reset") == 1
    resumed, _ = _paper(srv, w, SECOND, tmp_path, env, "--max-bars", "1")  # the next bar
    assert resumed.exit_code == 0, resumed.output
    after = json.loads(second_state.read_text())
    assert (len(after["returns"]), after["halted"]) == (k + 1, None)


def test_every_world_limit_over_the_summed_accounts() -> None:
    """The world's return, drawdown, leverage and orders from bar records, by hand."""
    from alphaloop.world.models import PaperBar
    from alphaloop.world.policy import WorldGuard
    from alphaloop.world.riskguard import world_breaches

    def bar(ts: str, sid: str, equity: float, ret: float, gross: float,
            fills: int) -> PaperBar:
        return PaperBar(bar_ts=ts, strategy_id=sid, equity=equity, ret=ret, gross=gross,
                        n_fills=fills)

    rows = [  # a and b start with 100 each (equity / (1 + ret) before their first bar)
        bar("t1", "a", 98.0, -0.02, 150.0, 2), bar("t1", "b", 101.0, 0.01, 50.0, 3),
        bar("t2", "a", 95.0, 95.0 / 98.0 - 1, 150.0, 0),  # b reports no t2: flat at 101
        bar("t3", "b", 90.0, 90.0 / 101.0 - 1, 0.0, 1)]  # a flat at 95

    def seen(**limits: float) -> list[tuple[str, str, float, float]]:
        return list(world_breaches(WorldGuard(**limits), iter(rows)))  # type: ignore[arg-type]

    r1, r2, r3 = (199 - 200) / 200, (196 - 199) / 199, (185 - 196) / 196
    index = [1 + r1, (1 + r1) * (1 + r2), (1 + r1) * (1 + r2) * (1 + r3)]
    assert [b[:2] for b in seen(max_daily_loss=0.01)] == [("t2", "max_daily_loss"),
                                                          ("t3", "max_daily_loss")]
    assert seen(max_daily_loss=0.01)[1][2] == pytest.approx(-r3)
    dd = seen(max_drawdown=0.05)
    assert [(b[0], b[1]) for b in dd] == [("t3", "max_drawdown")]
    assert dd[0][2] == pytest.approx(1 - index[2])  # the peak is the start (1.0)
    lev = seen(max_leverage=1.0)
    assert [(b[0], b[2]) for b in lev] == [("t1", pytest.approx(200 / 199)),
                                           ("t2", pytest.approx(200 / 196))]
    assert [(b[0], b[2]) for b in seen(max_orders_per_day=4)] == [("t1", 5.0)]
    assert seen(max_drawdown=0.2, max_daily_loss=0.2, max_leverage=5,
                max_orders_per_day=10) == []
