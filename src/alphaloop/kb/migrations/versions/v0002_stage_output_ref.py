"""stage_runs.output_ref; index backtests(data_ref, engine, window).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-20

``output_ref`` says where a finished stage's artifact lives, so a resumed run can
reuse it (seed 004 §7.1). The index serves trial counts and "already tested" lookups,
which filter backtests by data set, engine and window.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stage_runs") as batch:
        batch.add_column(sa.Column("output_ref", sa.Text(), nullable=True))
    op.create_index("ix_backtests_data_ref_engine_window", "backtests",
                    ["data_ref", "engine", "window"])


def downgrade() -> None:
    op.drop_index("ix_backtests_data_ref_engine_window", table_name="backtests")
    with op.batch_alter_table("stage_runs") as batch:
        batch.drop_column("output_ref")
