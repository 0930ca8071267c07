"""The loop on a PostgreSQL knowledge base (a real server, started by
``scripts/postgres.sh``; see tests/conftest.py), against the same loop on SQLite.

What the knowledge base decides in a run: which strategies an earlier run already
backtested (reused, not run again), how many trials the DSR deflates by, and that every
record of every iteration lands. The same configs must give the same RunSummaries on
both backends, and two loop processes writing one PostgreSQL database at once must lose
nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from conftest import config

from alphaloop.kb import KnowledgeBase
from alphaloop.orchestrator.config import RunSummary
from alphaloop.orchestrator.runner import Runner

OVER = {"budgets": {"max_iterations": 2, "max_backtests": 2000}}


def _two_runs(tmp: Path, source: Path, url: str) -> tuple[RunSummary, RunSummary]:
    """Run r1, then r2 (same data and seed, another run id) on the knowledge base ``url``."""
    first = Runner(config(tmp, source, run_id="r1", kb={"url": url}, **OVER)).run()
    second = Runner(config(tmp, source, run_id="r2", kb={"url": url}, **OVER)).run()
    return first, second


def test_the_loop_gives_the_same_summaries_on_sqlite_and_postgresql(
        fresh_pg_url: Callable[[], str], planted_path: Path, tmp_path: Path) -> None:
    lite = _two_runs(tmp_path / "sqlite", planted_path, f"sqlite:///{tmp_path / 'kb.sqlite'}")
    pg_url = fresh_pg_url()
    pg = _two_runs(tmp_path / "pg", planted_path, pg_url)
    for a, b in zip(lite, pg, strict=True):
        assert a.comparable() == b.comparable()
    first, second = pg
    # the second run found the first's backtests in PostgreSQL and ran none of them again
    assert first.stats.backtests > 0 and second.stats.reused > 0
    assert second.iterations[0].reused_A == first.iterations[0].tested_A
    assert second.iterations[0].tested_A == 0
    kb = KnowledgeBase(pg_url)
    for s in pg:
        assert kb.get_run(s.run_id) is not None
        stored = kb.get_run(s.run_id)
        assert stored is not None and stored.status == s.status
        assert len(kb.iterations(s.run_id)) == len(s.iterations)


def _write(tmp: Path, source: Path, run_id: str, seed: int, url: str) -> Path:
    cfg = config(tmp, source, run_id=run_id, seed=seed, kb={"url": url},
                 budgets={"max_iterations": 3, "max_backtests": 2000})
    path = tmp / f"{run_id}.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def test_two_loop_processes_sharing_one_postgresql_kb_lose_no_record(
        fresh_pg_url: Callable[[], str], planted_path: Path, tmp_path: Path) -> None:
    """Two ``alphaloop run`` processes at once, different runs on the same data, one
    database: each run's every iteration, backtest, score and transition is there, as its
    own files say."""
    url = fresh_pg_url()
    KnowledgeBase(url).close()  # the schema first: this test is about the runs' writes
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR",
                                                           str(Path.cwd() / ".numba_cache"))}
    procs = {run_id: subprocess.Popen(
        [sys.executable, "-m", "alphaloop", "run", "--json",
         str(_write(tmp_path, planted_path, run_id, seed, url))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for run_id, seed in (("pa", 7), ("pb", 8))}
    outs = {run_id: p.communicate(timeout=600) for run_id, p in procs.items()}
    for run_id, p in procs.items():
        assert p.returncode == 0, outs[run_id][1][-2000:]
    kb = KnowledgeBase(url)
    pa, pb = kb.get_run("pa"), kb.get_run("pb")
    assert pa is not None and pb is not None
    # they really ran at the same time: each started before the other finished
    assert pa.created_ns < pb.updated_ns and pb.created_ns < pa.updated_ns
    for run_id, (out, _) in outs.items():
        summary = RunSummary.model_validate(json.loads(out))
        root = tmp_path / "runs" / run_id
        stored = kb.get_run(run_id)
        assert stored is not None and stored.status == summary.status
        assert stored.summary == json.loads(out)
        assert list(kb.iterations(run_id)["iteration"]) == [
            it.iteration for it in summary.iterations]
        backtests = kb.backtests(run_id)
        engine_a = backtests[(backtests["engine"] == "A") & (backtests["window"] == "search")]
        assert len(engine_a) == sum(it.tested_A for it in summary.iterations) > 0
        assert not engine_a.duplicated("strategy_id").any()
        # every state-machine move of the run's event log is a transition in the KB
        events = [json.loads(line) for line in
                  (root / "pipeline_events.jsonl").read_text().splitlines()]
        moves = [e for e in events if e["event"] in ("RUN_STATE", "ITERATION_STATE")]
        transitions = kb.transitions(run_id)
        assert len(transitions) >= len(moves) > 0
