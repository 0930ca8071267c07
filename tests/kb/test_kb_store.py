"""KnowledgeBase writes and reads on real SQLite files and on a real PostgreSQL server (the
``kb`` fixture runs on both); expected values written by hand."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy.exc
from _kb_records import backtest, batch, dump, open_kb, run, score, strategy
from sqlalchemy import Connection, Table

import alphaloop.kb.store as store
from alphaloop.errors import ErrorClass
from alphaloop.kb import (
    FailureRecord,
    IterationBatch,
    IterationRecord,
    KBError,
    KnowledgeBase,
    StageRunRecord,
    TransitionRecord,
    default_url,
)


@pytest.fixture
def kb(kb_url: str) -> KnowledgeBase:
    """An empty knowledge base: a SQLite file, or a fresh PostgreSQL database."""
    return KnowledgeBase(kb_url)


@pytest.fixture
def sqlite_kb(tmp_path: Path) -> KnowledgeBase:
    return open_kb(tmp_path / "kb.sqlite")


def _stage(attempt: int, status: str, *, finished: float, inputs: str = "h1",
           ref: str | None = None) -> StageRunRecord:
    return StageRunRecord(stage_run_id=f"sr-{inputs}-{attempt}", run_id="run-a", iteration=0,
                          stage_id="S50", attempt=attempt, inputs_hash=inputs, status=status,
                          started_ts=finished - 1.0, finished_ts=finished, output_ref=ref)


# ---------------------------------------------------------------- opening


def test_default_url_lives_in_alphaloop_home_and_open_creates_the_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHALOOP_HOME", str(tmp_path / "home" / "nested"))
    assert default_url() == f"sqlite:///{tmp_path}/home/nested/kb.sqlite"
    with KnowledgeBase() as kb:
        assert kb.path == tmp_path / "home" / "nested" / "kb.sqlite"
    assert (tmp_path / "home" / "nested" / "kb.sqlite").is_file()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_kb: KnowledgeBase) -> None:
    kb = sqlite_kb
    assert kb.path is not None
    con = sqlite3.connect(kb.path)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    con.close()
    with kb._engine.connect() as conn:  # a pooled connection, as writes get them
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_opening_again_reuses_the_pooled_engine(tmp_path: Path) -> None:
    first, second = open_kb(tmp_path / "kb.sqlite"), open_kb(tmp_path / "kb.sqlite")
    assert first._engine is second._engine


def test_a_deleted_and_recreated_file_is_not_written_through_old_connections(
        tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite"
    open_kb(path).save_run(run("old"))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    kb = open_kb(path)
    assert kb.get_run("old") is None
    kb.save_run(run("new"))
    assert [r[0] for r in sqlite3.connect(path).execute("SELECT run_id FROM runs")] == ["new"]


def test_a_bad_url_is_a_permanent_error() -> None:
    with pytest.raises(KBError) as err:
        KnowledgeBase("not a url at all")
    assert (err.value.code, err.value.error_class) == ("KB_INVALID_URL", ErrorClass.PERMANENT)


def test_a_file_the_system_will_not_create_is_a_permanent_error() -> None:
    """A black-box report: sqlite:////proc/kb.sqlite ended in a SQLAlchemy traceback.
    /proc takes no new files, whoever runs the test (root included)."""
    with pytest.raises(KBError) as err:
        KnowledgeBase("sqlite:////proc/alphaloop-kb.sqlite")
    assert (err.value.code, err.value.error_class) == ("KB_INVALID_URL", ErrorClass.PERMANENT)
    assert "/proc/alphaloop-kb.sqlite" in str(err.value)


def test_a_reader_refuses_an_empty_file_and_leaves_it_empty(tmp_path: Path) -> None:
    """A zero-byte kb.sqlite used to be read as an empty KB, and the reader's migration
    wrote the schema into it; a run (a writer) still makes its KB there."""
    path = tmp_path / "kb.sqlite"
    path.write_bytes(b"")
    with pytest.raises(KBError, match="empty file") as err:
        KnowledgeBase(f"sqlite:///{path}", create=False)
    assert err.value.code == "KB_NOT_FOUND" and path.stat().st_size == 0
    with KnowledgeBase(f"sqlite:///{path}") as kb:
        kb.save_run(run())
    assert KnowledgeBase(f"sqlite:///{path}", create=False).get_run("run-a") is not None


def test_close_ends_the_handle(tmp_path: Path) -> None:
    with open_kb(tmp_path / "kb.sqlite") as kb:
        kb.save_run(run())
    with pytest.raises(KBError) as err:
        kb.get_run("run-a")
    assert err.value.code == "KB_CLOSED"


# ---------------------------------------------------------------- runs


def test_save_run_round_trips_and_keeps_the_first_created_ns(kb: KnowledgeBase) -> None:
    kb.save_run(run(created_ns=1_000))
    assert kb.get_run("run-a") == run(created_ns=1_000)
    resumed = run(created_ns=5_000, status="RESUMED")
    kb.save_run(resumed)
    stored = kb.get_run("run-a")
    assert stored is not None
    assert (stored.status, stored.created_ns, stored.updated_ns) == ("RESUMED", 1_000, 5_000)
    assert kb.get_run("nope") is None


def test_set_run_status_moves_updated_ns_only_on_change(kb: KnowledgeBase) -> None:
    kb.save_run(run(created_ns=1_000))
    kb.set_run_status("run-a", "DONE_SUCCESS", {"best": ["s1"], "sharpe": float("nan")})
    first = kb.get_run("run-a")
    assert first is not None
    assert first.status == "DONE_SUCCESS"
    assert first.summary == {"best": ["s1"], "sharpe": None}  # NaN is stored as null
    assert first.updated_ns > 1_000
    kb.set_run_status("run-a", "DONE_SUCCESS")  # same status, summary kept: a no-op
    assert kb.get_run("run-a") == first
    kb.set_run_status("run-a", "STOPPED")
    again = kb.get_run("run-a")
    assert again is not None
    assert again.summary == {"best": ["s1"], "sharpe": None}
    assert again.updated_ns > first.updated_ns
    with pytest.raises(KBError) as err:
        kb.set_run_status("missing", "STOPPED")
    assert (err.value.code, err.value.error_class) == ("KB_NOT_FOUND", ErrorClass.PERMANENT)


def test_find_run_by_exact_id_or_unique_prefix(kb: KnowledgeBase) -> None:
    for rid in ("abc1", "abd2", "ab", "x%y"):
        kb.save_run(run(rid))
    assert kb.find_run("ab").run_id == "ab"  # an exact id wins over longer ones
    assert kb.find_run("abc").run_id == "abc1"
    assert kb.find_run("x%").run_id == "x%y"
    with pytest.raises(KBError) as ambiguous:  # the codes a run's folder gets
        kb.find_run("a")
    assert ambiguous.value.code == "RUN_AMBIGUOUS"
    assert "abc1" in ambiguous.value.message and "abd2" in ambiguous.value.message
    with pytest.raises(KBError) as missing:
        kb.find_run("zz")
    assert missing.value.code == "RUN_NOT_FOUND"
    with pytest.raises(KBError) as wildcard:  # '%' is a character, not a wildcard
        kb.find_run("%")
    assert wildcard.value.code == "RUN_NOT_FOUND"


def test_list_runs_newest_first(kb: KnowledgeBase) -> None:
    kb.save_run(run("old", created_ns=10))
    kb.save_run(run("new", created_ns=30))
    kb.save_run(run("mid", created_ns=20))
    assert list(kb.list_runs()["run_id"]) == ["new", "mid", "old"]
    assert list(kb.list_runs(limit=2)["run_id"]) == ["new", "mid"]


# ---------------------------------------------------------------- transitions and stages


def test_transitions_are_appended_once_each_in_order(kb: KnowledgeBase) -> None:
    kb.save_run(run())
    moves = [TransitionRecord(run_id="run-a", entity="run", from_state="CREATED",
                              to_state="RUNNING", ts=2.0, duration_ms=0.5),
             TransitionRecord(run_id="run-a", iteration=0, entity="stage", stage_id="S50",
                              from_state="PENDING", to_state="FAILED", ts=3.0,
                              duration_ms=12.0, error_code="TIMEOUT")]
    for move in [*moves, moves[0], moves[1]]:  # replayed moves add nothing
        kb.record_transition(move)
    frame = kb.transitions("run-a")
    assert list(frame["to_state"]) == ["RUNNING", "FAILED"]
    assert frame["error_code"].isna().tolist() == [True, False]
    assert frame["error_code"][1] == "TIMEOUT"
    assert list(frame["duration_ms"]) == [0.5, 12.0]


def test_a_transition_of_an_unknown_run_is_a_permanent_error(kb: KnowledgeBase) -> None:
    with pytest.raises(KBError) as err:
        kb.record_transition(TransitionRecord(run_id="ghost", entity="run", from_state="A",
                                              to_state="B", ts=1.0, duration_ms=1.0))
    assert (err.value.code, err.value.error_class) == ("KB_INTEGRITY", ErrorClass.PERMANENT)


def test_stage_runs_upsert_and_the_latest_reusable_attempt_is_found(kb: KnowledgeBase) -> None:
    kb.save_run(run())
    kb.save_stage_run(_stage(1, "RUNNING", finished=10.0))
    kb.save_stage_run(_stage(1, "FAILED", finished=11.0))  # same attempt, now finished
    kb.save_stage_run(_stage(2, "PARTIAL", finished=20.0, ref="runs/run-a/0/S50.p2"))
    kb.save_stage_run(_stage(3, "SUCCESS", finished=30.0, ref="runs/run-a/0/S50.p3"))
    kb.save_stage_run(_stage(4, "FAILED", finished=40.0))
    frame = kb.stage_runs("run-a")
    assert list(frame["status"]) == ["FAILED", "PARTIAL", "SUCCESS", "FAILED"]
    found = kb.find_stage_run("run-a", 0, "S50", "h1")
    assert found == _stage(3, "SUCCESS", finished=30.0, ref="runs/run-a/0/S50.p3")
    assert kb.find_stage_run("run-a", 0, "S50", "other-inputs") is None
    assert kb.find_stage_run("run-a", 1, "S50", "h1") is None


def test_a_partial_attempt_is_reusable_when_nothing_later_succeeded(kb: KnowledgeBase) -> None:
    kb.save_run(run())
    kb.save_stage_run(_stage(1, "PARTIAL", finished=5.0, inputs="h2"))
    found = kb.find_stage_run("run-a", 0, "S50", "h2")
    assert found is not None and found.attempt == 1


# ---------------------------------------------------------------- iterations


def test_persist_iteration_stores_every_part(kb: KnowledgeBase, tmp_path: Path) -> None:
    kb.save_run(run())
    kb.persist_iteration(batch(iteration=0))
    stats = kb.stats()
    assert stats["tables"] == {"runs": 1, "iterations": 1, "transitions": 0, "stage_runs": 0,
                               "strategies": 2, "backtests": 2, "scores": 2, "failures": 1,
                               "constraint_sets": 1, "constraints": 1, "claims": 0}
    assert stats["runs_by_status"] == {"RUNNING": 1}
    assert stats["revision"] == stats["head"] is not None
    if kb.path is None:  # a server database: no file
        assert stats["path"] is None and stats["url"].startswith("postgresql+psycopg://")
    else:
        assert stats["path"] == str(tmp_path / "kb.sqlite") and stats["file_bytes"] > 0
    iterations = kb.iterations("run-a")
    assert list(iterations["state"]) == ["ITER_DONE"]
    assert iterations["summary"][0] == {"tested_A": 2}


def test_replaying_a_batch_leaves_the_database_identical(kb: KnowledgeBase) -> None:
    kb.save_run(run())
    kb.persist_iteration(batch(iteration=0))
    before = dump(kb)
    assert before["backtests"] and before["strategies"]
    kb.persist_iteration(batch(iteration=0))
    kb.save_run(run())
    assert dump(kb) == before


def test_a_known_strategy_keeps_its_spec(kb: KnowledgeBase) -> None:
    kb.save_run(run())
    kb.persist_iteration(batch(iteration=0))
    changed = batch(iteration=0).model_copy(update={"strategies": [strategy("s0a", fast=99)]})
    kb.persist_iteration(changed)
    assert kb.strategy("s0a")["params"] == {"fast": 5}


def test_strategy_rows_are_the_stored_rows_of_the_ids_asked(kb: KnowledgeBase) -> None:
    kb.save_run(run())
    kb.persist_iteration(batch(iteration=0))
    rows = kb.strategy_rows(["s0b", "nope", "s0a", "s0b"])
    assert sorted(rows) == ["s0a", "s0b"]
    assert rows["s0a"]["params"] == {"fast": 5} and rows["s0b"]["family"] == "sma_cross"
    assert rows["s0a"]["spec"] == {"family": "sma_cross", "entry": "sma(close, 5) > close"}
    assert kb.strategy_rows([]) == {}


def test_a_later_write_of_the_same_key_updates_it(kb: KnowledgeBase) -> None:
    kb.save_run(run())
    kb.persist_iteration(batch(iteration=0))
    rescored = batch(iteration=0).model_copy(update={"scores": [score("run-a", 0, "s0a", 70.0)]})
    kb.persist_iteration(rescored)
    scores = {s["strategy_id"]: s["score_total"] for s in
              [*kb.strategy("s0a")["scores"], *kb.strategy("s0b")["scores"]]}
    assert scores == {"s0a": 70.0, "s0b": 12.5}


def test_a_batch_is_all_or_nothing(kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch) -> None:
    kb.save_run(run())
    real = store._upsert

    def fail_on_scores(conn: Connection, table: Table, rows: Sequence[dict[str, Any]],
                       **kw: Any) -> None:
        if table.name == "scores":
            raise sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("disk I/O"))
        return real(conn, table, rows, **kw)

    monkeypatch.setattr(store, "_upsert", fail_on_scores)
    with pytest.raises(KBError) as err:
        kb.persist_iteration(batch(iteration=0))
    assert err.value.error_class is ErrorClass.TRANSIENT
    monkeypatch.setattr(store, "_upsert", real)
    tables = kb.stats()["tables"]
    assert (tables["iterations"], tables["strategies"], tables["backtests"]) == (0, 0, 0)


def test_rows_of_a_missing_strategy_or_run_are_refused_by_name(kb: KnowledgeBase) -> None:
    with pytest.raises(KBError) as no_run:
        kb.persist_iteration(batch(iteration=0))
    assert (no_run.value.code, no_run.value.error_class) == ("KB_INTEGRITY", ErrorClass.PERMANENT)
    assert "save_run" in no_run.value.message
    kb.save_run(run())
    orphan = IterationBatch(
        iteration=IterationRecord(run_id="run-a", iteration=1, state="ITER_DONE", summary={}),
        failures=[FailureRecord(run_id="run-a", iteration=1, strategy_id="never-seen",
                                stage_id="S50", code="COST_DOMINATED")])
    with pytest.raises(KBError) as missing:
        kb.persist_iteration(orphan)
    assert missing.value.code == "KB_INTEGRITY" and "never-seen" in missing.value.message
    stray = batch(iteration=1).model_copy(
        update={"backtests": [backtest("run-a", 0, "s1a", 0.1)]})
    with pytest.raises(KBError) as other_iteration:
        kb.persist_iteration(stray)
    assert other_iteration.value.code == "KB_INTEGRITY"
    assert kb.stats()["tables"]["iterations"] == 0


def test_a_strategy_stored_earlier_may_be_referenced_without_its_record(
        kb: KnowledgeBase) -> None:
    kb.save_run(run())
    kb.persist_iteration(batch(iteration=0))
    again = IterationBatch(
        iteration=IterationRecord(run_id="run-a", iteration=1, state="ITER_DONE", summary={}),
        backtests=[backtest("run-a", 1, "s0a", 0.07, window="validation")])
    kb.persist_iteration(again)
    assert len(kb.strategy("s0a")["backtests"]) == 2


def test_nan_and_numpy_values_are_stored_as_json(kb: KnowledgeBase) -> None:
    kb.save_run(run())
    odd = backtest("run-a", 0, "s0a", float("nan")).model_copy(
        update={"metrics": {"profit_factor": float("inf"), "n": np.int64(3),
                            "curve": np.array([1.0, 2.0])}})
    kb.persist_iteration(batch(iteration=0).model_copy(update={"backtests": [odd]}))
    stored = kb.strategy("s0a")["backtests"][0]
    assert stored["sharpe_per_period"] is None
    assert stored["metrics"] == {"profit_factor": None, "n": 3, "curve": [1.0, 2.0]}


# ---------------------------------------------------------------- what was tried


@pytest.fixture
def two_runs(kb: KnowledgeBase) -> KnowledgeBase:
    """run-1 (older) tested s1, s2, s3; run-2 (newer) tested s2 again and s4 on engine A's
    search window of data-1; plus rows that must not count: engine B, the validation
    window, another data set."""
    kb.save_run(run("run-1", created_ns=100))
    kb.save_run(run("run-2", created_ns=200))
    sids = ["s1", "s2", "s3", "s4", "s5", "s6", "s7"]
    first = IterationBatch(
        iteration=IterationRecord(run_id="run-1", iteration=0, state="ITER_DONE", summary={}),
        strategies=[strategy(s) for s in sids],
        backtests=[backtest("run-1", 0, "s1", 0.10), backtest("run-1", 0, "s2", 0.20),
                   backtest("run-1", 0, "s3", None)],
        scores=[score("run-1", 0, "s1", 40.0), score("run-1", 0, "s2", 80.0)])
    second = IterationBatch(
        iteration=IterationRecord(run_id="run-2", iteration=3, state="ITER_DONE", summary={}),
        backtests=[backtest("run-2", 3, "s2", 0.25), backtest("run-2", 3, "s4", -0.05),
                   backtest("run-2", 3, "s5", 0.9, engine="B"),
                   backtest("run-2", 3, "s6", 0.9, window="validation"),
                   backtest("run-2", 3, "s7", 0.9, data_ref="data-2")],
        scores=[score("run-2", 3, "s2", 55.0), score("run-2", 3, "s4", 90.0, passed=False),
                score("run-2", 3, "s5", 40.0)])
    kb.persist_iteration(first)
    kb.persist_iteration(second)
    return kb


def test_trial_count_counts_distinct_strategies_of_engine_a_search(two_runs: KnowledgeBase
                                                                    ) -> None:
    assert two_runs.trial_count("data-1") == 4  # s1 s2 s3 s4
    assert two_runs.trial_count("data-1", exclude_run="run-2") == 3  # s1 s2 s3
    assert two_runs.trial_count("data-1", exclude_run="run-1") == 2  # s2 s4
    assert two_runs.trial_count("data-2") == 1
    assert two_runs.trial_count("unknown") == 0


def test_tested_keeps_the_latest_run_per_strategy(two_runs: KnowledgeBase) -> None:
    tested = two_runs.tested("data-1")
    assert list(tested["strategy_id"]) == ["s1", "s2", "s3", "s4"]
    assert list(tested["run_id"]) == ["run-1", "run-2", "run-1", "run-2"]
    assert tested["sharpe_per_period"].tolist()[:2] == [0.10, 0.25]
    assert list(tested.columns) == ["run_id", "iteration", "strategy_id", "engine", "window",
                                    "data_ref", "sharpe", "sharpe_per_period", "total_return",
                                    "max_drawdown", "n_trades", "metrics"]
    earlier = two_runs.tested("data-1", exclude_run="run-2")
    assert earlier["sharpe_per_period"].tolist()[:2] == [0.10, 0.20]
    engine_b = two_runs.tested("data-1", engine="B")
    assert list(engine_b["strategy_id"]) == ["s5"]
    assert list(two_runs.tested("data-1", window="validation")["strategy_id"]) == ["s6"]


def test_trial_sharpes_are_the_latest_per_period_sharpes(two_runs: KnowledgeBase) -> None:
    np.testing.assert_array_equal(two_runs.trial_sharpes("data-1"),
                                  [0.10, 0.25, np.nan, -0.05])
    np.testing.assert_array_equal(two_runs.trial_sharpes("data-1", exclude_run="run-2"),
                                  [0.10, 0.20, np.nan])
    assert two_runs.trial_sharpes("unknown").shape == (0,)


def test_earlier_trials_are_the_iterations_stored_before_a_time_whatever_their_run(
        two_runs: KnowledgeBase) -> None:
    """Both runs of ``two_runs`` are still RUNNING (killed, say): their stored
    iterations count as earlier trials of a run created after them, and nothing stored
    later does. The stamp is the first store's: persisting a batch again (a replayed
    write-ahead log) does not move an iteration past the cut."""
    cut = time.time_ns()
    later = IterationBatch(
        iteration=IterationRecord(run_id="run-2", iteration=4, state="ITER_DONE", summary={}),
        strategies=[strategy("s8")], backtests=[backtest("run-2", 4, "s8", 0.3)])
    two_runs.persist_iteration(later)
    assert two_runs.trial_count("data-1") == 5  # s8 is in the knowledge base
    before = two_runs.tested("data-1", stored_before=cut)
    assert list(before["strategy_id"]) == ["s1", "s2", "s3", "s4"]  # not s8
    assert list(before["run_id"]) == ["run-1", "run-2", "run-1", "run-2"]
    np.testing.assert_array_equal(two_runs.trial_sharpes("data-1", stored_before=cut),
                                  [0.10, 0.25, np.nan, -0.05])
    again = IterationBatch(
        iteration=IterationRecord(run_id="run-1", iteration=0, state="ITER_DONE", summary={}),
        backtests=[backtest("run-1", 0, "s1", 0.10)])
    two_runs.persist_iteration(again)
    assert list(two_runs.tested("data-1", stored_before=cut)["strategy_id"]) == \
        ["s1", "s2", "s3", "s4"]
    assert two_runs.tested("data-1", stored_before=0).empty


def test_iterations_stored_before_the_stamp_existed_count_from_their_runs_finish(
        two_runs: KnowledgeBase) -> None:
    """Rows of revision 0012 and older have no ``stored_ns``: their run counts from the
    time it finished, as before; a run that never finished does not count."""
    with two_runs._engine.begin() as conn:
        conn.exec_driver_sql("UPDATE iterations SET stored_ns = NULL")
        conn.exec_driver_sql("UPDATE runs SET finished_ns = 500 WHERE run_id = 'run-1'")
    assert list(two_runs.tested("data-1", stored_before=501)["strategy_id"]) == \
        ["s1", "s2", "s3"]
    assert two_runs.tested("data-1", stored_before=500).empty


def test_top_strategies_on_equal_scores_rank_what_passed_then_the_higher_dsr(
        kb: KnowledgeBase) -> None:
    """Scores are capped at 100, so ties are common: a survivor must not sort below
    failed candidates by the accident of its id."""
    kb.save_run(run("run-1", created_ns=100))
    rows = {"a": (False, 0.99), "b": (True, 0.60), "c": (True, None), "d": (True, 0.97),
            "e": (False, None)}
    kb.persist_iteration(IterationBatch(
        iteration=IterationRecord(run_id="run-1", iteration=1, state="ITER_DONE", summary={}),
        strategies=[strategy(s) for s in rows],
        scores=[score("run-1", 1, s, 100.0, passed=p).model_copy(update={"dsr": d})
                for s, (p, d) in rows.items()]))
    top = kb.top_strategies()
    assert list(top["strategy_id"]) == ["d", "b", "c", "a", "e"]


def test_top_strategies_ranks_each_by_its_best_score(two_runs: KnowledgeBase) -> None:
    top = two_runs.top_strategies()
    assert list(top["strategy_id"]) == ["s4", "s2", "s1", "s5"]
    assert list(top["score_total"]) == [90.0, 80.0, 40.0, 40.0]
    assert list(top["run_id"]) == ["run-2", "run-1", "run-1", "run-2"]
    assert top["params"][0] == {"fast": 10} and top["family"][0] == "sma_cross"
    assert list(two_runs.top_strategies(n=2)["strategy_id"]) == ["s4", "s2"]


def test_top_strategies_on_one_data_set_rank_by_the_scores_on_it(two_runs: KnowledgeBase
                                                                   ) -> None:
    """s4 scored 90 on data-1 and 10 in a run on data-2: on data-2 it ranks by its 10,
    and data-1's strategies are not there."""
    two_runs.save_run(run("run-3", created_ns=300, data_ref="data-2"))
    two_runs.persist_iteration(IterationBatch(
        iteration=IterationRecord(run_id="run-3", iteration=0, state="ITER_DONE", summary={}),
        scores=[score("run-3", 0, "s4", 10.0), score("run-3", 0, "s7", 30.0)]))
    on_two = two_runs.top_strategies(data_ref="data-2")
    assert list(on_two["strategy_id"]) == ["s7", "s4"]
    assert list(on_two["score_total"]) == [30.0, 10.0]
    assert set(on_two["data_ref"]) == {"data-2"}
    anywhere = two_runs.top_strategies()
    assert list(anywhere["strategy_id"][:2]) == ["s4", "s2"]
    assert anywhere["data_ref"][0] == "data-1"
    assert two_runs.data_ref("data-2") == "data-2"
    with pytest.raises(KBError) as ambiguous:
        two_runs.data_ref("data-")
    assert ambiguous.value.code == "KB_AMBIGUOUS"
    with pytest.raises(KBError) as unknown:
        two_runs.data_ref("nope")
    assert unknown.value.code == "KB_NOT_FOUND"
    assert two_runs.data_ref("data-1") == "data-1"  # itself, though data-1x might exist
    two_runs.save_run(run("run-4", created_ns=400, data_ref="sha256:ab12"))
    assert two_runs.data_ref("ab1") == "sha256:ab12"  # the digits without their scheme


def test_strategy_shows_spec_and_history_by_prefix(two_runs: KnowledgeBase) -> None:
    shown = two_runs.strategy("s2")
    assert shown["spec"] == {"family": "sma_cross", "entry": "sma(close, 10) > close"}
    assert [b["run_id"] for b in shown["backtests"]] == ["run-1", "run-2"]
    assert [s["score_total"] for s in shown["scores"]] == [80.0, 55.0]
    assert shown["failures"] == []
    with pytest.raises(KBError) as ambiguous:
        two_runs.strategy("s")
    assert ambiguous.value.code == "KB_AMBIGUOUS"
    with pytest.raises(KBError) as missing:
        two_runs.strategy("q")
    assert missing.value.code == "KB_NOT_FOUND"


def test_a_runs_backtests_scores_and_failures(two_runs: KnowledgeBase) -> None:
    backtests = two_runs.backtests("run-2")
    assert list(zip(backtests["strategy_id"], backtests["engine"], backtests["window"],
                    strict=True)) == [("s2", "A", "search"), ("s4", "A", "search"),
                                      ("s5", "B", "search"), ("s6", "A", "validation"),
                                      ("s7", "A", "search")]
    assert list(two_runs.scores("run-1")["score_total"]) == [40.0, 80.0]
    assert two_runs.failures("run-1").empty
    assert list(two_runs.failures("run-1").columns) == [
        "run_id", "iteration", "strategy_id", "stage_id", "code", "secondary", "evidence"]


def test_failures_carry_code_and_evidence(kb: KnowledgeBase) -> None:
    kb.save_run(run())
    kb.persist_iteration(batch(iteration=0))
    failures = kb.failures("run-a")
    assert list(failures["code"]) == ["TOO_FEW_TRADES"]
    assert failures["evidence"][0] == {"n_trades": 3}
    assert failures["iteration"].tolist() == [0]


def test_show_lists_the_runs_a_strategy_survived_with_their_recorded_numbers(
        kb: KnowledgeBase) -> None:
    """The holdout Sharpe is never a backtest record (nothing in a loop may read it);
    `kb show` takes it, with the rest of the survivor's row, from each run's recorded
    RunSummary, as the run printed it."""
    kb.save_run(run())
    kb.persist_iteration(batch(iteration=0))
    best = {"strategy_id": "s0a", "score_total": 81.5, "iteration": 0, "sharpe_search": 1.9,
            "sharpe_validation": 1.4, "sharpe_holdout": 0.8, "dsr": 0.97,
            "engine_b_sharpe": 1.7}
    assert kb.strategy("s0a")["survived"] == []  # the run has not ended yet
    kb.set_run_status("run-a", "DONE_SUCCESS", {"run_id": "run-a", "best_strategies": [best]})
    assert kb.strategy("s0a")["survived"] == [{"run_id": "run-a", **best}]
    assert kb.strategy("s0b")["survived"] == []
    assert all(b["window"] != "holdout" for b in kb.strategy("s0a")["backtests"])


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite:///kb.sqlite", "sqlite:///{cwd}/kb.sqlite"),
    ("sqlite:///~/kb.sqlite", "sqlite:///{home}/kb.sqlite"),
    ("sqlite:///sub/kb.sqlite?timeout=5", "sqlite:///{cwd}/sub/kb.sqlite?timeout=5"),
    ("sqlite:////abs/kb.sqlite", "sqlite:////abs/kb.sqlite"),
    ("sqlite:///file:kb.sqlite?uri=true", "sqlite:///file:kb.sqlite?uri=true"),
    ("postgresql+psycopg://u:pw@h:5432/db", "postgresql+psycopg://u:pw@h:5432/db"),
])
def test_a_sqlite_file_url_is_anchored_where_it_was_given(
        url: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative to the working directory and ~ as a shell would, written out by hand;
    SQLite's own URIs and other databases as given (a password kept)."""
    from alphaloop.kb.store import anchored_url

    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    monkeypatch.chdir(tmp_path)
    assert anchored_url(url) == expected.format(cwd=tmp_path, home=tmp_path / "h")


def test_a_full_disk_while_the_schema_is_created_is_a_full_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A black-box report: a KB created on a full disk was a CRITICAL KB_MIGRATION_FAIL
    (exit 2); it is the system's ENOSPC (the CLI's exit 75: try again once there is
    room). SQLite's own page limit fills the database for real, mid-migration."""
    import errno

    from alphaloop.kb import migrations

    upgrade = migrations.upgrade

    def on_a_full_disk(conn: Connection) -> None:
        conn.exec_driver_sql("PRAGMA max_page_count = 3")  # SQLITE_FULL past 3 pages
        upgrade(conn)

    monkeypatch.setattr(migrations, "upgrade", on_a_full_disk)
    with pytest.raises(OSError) as info:
        KnowledgeBase(f"sqlite:///{tmp_path / 'kb.sqlite'}")
    assert info.value.errno == errno.ENOSPC and "kb.sqlite" in str(info.value)


def test_a_database_the_process_may_not_open_is_not_called_corrupt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A black-box report: a sound KB in a read-only folder was KB_CORRUPT (CRITICAL).
    As root no folder refuses, so SQLite's refusal and the access check are played
    here (the access check itself is tested below)."""
    path = tmp_path / "kb.sqlite"
    KnowledgeBase(f"sqlite:///{path}").close()
    store.dispose_engines()

    def refused(_: Path) -> Any:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(store, "_read_sqlite_catalog", refused)
    monkeypatch.setattr(store, "_openable", lambda _: False)
    with pytest.raises(KBError) as info:
        KnowledgeBase(f"sqlite:///{path}")
    assert info.value.code == "KB_ACCESS_DENIED" and "write in" in info.value.message
    monkeypatch.setattr(store, "_openable", lambda _: True)  # it opens: something else
    with pytest.raises(KBError) as info:
        KnowledgeBase(f"sqlite:///{path}")
    assert info.value.code == "KB_CORRUPT"


def test_a_folder_that_refuses_new_files_is_not_openable(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite"
    path.write_bytes(b"")
    assert store._openable(path)
    assert not store._openable(tmp_path / "missing" / "kb.sqlite")
