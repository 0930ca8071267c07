"""Live-promotion governance: approvals and each strategy's execution target.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

``live_approvals`` is append-only (an approver's approve or reject, bound to the ruleset
it was given under); ``live_candidates`` holds one row per strategy that was ever
planned, approved or activated: its execution target (``paper`` | ``live``), broker,
status and the reasons of its last refusal. Models: :mod:`alphaloop.world.models`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(128)
NAME = sa.String(128)
HASH = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "live_approvals",
        sa.Column("approval_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("world_id", ID, nullable=False),
        sa.Column("strategy_id", ID, nullable=False),
        sa.Column("decision", NAME, nullable=False),
        sa.Column("ruleset_hash", HASH, nullable=False),
        sa.Column("paper_run_id", ID, nullable=False),
        sa.Column("paper_revision", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("actor", NAME, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["world_id"], ["worlds.world_id"], ondelete="CASCADE",
                                name="fk_live_approvals_world_id_worlds"),
        sa.PrimaryKeyConstraint("approval_id", name="pk_live_approvals"),
    )
    op.create_index("ix_live_approvals_lookup", "live_approvals",
                    ["world_id", "strategy_id", "approval_id"])
    op.create_table(
        "live_candidates",
        sa.Column("world_id", ID, nullable=False),
        sa.Column("strategy_id", ID, nullable=False),
        sa.Column("target", NAME, nullable=False),
        sa.Column("broker", NAME, nullable=False),
        sa.Column("status", NAME, nullable=False),
        sa.Column("reasons", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("plan_hash", HASH, nullable=True),
        sa.Column("last_live_at", sa.Double(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("actor", NAME, nullable=False),
        sa.ForeignKeyConstraint(["world_id"], ["worlds.world_id"], ondelete="CASCADE",
                                name="fk_live_candidates_world_id_worlds"),
        sa.PrimaryKeyConstraint("world_id", "strategy_id", name="pk_live_candidates"),
    )


def downgrade() -> None:
    op.drop_index("ix_live_approvals_lookup", table_name="live_approvals")
    op.drop_table("live_candidates")
    op.drop_table("live_approvals")
