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
throughput, p50/p99/max latency, errors (any non-200 or transport error), and the CPU
the server (its worker processes included) and the client spent. The client runs on the
same machine as the server and shares its cores: by default it speaks HTTP/1.1 itself on
asyncio streams (``--client raw``, about 0.2 ms of CPU a request); ``--client httpx``
costs about as much CPU per request as the server. ``--workers N`` starts the server
with N processes (``alphaloop world serve --workers N``).

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
        [--rate R] [--workers 1] [--client raw|httpx]
        [--json benchmarks/results/bench_world.json]
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


def _start(db: Path, port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "alphaloop.world.server", "--db",
                             f"sqlite:///{db}", "--port", str(port), "--refs-root",
                             str(db.parent), "--workers", str(workers)])
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


class RawClient:
    """A keep-alive HTTP/1.1 client on asyncio streams, for JSON POSTs: what a load
    generator needs and no more (httpx spends about as much CPU per request as the
    server does, on the same two cores). One connection; concurrent requests take turns
    on it; a broken connection is an error for its request and is opened again."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float = 30.0) -> None:
        host_port = url.split("://", 1)[1]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.timeout = timeout
        self.lock = asyncio.Lock()
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.streams is not None:
            self.streams[1].close()

    async def post(self, path: str, json_body: Any) -> int:
        body = json.dumps(json_body).encode()
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.head}"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                   ).encode() + body
        async with self.lock:
            try:
                return await asyncio.wait_for(self._exchange(request), self.timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                if self.streams is not None:
                    self.streams[1].close()
                self.streams = None
                raise

    async def _exchange(self, request: bytes) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(int(line.split(":", 1)[1]) for line in lines[1:]
                      if line.lower().startswith("content-length:"))
        await reader.readexactly(length)
        return status


async def _client(url: str, token: str, worker: int, until: float, warm_until: float,
                  lat: dict[str, list[float]], errors: dict[str, int],
                  rate: float | None, raw: bool = True) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    client: Any = (RawClient(url, headers) if raw else
                   httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits))
    async with client as http:
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


async def _one(http: Any, worker: int, i: int, t0: float, record: bool,
               lat: dict[str, list[float]], errors: dict[str, int]) -> None:
    """One request; its latency counts from ``t0`` (the send time, or the scheduled
    one in the open loop)."""
    kind = "evaluate" if i % 2 == 0 else "snapshot"
    path, body = _request(kind, worker, i)
    try:
        if isinstance(http, RawClient):
            ok = await http.post(path, body) == 200
        else:
            ok = (await http.post(path, json=body)).status_code == 200
    except (TimeoutError, httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError):
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
    """User + system CPU seconds so far of a process and its children (the worker
    processes of ``--workers``), from Linux /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # itself, or a child
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _summary(lat: list[float], errors: int, seconds: float) -> dict[str, Any]:
    ms = np.asarray(lat) * 1000
    return {"requests": len(lat), "per_s": len(lat) / seconds, "errors": errors,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
            "max_ms": float(ms.max()) if len(ms) else None}


async def _load(url: str, token: str, clients: int, duration: float,
                rate: float | None, raw: bool = True) -> dict[str, Any]:
    lat: dict[str, list[float]] = {"evaluate": [], "snapshot": []}
    errors = {"evaluate": 0, "snapshot": 0}
    start = time.perf_counter()
    warm_until, until = start + 2.0, start + 2.0 + duration
    await asyncio.gather(*(_client(url, token, w, until, warm_until, lat, errors, rate, raw)
                           for w in range(clients)))
    return {k: _summary(lat[k], errors[k], duration) for k in lat}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=None,
                        help="open loop: requests per second per client (default: "
                             "closed loop, no pause)")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="the load generator: raw keep-alive HTTP/1.1 on asyncio "
                             "streams (default) or httpx")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes (alphaloop world serve --workers)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "kb.sqlite"
        token = _token(db)
        port = _port()
        server = _start(db, port, args.workers)
        url = f"http://127.0.0.1:{port}"
        try:
            httpx.post(f"{url}/worlds", json={"world_id": "bench"},
                       headers={"Authorization": f"Bearer {token}"}).raise_for_status()
            server_cpu0, client_cpu0 = _cpu_s(server.pid), time.process_time()
            result = asyncio.run(_load(url, token, args.clients, args.duration, args.rate,
                                       args.client == "raw"))
            result["server_cpu_s"] = _cpu_s(server.pid) - server_cpu0
            result["client_cpu_s"] = time.process_time() - client_cpu0
        finally:
            server.terminate()
            server.wait()
    report = {"clients": args.clients, "duration_s": args.duration,
              "workers": args.workers, "client": args.client,
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
