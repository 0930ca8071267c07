"""Backtest claims (two runs sharing a knowledge base backtest no strategy twice) and
``runs.finished_ns`` (when a run reached its final state).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

``claims`` is keyed by ``(work_key, strategy_id)``: ``work_key`` names the data, the
engine and its settings ("same data, same costs"), so the first writer of a key owns
the work (``INSERT … ON CONFLICT DO NOTHING``) and every other run reads its result.
``lease_until_ns`` is the owner's lease: a ``claimed`` row past it may be taken over.
``result`` is the JSON text of the result (NaN kept), ``payload`` its binary part (the
per-bar returns). ``runs.finished_ns`` tells a run which other runs had ended before it
began (their results are its "earlier runs"). The model is
:class:`alphaloop.kb.models.Claim`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("work_key", sa.String(128), nullable=False),
        sa.Column("strategy_id", sa.String(128), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(128), nullable=False),
        sa.Column("lease_until_ns", sa.BigInteger(), nullable=False),
        sa.Column("takeovers", sa.Integer(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("work_key", "strategy_id", name="pk_claims"),
    )
    op.create_index("ix_claims_run_id", "claims", ["run_id"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("finished_ns", sa.BigInteger(), nullable=True))
    # the runs that had ended before this revision: their last update is when
    op.execute(sa.text("UPDATE runs SET finished_ns = updated_ns WHERE status IN "
                       "('DONE_SUCCESS', 'DONE_BUDGET_EXHAUSTED', 'DONE_EARLY_STOPPED', "
                       "'FAILED_FATAL')"))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("finished_ns")
    op.drop_index("ix_claims_run_id", table_name="claims")
    op.drop_table("claims")
