"""Two loop processes on one knowledge base (different runs, same data) backtest no
strategy twice and lose nothing; on SQLite and on a real PostgreSQL server.

Each process runs the ``alphaloop`` CLI with the engines' entry points wrapped
(``_count_engines.py``), so the test sees what each process really simulated, apart
from the claims and records under test. Runs of the same config generate the same
candidates: without claims both would backtest all of them. With claims each
(engine, data, strategy) is simulated by one process only, together they simulate
exactly what a run alone simulates, and each ends with the RunSummary of a run alone
(a result read from the other run's claim is the number it would have computed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import config

from alphaloop.kb import KnowledgeBase
from alphaloop.orchestrator.config import RunSummary
from alphaloop.orchestrator.runner import Runner

HERE = Path(__file__).parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1",
       "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(Path.cwd() / ".numba_cache"))}
OVER: dict[str, Any] = {"budgets": {"max_iterations": 3, "max_backtests": 2000}}


def _spawn(tmp: Path, source: Path, run_id: str, url: str, go: Path | None = None
           ) -> tuple[subprocess.Popen[str], Path]:
    """The run in its own process; with ``go``, it starts when that file appears."""
    cfg = config(tmp, source, run_id=run_id, kb={"url": url}, **OVER)
    path = tmp / f"{run_id}.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    log = tmp / f"{run_id}.engines.jsonl"
    env = ENV if go is None else {**ENV, "COUNT_ENGINES_GO": str(go)}
    proc = subprocess.Popen([sys.executable, str(HERE / "_count_engines.py"), str(log),
                             "run", "--json", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc, log


def _together(tmp: Path, source: Path, url: str, run_ids: tuple[str, ...]
              ) -> dict[str, tuple[subprocess.Popen[str], Path]]:
    """The runs in processes that start at one moment, their imports done."""
    go = tmp / "go"
    started = {rid: _spawn(tmp, source, rid, url, go) for rid in run_ids}
    deadline = time.monotonic() + 300
    while not all(Path(f"{log}.ready").exists() for _, log in started.values()):
        assert time.monotonic() < deadline and all(p.poll() is None for p, _ in
                                                   started.values()), "a run did not start"
        time.sleep(0.01)
    go.touch()
    return started


def _finish(proc: subprocess.Popen[str]) -> RunSummary:
    out, errs = proc.communicate(timeout=900)
    assert proc.returncode == 0, errs[-3000:]
    return RunSummary.model_validate(json.loads(out))


def _simulated(log: Path) -> list[tuple[str, str, str]]:
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [(r["engine"], r["data_ref"], r["strategy_id"]) for r in rows]


def _pairs(calls: list[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    return set(calls)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_loop_processes_on_one_kb_backtest_nothing_twice_and_lose_nothing(
        backend: str, request: pytest.FixtureRequest, planted_path: Path,
        tmp_path: Path) -> None:
    if backend == "postgresql":
        make: Callable[[], str] = request.getfixturevalue("fresh_pg_url")
        url = make()
    else:
        url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    KnowledgeBase(url).close()  # the schema first: this test is about the runs
    alone_dir = tmp_path / "alone"
    alone_dir.mkdir()
    proc, alone_log = _spawn(alone_dir, planted_path, "alone",
                             f"sqlite:///{alone_dir / 'kb.sqlite'}")
    alone = _finish(proc)
    assert alone.stats.backtests > 0 and sum(it.promoted_to_B for it in alone.iterations) > 0
    assert alone.best_strategies  # engine A, engine B, validation and holdout all ran

    started = _together(tmp_path, planted_path, url, ("pa", "pb"))
    got = {rid: _finish(p) for rid, (p, _) in started.items()}
    calls = {rid: _simulated(log) for rid, (_, log) in started.items()}

    kb = KnowledgeBase(url)
    pa, pb = kb.get_run("pa"), kb.get_run("pb")
    assert pa is not None and pb is not None
    # they ran at the same time: neither had finished when the other was created
    assert pa.finished_ns is not None and pb.finished_ns is not None
    assert pa.created_ns < pb.finished_ns and pb.created_ns < pa.finished_ns
    # and neither had stored an iteration (an earlier trial of the other) by then
    assert (kb.iterations("pa")["stored_ns"] > pb.created_ns).all()
    assert (kb.iterations("pb")["stored_ns"] > pa.created_ns).all()
    # each ends as a run alone on the database would
    for rid, summary in got.items():
        assert summary.comparable() == alone.comparable(), rid
    # no (engine, data, strategy) simulated by both; together exactly what one run does
    assert not _pairs(calls["pa"]) & _pairs(calls["pb"])
    assert _pairs(calls["pa"]) | _pairs(calls["pb"]) == _pairs(_simulated(alone_log))
    # engine A never ran twice on one strategy and window; engine B: once plus its
    # determinism rerun
    both = calls["pa"] + calls["pb"]
    a_calls = [c for c in both if c[0] == "A"]
    assert len(a_calls) == len(set(a_calls))
    b_calls = [c for c in both if c[0] == "B"]
    assert len(b_calls) == 2 * len(set(b_calls)) > 0
    # no record lost: every run's every iteration and engine A backtest is in the KB
    for rid, summary in got.items():
        assert list(kb.iterations(rid)["iteration"]) == [1, 2, 3]
        bt = kb.backtests(rid)
        engine_a = bt[(bt["engine"] == "A") & (bt["window"] == "search")]
        assert len(engine_a) == sum(it.tested_A for it in summary.iterations)
        assert not engine_a.duplicated("strategy_id").any()
        assert kb.get_run(rid).summary == summary.model_dump(mode="json")  # type: ignore[union-attr]


def test_a_claim_whose_owner_died_is_taken_over(make_config: Callable[..., Any],
                                                planted_path: Path, tmp_path: Path) -> None:
    """A run that claimed the first iteration's candidates and died (its lease runs out
    three seconds from now) holds nobody up for good: the next run waits for the lease,
    takes the work over, and ends as a run alone would."""
    alone = Runner(make_config(planted_path, run_id="alone", **OVER,
                               kb={"url": f"sqlite:///{tmp_path / 'alone.sqlite'}"})).run()
    cfg = make_config(planted_path, run_id="next", **OVER)
    first_ids = list(KnowledgeBase(f"sqlite:///{tmp_path / 'alone.sqlite'}")
                     .backtests("alone").query("iteration == 1 and engine == 'A' "
                                               "and window == 'search'")["strategy_id"])
    shown: list[dict[str, Any]] = []
    runner = Runner(cfg, progress=shown.append)
    kb = KnowledgeBase(cfg.kb.url)
    key = runner.search_key
    kb.claim(key, first_ids, "ghost", lease_until_ns=time.time_ns() + 3 * 10**9,
             now_ns=time.time_ns())
    summary = runner.run()
    assert summary.comparable() == alone.comparable()
    # the live view said why S50 stood still
    assert [e["stage"] for e in shown if "waiting" in str(e.get("stage"))] == [
        f"S50, waiting for {len(first_ids)} results another run claimed (a dead run's "
        f"claims lapse within {cfg.kb.claim_lease_s:g} s)"]
    rows = kb.claims(key, first_ids)
    assert {r.run_id for r in rows.values()} == {"next"}
    assert {(r.status, r.takeovers) for r in rows.values()} == {("done", 1)}



def test_a_run_told_it_is_alone_claims_nothing_and_ends_the_same(
        make_config: Callable[..., Any], planted_path: Path, tmp_path: Path) -> None:
    """``kb.share_work: false``: no claim is written, the numbers are the same."""
    shared = Runner(make_config(planted_path, run_id="shared", **OVER,
                                kb={"url": f"sqlite:///{tmp_path / 'a.sqlite'}"})).run()
    cfg = make_config(planted_path, run_id="alone", **OVER,
                      kb={"url": f"sqlite:///{tmp_path / 'b.sqlite'}", "share_work": False})
    alone = Runner(cfg).run()
    assert alone.comparable() == shared.comparable()
    assert len(KnowledgeBase(cfg.kb.url).claims_of("alone")) == 0
    assert len(KnowledgeBase(f"sqlite:///{tmp_path / 'a.sqlite'}").claims_of("shared")) > 0
