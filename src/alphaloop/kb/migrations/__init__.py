"""Schema migrations of the knowledge base (Alembic), shipped inside the package.

The revisions are frozen DDL written by hand, one file per change, in ``versions/``:

- ``0001`` the initial tables;
- ``0002`` ``stage_runs.output_ref`` (where a stage's artifact lives, for resume) and
  an index on ``backtests(data_ref, engine, window)`` (what trial counts filter by);
- ``0003`` the WorldService's tables (worlds, policies, evaluation runs and revisions,
  risk snapshots, control events, tokens, audit log), which share the database.

:class:`alphaloop.kb.store.KnowledgeBase` upgrades a database to :func:`head` when it
opens it; this module only knows revisions, never files or errors.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent


def config(connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged scripts, with no ini file on disk."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    # parsing the revision files is the slow part of opening; do it once per process
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision this code knows."""
    heads = _script().get_heads()
    if len(heads) != 1:  # a packaging mistake, caught by the tests
        raise RuntimeError(f"the knowledge base migrations have {len(heads)} heads: {heads}")
    return heads[0]


def known_revisions() -> frozenset[str]:
    return frozenset(rev.revision for rev in _script().walk_revisions())


def upgrade(connection: Connection, target: str = "head") -> None:
    """Apply every revision up to ``target`` on ``connection`` (in one transaction)."""
    command.upgrade(config(connection), target)
