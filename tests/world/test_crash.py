"""SIGKILL during a burst of writes: every acknowledged write survives, exactly once."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from conftest import Server, make_tokens

from alphaloop.kb import dispose_engines
from alphaloop.world.client import WorldClient

SPEC = {"entry": "sma(close, 10) > sma(close, 40)", "exit": "sma(close, 10) < sma(close, 40)"}


def _bodies(worker: int, n: int) -> list[tuple[str, str, dict[str, Any]]]:
    """Alternating evaluations (unique run_id) and snapshots (unique content)."""
    out = []
    as_of = datetime.now(UTC).isoformat()
    for i in range(n):
        if i % 2:
            out.append(("POST", "/worlds/crash/evaluate",
                        {"run_id": f"w{worker}-r{i}", "spec": SPEC,
                         "metrics": {"sharpe": worker + i / 1000}}))
        else:
            out.append(("POST", "/risk-hub/snapshots",
                        {"world_id": "crash", "as_of": as_of,
                         "weights": {f"S{worker}": i / 1000}}))
    return out


def _burst(url: str, token: str, worker: int, acked: list[tuple[str, dict[str, Any]]],
           stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=5) as http:
        for method, path, body in _bodies(worker, 10_000):
            if stop.is_set():
                return
            try:
                r = http.request(method, path, json=body)
            except httpx.HTTPError:
                return  # the server died under this request: not acknowledged
            if r.status_code == 200:
                acked.append((path, r.json()))


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_sigkill_during_a_burst_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "kb.sqlite"
    toks = make_tokens(f"sqlite:///{db}")
    dispose_engines()
    server = Server(db, tmp_path).start()
    with WorldClient(server.url, toks["operator"]) as c:
        c.create_world("crash")
    acked: list[tuple[str, dict[str, Any]]] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_burst, args=(server.url, toks["operator"], w, acked, stop))
               for w in range(6)]
    for t in workers:
        t.start()
    while len(acked) < 150:
        time.sleep(0.01)
    server.kill()  # mid-burst: requests are in flight
    stop.set()
    for t in workers:
        t.join()

    runs = [body["run_id"] for path, body in acked if path.endswith("/evaluate")]
    snaps = [body["content_hash"] for path, body in acked if path == "/risk-hub/snapshots"]
    assert runs and snaps
    revisions = dict(_rows(db, "SELECT run_id, COUNT(*) FROM evaluation_revisions "
                               "GROUP BY run_id"))
    assert all(revisions.get(run_id) == 1 for run_id in runs)
    stored = dict(_rows(db, "SELECT content_hash, COUNT(*) FROM risk_snapshots "
                            "GROUP BY content_hash"))
    assert all(stored.get(h) == 1 for h in snaps)
    audits = dict(_rows(db, "SELECT target, COUNT(*) FROM audit_log WHERE world_id='crash' "
                            "AND action='evaluation.create' GROUP BY target"))
    assert all(audits.get(f"{run_id}@1") == 1 for run_id in runs)

    # restarted on the same file, it serves what it acknowledged; retries change nothing
    server.start()
    try:
        with WorldClient(server.url, toks["operator"]) as c:
            for method, path, body in _bodies(0, 40):
                c.request(method, path, json=body)
            assert all(len(c.get_run("crash", r).revisions) == 1 for r in runs[:20])
    finally:
        server.stop()
    again = dict(_rows(db, "SELECT content_hash, COUNT(*) FROM risk_snapshots "
                           "GROUP BY content_hash"))
    assert max(again.values()) == 1
    assert max(c for _, c in _rows(db, "SELECT run_id, COUNT(*) FROM evaluation_revisions "
                                       "GROUP BY run_id")) == 1
