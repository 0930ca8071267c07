"""Schema migrations and opening rules on a real PostgreSQL server (started by
``scripts/postgres.sh``; see tests/conftest.py). The SQLite counterparts are in
test_kb_migrations.py; the store's reads and writes run on both in test_kb_store.py."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from _kb_records import batch, run
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from test_kb_migrations import HEAD, TABLES  # one list of the migrations' tables

import alphaloop.world.models  # noqa: F401  (the world's tables join Base.metadata)
from alphaloop.errors import ErrorClass
from alphaloop.kb import KBError, KnowledgeBase, dispose_engines, migrations
from alphaloop.kb.models import Base


def _plain(url: str) -> str:
    """The libpq form of a SQLAlchemy URL, for psycopg used directly (not the code under test)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _tables(url: str) -> set[str]:
    with psycopg.connect(_plain(url)) as con:
        return {r[0] for r in con.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def _columns(url: str, table: str) -> list[str]:
    with psycopg.connect(_plain(url)) as con:
        return [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position", (table,))]


def _at_revision(url: str, revision: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        migrations.upgrade(conn, revision)
    engine.dispose()


@pytest.fixture
def pg(fresh_pg_url: Callable[[], str]) -> str:
    return fresh_pg_url()


def test_an_empty_database_is_migrated_to_head_and_matches_the_models(pg: str) -> None:
    assert _tables(pg) == set()
    kb = KnowledgeBase(pg)
    assert kb.revision() == HEAD
    assert _tables(pg) == TABLES | {"alembic_version"}
    engine = create_engine(pg)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_a_database_of_revision_0001_is_upgraded_with_its_data(pg: str) -> None:
    _at_revision(pg, "0001")
    assert "output_ref" not in _columns(pg, "stage_runs")  # really the old schema
    with psycopg.connect(_plain(pg)) as con:
        con.execute("INSERT INTO runs VALUES ('old-run', 'DONE_SUCCESS', 3, 'data-9', "
                    "'{\"a\": 1}', 111, 222, NULL)")
        con.execute("INSERT INTO stage_runs (stage_run_id, run_id, iteration, stage_id, "
                    "attempt, inputs_hash, status, started_ts, finished_ts) VALUES "
                    "('sr1', 'old-run', 0, 'S50', 1, 'h', 'SUCCESS', 1.5, 2.5)")
    kb = KnowledgeBase(pg)
    assert kb.revision() == HEAD
    old = kb.get_run("old-run")
    assert old is not None
    assert (old.status, old.seed, old.data_ref, old.config, old.created_ns, old.updated_ns) \
        == ("DONE_SUCCESS", 3, "data-9", {"a": 1}, 111, 222)
    found = kb.find_stage_run("old-run", 0, "S50", "h")
    assert found is not None and found.output_ref is None
    engine = create_engine(pg)
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("backtests")}
    engine.dispose()
    assert "ix_backtests_data_ref_engine_window" in indexes


def test_a_database_of_revision_0002_gains_the_world_tables_and_can_go_back(pg: str) -> None:
    _at_revision(pg, "0002")
    assert "worlds" not in _tables(pg)
    with psycopg.connect(_plain(pg)) as con:
        con.execute("INSERT INTO runs VALUES ('old-run', 'RUNNING', 5, 'data-1', '{}', 1, 2, "
                    "NULL)")
    kb = KnowledgeBase(pg)
    assert kb.revision() == HEAD and _tables(pg) == TABLES | {"alembic_version"}
    dispose_engines()
    engine = create_engine(pg)
    with engine.begin() as conn:  # down to 0001: the world's tables and output_ref go
        command.downgrade(migrations.config(conn), "0001")
    engine.dispose()
    assert "worlds" not in _tables(pg) and "output_ref" not in _columns(pg, "stage_runs")
    kb = KnowledgeBase(pg)
    assert kb.revision() == HEAD
    stored = kb.get_run("old-run")
    assert stored is not None and stored.seed == 5


def test_a_foreign_database_is_refused_untouched(pg: str) -> None:
    with psycopg.connect(_plain(pg)) as con:
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("INSERT INTO users VALUES (1, 'ada')")
    with pytest.raises(KBError) as err:
        KnowledgeBase(pg)
    assert err.value.code == "KB_FOREIGN" and err.value.error_class is ErrorClass.CRITICAL
    assert "users" in err.value.message and "@127.0.0.1" in err.value.message
    assert _tables(pg) == {"users"}


def test_a_newer_schema_is_refused_untouched(pg: str) -> None:
    KnowledgeBase(pg).save_run(run())
    dispose_engines()
    with psycopg.connect(_plain(pg)) as con:
        con.execute("UPDATE alembic_version SET version_num = '0107'")
    with pytest.raises(KBError) as err:
        KnowledgeBase(pg)
    assert err.value.code == "KB_SCHEMA_NEWER" and "0107" in err.value.message
    with psycopg.connect(_plain(pg)) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("0107",)]
        assert con.execute("SELECT run_id FROM runs").fetchall() == [("run-a",)]


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_an_unreachable_server_is_a_transient_read_failure() -> None:
    with pytest.raises(KBError) as err:
        KnowledgeBase(f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/nothing")
    assert err.value.code == "KB_READ_FAIL" and err.value.error_class is ErrorClass.TRANSIENT


@pytest.mark.parametrize("who, database", [("postgres", "no_such_database"),
                                            ("no_such_role", "postgres")])
def test_a_server_refusing_the_login_is_a_permanent_failure(postgres_server: str, who: str,
                                                            database: str) -> None:
    """A missing database or role will be missing on the next try too: retrying it, or
    a loop pausing on it as on an unreachable server, would only wait."""
    host = postgres_server.split("@", 1)[1].rsplit("/", 1)[0]
    with pytest.raises(KBError) as err:
        KnowledgeBase(f"postgresql+psycopg://{who}@{host}/{database}")
    assert err.value.code == "KB_ACCESS_DENIED"
    assert err.value.error_class is ErrorClass.PERMANENT
    assert "does not exist" in str(err.value)


def test_json_columns_keep_nested_values_and_nulls(pg: str) -> None:
    kb = KnowledgeBase(pg)
    kb.save_run(run())
    kb.persist_iteration(batch(iteration=0))
    stored = kb.strategy("s0b")
    assert stored["params"] == {"fast": 20}
    assert stored["failures"][0]["evidence"] == {"n_trades": 3}
    with psycopg.connect(_plain(pg)) as con:  # real JSON on the server, not text
        kind = con.execute("SELECT json_typeof(evidence) FROM failures").fetchone()
    assert kind == ("object",)


_OPENER = """
import sys, time
from pathlib import Path
from alphaloop.kb import KnowledgeBase, migrations
migrations.head()  # parse the revision files before the start: only the upgrade races
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.002)
print(KnowledgeBase(sys.argv[1]).revision())
"""


def test_processes_opening_a_new_database_at_once_migrate_it_once(pg: str,
                                                                   tmp_path: Path) -> None:
    """The upgrade takes an advisory lock: the first creates the schema, the others
    wait, then find the head revision and do nothing."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, pg, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    time.sleep(4.0)  # let them import, so they really start together
    go.touch()
    results = [p.communicate(timeout=120) for p in procs]
    assert [out.strip() for out, _ in results] == [HEAD] * 3, [err for _, err in results]
    with psycopg.connect(_plain(pg)) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
