"""Risk guard trips (MOD-482): a breach halts a strategy until an operator resets it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

One row per trip; ``reset_at`` is set once, by the reset. The model is
:class:`alphaloop.world.models.RiskTrip`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "risk_trips",
        sa.Column("trip_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("world_id", sa.String(128), nullable=False),
        sa.Column("strategy_id", sa.String(128), nullable=False),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("limit_value", sa.Double(), nullable=False),
        sa.Column("bar", sa.Text(), nullable=False),
        sa.Column("tripped_at", sa.Double(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reset_at", sa.Double(), nullable=True),
        sa.Column("reset_by", sa.String(128), nullable=True),
        sa.ForeignKeyConstraint(["world_id"], ["worlds.world_id"], ondelete="CASCADE",
                                name="fk_risk_trips_world_id_worlds"),
        sa.PrimaryKeyConstraint("trip_id", name="pk_risk_trips"),
    )
    op.create_index("ix_risk_trips_lookup", "risk_trips", ["world_id", "strategy_id", "trip_id"])


def downgrade() -> None:
    op.drop_index("ix_risk_trips_lookup", table_name="risk_trips")
    op.drop_table("risk_trips")
