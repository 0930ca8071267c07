"""SIGKILL of the paper runner, then of the server, mid-run: the run resumes at the next
bar with the equity of an uninterrupted one, and every bar's snapshot is at the hub
exactly once; every fill and every order is in the KB once, each order as engine B has
it at the run's last bar."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
from conftest import Server, make_tokens

from alphaloop.data.loaders import load_bars
from alphaloop.engines.engine_b import verify
from alphaloop.kb import dispose_engines
from alphaloop.strategy.spec import StrategySpec
from alphaloop.world.client import WorldClient

SPEC = StrategySpec.model_validate({"entry": "sma(close, 10) > sma(close, 50)",
                                    "exit": "sma(close, 10) < sma(close, 50)"})
DATA, START, N = "synth_planted", 2480, 40


def _bars_done(state: Path) -> int:
    return len(json.loads(state.read_text())["returns"]) if state.exists() else 0


def _wait(state: Path, n: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300  # a guard against a hang, not a speed check
    while _bars_done(state) < n:
        assert proc.poll() is None, "the runner ended early"
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_sigkill_of_runner_and_server_loses_and_duplicates_no_bar(tmp_path: Path) -> None:
    db = tmp_path / "kb.sqlite"
    toks = make_tokens(f"sqlite:///{db}")
    dispose_engines()
    server = Server(db, tmp_path).start()
    with WorldClient(server.url, toks["operator"]) as c:
        c.create_world("pk")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC.model_dump(mode="json")))
    state = tmp_path / "paper.json"
    env = {**os.environ, "ALPHALOOP_WORLD_TOKEN": toks["operator"],
           "NUMBA_CACHE_DIR": str(Path.cwd() / ".numba_cache")}

    def runner(*extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "alphaloop", "world", "paper", "--world", "pk",
             "--strategy", str(spec_file), "--feed", f"replay:{DATA}@50", "--state",
             str(state), "--url", server.url, "--start", str(START), *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    first = runner()
    _wait(state, 8, first)
    first.send_signal(signal.SIGKILL)  # the runner dies mid-run
    first.wait()
    second = runner()
    _wait(state, _bars_done(state) + 8, second)
    server.kill()  # then the server dies under it
    assert second.wait(60) != 0  # the runner stops: the world is unreachable
    server.start()
    try:
        left = N - _bars_done(state)
        assert left > 0
        third = runner("--max-bars", str(left))
        assert third.wait(120) == 0
    finally:
        server.stop()

    done = json.loads(state.read_text())
    full = verify(SPEC, load_bars(DATA), capacity=False).equity.to_numpy()
    assert done["returns"] == [float(full[t] / full[t - 1] - 1) for t in range(START, START + N)]
    assert done["equity"] == full[START + N - 1]
    con = sqlite3.connect(db)
    try:
        bodies = [json.loads(b) for (b,) in con.execute(
            "SELECT body FROM risk_snapshots WHERE strategy_id = ? ORDER BY snapshot_id",
            (SPEC.strategy_id,))]
    finally:
        con.close()
    result = verify(SPEC, load_bars(DATA), capacity=False)
    bars = load_bars(DATA)
    window = result.fills[(result.fills["timestamp"] >= bars.index[START])
                          & (result.fills["timestamp"] <= bars.index[START + N - 1])]
    con = sqlite3.connect(db)
    try:
        fills = con.execute("SELECT fill_ts, seq, symbol, quantity FROM paper_fills "
                            "ORDER BY fill_ts, seq").fetchall()
    finally:
        con.close()
    assert [(s, q) for _, _, s, q in fills] == [  # every fill once, none lost
        (r.symbol, r.quantity) for r in window.itertuples()]
    con = sqlite3.connect(db)
    try:
        recorded = con.execute("SELECT bar_ts, equity, n_fills FROM paper_bars "
                               "ORDER BY bar_ts").fetchall()
    finally:
        con.close()
    assert [ts for ts, _, _ in recorded] == [  # every bar's record once, none lost
        b.isoformat() for b in bars.index[START:START + N]]
    assert [e for _, e, _ in recorded] == [float(full[t]) for t in range(START, START + N)]
    assert sum(n for _, _, n in recorded) == len(window)
    # the orders: every one the run decided, filled, ended or kept working, once, with
    # its outcome as of the last bar (a later bar's report replaced an earlier one)
    ledger = verify(SPEC, bars.slice(0, START + N), capacity=False).orders
    since = bars.index[START - 1]  # the first paper bar posts the orders of its open
    keep = ((ledger["timestamp"] >= since) | (ledger["ended"] >= since)
            | (ledger["status"] == "pending"))

    def iso(x: object) -> str | None:
        return None if pd.isna(x) else x.isoformat()  # type: ignore[union-attr]

    expected = sorted((r.timestamp.isoformat(), r.symbol, r.side, r.quantity,
                       r.filled_quantity, r.n_fills, iso(r.last_fill), iso(r.ended), r.status)
                      for r in ledger[keep].itertuples())
    con = sqlite3.connect(db)
    try:
        orders = con.execute("SELECT order_ts, symbol, side, quantity, filled_quantity, "
                             "n_fills, last_fill_ts, ended_ts, status, as_of_ts "
                             "FROM paper_orders").fetchall()
    finally:
        con.close()
    assert sorted(o[:-1] for o in orders) == expected
    assert len(expected) > len(window) // 2 > 0  # orders, not an empty match
    last = bars.index[START + N - 1].isoformat()
    assert {o[-1] for o in orders if o[-2] == "pending"} <= {last}
    lengths = [len(b["realized_returns"]) for b in bodies]
    assert lengths == list(range(2, N + 1))  # every bar's snapshot, once, in order
    assert bodies[-1]["realized_returns"] == done["returns"]
