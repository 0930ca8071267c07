"""Alembic environment of the knowledge base.

Two ways in:

- programmatic, what :class:`alphaloop.kb.store.KnowledgeBase` does on open: an open
  SQLAlchemy ``Connection`` arrives in ``config.attributes["connection"]`` and every
  pending revision runs on it in ONE transaction, so a failed upgrade leaves the
  database at the revision it had;
- the ``alembic`` command line, for a developer writing the next revision:
  ``alembic -x url=sqlite:///kb.sqlite ...`` with ``script_location`` pointing here.

``render_as_batch`` lets SQLite alter tables (it copies the table, as SQLite has no
ALTER COLUMN); ``transactional_ddl`` is forced on because SQLite does support DDL in a
transaction even though Alembic's default for it says otherwise.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from alphaloop.kb.models import Base


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=True, transactional_ddl=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    return url or context.config.get_main_option("sqlalchemy.url") or ""


def _run() -> None:
    if context.is_offline_mode():
        context.configure(url=_url(), target_metadata=Base.metadata, literal_binds=True,
                          render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = create_engine(_url())
    try:
        with engine.connect() as conn:
            _migrate(conn)
            conn.commit()
    finally:
        engine.dispose()


_run()
