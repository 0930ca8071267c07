"""Paper fills: what the paper runner's engine B filled, bar by bar.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Keyed by ``(world_id, strategy_id, fill_ts, seq)`` (``seq``: the fill's place among
that bar's fills), so the runner re-posting a bar after a crash adds nothing. The model
is :class:`alphaloop.world.models.PaperFill`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "paper_fills",
        sa.Column("world_id", sa.String(128), nullable=False),
        sa.Column("strategy_id", sa.String(128), nullable=False),
        sa.Column("fill_ts", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(128), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("quantity", sa.Double(), nullable=False),
        sa.Column("price", sa.Double(), nullable=False),
        sa.Column("fee", sa.Double(), nullable=False),
        sa.Column("slippage", sa.Double(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["world_id"], ["worlds.world_id"], ondelete="CASCADE",
                                name="fk_paper_fills_world_id_worlds"),
        sa.PrimaryKeyConstraint("world_id", "strategy_id", "fill_ts", "seq",
                                name="pk_paper_fills"),
    )


def downgrade() -> None:
    op.drop_table("paper_fills")
