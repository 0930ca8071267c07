"""Kill -9 at random moments, resume, and end exactly where an uninterrupted run ends.

A subprocess runs ``alphaloop run``; it is killed with SIGKILL after a seeded random
delay; ``alphaloop resume`` (killed again, sometimes) then finishes it. The final
RunSummary (status, best strategies and scores, stats, every iteration's counts) and
the set of strategy ids tested must equal those of an uninterrupted run of the same
config under another run id, with its own knowledge base.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from alphaloop.orchestrator.config import RunSummary

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _config(tmp: Path, source: Path, run_id: str) -> Path:
    cfg = {"run_id": run_id, "seed": 5, "data": {"source": str(source)},
           "budgets": {"max_iterations": 4, "max_backtests": 5000},
           "generation": {"families": ["sma_cross", "momentum"], "sampler": "sobol",
                          "candidates_per_iteration": 40},
           "policies": {"promotion": {"top_k_to_verify": 3, "score_threshold": 20}},
           "kb": {"url": f"sqlite:///{tmp / 'kb.sqlite'}"}, "out_dir": str(tmp / "runs")}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "alphaloop", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, errs = proc.communicate(timeout=600)
    assert proc.returncode == 0, errs
    return json.loads(out)


def _tested(tmp: Path, run_id: str) -> set[str]:
    db = sqlite3.connect(tmp / "kb.sqlite")
    rows = db.execute("SELECT DISTINCT strategy_id FROM backtests WHERE run_id = ? AND "
                      "engine = 'A' AND window = 'search'", (run_id,)).fetchall()
    db.close()
    return {r[0] for r in rows}


def test_sigkill_at_random_points_then_resume_ends_like_an_uninterrupted_run(
        tmp_path: Path, planted_path: Path, noise_path: Path) -> None:
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    t0 = time.monotonic()
    reference = _finish(_cli("run", str(_config(ref_dir, planted_path, "ref")), "--json"))
    wall = time.monotonic() - t0
    assert reference["stats"]["iterations"] == 4
    rng = np.random.default_rng(2026)
    for k, frac in enumerate((0.15, 0.45, 0.75)):
        work = tmp_path / f"killed{k}"
        work.mkdir()
        run_id = f"crash{k}"
        config = _config(work, planted_path, run_id)
        proc = _cli("run", str(config), "--json")
        time.sleep(wall * (frac + rng.uniform(-0.1, 0.1)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _status_tells_it_was_killed(work, run_id)
        summary = _resume_until_done(work, config, run_id, rng, wall)
        got = RunSummary.model_validate(summary).comparable()
        assert got == RunSummary.model_validate(reference).comparable(), f"kill {k}"
        assert _tested(work, run_id) == _tested(ref_dir, "ref")
    _interrupt_change_the_data_then_resume(tmp_path / "interrupted", planted_path,
                                           noise_path, reference)


def _status_tells_it_was_killed(work: Path, run_id: str) -> None:
    """A killed run's last summary says RUNNING; `status` adds that nothing runs it."""
    if not (work / "runs" / run_id / "loop.json").exists():
        return  # killed before the run was created: there is nothing to ask about
    proc = _cli("status", run_id, "--out-dir", str(work / "runs"), "--json")
    out, errs = proc.communicate(timeout=120)
    assert proc.returncode == 0, errs
    assert json.loads(out)["process_alive"] is False
    if json.loads(out)["status"] != "RUNNING":  # it had ended before the kill (a slow
        assert "no process is running" not in errs  # machine): nothing to tell
        return
    assert f"no process is running {run_id}" in errs


def _interrupt_change_the_data_then_resume(work: Path, planted: Path, noise: Path,
                                           reference: dict[str, Any]) -> None:
    """Ctrl-C after the first iteration pauses the run and exits 130; a resume on data
    rewritten since refuses (exit 2, one line, nothing stored changes); on the data it
    started on, the resume ends where the uninterrupted run ended."""
    work.mkdir()
    data = work / "panel.parquet"
    shutil.copyfile(planted, data)
    config = _config(work, data, "sigint")
    proc = _cli("run", str(config), "--json")
    summary_file = work / "runs" / "sigint" / "summary.json"
    deadline = time.monotonic() + 300
    while not summary_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, errs = proc.communicate(timeout=300)
    assert proc.returncode == 130, errs
    assert f"paused: `alphaloop resume sigint --out-dir {work / 'runs'}` continues it" in errs
    paused = json.loads(out)
    assert (paused["status"], paused["stop_reason"]) == ("PAUSED", "interrupted")
    events = [json.loads(line) for line in
              (work / "runs" / "sigint" / "pipeline_events.jsonl").read_text().splitlines()]
    assert _open_stages(events) == []  # a stage the interrupt cut is STAGE_STOPPED
    last = [e for e in events if e["event"] == "RUN_STATE"][-1]
    assert (last["status_after"], last["stop_reason"]) == ("PAUSED", "interrupted")
    shutil.copyfile(noise, data)  # the data is rewritten after the run started
    before = summary_file.read_bytes(), _tested(work, "sigint")
    proc = _cli("resume", "sigint", "--out-dir", str(work / "runs"), "--json")
    out, errs = proc.communicate(timeout=300)
    assert proc.returncode == 2 and json.loads(out)["error"]["code"] == "DATA_CHANGED"
    assert len(errs.strip().splitlines()) == 1 and "DATA_CHANGED" in errs, errs
    assert (summary_file.read_bytes(), _tested(work, "sigint")) == before
    shutil.copyfile(planted, data)
    done = _finish(_cli("resume", "sigint", "--out-dir", str(work / "runs"), "--json"))
    assert RunSummary.model_validate(done).comparable() == \
        RunSummary.model_validate(reference).comparable()


def _open_stages(events: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(iteration, stage) of every stage attempt started and never closed in the log."""
    open_: dict[tuple[int, str], int] = {}
    for e in events:
        key = (e.get("iteration_id"), e.get("stage_id"))
        if e["event"] == "STAGE_STARTED":
            open_[key] = open_.get(key, 0) + 1
        elif e["event"] in ("STAGE_COMPLETED", "STAGE_STOPPED", "STAGE_FAILED",
                            "STAGE_RETRY_SCHEDULED") and open_.get(key):
            open_[key] -= 1
    return [k for k, n in open_.items() if n]


def _resume_until_done(work: Path, config: Path, run_id: str, rng: np.random.Generator,
                       wall: float) -> dict[str, Any]:
    """Resume (killing the first resume once, at a random moment, too)."""
    for attempt in range(3):
        started = (work / "runs" / run_id / "loop.json").exists()
        args = (["resume", run_id, "--out-dir", str(work / "runs")] if started
                else ["run", str(config)])
        proc = _cli(*args, "--json")
        if attempt == 0:
            try:
                proc.wait(timeout=wall * rng.uniform(0.1, 0.3))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                continue
            out = proc.stdout.read() if proc.stdout else ""
            assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
            return dict(json.loads(out))
        return _finish(proc)
    raise AssertionError("unreachable")
