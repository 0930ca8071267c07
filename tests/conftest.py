"""Database backends for the suites that run on both SQLite and PostgreSQL.

``postgres_server`` starts ONE real PostgreSQL server for the whole session with the
project's own ``scripts/postgres.sh`` (which finds PostgreSQL or installs it; a cluster
in a temporary folder on a loopback port), only when a test asks for it. Each test that
wants a PostgreSQL knowledge base gets a fresh, empty database of its own
(``fresh_pg_url``), dropped afterwards. ``kb_url`` is parametrized over both backends.
"""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "postgres.sh"
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of the session's PostgreSQL server (its ``postgres`` database)."""
    where = Path(tempfile.mkdtemp(prefix="alphaloop-pg-")) / "cluster"
    where.parent.chmod(0o755)  # as root the server runs as `nobody`, which must reach it
    done = subprocess.run([str(SCRIPT), "start", str(where)], capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"scripts/postgres.sh could not start PostgreSQL:\n{done.stderr}")
    url = done.stdout.strip().splitlines()[-1]
    try:
        yield url
    finally:
        from alphaloop.kb import dispose_engines

        dispose_engines()
        subprocess.run([str(SCRIPT), "stop", str(where)], capture_output=True, timeout=120,
                       check=False)
        where.parent.rmdir()


def _admin(server_url: str, statement: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@pytest.fixture
def fresh_pg_url(postgres_server: str) -> Iterator[Callable[[], str]]:
    """Make empty databases on the session's server; each is dropped after the test."""
    made: list[str] = []

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        _admin(postgres_server, f'CREATE DATABASE "{name}"')
        made.append(name)
        return postgres_server.rsplit("/", 1)[0] + "/" + name

    yield make
    from alphaloop.kb import dispose_engines

    dispose_engines()
    for name in made:
        _admin(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def kb_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty knowledge base URL: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kb.sqlite'}"
    make: Callable[[], str] = request.getfixturevalue("fresh_pg_url")
    return make()
