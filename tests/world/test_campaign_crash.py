"""SIGKILL during campaign loops: no executed action, evaluation run or audit record is
lost or duplicated, and the loop finishes the campaign after a restart; and SIGKILL
during a campaign loop, a burst of approvals and a paper run at once (issue 12's third
acceptance test): nothing acknowledged is lost or duplicated, and the paper run resumes
at the next bar with the equity of an uninterrupted one."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from conftest import Server, make_tokens

from alphaloop.kb import dispose_engines
from alphaloop.world.client import WorldClient, WorldClientError, campaign_step
from alphaloop.world.schemas import ExecutedOut

N = 60
POLICY = {"campaign": {"backtest": {"window": {"min_days": 365}}}}


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _loop(url: str, token: str, acked: list[ExecutedOut], stop: threading.Event,
          world: str = "crash") -> None:
    """A campaign loop that records each execution as it is acknowledged."""
    with WorldClient(url, token, timeout=5) as c:
        while not stop.is_set():
            try:
                actions = c.tick(world).actions
                for action in actions:
                    done = c.execute_action(world, action.idempotency_key)
                    if done.executed:
                        acked.append(done)
            except WorldClientError:
                return  # the server died under this step
            if not actions:
                return


def _state(db: Path, world: str = "crash"
           ) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    keys = dict(_rows(db, "SELECT idempotency_key, COUNT(*) FROM campaign_actions "
                          f"WHERE world_id='{world}' GROUP BY idempotency_key"))
    audits = dict(_rows(db, "SELECT after_hash, COUNT(*) FROM audit_log WHERE "
                            f"action='campaign.execute' AND world_id='{world}' "
                            "GROUP BY after_hash"))
    paper = dict(_rows(db, "SELECT r.run_id, COUNT(*) FROM evaluation_runs r JOIN "
                           "evaluation_revisions v ON v.world_id=r.world_id AND "
                           "v.run_id=r.run_id WHERE r.stage='paper' "
                           f"AND r.world_id='{world}' GROUP BY r.run_id"))
    return keys, audits, paper


def test_sigkill_during_campaign_loops_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "kb.sqlite"
    toks = make_tokens(f"sqlite:///{db}")
    dispose_engines()
    server = Server(db, tmp_path).start()
    with WorldClient(server.url, toks["operator"]) as c:
        c.create_world("crash", policy=POLICY)
        items = [{"spec": {"entry": f"sma(close, {f}) > sma(close, 70)",
                           "exit": f"sma(close, {f}) < sma(close, 70)"},
                  "metrics": {"sharpe": 1.0, "effective_history_years": 2.0}}
                 for f in range(2, 2 + N)]
        c.evaluate_cohort("crash", {"run_id": "bt", "items": items})
    acked: list[ExecutedOut] = []
    stop = threading.Event()
    loops = [threading.Thread(target=_loop, args=(server.url, toks["operator"], acked, stop))
             for _ in range(3)]  # three loops on one world: they race for the same keys
    for t in loops:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 15 and time.monotonic() < deadline:
        time.sleep(0.005)
    server.kill()
    stop.set()
    for t in loops:
        t.join()

    keys, audits, paper = _state(db)
    assert 15 <= len(keys) < N  # killed mid-campaign
    assert len({d.idempotency_key for d in acked}) == len(acked)  # one "executed" per key
    assert all(keys.get(d.idempotency_key) == 1 for d in acked)  # acknowledged: stored once
    # one transaction: every stored key has its audit record and its paper run, once
    assert audits == keys
    assert set(paper) == {f"campaign:{d[:16]}:paper" for d in _sids(db, keys)}
    assert set(paper.values()) == {1}

    server.start()
    try:
        with WorldClient(server.url, toks["operator"]) as c:
            for _ in range(3):
                campaign_step(c, "crash")
            assert c.tick("crash").actions == []
            phases = {s.phase for s in c.campaign("crash").strategies}
    finally:
        server.stop()
    keys, audits, paper = _state(db)
    assert (len(keys), len(paper), phases) == (N, N, {"paper_campaign"})
    assert audits == keys and set(keys.values()) == {1} and set(paper.values()) == {1}


def _sids(db: Path, keys: dict[str, int]) -> list[str]:
    return [sid for sid, key in _rows(db, "SELECT strategy_id, idempotency_key "
                                          "FROM campaign_actions") if key in keys]


def _cohort(c: WorldClient, world: str, n: int, slow: int) -> None:
    items = [{"spec": {"entry": f"sma(close, {f}) > sma(close, {slow})",
                       "exit": f"sma(close, {f}) < sma(close, {slow})"},
              "metrics": {"sharpe": 1.0, "effective_history_years": 2.0}}
             for f in range(2, 2 + n)]
    c.evaluate_cohort(world, {"run_id": "bt", "items": items})


def _approvals(url: str, token: str, sids: list[str], acked: list[int],
               stop: threading.Event) -> None:
    """An approver recording each decision as it is acknowledged (rejections: they
    need no paper evidence, so every one is a new approval row)."""
    with WorldClient(url, token, timeout=5) as c:
        i = 0
        while not stop.is_set():
            try:
                acked.append(c.approve("gov", sids[i % len(sids)], "reject").approval_id)
            except WorldClientError:
                return
            i += 1


def _approval_state(db: Path) -> tuple[list[int], dict[int, int]]:
    rows = [i for (i,) in _rows(db, "SELECT approval_id FROM live_approvals "
                                    "WHERE world_id='gov' ORDER BY approval_id")]
    audited: dict[int, int] = {}
    for (target,) in _rows(db, "SELECT target FROM audit_log WHERE action='live.reject'"):
        key = int(target.rsplit("#", 1)[1])
        audited[key] = audited.get(key, 0) + 1
    return rows, audited


def test_sigkill_during_a_loop_approvals_and_a_paper_run_loses_and_duplicates_nothing(
        tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    import yaml

    from alphaloop.data.loaders import load_bars
    from alphaloop.engines.engine_b import verify
    from alphaloop.strategy.spec import StrategySpec

    spec = StrategySpec.model_validate({"entry": "sma(close, 10) > sma(close, 50)",
                                        "exit": "sma(close, 10) < sma(close, 50)"})
    data, start, n_bars = "synth_planted", 2480, 40
    db = tmp_path / "kb.sqlite"
    toks = make_tokens(f"sqlite:///{db}")
    dispose_engines()
    server = Server(db, tmp_path).start()
    with WorldClient(server.url, toks["operator"]) as c:
        c.create_world("loop", policy=POLICY)
        _cohort(c, "loop", N, 70)
        c.create_world("gov", policy={**POLICY, "governance": {
            "live_promotion": {"mode": "manual_approval"}}})
        _cohort(c, "gov", 6, 60)
        campaign_step(c, "gov")  # six strategies in paper_campaign, to approve or reject
        gov = [s.strategy_id for s in c.campaign("gov").strategies]
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    state = tmp_path / "paper.json"
    env = {**os.environ, "ALPHALOOP_WORLD_TOKEN": toks["operator"],
           "NUMBA_CACHE_DIR": str(Path.cwd() / ".numba_cache")}

    def runner(*extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "alphaloop", "world", "paper", "--world", "gov",
             "--strategy", str(spec_file), "--feed", f"replay:{data}@50", "--state",
             str(state), "--url", server.url, "--start", str(start), *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def bars_done() -> int:
        return len(json.loads(state.read_text())["returns"]) if state.exists() else 0

    paper = runner()
    acked: list[ExecutedOut] = []
    approved: list[int] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_loop, args=(server.url, toks["operator"], acked,
                                                    stop, "loop")) for _ in range(2)]
    threads.append(threading.Thread(target=_approvals, args=(
        server.url, toks["approver"], gov, approved, stop)))
    while bars_done() < 6:  # the paper run is under way (a guard against a hang below)
        assert paper.poll() is None, "the runner ended early"
        time.sleep(0.005)
    for t in threads:
        t.start()
    deadline = time.monotonic() + 300  # a guard against a hang, not a speed check
    while (len(acked) < 10 or len(approved) < 10 or bars_done() < 9) \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    server.kill()  # during the loop, the approvals and the paper run
    stop.set()
    for t in threads:
        t.join()
    assert paper.wait(60) != 0  # the runner stops: the world is unreachable
    keys, audits, runs = _state(db, "loop")
    assert 10 <= len(keys) < N and len(approved) >= 10  # killed mid-way through both
    assert all(keys.get(d.idempotency_key) == 1 for d in acked)
    assert audits == keys and set(runs.values()) == {1}
    rows, audited = _approval_state(db)
    assert set(approved) <= set(rows)  # every acknowledged approval stored, once (its key)
    assert audited == dict.fromkeys(rows, 1)  # each with its audit record, once

    server.start()
    try:
        left = n_bars - bars_done()
        assert left > 0
        assert runner("--max-bars", str(left)).wait(300) == 0
        with WorldClient(server.url, toks["operator"]) as c:
            for _ in range(3):
                campaign_step(c, "loop")
            assert c.tick("loop").actions == []
    finally:
        server.stop()

    keys, audits, runs = _state(db, "loop")
    assert (len(keys), len(runs)) == (N, N)
    assert audits == keys and set(keys.values()) == {1} and set(runs.values()) == {1}
    assert _approval_state(db) == (rows, audited)  # nothing added or lost by the restart
    done = json.loads(state.read_text())
    bars = load_bars(data)
    result = verify(spec, bars, capacity=False)
    full = result.equity.to_numpy()
    assert done["returns"] == [float(full[t] / full[t - 1] - 1)
                               for t in range(start, start + n_bars)]
    assert done["equity"] == full[start + n_bars - 1]
    sid = spec.strategy_id
    lengths = [len(json.loads(b)["realized_returns"]) for (b,) in _rows(
        db, f"SELECT body FROM risk_snapshots WHERE strategy_id='{sid}' ORDER BY snapshot_id")]
    assert lengths == list(range(2, n_bars + 1))  # every bar's snapshot, once, in order
    window = result.fills[(result.fills["timestamp"] >= bars.index[start])
                          & (result.fills["timestamp"] <= bars.index[start + n_bars - 1])]
    fills = _rows(db, "SELECT symbol, quantity FROM paper_fills ORDER BY fill_ts, seq")
    assert fills == [(r.symbol, r.quantity) for r in window.itertuples()]
    recorded = [ts for (ts,) in _rows(db, "SELECT bar_ts FROM paper_bars ORDER BY bar_ts")]
    assert recorded == [b.isoformat() for b in bars.index[start:start + n_bars]]
