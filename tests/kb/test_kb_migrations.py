"""Schema migrations: from nothing, from the previous revision, and files that must be
refused untouched."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _kb_records import open_kb, run
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

import alphaloop.world.models  # noqa: F401  (the world's tables join Base.metadata)
from alphaloop.errors import ErrorClass
from alphaloop.kb import KBError, KnowledgeBase, StageRunRecord, dispose_engines, migrations
from alphaloop.kb.models import Base

HEAD = "0013"  # v0001 the knowledge base, v0002 stage output refs, v0003 the world's tables,
# v0004 the campaign loop's executed actions, v0005 live approvals and candidates,
# v0006 risk guard trips, v0007 paper fills, v0008 backtest claims and runs.finished_ns,
# v0009 paper bars, v0010 paper orders, v0011 world guard marks,
# v0012 the policy version of a live approval, v0013 when an iteration was stored
TABLES = {"runs", "iterations", "transitions", "stage_runs", "strategies", "backtests",
          "scores", "failures", "constraint_sets", "constraints",
          # the WorldService shares the database (migration 0003)
          "worlds", "world_policies", "evaluation_runs", "evaluation_revisions",
          "risk_snapshots", "control_events", "api_tokens", "audit_log",
          "campaign_actions",  # migration 0004
          "live_approvals", "live_candidates",  # migration 0005
          "risk_trips",  # migration 0006
          "paper_fills",  # migration 0007
          "claims",  # migration 0008
          "paper_bars",  # migration 0009
          "paper_orders",  # migration 0010
          "world_guard_marks"}  # migration 0011


def _tables(path: Path) -> set[str]:
    con = sqlite3.connect(path)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    return names


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _at_revision(path: Path, revision: str) -> None:
    """A database built by an older alphaloop: migrated only up to ``revision``."""
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        migrations.upgrade(conn, revision)
    engine.dispose()


def test_the_packaged_migrations_form_one_line_of_thirteen_revisions() -> None:
    assert migrations.head() == HEAD
    assert migrations.known_revisions() == {"0001", "0002", "0003", "0004", "0005", "0006",
                                            "0007", "0008", "0009", "0010", "0011",
                                            "0012", "0013"}


def test_a_database_of_revision_0007_gains_claims_and_the_finish_time_of_ended_runs(
        tmp_path: Path) -> None:
    """0008: a run that had ended (a final status) gets its last update as its finish
    time; a run still going (or paused) gets none; the claims table starts empty."""
    path = tmp_path / "kb.sqlite"
    _at_revision(path, "0007")
    con = sqlite3.connect(path)
    for run_id, status in (("ended", "DONE_BUDGET_EXHAUSTED"), ("failed", "FAILED_FATAL"),
                           ("going", "RUNNING"), ("paused", "PAUSED")):
        con.execute("INSERT INTO runs VALUES (?, ?, 1, 'd', '{}', 10, 20, NULL)",
                    (run_id, status))
    con.commit()
    con.close()
    kb = open_kb(path)
    assert kb.revision() == HEAD
    finished = {r: getattr(kb.get_run(r), "finished_ns", "missing")
                for r in ("ended", "failed", "going", "paused")}
    assert finished == {"ended": 20, "failed": 20, "going": None, "paused": None}
    assert kb.claims("any-key", ["s1"]) == {}


def test_a_database_of_revision_0012_keeps_its_iterations_without_a_stored_time(
        tmp_path: Path) -> None:
    """0013: iterations stored before it get no ``stored_ns`` (NULL); an earlier run's
    trials then count from its finish time, as they did; new iterations are stamped."""
    path = tmp_path / "kb.sqlite"
    _at_revision(path, "0012")
    con = sqlite3.connect(path)
    con.execute("INSERT INTO runs VALUES ('old', 'DONE_CONVERGED', 1, 'd', '{}', 10, 20, NULL, 20)")
    con.execute("INSERT INTO iterations VALUES ('old', 1, 'ITER_DONE', '{}')")
    con.commit()
    con.close()
    kb = open_kb(path)
    assert kb.revision() == HEAD
    assert kb.iterations("old")["stored_ns"].isna().all()
    con = sqlite3.connect(path)
    assert [r[1] for r in con.execute("PRAGMA table_info(iterations)")][-1] == "stored_ns"
    con.close()


@pytest.mark.parametrize("existing", [False, True], ids=["no file", "empty file"])
def test_a_new_or_empty_file_is_migrated_to_head(tmp_path: Path, existing: bool) -> None:
    path = tmp_path / "sub" / "kb.sqlite"
    if existing:
        path.parent.mkdir()
        path.touch()
    kb = open_kb(path)
    assert kb.revision() == HEAD
    assert _tables(path) == TABLES | {"alembic_version"}


def test_the_models_match_the_newest_migration(tmp_path: Path) -> None:
    """The migrations are written by hand; the models must describe the same schema."""
    open_kb(tmp_path / "kb.sqlite")
    engine = create_engine(f"sqlite:///{tmp_path / 'kb.sqlite'}")
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_a_database_of_the_previous_revision_is_upgraded_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite"
    _at_revision(path, "0001")
    con = sqlite3.connect(path)
    con.execute("INSERT INTO runs VALUES ('old-run', 'DONE_SUCCESS', 3, 'data-9', '{\"a\": 1}',"
                " 111, 222, NULL)")
    con.execute("INSERT INTO stage_runs (stage_run_id, run_id, iteration, stage_id, attempt,"
                " inputs_hash, status, started_ts, finished_ts) VALUES"
                " ('sr1', 'old-run', 0, 'S50', 1, 'h', 'SUCCESS', 1.5, 2.5)")
    con.commit()
    columns = [r[1] for r in con.execute("PRAGMA table_info(stage_runs)")]
    con.close()
    assert "output_ref" not in columns  # really the old schema

    kb = open_kb(path)
    assert kb.revision() == HEAD
    old = kb.get_run("old-run")
    assert old is not None
    assert (old.status, old.seed, old.data_ref, old.config, old.created_ns, old.updated_ns) \
        == ("DONE_SUCCESS", 3, "data-9", {"a": 1}, 111, 222)
    found = kb.find_stage_run("old-run", 0, "S50", "h")
    assert found is not None
    assert (found.started_ts, found.finished_ts, found.output_ref) == (1.5, 2.5, None)
    kb.save_stage_run(found.model_copy(update={"stage_run_id": "sr2", "attempt": 2,
                                               "output_ref": "runs/old-run/S50"}))
    assert list(kb.stage_runs("old-run")["output_ref"])[1] == "runs/old-run/S50"
    engine = create_engine(f"sqlite:///{path}")
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("backtests")}
    engine.dispose()
    assert "ix_backtests_data_ref_engine_window" in indexes


def test_the_newest_revision_can_be_undone_and_redone(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite"
    open_kb(path).save_run(run())
    dispose_engines()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        command.downgrade(migrations.config(conn), "0001")
    engine.dispose()
    assert "output_ref" not in [r[1] for r in sqlite3.connect(path).execute(
        "PRAGMA table_info(stage_runs)")]
    kb = open_kb(path)
    assert kb.revision() == HEAD and kb.get_run("run-a") == run()


def test_a_database_of_revision_0002_gains_the_world_tables_with_its_data(
        tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite"
    _at_revision(path, "0002")
    assert "worlds" not in _tables(path)  # really the schema before the world
    con = sqlite3.connect(path)
    con.execute("INSERT INTO runs VALUES ('old-run', 'RUNNING', 5, 'data-1', '{}', 1, 2, NULL)")
    con.commit()
    con.close()
    kb = open_kb(path)
    assert kb.revision() == HEAD and _tables(path) == TABLES | {"alembic_version"}
    old = kb.get_run("old-run")
    assert old is not None and (old.status, old.seed) == ("RUNNING", 5)
    dispose_engines()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # and back: the world's tables go, the KB's data stays
        command.downgrade(migrations.config(conn), "0002")
    engine.dispose()
    assert "worlds" not in _tables(path)
    assert open_kb(path).get_run("old-run") is not None


# ------------------------------------------------------------ refused, never reset


def _refused(path: Path, code: str) -> KBError:
    before, files = _sha(path), sorted(os.listdir(path.parent))
    with pytest.raises(KBError) as err:
        open_kb(path)
    assert err.value.code == code
    assert err.value.error_class is ErrorClass.CRITICAL
    assert str(path) in err.value.message
    assert _sha(path) == before  # not a byte changed
    assert sorted(os.listdir(path.parent)) == files  # no -wal or -shm left beside it
    return err.value


def test_a_truncated_knowledge_base_in_wal_mode_is_refused_without_side_files(
        tmp_path: Path) -> None:
    """A real KB file (WAL mode in its header) cut short: refused, and the -wal/-shm
    files the read-only look created are gone again (a black-box report found them)."""
    whole = tmp_path / "whole.sqlite"
    kb = open_kb(whole)
    for k in range(40):
        kb.save_run(run(f"run-{k}"))
    dispose_engines()
    path = tmp_path / "cut" / "kb.sqlite"
    path.parent.mkdir()
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    _refused(path, "KB_CORRUPT")


def test_garbage_bytes_are_refused_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite"
    path.write_bytes(b"these are not the bytes of a database\n" * 200)
    _refused(path, "KB_CORRUPT")
    assert sorted(os.listdir(tmp_path)) == ["kb.sqlite"]  # no journal or WAL created


def test_a_valid_header_over_garbage_is_refused_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite"
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 32)
    _refused(path, "KB_CORRUPT")


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO users VALUES (1, 'ada')")
    con.commit()
    con.close()
    err = _refused(path, "KB_FOREIGN")
    assert "users" in err.message
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("delete",)


def _tampered(path: Path, sql: str) -> Path:
    """A knowledge base with one run, then ``sql`` run on the file behind its back."""
    open_kb(path).save_run(run())
    dispose_engines()  # let the last connection fold the WAL back into the file
    con = sqlite3.connect(path)
    con.execute(sql)
    con.commit()
    con.close()
    return path


def test_a_knowledge_base_missing_a_table_is_refused_as_corrupt(tmp_path: Path) -> None:
    """At the head revision a dropped table is damage (CRITICAL), not a read error to
    retry (a black-box test got a TRANSIENT KB_READ_FAIL from `kb stats`)."""
    path = _tampered(tmp_path / "kb.sqlite", "DROP TABLE failures")
    err = _refused(path, "KB_CORRUPT")
    assert "failures" in err.message


def test_another_alembic_application_with_a_known_revision_id_is_refused(tmp_path: Path
                                                                        ) -> None:
    path = tmp_path / "kb.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    con.execute("INSERT INTO alembic_version VALUES ('0001')")
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.commit()
    con.close()
    _refused(path, "KB_FOREIGN")


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = _tampered(tmp_path / "kb.sqlite", "UPDATE alembic_version SET version_num = '0107'")
    err = _refused(path, "KB_SCHEMA_NEWER")
    assert "0107" in err.message
    con = sqlite3.connect(path)
    assert con.execute("SELECT run_id FROM runs").fetchall() == [("run-a",)]
    con.close()


def test_a_refusal_is_not_cached(tmp_path: Path) -> None:
    """A file that was fine when first opened and was then replaced by garbage is
    refused on the next open, although the process holds a pooled engine for it."""
    path = tmp_path / "kb.sqlite"
    open_kb(path)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"\x00garbage" * 100)
    _refused(path, "KB_CORRUPT")


def test_a_stage_run_record_fits_the_migrated_table(tmp_path: Path) -> None:
    kb = KnowledgeBase(f"sqlite:///{tmp_path / 'kb.sqlite'}")
    kb.save_run(run())
    record = StageRunRecord(stage_run_id="x", run_id="run-a", iteration=2, stage_id="S95",
                            attempt=1, inputs_hash="ih", status="SUCCESS", started_ts=1.0,
                            finished_ts=2.0, error_code=None, error_class=None,
                            output_ref="runs/run-a/2/S95")
    kb.save_stage_run(record)
    assert kb.find_stage_run("run-a", 2, "S95", "ih") == record


# ------------------------------------------------------------ many openers at once

_OPENER = """
import sys, time
from pathlib import Path
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
from alphaloop.kb import KnowledgeBase
print(KnowledgeBase("sqlite:///" + sys.argv[1], busy_timeout_s=30).revision())
"""


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    """Each upgrade runs in a BEGIN IMMEDIATE transaction: the first creates the
    schema, the others wait for its lock, then find the head revision and do nothing."""
    path, go = tmp_path / "kb.sqlite", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, str(path), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    time.sleep(1.0)  # let them import, so they really start together
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    assert [out.strip() for out, _ in results] == [HEAD] * 3, [err for _, err in results]
    con = sqlite3.connect(path)
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    con.close()


def test_threads_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite"
    start = threading.Barrier(4)
    revisions: list[str | None] = []

    def open_it(k: int) -> None:
        start.wait()
        # distinct timeouts: distinct pooled engines, as in unrelated parts of a program
        revisions.append(KnowledgeBase(f"sqlite:///{path}", busy_timeout_s=30 + k).revision())

    threads = [threading.Thread(target=open_it, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert revisions == [HEAD] * 4
