"""Recorded runs: iteration summaries, atomic idempotent writes, lookups."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from alphaloop.evaluation.robustness import holdout_split, sweep_rows
from alphaloop.kb import runs
from alphaloop.kb.runs import (
    DONE,
    RunError,
    RunRecord,
    check_results_file,
    find_run,
    iteration_row,
    load_run,
    run_id_for,
    runs_with_strategy,
    save_run,
    stamp,
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"strategy_id": ["a1", "b2", "c3"], "score_total": [40.0, 72.5, 10.0],
                         "passed": [False, True, False],
                         "failed_gates": [["min_trades", "min_dsr"], [], ["min_trades"]]})


def test_iteration_row_counts_by_hand() -> None:
    row = iteration_row(_frame(), iteration=3)
    assert row["iteration"] == 3 and row["best_score"] == 72.5
    assert row["tried"] == 3 and row["passed"] == 1
    assert row["failure:TOO_FEW_TRADES"] == 2 and row["failure:OVERFIT_DSR"] == 1
    assert row["failure:DRAWDOWN_BREACH"] == 0


def _record(run_id: str, **kw: Any) -> RunRecord:
    fields: dict[str, Any] = {
        "run_id": run_id, "kind": "evaluate", "created_at": "2026-01-01T00:00:00+00:00",
        "policy_version": "score-v1", "policy_hash": "h", "data_source": "sp500",
        "data_ref": "sha256:x", "n_candidates": 3, "n_trials": 3, "holdout": 0.3,
        "results_file": "/tmp/r.parquet"}
    return RunRecord(**(fields | kw))


def test_save_is_atomic_and_idempotent(tmp_path: Path) -> None:
    rid = run_id_for("evaluate", "x")
    assert rid == run_id_for("evaluate", "x") != run_id_for("evaluate", "y")
    # a crashed earlier write left a folder without the done marker: replaced
    (tmp_path / rid).mkdir()
    (tmp_path / rid / "junk").write_text("half")
    path = save_run(_record(rid), pd.DataFrame([iteration_row(_frame())]), _frame(),
                    root=tmp_path)
    assert (path / DONE).is_file() and not (path / "junk").exists()
    run = load_run(path)
    assert run.record.policy_version == "score-v1" and len(run.candidates) == 3
    # saving again keeps the recorded run untouched
    before = (path / "run.json").stat().st_mtime_ns
    save_run(_record(rid), pd.DataFrame(), pd.DataFrame(), root=tmp_path)
    assert (path / "run.json").stat().st_mtime_ns == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no tmp left


def test_find_run_needs_a_unique_complete_match(tmp_path: Path) -> None:
    for rid in ("abc1" + "0" * 60, "abc2" + "0" * 60):
        save_run(_record(rid), pd.DataFrame([iteration_row(_frame())]), _frame(),
                 root=tmp_path)
    (tmp_path / ("abd" + "0" * 61)).mkdir()  # incomplete: not a run
    assert find_run("abc1", root=tmp_path).name.startswith("abc1")
    with pytest.raises(RunError, match=r"2 runs match 'abc'.*abc1.*abc2") as err:
        find_run("abc", root=tmp_path)
    assert err.value.code == "RUN_AMBIGUOUS"  # not "none": more of the id picks one
    with pytest.raises(RunError, match="no recorded run matches 'abd'") as err:
        find_run("abd", root=tmp_path)
    # a folder that is no evaluate run (a research loop's) gets the way to its page
    assert "report --run" in err.value.message
    with pytest.raises(RunError) as err:
        find_run("zzz", root=tmp_path)
    assert "report --run" not in err.value.message


def _save(root: Path, rid: str, **kw: Any) -> Path:
    return save_run(_record(rid, **kw), pd.DataFrame([iteration_row(_frame())]), _frame(),
                    root=root)


def test_newest_is_by_recording_order_not_by_the_second(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # a clock that stands still, then steps back: the order of recording still holds
    clock = iter([5_000_000_000_000, 5_000_000_000_000, 4_000_000_000_000])
    monkeypatch.setattr(runs.time, "time_ns", lambda: next(clock))
    ids = ["c" * 64, "a" * 64, "b" * 64]  # recorded in this order; ids sort otherwise
    for rid in ids:
        at, ns = stamp(tmp_path)
        _save(tmp_path, rid, created_at=at, created_ns=ns)
    found = runs_with_strategy("b2", root=tmp_path)
    assert [r.record.run_id for r in found] == ids[::-1]
    assert [r.record.created_ns for r in found] == [5_000_000_000_002, 5_000_000_000_001,
                                                    5_000_000_000_000]


def test_equal_times_fall_back_to_the_run_id(tmp_path: Path) -> None:
    # two writers at once, and a run recorded before created_ns existed (1 s resolution)
    _save(tmp_path, "a" * 64, created_ns=1_767_225_600_000_000_000)
    _save(tmp_path, "b" * 64, created_ns=1_767_225_600_000_000_000)
    _save(tmp_path, "c" * 64, created_at="2026-01-01T00:00:01+00:00")
    found = runs_with_strategy("a1", root=tmp_path)
    assert [r.record.run_id[0] for r in found] == ["c", "b", "a"]


def test_runs_with_strategy_filters(tmp_path: Path) -> None:
    _save(tmp_path, "a" * 64, results_sha256="r1", policy_hash="p1", data_ref="d1")
    _save(tmp_path, "b" * 64, results_sha256="r2", policy_hash="p1", data_ref="d2")
    def ids(**kw: Any) -> list[str]:
        return [r.record.run_id[0] for r in runs_with_strategy("c3", root=tmp_path, **kw)]
    assert ids(results_sha256="r1") == ["a"] and ids(data_ref="d2") == ["b"]
    assert ids(policy_hash="p1") == ["b", "a"] and ids(policy_hash="p2") == []
    assert runs_with_strategy("zz", root=tmp_path) == []


def test_reports_are_recorded_and_found_by_id(tmp_path: Path) -> None:
    reports = [{"strategy_id": "b2", "rank": 1, "dsr": 0.123456789012345,
                "holdout_metrics": {"sharpe": -0.5}}]
    path = save_run(_record("e" * 64), pd.DataFrame([iteration_row(_frame())]), _frame(),
                    root=tmp_path, reports=reports)
    run = load_run(path)
    assert run.report_of("b2") == reports[0] and run.report_of("a1") is None
    # a run recorded before reports.json existed loads with none
    (path / runs.REPORTS).unlink()
    assert load_run(path).reports == []


def test_results_file_is_checked_against_its_hash(tmp_path: Path) -> None:
    results = tmp_path / "r.parquet"
    results.write_bytes(b"sweep rows")
    digest = hashlib.sha256(b"sweep rows").hexdigest()
    record = _record("f" * 64, results_file=str(results), results_sha256=digest)
    assert check_results_file(record) is True
    results.write_bytes(b"other rows")
    with pytest.raises(RunError, match=r"r\.parquet changed since run ffffffffffffffff") as exc:
        check_results_file(record)
    assert exc.value.code == "RUN_RESULTS_CHANGED"
    results.unlink()  # gone: the run's stored candidates stand in
    assert check_results_file(record) is False
    # a run that never hashed its file cannot vouch for it either
    results.write_bytes(b"sweep rows")
    assert check_results_file(_record("f" * 64, results_file=str(results))) is False


def test_sweep_rows_drops_what_an_evaluation_adds() -> None:
    scored = _frame().assign(rank=[2, 1, 3], reasons=["x", "", "y"], dsr=0.5, psr=0.6,
                             pbo=0.1, n_trials=3, spec="{}")
    rows = sweep_rows(scored)
    assert list(rows.columns) == ["strategy_id", "spec"]
    assert sweep_rows(rows).equals(rows)  # a sweep's own rows pass unchanged


def test_holdout_split_by_hand() -> None:
    assert holdout_split(10, 0.3) == 7 and holdout_split(5031, 0.3) == 3522
    assert holdout_split(10, 0.0) == 10
