"""World guard marks: where a world's risk guard got to, one row per world.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

Keyed by ``world_id``. A row holds the world's book (last equity and exposure per
strategy, the compounded index and its peak) summed over every paper bar before
``upto`` since the reset ``since``, under the limits ``limits``; the guard sums a new
bar at ``upto`` or later from there instead of from the reset. Nothing is lost without
it: a missing or stale row means summing from the reset, as before this revision. The
model is :class:`alphaloop.world.models.WorldGuardMark`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "world_guard_marks",
        sa.Column("world_id", sa.String(128), nullable=False),
        sa.Column("since", sa.String(64), nullable=False),
        sa.Column("limits", sa.Text(), nullable=False),
        sa.Column("upto", sa.String(64), nullable=False),
        sa.Column("book", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["world_id"], ["worlds.world_id"], ondelete="CASCADE",
                                name="fk_world_guard_marks_world_id_worlds"),
        sa.PrimaryKeyConstraint("world_id", name="pk_world_guard_marks"),
    )


def downgrade() -> None:
    op.drop_table("world_guard_marks")
