"""Recorded runs: iteration summaries, atomic idempotent writes, lookups."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from alphaloop.runs import (
    DONE,
    RunError,
    RunRecord,
    find_run,
    iteration_row,
    load_run,
    run_id_for,
    save_run,
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"strategy_id": ["a1", "b2", "c3"], "score_total": [40.0, 72.5, 10.0],
                         "passed": [False, True, False],
                         "failed_gates": [["min_trades", "min_dsr"], [], ["min_trades"]]})


def test_iteration_row_counts_by_hand() -> None:
    row = iteration_row(_frame(), iteration=3)
    assert row["iteration"] == 3 and row["best_score"] == 72.5
    assert row["tried"] == 3 and row["passed"] == 1
    assert row["failure:TOO_FEW_TRADES"] == 2 and row["failure:DSR_BELOW_GATE"] == 1
    assert row["failure:DRAWDOWN_BREACH"] == 0


def _record(run_id: str) -> RunRecord:
    return RunRecord(run_id=run_id, kind="evaluate", created_at="2026-01-01T00:00:00+00:00",
                     policy_version="score-v1", policy_hash="h", data_source="sp500",
                     data_ref="sha256:x", n_candidates=3, n_trials=3, holdout=0.3,
                     results_file="/tmp/r.parquet")


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
    with pytest.raises(RunError, match="2 runs match 'abc'"):
        find_run("abc", root=tmp_path)
    with pytest.raises(RunError, match="no recorded run matches 'abd'"):
        find_run("abd", root=tmp_path)
