"""WorldService under load: 50 concurrent clients posting evaluations and snapshots.

Workload (issue 11): a real ``uvicorn`` server process (the one ``alphaloop world
serve`` runs) on loopback, on a fresh SQLite file (WAL, ``synchronous=FULL``: every
acknowledged write is on disk). ``--clients`` asyncio tasks in one client process, each
with its own keep-alive connection, alternate

- ``POST /worlds/{id}/evaluate`` with supplied metrics (a new ``run_id`` each time, so
  every call writes a run, a revision, an audit record and an event in one
  transaction), and
- ``POST /risk-hub/snapshots`` (new content each time: a row, an audit record and a
  ``risk_snapshot_updated`` event),

for ``--duration`` seconds after a 2 s warm-up. Reported per endpoint: requests,
throughput, p50/p99/max latency, errors (any non-200 or transport error). The client
runs on the same machine as the server and shares its cores.

Two load models:

- **closed loop** (default): each client sends its next request as soon as the last
  one is answered. This measures capacity: with N clients and a server that completes
  X requests/s, latency is N / X whatever the server does (Little's law).
- **open loop** (``--rate R``): each client sends R requests/s on a fixed schedule (a
  random phase per client), whether or not earlier ones were answered — how 50
  strategies reporting on their own clocks load a service. Latency is measured from
  the *scheduled* send time, so a server that falls behind is charged for the wait
  (no coordinated omission).

    .venv/bin/python benchmarks/bench_world.py [--clients 50] [--duration 60]
        [--rate R] [--json benchmarks/results/bench_world.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

SPEC = {"entry": "sma(close, 10) > sma(close, 50)", "exit": "sma(close, 10) < sma(close, 50)"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(db: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "alphaloop.world.server", "--db",
                             f"sqlite:///{db}", "--port", str(port), "--refs-root",
                             str(db.parent)])
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def _token(db: Path) -> str:
    from alphaloop.world import tokens
    from alphaloop.world.db import Database

    database = Database(f"sqlite:///{db}")
    with database.write() as conn:
        token = tokens.create(conn, "operator", "bench", actor="bench")[1]
    database.close()
    return token


async def _client(url: str, token: str, worker: int, until: float, warm_until: float,
                  lat: dict[str, list[float]], errors: dict[str, int],
                  rate: float | None) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30,
                                 limits=limits) as http:
        if rate is None:  # closed loop: the next request when the last is answered
            i = 0
            while (now := time.perf_counter()) < until:
                await _one(http, worker, i, now, now >= warm_until, lat, errors)
                i += 1
            return
        # open loop: on schedule, each request in its own task
        start = time.perf_counter() + random.Random(worker).random() / rate
        tasks = []
        i = 0
        while (due := start + i / rate) < until:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(
                _one(http, worker, i, due, due >= warm_until, lat, errors)))
            i += 1
        await asyncio.gather(*tasks)


async def _one(http: httpx.AsyncClient, worker: int, i: int, t0: float, record: bool,
               lat: dict[str, list[float]], errors: dict[str, int]) -> None:
    """One request; its latency counts from ``t0`` (the send time, or the scheduled
    one in the open loop)."""
    kind = "evaluate" if i % 2 == 0 else "snapshot"
    path, body = _request(kind, worker, i)
    try:
        ok = (await http.post(path, json=body)).status_code == 200
    except httpx.HTTPError:
        ok = False
    if record:
        lat[kind].append(time.perf_counter() - t0)
        errors[kind] += 0 if ok else 1


def _request(kind: str, worker: int, i: int) -> tuple[str, dict[str, Any]]:
    if kind == "evaluate":
        return "/worlds/bench/evaluate", {
            "run_id": f"c{worker}-{i}", "spec": SPEC,
            "metrics": {"sharpe": 1.0 + i / 1e6, "max_drawdown": -0.1, "n_trades": 50}}
    return "/risk-hub/snapshots", {
        "world_id": "bench", "as_of": datetime.now(UTC).isoformat(),
        "weights": {"A": 0.5, "B": 0.5}, "realized_returns": [0.001 * worker, 0.002, -0.001],
        "provenance": {"producer": "bench", "seq": i}}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _summary(lat: list[float], errors: int, seconds: float) -> dict[str, Any]:
    ms = np.asarray(lat) * 1000
    return {"requests": len(lat), "per_s": len(lat) / seconds, "errors": errors,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
            "max_ms": float(ms.max()) if len(ms) else None}


async def _load(url: str, token: str, clients: int, duration: float,
                rate: float | None) -> dict[str, Any]:
    lat: dict[str, list[float]] = {"evaluate": [], "snapshot": []}
    errors = {"evaluate": 0, "snapshot": 0}
    start = time.perf_counter()
    warm_until, until = start + 2.0, start + 2.0 + duration
    await asyncio.gather(*(_client(url, token, w, until, warm_until, lat, errors, rate)
                           for w in range(clients)))
    return {k: _summary(lat[k], errors[k], duration) for k in lat}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=None,
                        help="open loop: requests per second per client (default: "
                             "closed loop, no pause)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "kb.sqlite"
        token = _token(db)
        port = _port()
        server = _start(db, port)
        url = f"http://127.0.0.1:{port}"
        try:
            httpx.post(f"{url}/worlds", json={"world_id": "bench"},
                       headers={"Authorization": f"Bearer {token}"}).raise_for_status()
            server_cpu0, client_cpu0 = _cpu_s(server.pid), time.process_time()
            result = asyncio.run(_load(url, token, args.clients, args.duration, args.rate))
            result["server_cpu_s"] = _cpu_s(server.pid) - server_cpu0
            result["client_cpu_s"] = time.process_time() - client_cpu0
        finally:
            server.terminate()
            server.wait()
    report = {"clients": args.clients, "duration_s": args.duration,
              "load_model": "closed" if args.rate is None else f"open {args.rate:g}/s/client",
              "cpus": os.cpu_count(),
              "python": platform.python_version(), "machine": platform.machine(),
              "load_avg": os.getloadavg(), **result}
    for kind in ("evaluate", "snapshot"):
        r = result[kind]
        print(f"{kind:9s} {r['requests']:7d} req {r['per_s']:8.1f}/s  p50 {r['p50_ms']:7.1f} ms"
              f"  p99 {r['p99_ms']:7.1f} ms  max {r['max_ms']:7.1f} ms  errors {r['errors']}")
    total = sum(result[k]["requests"] for k in ("evaluate", "snapshot"))
    print(f"CPU seconds over the run (warm-up included): server {result['server_cpu_s']:.1f}, "
          f"client {result['client_cpu_s']:.1f}; server CPU per measured request "
          f"{1000 * result['server_cpu_s'] / max(total, 1):.2f} ms")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
