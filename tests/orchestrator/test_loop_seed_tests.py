"""The tests seed 003 §11 (MOD-400) and seed 004 §9 (TEST-620 … TEST-624) ask for, each
named after its seed id, with the faults injected for real: a stage that raises a
TRANSIENT error twice then succeeds, a PERMANENT error, a lookahead operator registered
by the test, a database really locked by another connection."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import N_BARS

from alphaloop.errors import AlphaloopError, ErrorClass, SpecError
from alphaloop.kb.store import KnowledgeBase
from alphaloop.orchestrator import stages as st
from alphaloop.orchestrator.config import ConfigError, Promotion, Retry, RunConfig
from alphaloop.orchestrator.events import EventLog
from alphaloop.orchestrator.policies import EarlyStop, RetryPolicy
from alphaloop.orchestrator.runner import Runner, runs_root
from alphaloop.orchestrator.states import (
    ITERATION_TRANSITIONS,
    IterationState,
    PipelineError,
    RunState,
    iteration_machine,
    run_machine,
)

Make = Callable[..., RunConfig]


def events_of(cfg: RunConfig) -> list[dict[str, Any]]:
    return EventLog(runs_root(cfg.out_dir) / cfg.run_id, cfg.run_id).read()


# ------------------------------------------------------------ MOD-400 §11.1
def test_MOD400_11_1_states_move_only_in_the_defined_order(make_config: Make,
                                                           noise_path: Path) -> None:
    m = iteration_machine()
    with pytest.raises(PipelineError, match="ITER_CREATED -> BACKTEST_A") as exc:
        m.move(IterationState.BACKTEST_A)  # generation cannot be skipped
    assert exc.value.code == "PIPE_POLICY_VIOLATION"
    r = run_machine()
    with pytest.raises(PipelineError, match="RUN_CREATED -> DONE_SUCCESS"):
        r.move(RunState.DONE_SUCCESS)  # a run cannot finish before it runs
    cfg = make_config(noise_path)
    Runner(cfg).run()
    kb = KnowledgeBase(cfg.kb.url)
    moves = kb.transitions(cfg.run_id)
    its = moves[moves["entity"] == "iteration"]
    assert len(its) > 0
    for _, group in its.groupby("iteration"):
        path = list(group.sort_values("ts")["to_state"])
        prev = "ITER_CREATED"
        for state in path:  # every recorded move is an edge of the table
            assert IterationState(state) in ITERATION_TRANSITIONS[IterationState(prev)]
            prev = state
        assert path[0] == "GENERATION" and path[-1] == "ITER_DONE"
        assert path[-2:] == ["KB_PERSIST", "ITER_DONE"]
    runs = moves[moves["entity"] == "run"]["to_state"].tolist()
    assert runs[0] == "RUNNING" and runs[-1].startswith("DONE_")


# ------------------------------------------------------------ TEST-620 / MOD-400 §11.2
def test_TEST_620_transient_error_is_retried_with_backoff(make_config: Make,
                                                          noise_path: Path) -> None:
    """S50 raises a TRANSIENT error twice, then succeeds: two retries, each after the
    seeded backoff, both recorded; the run ends as if nothing happened."""
    calls: list[tuple[int, str, int]] = []

    def fault(i: int, stage: str, attempt: int) -> None:
        if stage == "S50" and i == 1 and attempt <= 2:
            calls.append((i, stage, attempt))
            raise AlphaloopError("disk hiccup", code="DATA_LOAD_FAIL",
                                 error_class=ErrorClass.TRANSIENT)

    slept: list[float] = []
    retry = {"stage_max_attempts": {"S50": 3}, "base_backoff_sec": 1.0}
    cfg = make_config(noise_path, policies={"retry": retry})
    summary = Runner(cfg, fault=fault, sleep=slept.append).run()
    assert calls == [(1, "S50", 1), (1, "S50", 2)]
    policy = RetryPolicy(Retry(**retry), cfg.seed)
    assert slept == [policy.backoff(1, "S50", 1), policy.backoff(1, "S50", 2)]
    assert 1.0 <= slept[0] < 2.0 and 2.0 <= slept[1] < 4.0  # base·2^k·[1, 2)
    ev = [e for e in events_of(cfg) if e["stage_id"] == "S50" and e["iteration_id"] == 1]
    kinds = [(e["event"], e["attempt"]) for e in ev
             if e["event"] not in ("ITER_RETRY_SCHEDULED", "WORK_SHARED")]
    assert kinds == [("STAGE_STARTED", 1), ("STAGE_RETRY_SCHEDULED", 1),
                     ("STAGE_STARTED", 2), ("STAGE_RETRY_SCHEDULED", 2),
                     ("STAGE_STARTED", 3), ("STAGE_COMPLETED", 3), ("ITER_RETRY_SUCCESS", 3)]
    assert all(e["max_attempts"] == 3 for e in ev if e["event"].startswith("STAGE"))
    # the one attempt that ran engine A computed every candidate itself (alone on its KB)
    shared = [e for e in ev if e["event"] == "WORK_SHARED"]
    assert [(e["computed"], e["taken"]) for e in shared] == [
        (summary.iterations[0].tested_A, 0)]
    clean = make_config(noise_path, run_id="r2", kb={"url": cfg.kb.url.replace(
        "kb.sqlite", "kb2.sqlite")})
    assert Runner(clean).run().comparable() == summary.comparable()
    stage_runs = KnowledgeBase(cfg.kb.url).stage_runs(cfg.run_id)
    s50 = stage_runs[(stage_runs["stage_id"] == "S50") & (stage_runs["iteration"] == 1)]
    assert sorted(zip(s50["attempt"], s50["status"], strict=True)) == [
        (1, "RETRYING"), (2, "RETRYING"), (3, "SUCCESS")]


def test_MOD400_11_2_a_transient_error_past_its_budget_pauses_the_run(
        make_config: Make, noise_path: Path) -> None:
    def fault(i: int, stage: str, attempt: int) -> None:
        if stage == "S50":
            raise AlphaloopError("disk gone", code="DATA_LOAD_FAIL",
                                 error_class=ErrorClass.TRANSIENT)

    cfg = make_config(noise_path)
    summary = Runner(cfg, fault=fault, sleep=lambda s: None).run()
    assert summary.status == "PAUSED"
    assert summary.stop_reason.startswith("PIPE_RETRY_BUDGET_EXCEEDED")
    attempts = [e["attempt"] for e in events_of(cfg) if e["event"] == "STAGE_STARTED"
                and e["stage_id"] == "S50"]
    assert attempts == [1, 2]  # S50's budget: 2 attempts (seed 004 §4.1)


def test_an_interrupt_inside_a_stage_stops_it_in_the_log_and_pauses_the_run(
        make_config: Make, noise_path: Path) -> None:
    """Ctrl-C (KeyboardInterrupt) in iteration 2's engine A stage: STAGE_STOPPED closes
    that stage (seed 004 §3.1), the run is PAUSED with its stop reason in the final
    RUN_STATE event, and a resume runs the stage again from its first attempt."""
    def fault(i: int, stage: str, attempt: int) -> None:
        if (i, stage) == (2, "S50"):
            raise KeyboardInterrupt

    cfg = make_config(noise_path)
    summary = Runner(cfg, fault=fault).run()
    assert (summary.status, summary.stop_reason) == ("PAUSED", "interrupted")
    events = events_of(cfg)
    s50 = [(e["event"], e["stop_reason"]) for e in events
           if e["stage_id"] == "S50" and e["iteration_id"] == 2]
    assert s50 == [("STAGE_STARTED", None), ("STAGE_STOPPED", "interrupted")]
    runs = [(e["status_after"], e["stop_reason"]) for e in events if e["event"] == "RUN_STATE"]
    assert runs[-1] == ("PAUSED", "interrupted")
    done = Runner.resume(cfg.run_id, out_dir=cfg.out_dir)
    assert done.status != "PAUSED"
    again = [(e["event"], e["attempt"]) for e in events_of(cfg) if e["stage_id"] == "S50"
             and e["iteration_id"] == 2 and e["event"].startswith("STAGE_")]
    assert again[2:] == [("STAGE_STARTED", 1), ("STAGE_COMPLETED", 1)]
    final = [e for e in events_of(cfg) if e["event"] == "RUN_STATE"][-1]
    assert (final["status_after"], final["stop_reason"]) == (done.status, done.stop_reason)


class _Killed(BaseException):
    """The process dies here (SIGKILL): nothing of the runner's handles it."""


def _stop_after_storing(monkeypatch: pytest.MonkeyPatch, at: tuple[int, str],
                        exc: type[BaseException]) -> None:
    """Raise ``exc`` once, right after the stage ``at`` stored its output and marker
    (before the runner moves it to SUCCESS and writes its KB row)."""
    from alphaloop.orchestrator.artifacts import StageStore

    save, fired = StageStore.save, []

    def dying(self: StageStore, iteration: int, stage_id: str, *a: Any) -> str:
        ref = save(self, iteration, stage_id, *a)
        if (iteration, stage_id) == at and not fired:
            fired.append(1)
            raise exc
        return ref

    monkeypatch.setattr(StageStore, "save", dying)


def _stage_rows(cfg: RunConfig) -> list[tuple[int, str, int, str]]:
    rows = KnowledgeBase(cfg.kb.url).stage_runs(cfg.run_id)
    return sorted(zip(rows["iteration"], rows["stage_id"], rows["attempt"], rows["status"],
                      strict=True))


def test_a_stage_stored_just_before_the_process_died_gets_its_row_on_resume(
        make_config: Make, noise_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between storing S30's output and recording it: the resume reuses the
    output and fills in its stage_runs row, so the KB holds the rows of an
    uninterrupted run (a black-box report found the row lost for good)."""
    cfg = make_config(noise_path, run_id="dies")
    ref = make_config(noise_path, run_id="lives", kb={"url": cfg.kb.url.replace(
        "kb.sqlite", "kb_ref.sqlite")})
    expected = Runner(ref).run()
    with monkeypatch.context() as m:
        _stop_after_storing(m, (1, "S30"), _Killed)
        with pytest.raises(_Killed):
            Runner(cfg).run()
    assert (1, "S30", 1, "SUCCESS") not in _stage_rows(cfg)
    done = Runner.resume(cfg.run_id, out_dir=cfg.out_dir)
    assert done.comparable() == expected.comparable()
    assert _stage_rows(cfg) == _stage_rows(ref)


def test_a_resume_writes_again_the_iterations_a_lost_knowledge_base_held(
        make_config: Make, noise_path: Path, tmp_path: Path) -> None:
    """A black-box report: a run killed in iteration 2 whose knowledge base was then
    moved away (as KB_CORRUPT advises) or lost its -wal file was resumed with success,
    while the KB lacked iteration 1's records for good. The resume writes them again."""
    from sqlalchemy.engine import make_url

    from alphaloop.kb import dispose_engines

    cfg = make_config(noise_path, run_id="dies")
    ref = make_config(noise_path, run_id="lives", kb={"url": cfg.kb.url.replace(
        "kb.sqlite", "kb_ref.sqlite")})
    expected = Runner(ref).run()

    def fault(i: int, stage: str, attempt: int) -> None:
        if (i, stage) == (2, "S50"):
            raise _Killed

    with pytest.raises(_Killed):
        Runner(cfg, fault=fault).run()
    dispose_engines()  # the dead process's connections went with it
    kb_file = Path(str(make_url(cfg.kb.url).database))
    for p in kb_file.parent.glob(kb_file.name + "*"):
        p.rename(tmp_path / f"moved_{p.name}")
    done = Runner.resume(cfg.run_id, out_dir=cfg.out_dir)
    assert done.comparable() == expected.comparable()
    got, want = KnowledgeBase(cfg.kb.url), KnowledgeBase(ref.kb.url)
    assert list(got.iterations("dies")["iteration"]) == list(want.iterations("lives")["iteration"])
    for table in ("backtests", "scores", "failures"):
        assert len(getattr(got, table)("dies")) == len(getattr(want, table)("lives")), table


def test_an_interrupt_after_a_stage_stored_its_output_completes_that_stage(
        make_config: Make, noise_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C right after S30 stored its output: the stage is done (SUCCESS in the log
    and the KB, not STOPPED), the run pauses, and the resume reuses that output."""
    cfg = make_config(noise_path)
    _stop_after_storing(monkeypatch, (1, "S30"), KeyboardInterrupt)
    summary = Runner(cfg).run()
    assert (summary.status, summary.stop_reason) == ("PAUSED", "interrupted")
    s30 = [(e["event"], e["status_after"]) for e in events_of(cfg)
           if e["stage_id"] == "S30" and e["iteration_id"] == 1]
    assert s30 == [("STAGE_STARTED", "RUNNING"), ("STAGE_COMPLETED", "SUCCESS")]
    assert [r for r in _stage_rows(cfg) if r[:2] == (1, "S30")] == [(1, "S30", 1, "SUCCESS")]
    done = Runner.resume(cfg.run_id, out_dir=cfg.out_dir)
    assert done.status != "PAUSED"
    assert [r for r in _stage_rows(cfg) if r[:2] == (1, "S30")] == [(1, "S30", 1, "SUCCESS")]


# ------------------------------------------------------------ TEST-621
def test_TEST_621_permanent_error_fails_without_retry(make_config: Make,
                                                      noise_path: Path) -> None:
    def fault(i: int, stage: str, attempt: int) -> None:
        if stage == "S50":
            raise SpecError("candidate spec invalid", code="SCHEMA_MISMATCH_TEST")

    slept: list[float] = []
    cfg = make_config(noise_path)
    summary = Runner(cfg, fault=fault, sleep=slept.append).run()
    assert slept == []
    s50 = [e for e in events_of(cfg) if e["stage_id"] == "S50"]
    assert [(e["event"], e["attempt"]) for e in s50] == [("STAGE_STARTED", 1),
                                                        ("STAGE_FAILED", 1)]
    assert s50[-1]["error_code"] == "SCHEMA_MISMATCH_TEST"
    assert summary.status == "FAILED_FATAL"
    assert summary.iterations[-1].state == "ITER_FAILED"
    root = runs_root(cfg.out_dir) / cfg.run_id
    failed = json.loads((root / "iter_0001" / "iteration_summary.json").read_text())
    assert failed["error_code"] == "SCHEMA_MISMATCH_TEST"  # seed 004 §5.3


# ------------------------------------------------------------ TEST-622
def test_TEST_622_lookahead_stops_the_run_with_its_evidence(
        make_config: Make, planted_path: Path, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """A user registers a non-causal operator (tomorrow's close) and a family built on
    it: it scores brilliantly, is shortlisted, and the lookahead check stops the run."""
    from alphaloop.strategy import templates
    from alphaloop.strategy.operators import custom_operator
    from alphaloop.strategy.spec import StrategySpec

    def peek(x: np.ndarray, n: int) -> np.ndarray:  # x[t + n]: the future
        out = np.full_like(x, np.nan)
        out[:, :-n] = x[:, n:]
        return out

    fam = templates.Family("peek_family", "buys before the price rises (lookahead)",
                           {"n": templates.IntParam(1, 3)}, (),
                           lambda p: StrategySpec(entry=f"peek(close, {p['n']}) > close",
                                                  exit=f"peek(close, {p['n']}) < close"))
    monkeypatch.setitem(templates.FAMILIES, "peek_family", fam)
    open_policy = tmp_path / "open_policy.yaml"  # no gates: only the lookahead check
    open_policy.write_text("policy_version: test-open-v1\n"
                           "components: {sharpe: {weight: 1.0, lo: 0.0, hi: 2.0}}\n"
                           "gates: {}\n")
    with custom_operator("peek", peek):
        cfg = make_config(planted_path, generation={"families": ["peek_family"],
                                                    "candidates_per_iteration": 3},
                          policies={"scoring": str(open_policy)})
        summary = Runner(cfg).run()
    assert summary.status == "DONE_EARLY_STOPPED"
    assert summary.stop_reason.startswith("PIPE_STOPPED_CRITICAL")
    assert "peek" in summary.stop_reason
    stopped = [e for e in events_of(cfg) if e["event"] == "STAGE_STOPPED"]
    assert len(stopped) == 1 and stopped[0]["stage_id"] == "S65"
    assert stopped[0]["error_code"] == "LOOKAHEAD_POLICY_VIOLATION"
    root = runs_root(cfg.out_dir) / cfg.run_id
    evidence = json.loads((root / "lookahead.json").read_text())
    assert evidence and all("peek" in v for v in evidence.values())
    for sid, what in evidence.items():  # each finding said once, with where it was found
        assert sid[:8] in summary.stop_reason and summary.stop_reason.count(what) == 1
    assert (root / "dq_report.json").exists() and (root / "summary.json").exists()
    assert summary.stats.iterations == 1 and not summary.best_strategies
    # the DQ report says which bars it judged: the search window (60 % of the panel)
    checked = json.loads((root / "dq_report.json").read_text())["checked"]
    assert checked["window"] == "search" and checked["bars"] == round(0.6 * N_BARS)


def test_the_lookahead_stop_names_each_finding_once_with_its_candidates() -> None:
    from alphaloop.orchestrator.runner import _grouped

    found = {str(k) * 64: "entry: x" for k in range(6)} | {"ab" * 32: "exit: y"}
    assert _grouped(found) == ("entry: x [00000000, 11111111, 22222222, 33333333, …]; "
                               "exit: y [abababab]")
    many = {str(k) * 64: f"finding {k}" for k in range(5)}
    assert _grouped(many, shown=2) == ("finding 0 [00000000]; finding 1 [11111111]; "
                                       "and 3 other finding(s)")


def test_a_calendar_break_is_refused_before_anything_is_written(make_config: Make,
                                                                 tmp_path: Path) -> None:
    """Two bars of one symbol on one UTC date in daily data (a time-zone break, a
    CRITICAL data-quality code): the loader refuses the panel, so the run is refused
    as a bad config, with no folder and no KB record."""
    from alphaloop.data.synthetic import generate

    long = generate(2, 400, seed=3).to_long()
    extra = long.iloc[[10]].copy()
    extra["timestamp"] = extra["timestamp"] + pd.Timedelta(hours=20)
    path = tmp_path / "dup.parquet"
    pd.concat([long, extra]).sort_values(["timestamp", "symbol"]).to_parquet(path)
    cfg = make_config(path)
    with pytest.raises(ConfigError, match=r"DQ_DUPLICATE_DAY|more than one bar on one UTC"):
        Runner(cfg).run()
    assert not (runs_root(cfg.out_dir) / cfg.run_id).exists()
    assert not Path(cfg.kb.url.removeprefix("sqlite:///")).exists()


# ------------------------------------------------------------ TEST-623
def test_TEST_623_empty_shortlist_takes_a_branch(make_config: Make, noise_path: Path) -> None:
    cfg = make_config(noise_path, policies={"promotion": {"score_threshold": 100}},
                      budgets={"max_iterations": 5})
    summary = Runner(cfg).run()
    taken = [e for e in events_of(cfg) if e["event"] == "BRANCH_TAKEN"]
    branches = [b for b in taken if b["branch"] == "C_MORE_CANDIDATES"]
    assert [b["iteration_id"] for b in branches][:3] == [1, 2, 3]
    assert [b["next_candidates"] for b in branches][:3] == [48, 96, 96]
    # branch D: the diagnosis, logged when it changes (here once: the same gate binds)
    diagnosis = [b for b in taken if b["branch"] == "D_DIAGNOSE_GATES"]
    assert [d["iteration_id"] for d in diagnosis] == [1]
    d = diagnosis[0]
    assert d["candidates"] == summary.iterations[0].tested_A and d["passed_gates"] == 0
    assert d["binding"] == max(d["failing"], key=lambda g: (d["failing"][g], g))
    gen = [it.generated_candidates for it in summary.iterations]
    assert gen[1] > gen[0]  # the branch took effect: more candidates next time
    assert summary.status == "DONE_EARLY_STOPPED"  # soft stop: 3 empty shortlists
    assert summary.stop_reason == "empty shortlist for 3 iterations"


def test_S60_branch_D_names_the_gate_that_binds() -> None:
    scored = pd.DataFrame({
        "failed_gates": [["min_trades"], ["min_trades"], ["min_sharpe", "min_dsr"], [], []],
        "passed": [False, False, False, True, True],
        "score_total": [10.0, 12.0, 5.0, 30.0, 80.0]})
    found = st.binding_gates(scored, threshold=50.0)
    # by hand: two fail min_trades alone; one passes every gate below 50
    assert found == {"candidates": 5, "passed_gates": 2, "below_threshold": 1,
                     "failing_only": {"min_trades": 2},
                     "failing": {"min_dsr": 1, "min_sharpe": 1, "min_trades": 2},
                     "binding": "min_trades"}
    several = scored.assign(failed_gates=[["a", "b"], ["a", "c"], ["a"], ["b", "c"], ["c", "b"]],
                            passed=False)
    assert st.binding_gates(several, 50.0)["binding"] == "a"  # 'a' alone keeps one out


# ------------------------------------------------------------ TEST-624
def test_TEST_624_persist_failure_falls_back_and_loses_nothing(
        make_config: Make, noise_path: Path, tmp_path: Path) -> None:
    """Another connection holds the KB's write lock during iteration 1's S95: the
    batch goes to the local write-ahead log and is replayed before iteration 2."""
    cfg = make_config(noise_path, budgets={"max_iterations": 2})
    cfg = cfg.model_copy(update={"kb": cfg.kb.model_copy(update={"busy_timeout_s": 0.2})})
    db = Path(cfg.kb.url.removeprefix("sqlite:///"))
    KnowledgeBase(cfg.kb.url).close()  # create the schema first
    lock = sqlite3.connect(db, timeout=0, isolation_level=None)
    locked = threading.Event()

    def fault(i: int, stage: str, attempt: int) -> None:
        if stage == "S95" and i == 1 and attempt == 1:
            lock.execute("BEGIN EXCLUSIVE")
            locked.set()
        if stage == "S20" and i == 2 and locked.is_set():
            lock.execute("COMMIT")
            locked.clear()

    summary = Runner(cfg, fault=fault, sleep=lambda s: None).run()
    lock.close()
    ev = events_of(cfg)
    assert any(e["event"] == "BRANCH_TAKEN" and e["branch"] == "A_LOCAL_FALLBACK" for e in ev)
    root = runs_root(cfg.out_dir) / cfg.run_id
    assert not (root / "kb_wal.jsonl").exists() or not (root / "kb_wal.jsonl").read_text()
    other = make_config(noise_path, run_id="r2", budgets={"max_iterations": 2},
                        kb={"url": f"sqlite:///{tmp_path / 'clean.sqlite'}"})
    Runner(other).run()
    a, b = KnowledgeBase(cfg.kb.url), KnowledgeBase(other.kb.url)
    assert summary.status == "DONE_BUDGET_EXHAUSTED"
    assert len(a.iterations(cfg.run_id)) == 2
    for table in ("backtests", "scores", "failures", "strategies", "iterations"):
        assert a.stats()["tables"][table] == b.stats()["tables"][table], table


def test_a_kb_locked_past_the_last_iteration_is_reported_and_caught_up_by_resume(
        make_config: Make, noise_path: Path) -> None:
    """The lock is held from the last iteration's S95 until after the run: the run says
    the KB is behind (the CLI exits 75) instead of ending as if all were stored; resume
    of the finished run replays its logs (it used to return the summary and write
    nothing: the KB held the run but none of its iterations)."""
    cfg = make_config(noise_path, budgets={"max_iterations": 1})
    cfg = cfg.model_copy(update={"kb": cfg.kb.model_copy(update={"busy_timeout_s": 0.2})})
    db = Path(cfg.kb.url.removeprefix("sqlite:///"))
    KnowledgeBase(cfg.kb.url).close()
    lock = sqlite3.connect(db, timeout=0, isolation_level=None)

    def fault(i: int, stage: str, attempt: int) -> None:
        if stage == "S95" and attempt == 1:
            lock.execute("BEGIN EXCLUSIVE")

    runner = Runner(cfg, fault=fault, sleep=lambda s: None)
    summary = runner.run()
    assert summary.status == "DONE_BUDGET_EXHAUSTED" and runner.kb_behind
    lock.execute("COMMIT")
    lock.close()
    assert len(KnowledgeBase(cfg.kb.url).iterations(cfg.run_id)) == 0
    again = Runner.of_run(cfg.run_id, out_dir=cfg.out_dir, sleep=lambda s: None)
    assert again.resume_run() == summary and not again.kb_behind
    kb = KnowledgeBase(cfg.kb.url)
    assert len(kb.iterations(cfg.run_id)) == 1
    assert kb.get_run(cfg.run_id).status == "DONE_BUDGET_EXHAUSTED"
    assert kb.stats()["tables"]["backtests"] == summary.stats.backtests


def test_a_run_killed_before_its_kb_row_resumes_and_a_taken_run_id_is_refused(
        make_config: Make, noise_path: Path, tmp_path: Path) -> None:
    """Killed after its folder's files but before its KB row: resume used to fail on
    the KB's foreign key and run on 'exists already', forever. A run_id the KB holds
    (a run of another out_dir) used to be taken over silently, the two runs' records
    merged under one id."""
    cfg = make_config(noise_path, budgets={"max_iterations": 1})

    class Killed(Exception):
        pass

    def killed() -> None:
        raise Killed

    first = Runner(cfg)
    first._start = killed  # type: ignore[method-assign]
    with pytest.raises(Killed):
        first.run()
    assert KnowledgeBase(cfg.kb.url).get_run(cfg.run_id) is None
    summary = Runner.resume(cfg.run_id, out_dir=cfg.out_dir)
    assert summary.status == "DONE_BUDGET_EXHAUSTED"
    alone = Runner(make_config(noise_path, run_id="alone", budgets={"max_iterations": 1},
                               kb={"url": f"sqlite:///{tmp_path / 'alone.sqlite'}"})).run()
    assert summary.stats == alone.stats and summary.best_strategies == alone.best_strategies
    assert KnowledgeBase(cfg.kb.url).get_run(cfg.run_id).status == "DONE_BUDGET_EXHAUSTED"
    elsewhere = cfg.model_copy(update={"out_dir": str(tmp_path / "elsewhere")})
    with pytest.raises(ConfigError, match="exists already in the knowledge base"):
        Runner(elsewhere).run()
    assert not (tmp_path / "elsewhere" / cfg.run_id).exists()


def _other_process(root: Path, holds: str) -> tuple[Any, str]:
    """Another process beside a resume, and what the refusal names: a live process named
    in the run's owner file (a running `run`), or one holding the run folder's lock (a
    second `resume`, started in the same instant)."""
    import socket
    import subprocess
    import sys

    from alphaloop.orchestrator.runner import LOCK_FILE, OWNER_FILE

    if holds == "owner_file":
        other = subprocess.Popen(["sleep", "60"])
        (root / OWNER_FILE).write_text(json.dumps({"pid": other.pid,
                                                   "host": socket.gethostname()}))
        return other, f"process {other.pid}"
    other = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\n"
        f"fh = open({str(root / LOCK_FILE)!r}, 'a+b'); fcntl.flock(fh, fcntl.LOCK_EX)\n"
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert other.stdout is not None and other.stdout.readline().strip() == "held"
    return other, "being resumed now"


@pytest.mark.parametrize("holds", ["owner_file", "lock"])
def test_a_resume_beside_another_live_process_is_refused(make_config: Make, noise_path: Path,
                                                         holds: str) -> None:
    """Two black-box reports: `resume` beside a running `run` ran the same stages twice;
    of three resumes started in one instant, two ran the run (the owner file is written
    only once the loop starts, so a resume holds the run folder's lock from before its
    check to its end). Both are RUN_BUSY now; once the other process is gone the resume
    returns the run's summary."""
    cfg = make_config(noise_path, budgets={"max_iterations": 1})
    summary = Runner(cfg).run()
    other, names = _other_process(runs_root(cfg.out_dir) / cfg.run_id, holds)
    try:
        with pytest.raises(ConfigError, match=names) as exc:
            Runner.resume(cfg.run_id, out_dir=cfg.out_dir)
        assert exc.value.code == "RUN_BUSY"
    finally:
        other.kill()
        other.wait()
    assert Runner.resume(cfg.run_id, out_dir=cfg.out_dir) == summary


# ------------------------------------------------------------ MOD-400 §11.3
def _score_everything(frame: pd.DataFrame, policy: Any) -> pd.DataFrame:
    """A scoring stub: score = 50 × Sharpe, every gate passes."""
    out = frame.copy()
    out["score_total"] = 50 * out["sharpe"]
    out["passed"] = True
    out["failed_gates"] = [[] for _ in range(len(out))]
    out["reasons"] = [[] for _ in range(len(out))]
    return out


def test_a_candidate_close_only_to_a_clusters_second_member_starts_its_own() -> None:
    """A black-box report (two runs sharing candidates crashed in S60 with a KeyError):
    b joins a's cluster; c correlates with b above the threshold but not with a, the
    cluster's representative. c is compared with representatives only: its own cluster."""
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.01, 5000)
    b = a + 0.45 * rng.normal(0, 0.01, 5000)
    c = b + 0.45 * rng.normal(0, 0.01, 5000)
    corr = np.corrcoef([a, b, c])
    # by hand: corr(a, b) = 1/sqrt(1.2025) = 0.91, corr(b, c) = sqrt(1.2025/1.405) = 0.93,
    # corr(a, c) = 1/sqrt(1.405) = 0.84, around the 0.9 threshold as intended
    assert corr[0, 1] > 0.9 and corr[1, 2] > 0.9 and corr[0, 2] < 0.9
    ids = ["a", "b", "c"]
    metrics = pd.DataFrame({"strategy_id": ids, "sharpe": [2.0, 1.9, 1.8],
                            "sr_per_period": [0.2, 0.19, 0.18], "skew": 0.0,
                            "kurtosis": 3.0, "n_obs": 5000})
    cands = pd.DataFrame({"strategy_id": ids, "family": "f",
                          "params": ['{"n": 10}', '{"n": 20}', '{"n": 30}']})

    orig = st.score_frame
    st.score_frame = _score_everything  # type: ignore[assignment]
    try:
        got = st.shortlist(metrics, np.stack([a, b, c]).astype(np.float32), cands,
                           None,  # type: ignore[arg-type]
                           Promotion(max_per_cluster=2, cluster_correlation=0.9), trials=3,
                           var_trials=0.001, pbo=None, top_k=3, threshold=0)
    finally:
        st.score_frame = orig  # type: ignore[assignment]
    assert got.shortlist == ["a", "b", "c"] and got.dropped_by_cluster == {}
    assert st.diversity(got)["clusters"] == 2


def test_MOD400_11_3_promotion_top_k_and_one_per_cluster() -> None:
    """Four candidates pass; B is A's twin (correlation 1): with top_k 2 and one per
    cluster, A and then C (not B) are promoted."""
    rng = np.random.default_rng(0)
    base = rng.normal(0, 0.01, 300)
    returns = np.stack([base, base * 2.0, rng.normal(0, 0.01, 300),
                        rng.normal(0, 0.01, 300)]).astype(np.float32)
    ids = ["a", "b", "c", "d"]
    metrics = pd.DataFrame({"strategy_id": ids, "sharpe": [2.0, 1.9, 1.5, 1.4],
                            "sr_per_period": [0.2, 0.19, 0.15, 0.14],
                            "skew": 0.0, "kurtosis": 3.0, "n_obs": 300})
    cands = pd.DataFrame({"strategy_id": ids, "family": "f",
                          "params": ['{"n": 10}', '{"n": 20}', '{"n": 30}', '{"n": 50}']})

    class Everything:  # a policy stub: score = 50 × Sharpe, every gate passes
        policy_version = "stub"

    orig = st.score_frame
    st.score_frame = _score_everything  # type: ignore[assignment]
    try:
        short = st.shortlist(metrics, returns, cands, Everything(),  # type: ignore[arg-type]
                             Promotion(max_per_cluster=1), trials=4, var_trials=0.001,
                             pbo=None, top_k=2, threshold=0)
        wide = st.shortlist(metrics, returns, cands, Everything(),  # type: ignore[arg-type]
                            Promotion(max_per_cluster=2), trials=4, var_trials=0.001,
                            pbo=None, top_k=2, threshold=0)
    finally:
        st.score_frame = orig  # type: ignore[assignment]
    assert short.shortlist == ["a", "c"] and short.dropped_by_cluster == {"b": "a"}
    assert wide.shortlist == ["a", "b"]
    # seed 003 §8 diversity, by hand: a (n=10) and c (n=30): std 10 over the tested
    # range 50 - 10 = 40 -> 0.25; two clusters, one candidate (b) held back
    assert st.diversity(short) == {"families": 1, "clusters": 2, "held_back_by_cluster": 1,
                                   "param_spread": 0.25}
    # a and b share one cluster: n 10 and 20 -> std 5 / 40
    assert st.diversity(wide) == {"families": 1, "clusters": 1, "held_back_by_cluster": 0,
                                  "param_spread": 0.125}


# ------------------------------------------------------------ MOD-400 §11.4
def test_MOD400_11_4_duplicates_removed_by_normalizer_hash() -> None:
    """`sma(close,10) > sma(close,50)` and `sma(close, 50) < sma(close, 10.0)` are one
    strategy: dedup keeps the first."""
    from alphaloop.strategy.spec import StrategySpec

    a = StrategySpec(entry="sma(close,10) > sma(close,50)", exit="close < 0")
    b = StrategySpec(entry="sma(close, 50) < sma(close, 10.0)", exit="close < 0")
    c = StrategySpec(entry="sma(close,20) > sma(close,50)", exit="close < 0")
    cands = [{"strategy_id": s.strategy_id, "spec": {}, "family": None, "params": {}}
             for s in (a, b, c)]
    out = st.dedup(cands, run_tested=set(), prior_tested={c.strategy_id}, budget_left=10)
    assert [x["strategy_id"] for x in out.fresh] == [a.strategy_id]
    assert out.duplicates == 1 and out.reused == [c.strategy_id]
    assert st.dedup(cands, {a.strategy_id}, set(), 10).duplicates == 2


def test_MOD400_11_4_a_second_run_reuses_and_counts_trials(make_config: Make,
                                                           noise_path: Path) -> None:
    first = Runner(make_config(noise_path)).run()
    second = Runner(make_config(noise_path, run_id="r2")).run()
    assert second.stats.backtests < first.stats.backtests
    assert second.stats.reused > 0
    assert second.stats.trials >= first.stats.trials  # every earlier trial still counts


def test_MOD400_11_4_a_killed_runs_stored_trials_count_as_a_finished_runs_do(
        make_config: Make, noise_path: Path, tmp_path: Path) -> None:
    """A run killed with SIGKILL stays RUNNING in the knowledge base, its stored
    iterations in place. A later run on the same data reuses them and deflates by them
    exactly as it would had the first run finished (the KB state of a kill is made by
    hand: the first run's status set back to RUNNING, without a finish time)."""
    seconds = {}
    for how in ("finished", "killed"):
        path = tmp_path / f"{how}.sqlite"
        first = Runner(make_config(noise_path, run_id=f"first-{how}",
                                   kb={"url": f"sqlite:///{path}"})).run()
        if how == "killed":
            con = sqlite3.connect(path)
            con.execute("UPDATE runs SET status = 'RUNNING', finished_ns = NULL")
            con.commit()
            con.close()
        second = Runner(make_config(noise_path, run_id=f"second-{how}",
                                    kb={"url": f"sqlite:///{path}"})).run()
        assert second.stats.reused > 0, how
        assert second.stats.trials >= first.stats.trials, how
        seconds[how] = second.comparable()
    assert seconds["killed"] == seconds["finished"]


def test_the_knowledge_base_holds_the_summary_so_far_while_a_run_goes(
        make_config: Make, noise_path: Path) -> None:
    """A run killed mid-way is told by what it did (`kb runs`, `kb show`, `status`):
    after each iteration the KB holds the summary the run's folder holds."""
    cfg = make_config(noise_path)
    seen: list[tuple[int, str, Any]] = []

    def fault(i: int, stage: str, attempt: int) -> None:
        if stage == "S50" and attempt == 1:
            record = KnowledgeBase(cfg.kb.url).get_run(cfg.run_id)
            assert record is not None
            path = Path(cfg.out_dir) / cfg.run_id / "summary.json"
            on_file = json.loads(path.read_text()) if path.exists() else None
            assert record.summary == on_file
            seen.append((i, record.status, on_file and on_file["stats"]["iterations"]))

    done = Runner(cfg, fault=fault).run()
    assert len(seen) == done.stats.iterations >= 2
    assert seen == [(i, "RUNNING", i - 1 or None) for i in range(1, len(seen) + 1)]


# ------------------------------------------------------------ MOD-400 §11.5
def test_MOD400_11_5_early_stop_on_no_improvement_and_reset() -> None:
    stop = EarlyStop(patience=2, min_improve=0.1)
    assert not stop.update(50.0, constraints_changed=False)
    assert not stop.update(54.0, constraints_changed=False)  # < 10 %: no improvement (1)
    assert not stop.update(56.0, constraints_changed=False)  # +12 % over 50: improved
    assert not stop.update(57.0, constraints_changed=False)  # (1)
    assert not stop.update(57.0, constraints_changed=True)  # a constraint change resets
    assert not stop.update(58.0, constraints_changed=False)  # (1)
    assert stop.update(None, constraints_changed=False)  # (2): stop


# ------------------------------------------------------------ MOD-400 §11.6
def test_MOD400_11_6_every_stage_is_traceable_in_the_kb(make_config: Make,
                                                        noise_path: Path) -> None:
    cfg = make_config(noise_path, budgets={"max_iterations": 2})
    summary = Runner(cfg).run()
    kb = KnowledgeBase(cfg.kb.url)
    runs = kb.stage_runs(cfg.run_id)
    for it in (1, 2):
        done = set(runs[runs["iteration"] == it]["stage_id"])
        assert {"S20", "S30", "S40", "S50", "S60", "S65", "S85", "S90", "S95"} <= done
    assert kb.get_run(cfg.run_id).status == summary.status
    iters = kb.iterations(cfg.run_id)
    assert list(iters["iteration"]) == [1, 2]
    counts = kb.stats()["tables"]
    assert counts["backtests"] >= summary.stats.backtests - 2 * sum(
        it.promoted_to_B for it in summary.iterations)  # B reruns count, store once
    assert counts["failures"] == summary.stats.failures


# ------------------------------------------------------------ seed 004 §8
def test_PIPE_BRANCH_LOOP_DETECTED_when_a_branch_repeats_without_effect() -> None:
    from alphaloop.orchestrator.policies import BranchLog, BranchLoopDetected

    log = BranchLog(max_repeats=2)
    log.take(1, "S30", "D_BASELINE", effective=True)
    log.take(2, "S30", "D_BASELINE", effective=False)
    log.take(3, "S30", "D_BASELINE", effective=False)
    log.take(4, "S60", "C_MORE_CANDIDATES", effective=False)  # another branch: own count
    with pytest.raises(BranchLoopDetected) as exc:
        log.take(5, "S30", "D_BASELINE", effective=False)
    assert exc.value.code == "PIPE_BRANCH_LOOP_DETECTED"
    log.take(6, "S60", "C_MORE_CANDIDATES", effective=True)  # an effect resets
    log.take(7, "S60", "C_MORE_CANDIDATES", effective=False)
    log.take(8, "S60", "C_MORE_CANDIDATES", effective=False)


def test_retry_policy_follows_seed_004_section_4() -> None:
    policy = RetryPolicy(Retry(), seed=1)
    assert [policy.max_attempts(s) for s in ("S40", "S50", "S70", "S95", "S60")] == [
        1, 2, 2, 3, 2]
    t = ErrorClass.TRANSIENT
    assert policy.should_retry("S95", 1, "DB_LOCKED", t)
    assert policy.should_retry("S95", 2, "DB_LOCKED", t)
    assert not policy.should_retry("S95", 3, "DB_LOCKED", t)  # 3 attempts in all
    assert not policy.should_retry("S40", 1, "DATA_LOAD_FAIL", t)  # S40: 1 attempt
    assert not policy.should_retry("S95", 1, "LOOKAHEAD_POLICY_VIOLATION", t)  # forbidden
    assert not policy.should_retry("S95", 1, "DB_LOCKED", ErrorClass.PERMANENT)
    assert not policy.should_retry("S95", 1, "SOMETHING_ELSE", t)  # not on the list
    policy.used_in_iteration = 5
    assert not policy.should_retry("S95", 1, "DB_LOCKED", t)  # 5 per iteration
    waits = [policy.backoff(1, "S95", k) for k in (1, 2, 3)]
    assert 2 <= waits[0] < 4 and 4 <= waits[1] < 8 and 8 <= waits[2] <= 15.0  # capped
    assert waits == [RetryPolicy(Retry(), seed=1).backoff(1, "S95", k) for k in (1, 2, 3)]


# ------------------------------------------------------------ seed 004 §6.1 (S10)
def test_S10_scenario_policies_reject_ignore_soft() -> None:
    from alphaloop.orchestrator.config import ConfigError

    fams = ("sma_cross", "momentum")
    good = st.scenario_intake({"favour": ["momentum"], "avoid": ["sma_cross"]}, fams, "reject")
    assert good.applied and good.favour == ("momentum",) and good.avoid == ("sma_cross",)
    poor = {"favour": ["momentum", "no_such"], "avoid": ["momentum"]}
    with pytest.raises(ConfigError, match="no_such"):
        st.scenario_intake(poor, fams, "reject")
    ignored = st.scenario_intake(poor, fams, "ignore")
    assert not ignored.applied and len(ignored.problems) == 2
    soft = st.scenario_intake(poor, fams, "soft")
    assert soft.applied and soft.favour == () and soft.avoid == ()  # only sound hints


def test_S10_a_scenario_steers_generation(make_config: Make, noise_path: Path,
                                          tmp_path: Path) -> None:
    brief = tmp_path / "brief.yaml"
    brief.write_text("favour: [momentum]\navoid: [sma_cross]\n")
    cfg = make_config(noise_path, budgets={"max_iterations": 1},
                      scenario={"enabled": True, "path": str(brief), "policy": "reject"})
    Runner(cfg).run()
    import pickle

    root = runs_root(cfg.out_dir) / cfg.run_id
    with open(root / "iter_0001" / "S20" / "output.pkl", "rb") as fh:
        families = {c["family"] for c in pickle.load(fh)}
    assert families == {"momentum"}
    skipped = make_config(noise_path, run_id="r2", budgets={"max_iterations": 1})
    Runner(skipped).run()
    s10 = [e for e in events_of(skipped) if e["stage_id"] == "S10"]
    assert [e["status_after"] for e in s10] == ["SKIPPED"]


def test_S60_branch_A_relaxes_the_threshold_in_exploration_only(make_config: Make,
                                                                noise_path: Path) -> None:
    cfg = make_config(noise_path, mode="exploration",
                      policies={"promotion": {"score_threshold": 100}},
                      budgets={"max_iterations": 2})
    Runner(cfg).run()
    relax = [e for e in events_of(cfg) if e["event"] == "BRANCH_TAKEN"
             and e["branch"] == "A_RELAX_THRESHOLD"]
    assert [e["threshold_next"] for e in relax] == [90.0, 80.0]
    mixed = make_config(noise_path, run_id="r2", policies={"promotion": {
        "score_threshold": 100}}, budgets={"max_iterations": 2})
    Runner(mixed).run()
    assert not [e for e in events_of(mixed) if e.get("branch") == "A_RELAX_THRESHOLD"]


def test_MOD400_7_3_frequent_non_determinism_stops_the_run(
        make_config: Make, planted_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine B made to disagree with itself on every rerun: the run stops early."""
    from alphaloop.engines import engine_b

    real = engine_b.verify
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        res = real(*args, **kwargs)
        res.output_hash = f"{res.output_hash}-{calls['n']}"  # every run hashes differently
        return res

    monkeypatch.setattr(st, "verify", flaky)
    cfg = make_config(planted_path, budgets={"max_iterations": 4},
                      policies={"stops": {"max_non_deterministic": 2}})
    summary = Runner(cfg).run()
    assert summary.status == "DONE_EARLY_STOPPED"
    assert summary.stop_reason.startswith("NON_DETERMINISTIC")
    assert calls["n"] >= 4  # at least two candidates verified twice each


def test_ctrl_c_while_a_stage_start_is_recorded_still_stops_that_stage(
        make_config: Make, noise_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real SIGINT sent while STAGE_STARTED of iteration 2's S40 is being written: it
    is raised when that move ends, and the stage is closed with STAGE_STOPPED."""
    import os
    import signal

    real_emit = EventLog.emit

    def emit(self: EventLog, event: str, **kw: Any) -> dict[str, Any]:
        row = real_emit(self, event, **kw)
        if (event, kw.get("iteration"), kw.get("stage_id")) == ("STAGE_STARTED", 2, "S40"):
            os.kill(os.getpid(), signal.SIGINT)
        return row

    monkeypatch.setattr(EventLog, "emit", emit)
    cfg = make_config(noise_path)
    summary = Runner(cfg).run()
    assert (summary.status, summary.stop_reason) == ("PAUSED", "interrupted")
    s40 = [e["event"] for e in events_of(cfg) if e["stage_id"] == "S40" and e["iteration_id"] == 2]
    assert s40 == ["STAGE_STARTED", "STAGE_STOPPED"]


def test_ctrl_c_during_a_state_move_is_raised_after_it() -> None:
    """SIGINT that arrives while a move is being recorded waits for the move to end."""
    import os
    import signal

    from alphaloop.orchestrator.runner import _sigint_held

    done: list[str] = []
    with pytest.raises(KeyboardInterrupt), _sigint_held():
        os.kill(os.getpid(), signal.SIGINT)  # delivered only when the block ends
        done.append("recorded")
    assert done == ["recorded"]
