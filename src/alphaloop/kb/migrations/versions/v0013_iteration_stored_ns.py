"""``iterations.stored_ns``: when an iteration's records were first stored.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

A run deflates by every trial the knowledge base held on its data when it was created.
Until this revision only runs that had *finished* by then counted (``runs.finished_ns``),
so the trials of a run killed mid-way (it never finishes unless resumed) were left out
of every later run's deflation, and their strategies were backtested again as new. Now
an iteration counts once its records are stored, whatever became of its run. The
stamp is set once and never moved (a replayed batch keeps it), so a run finds the same
earlier trials whenever it asks. Rows from before this revision have none (NULL): their
run counts from its finish time, as before. The model is
:class:`alphaloop.kb.models.Iteration`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("iterations", sa.Column("stored_ns", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("iterations") as batch:
        batch.drop_column("stored_ns")
