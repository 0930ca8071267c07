"""Live approvals name the policy version they were given under.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

An approval holds under the policy version it was given under, not under any version
with the same content: a policy changed and changed back is a change, and asks for a
new approval. Rows from before this revision have no version (NULL) and hold under no
policy (fail-closed: the strategy needs a new approval). The model is
:class:`alphaloop.world.models.LiveApproval`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("live_approvals", sa.Column("policy_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("live_approvals") as batch:
        batch.drop_column("policy_version")
