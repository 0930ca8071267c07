"""Campaign actions executed by the campaign loop: one row per ``idempotency_key``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Executing a recommended action (``POST /worlds/{id}/campaign/actions``) inserts its
key in the same transaction as its effect, so the same key twice has exactly one
effect. The model is :class:`alphaloop.world.models.CampaignAction`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(128)
NAME = sa.String(128)
HASH = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "campaign_actions",
        sa.Column("world_id", ID, nullable=False),
        sa.Column("idempotency_key", HASH, nullable=False),
        sa.Column("strategy_id", ID, nullable=False),
        sa.Column("kind", NAME, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("outcome", NAME, nullable=False),
        sa.Column("actor", NAME, nullable=False),
        sa.Column("executed_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["world_id"], ["worlds.world_id"], ondelete="CASCADE",
                                name="fk_campaign_actions_world_id_worlds"),
        sa.PrimaryKeyConstraint("world_id", "idempotency_key", name="pk_campaign_actions"),
    )


def downgrade() -> None:
    op.drop_table("campaign_actions")
