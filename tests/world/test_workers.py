"""Several server processes on one SQLite file (``alphaloop world serve --workers N``):
their writers queue on one file lock (``world.db.WriterLock``), so every acknowledged
write is stored once, revisions of one run count up without a gap, and nobody gets a
"database is locked"."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from conftest import SMA, Server, make_tokens

from alphaloop.kb import dispose_engines
from alphaloop.world.db import WriterLock

HOLD = """
import sys, time
from alphaloop.world.db import WriterLock
with WriterLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(1.0)
"""


def test_the_writer_lock_excludes_another_process(tmp_path: Path) -> None:
    db = str(tmp_path / "kb.sqlite")
    other = subprocess.Popen([sys.executable, "-c", HOLD, db], stdout=subprocess.PIPE,
                             text=True)
    assert other.stdout is not None and other.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    with WriterLock(db):  # waits for the other process to let go (about 1 s)
        waited = time.monotonic() - t0
    other.wait(10)
    assert waited > 0.5
    t0 = time.monotonic()
    with WriterLock(db):  # free now: no wait
        assert time.monotonic() - t0 < 0.5


def _children(pid: int) -> int:
    return len(_children_pids(pid))


def test_two_server_processes_store_every_write_once(tmp_path: Path) -> None:
    (tmp_path / "refs").mkdir()
    server = Server(tmp_path / "kb.sqlite", tmp_path / "refs", workers=2)
    made = make_tokens(server.db_url)
    dispose_engines()
    server.start()
    try:
        assert server.proc is not None and _children(server.proc.pid) >= 2
        auth = {"Authorization": f"Bearer {made['operator']}"}
        httpx.post(f"{server.url}/worlds", json={"world_id": "w"},
                   headers=auth).raise_for_status()

        def post(job: tuple[int, int]) -> int:
            client, i = job
            body = {"run_id": f"r{client}-{i % 4}", "spec": SMA,
                    "metrics": {"sharpe": 1.0 + i, "max_drawdown": -0.1, "n_trades": 40}}
            with httpx.Client(base_url=server.url, headers=auth, timeout=30) as http:
                return http.post("/worlds/w/evaluate", json=body).status_code

        jobs = [(c, i) for c in range(8) for i in range(12)]  # 8 clients, 4 runs each
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(post, jobs))
        assert codes == [200] * len(jobs)
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as http:
            for c in range(8):
                for r in range(4):
                    run = http.get(f"/worlds/w/runs/r{c}-{r}").json()
                    # three posts per run, each with other metrics: revisions 1, 2, 3
                    assert [v["revision"] for v in run["revisions"]] == [1, 2, 3]
            audit = http.get("/worlds/w/audit", params={"limit": 1000}).json()
        assert sum(a["action"].startswith("evaluation.") for a in audit) == len(jobs)
    finally:
        server.stop()


def _children_pids(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid):
            out.append(int(stat.parent.name))
    return out


def test_workers_end_with_a_killed_supervisor_and_the_server_restarts(
        tmp_path: Path) -> None:
    """A black-box report: after SIGKILL of `world serve --workers 2` its workers went on
    serving (re-parented to init), and a restart failed: address already in use."""
    (tmp_path / "refs").mkdir()
    server = Server(tmp_path / "kb.sqlite", tmp_path / "refs", workers=2)
    make_tokens(server.db_url)
    dispose_engines()
    server.start()
    assert server.proc is not None
    workers = _children_pids(server.proc.pid)
    assert len(workers) >= 2
    server.kill()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()
             and (Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")]
    assert alive == [], f"workers {alive} outlived their supervisor"
    again = Server(tmp_path / "kb.sqlite", tmp_path / "refs", port=server.port, workers=2)
    again.start()  # the same port: free again
    try:
        assert httpx.get(f"{again.url}/health", timeout=5).status_code == 200
    finally:
        again.stop()
