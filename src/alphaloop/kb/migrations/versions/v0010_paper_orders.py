"""Paper orders: the paper runner's engine B orders, one row per order.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

Keyed by ``(world_id, strategy_id, order_ts, symbol, seq)``: the bar the order was
decided at, its symbol, and its place among that symbol's orders decided at that bar.
A row holds the order (side, quantity asked, target weight, reason) and its outcome as
of the bar ``as_of_ts`` (quantity filled, fills, last fill, end, status); a later bar's
report of the same order updates it, the same or an older one changes nothing, so the
runner re-posting a bar after a crash adds nothing. The model is
:class:`alphaloop.world.models.PaperOrder`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "paper_orders",
        sa.Column("world_id", sa.String(128), nullable=False),
        sa.Column("strategy_id", sa.String(128), nullable=False),
        sa.Column("order_ts", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("side", sa.String(16), nullable=True),
        sa.Column("quantity", sa.Double(), nullable=True),
        sa.Column("target_weight", sa.Double(), nullable=True),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("filled_quantity", sa.Double(), nullable=False),
        sa.Column("n_fills", sa.Integer(), nullable=False),
        sa.Column("last_fill_ts", sa.String(64), nullable=True),
        sa.Column("ended_ts", sa.String(64), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("as_of_ts", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["world_id"], ["worlds.world_id"], ondelete="CASCADE",
                                name="fk_paper_orders_world_id_worlds"),
        sa.PrimaryKeyConstraint("world_id", "strategy_id", "order_ts", "symbol", "seq",
                                name="pk_paper_orders"),
    )


def downgrade() -> None:
    op.drop_table("paper_orders")
