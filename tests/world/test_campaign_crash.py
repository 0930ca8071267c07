"""SIGKILL during campaign loops: no executed action, evaluation run or audit record is
lost or duplicated, and the loop finishes the campaign after a restart."""

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


def _loop(url: str, token: str, acked: list[ExecutedOut], stop: threading.Event) -> None:
    """A campaign loop that records each execution as it is acknowledged."""
    with WorldClient(url, token, timeout=5) as c:
        while not stop.is_set():
            try:
                actions = c.tick("crash").actions
                for action in actions:
                    done = c.execute_action("crash", action.idempotency_key)
                    if done.executed:
                        acked.append(done)
            except WorldClientError:
                return  # the server died under this step
            if not actions:
                return


def _state(db: Path) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    keys = dict(_rows(db, "SELECT idempotency_key, COUNT(*) FROM campaign_actions "
                          "GROUP BY idempotency_key"))
    audits = dict(_rows(db, "SELECT after_hash, COUNT(*) FROM audit_log "
                            "WHERE action='campaign.execute' GROUP BY after_hash"))
    paper = dict(_rows(db, "SELECT r.run_id, COUNT(*) FROM evaluation_runs r JOIN "
                           "evaluation_revisions v ON v.world_id=r.world_id AND "
                           "v.run_id=r.run_id WHERE r.stage='paper' GROUP BY r.run_id"))
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
