"""The Ray executor on a real two-node Ray cluster on loopback: a head node
(``ray start --head``) and a second node (``ray start --address=…``), each one CPU and a
small object store, started and stopped here. The loop's RunSummary must equal the local
executor's, also when the second node's raylet is killed in the middle of an iteration.

Processes are ended by their own ids only: each ``ray start --block`` owns the processes
of its node and stops them when it gets SIGTERM (or when its raylet dies).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")  # `make test` installs the extra; a plain `pip install .` has not

from conftest import config

from alphaloop.orchestrator import ray_executor
from alphaloop.orchestrator.config import ConfigError, RunConfig, RunSummary
from alphaloop.orchestrator.runner import Runner

RAY = str(Path(sys.executable).with_name("ray"))
NODE = ["--num-cpus=1", "--object-store-memory=80000000", "--node-ip-address=127.0.0.1",
        "--disable-usage-stats", "--block"]
CLUSTER_ENV = {
    # a dead node is noticed in about a second, not after the default 30 s
    "RAY_health_check_period_ms": "300", "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "0",
    # every task result goes to the object store of the node that made it (none is sent
    # inline to the caller): a result on a node that dies is lost, not already delivered
    "RAY_max_direct_call_object_size": "1024",
    # a token a user's own Ray left in ~/.ray must not turn this loopback cluster's
    # token authentication on (its second node then fails to join)
    "RAY_AUTH_MODE": "disabled"}
OVER = {"generation": {"families": ["sma_cross", "momentum"], "sampler": "sobol",
                       "candidates_per_iteration": 96},
        "budgets": {"max_iterations": 3, "max_backtests": 2000}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _children(pid: int) -> list[tuple[int, str]]:
    """Direct children of ``pid`` with their command lines (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append((int(entry.name),
                            (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, ValueError, IndexError):
            continue
    return out


@dataclass
class Cluster:
    """A head node; worker nodes come and go with :meth:`add_node`."""

    root: Path
    port: int = field(default_factory=_free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **CLUSTER_ENV,
               "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR",
                                                 str(Path.cwd() / ".numba_cache"))}
        log = (self.root / f"{name}.log").open("wb")
        proc = subprocess.Popen([RAY, "start", *args, *NODE], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=self.root)
        self.procs.append(proc)
        return proc

    def start_head(self) -> None:
        self._start(["--head", f"--port={self.port}", "--include-dashboard=false",
                     f"--temp-dir={self.root / 'ray'}"], "head")
        self._wait_for_nodes(1)

    def add_node(self) -> subprocess.Popen[bytes]:
        alive = self.alive_nodes()
        proc = self._start([f"--address={self.address}"], f"node{len(self.procs)}")
        self._wait_for_nodes(alive + 1)
        return proc

    def alive_nodes(self) -> int:
        code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
                "print(sum(n['Alive'] for n in ray.nodes()))")
        done = subprocess.run([sys.executable, "-c", code, self.address], capture_output=True,
                              text=True, timeout=120, check=False)
        return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0

    def _wait_for_nodes(self, n: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs[-1:]):
                raise RuntimeError(f"ray start exited: see {self.root}")
            if self.alive_nodes() >= n:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the cluster did not reach {n} nodes: see {self.root}")

    def raylet_of(self, proc: subprocess.Popen[bytes]) -> int:
        raylets = [pid for pid, cmd in _children(proc.pid) if "raylet/raylet" in cmd]
        assert len(raylets) == 1, _children(proc.pid)
        return raylets[0]

    def stop(self) -> None:
        for proc in reversed(self.procs):  # worker nodes first, the head last
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # a short folder: Ray's socket paths under it must stay within AF_UNIX's 107 bytes,
    # which pytest's own temporary folders exceed under xdist (…/popen-gw1/ray0/…)
    root = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    c = Cluster(root)
    try:
        c.start_head()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def second_node(cluster: Cluster) -> Iterator[subprocess.Popen[bytes]]:
    """One more node for this test: the cluster has two live nodes while it runs."""
    proc = cluster.add_node()
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _locations(ref: Any, wait_s: float = 10.0) -> list[str]:
    """The nodes holding a finished task's result. The owner learns them a moment after
    ``ray.wait`` says the task is done (the node reports asynchronously): wait for it."""
    import ray

    deadline = time.monotonic() + wait_s
    while True:
        where: list[str] = ray.experimental.get_object_locations([ref])[ref]["node_ids"]
        if where or time.monotonic() > deadline:
            return where
        time.sleep(0.02)


def _run(cfg: RunConfig, **kwargs: Any) -> tuple[RunSummary, Runner]:
    runner = Runner(cfg, **kwargs)
    return runner.run(), runner


@pytest.fixture(scope="module")
def local_summary(tmp_path_factory: pytest.TempPathFactory, planted_path: Path) -> RunSummary:
    """The reference: the same loop with the local executor, one process."""
    tmp = tmp_path_factory.mktemp("local")
    return _run(config(tmp, planted_path, **OVER))[0]


def test_a_loop_on_a_two_node_cluster_gives_the_local_summary(
        cluster: Cluster, second_node: subprocess.Popen[bytes], local_summary: RunSummary,
        planted_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from alphaloop.data.bars import Bars

    puts: list[str] = []  # what went to the object store
    waits: list[int] = []  # how many tasks were in flight at each ray.wait
    real_put, real_wait = ray.put, ray.wait
    monkeypatch.setattr(ray, "put", lambda v, **kw: (puts.append(type(v).__name__),
                                                     real_put(v, **kw))[1])
    monkeypatch.setattr(ray, "wait", lambda refs, **kw: (waits.append(len(refs)),
                                                         real_wait(refs, **kw))[1])
    cfg = config(tmp_path, planted_path, **OVER,
                 executor={"kind": "ray", "address": cluster.address})
    summary, runner = _run(cfg)
    # the panel went to the object store once per iteration, and nothing else did
    assert puts == [Bars.__name__] * len(summary.iterations)
    assert max(waits) == 4  # 2 tasks in flight per worker, 2 workers: the cap was reached
    assert summary.comparable() == local_summary.comparable()
    assert local_summary.stats.backtests > 100  # several chunks per iteration
    executor = runner.executor
    assert isinstance(executor, ray_executor.RayExecutor)
    assert executor.workers == 2  # the cluster's CPUs: one per node
    assert len(executor.chunks_by_node) == 2, executor.describe()  # both nodes worked
    assert "2 node(s)" in executor.describe()


def test_killing_the_second_nodes_raylet_mid_iteration_changes_nothing(
        cluster: Cluster, second_node: subprocess.Popen[bytes], local_summary: RunSummary,
        planted_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In engine A stage of iteration 2 (or 3), once a finished chunk's result is waiting in the
    second node's object store (not yet fetched, further chunks in flight), that node's
    raylet is SIGKILLed: the result is lost and Ray must run the chunk again elsewhere."""
    import ray

    raylet = cluster.raylet_of(second_node)
    stage: dict[str, Any] = {}
    killed: list[int] = []  # the iteration it happened in
    real_get: Callable[..., Any] = ray_executor.RayExecutor._get

    def kill_then_get(self: ray_executor.RayExecutor, ref: Any) -> Any:
        if not killed and stage.get("iteration", 0) >= 2 and stage.get("stage") == "S50":
            head = ray.get_runtime_context().get_node_id()  # the driver runs on the head
            where = _locations(ref)
            if where and head not in where:
                os.kill(raylet, signal.SIGKILL)
                killed.append(stage["iteration"])
        return real_get(self, ref)

    monkeypatch.setattr(ray_executor.RayExecutor, "_get", kill_then_get)
    cfg = config(tmp_path, planted_path, **OVER,
                 executor={"kind": "ray", "address": cluster.address, "workers": 2})
    # the runner's stage hook says which stage starts (it injects no fault here)
    summary, runner = _run(cfg, fault=lambda i, s, _a: stage.update(iteration=i, stage=s))
    # iteration 2 or, where the head happened to run all of its chunks, iteration 3
    assert len(killed) == 1 and killed[0] >= 2, \
        f"the raylet was never killed: no chunk of iterations 2-3 ran there; " \
        f"{runner.executor.describe()}"
    second_node.wait(30)  # its `ray start --block` saw the raylet die and ended the node
    assert summary.comparable() == local_summary.comparable()
    assert cluster.alive_nodes() == 1
    # Ray's own retries absorbed the loss: the stage itself ran once in every iteration
    events = [json.loads(line) for line in (runner.root / "pipeline_events.jsonl")
              .read_text().splitlines()]
    s50 = [e["attempt"] for e in events if e["event"] == "STAGE_STARTED"
           and e["stage_id"] == "S50"]
    assert s50 == [1, 1, 1]


@pytest.mark.parametrize("address", ["", "nowhere", "ray://host", "host:port"])
def test_a_bad_address_is_refused_in_one_line(address: str) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"executor": {"kind": "ray", "address": address}})
    assert "executor.address" in str(err.value) and "\n" not in str(err.value)


def test_an_address_is_for_ray_only() -> None:
    with pytest.raises(ConfigError, match="kind 'ray' only"):
        RunConfig.from_dict({"executor": {"kind": "local", "address": "auto"}})


def test_an_unreachable_cluster_is_a_transient_executor_error(tmp_path: Path,
                                                              planted_path: Path) -> None:
    from alphaloop.data.bars import Bars
    from alphaloop.errors import ErrorClass
    from alphaloop.orchestrator.executors import make_executor

    bars = Bars.from_long(__import__("pandas").read_parquet(planted_path))
    with pytest.raises(ray_executor.ExecutorError) as err:
        make_executor("ray", 1, bars, address=f"127.0.0.1:{_free_port()}")
    assert err.value.code == "EXECUTOR_UNAVAILABLE"
    assert err.value.error_class is ErrorClass.TRANSIENT


def test_alphaloop_run_says_where_the_work_ran(cluster: Cluster,
                                               second_node: subprocess.Popen[bytes],
                                               planted_path: Path, tmp_path: Path) -> None:
    import yaml

    cfg = config(tmp_path, planted_path, run_id="cli", budgets={"max_iterations": 1},
                 generation=OVER["generation"],  # 96 candidates: 6 chunks for 2 nodes
                 executor={"kind": "ray", "address": cluster.address})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    done = subprocess.run([sys.executable, "-m", "alphaloop", "run", "--json", str(path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert RunSummary.model_validate_json(done.stdout).stats.iterations == 1
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("work ran on")]
    assert len(line) == 1, done.stderr[-2000:]
    import re

    assert re.search(rf"ray \({cluster.address}\): \d+ chunks on 2 node\(s\) \[.+\], "
                     r"\d+ worker processes, up to 2 at once$", line[0]), line
