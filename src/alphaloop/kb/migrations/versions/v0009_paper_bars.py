"""Paper bars: each bar of a paper run, as its runner reported it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Keyed by ``(world_id, strategy_id, bar_ts)``, so the runner re-posting a bar after a
crash adds nothing. A row holds the bar's equity, return and gross exposure and engine
B's order accounting for the bar (orders sent, filled, partially filled, clipped and
cancelled; the notional left unfilled and still pending; held symbols without a bar);
the world's risk guard sums them over a world's strategies. The model is
:class:`alphaloop.world.models.PaperBar`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "paper_bars",
        sa.Column("world_id", sa.String(128), nullable=False),
        sa.Column("strategy_id", sa.String(128), nullable=False),
        sa.Column("bar_ts", sa.String(64), nullable=False),
        sa.Column("equity", sa.Double(), nullable=False),
        sa.Column("ret", sa.Double(), nullable=False),
        sa.Column("gross", sa.Double(), nullable=False),
        sa.Column("n_orders", sa.Integer(), nullable=False),
        sa.Column("n_fills", sa.Integer(), nullable=False),
        sa.Column("n_partial", sa.Integer(), nullable=False),
        sa.Column("n_clipped", sa.Integer(), nullable=False),
        sa.Column("n_cancelled", sa.Integer(), nullable=False),
        sa.Column("filled_notional", sa.Double(), nullable=False),
        sa.Column("unfilled_notional", sa.Double(), nullable=False),
        sa.Column("pending_notional", sa.Double(), nullable=False),
        sa.Column("untradable", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("recorded_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["world_id"], ["worlds.world_id"], ondelete="CASCADE",
                                name="fk_paper_bars_world_id_worlds"),
        sa.PrimaryKeyConstraint("world_id", "strategy_id", "bar_ts", name="pk_paper_bars"),
    )


def downgrade() -> None:
    op.drop_table("paper_bars")
