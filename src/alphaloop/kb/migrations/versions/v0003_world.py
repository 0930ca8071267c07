"""The world service's tables: worlds, policies, evaluation runs and revisions, risk
snapshots, control events, API tokens and the audit log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

The models are :mod:`alphaloop.world.models`; they share the knowledge base's
``Base`` (and its naming convention), so one database holds both.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(128)
NAME = sa.String(128)
HASH = sa.String(64)


def _json() -> sa.JSON:
    return sa.JSON(none_as_null=True)


def upgrade() -> None:
    op.create_table(
        "worlds",
        sa.Column("world_id", ID, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("world_id", name="pk_worlds"),
    )
    op.create_table(
        "world_policies",
        sa.Column("world_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", _json(), nullable=False),
        sa.Column("ruleset_hash", HASH, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("actor", NAME, nullable=False),
        sa.ForeignKeyConstraint(["world_id"], ["worlds.world_id"], ondelete="CASCADE",
                                name="fk_world_policies_world_id_worlds"),
        sa.PrimaryKeyConstraint("world_id", "version", name="pk_world_policies"),
    )
    _evaluations()
    _snapshots_and_events()
    _tokens_and_audit()


def _evaluations() -> None:
    op.create_table(
        "evaluation_runs",
        sa.Column("world_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("strategy_id", ID, nullable=False),
        sa.Column("stage", NAME, nullable=False),
        sa.Column("spec", _json(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("outcome", NAME, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["world_id"], ["worlds.world_id"], ondelete="CASCADE",
                                name="fk_evaluation_runs_world_id_worlds"),
        sa.PrimaryKeyConstraint("world_id", "run_id", name="pk_evaluation_runs"),
    )
    op.create_index("ix_evaluation_runs_lookup", "evaluation_runs",
                    ["world_id", "strategy_id", "stage", "updated_at"])
    op.create_table(
        "evaluation_revisions",
        sa.Column("world_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("content_hash", HASH, nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("ruleset_hash", HASH, nullable=False),
        sa.Column("metrics", _json(), nullable=False),
        sa.Column("metric_sources", _json(), nullable=False),
        sa.Column("risk", _json(), nullable=True),
        sa.Column("rules", _json(), nullable=False),
        sa.Column("outcome", NAME, nullable=False),
        sa.Column("actor", NAME, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["world_id", "run_id"],
                                ["evaluation_runs.world_id", "evaluation_runs.run_id"],
                                ondelete="CASCADE",
                                name="fk_evaluation_revisions_world_id_run_id_evaluation_runs"),
        sa.PrimaryKeyConstraint("world_id", "run_id", "revision",
                                name="pk_evaluation_revisions"),
    )


def _snapshots_and_events() -> None:
    op.create_table(
        "risk_snapshots",
        sa.Column("snapshot_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("content_hash", HASH, nullable=False),
        sa.Column("world_id", ID, nullable=False),
        sa.Column("strategy_id", ID, nullable=False),
        sa.Column("as_of", sa.Double(), nullable=False),
        sa.Column("ttl_s", sa.Double(), nullable=False),
        sa.Column("ingested_at", sa.Double(), nullable=False),
        sa.Column("body", _json(), nullable=False),
        sa.ForeignKeyConstraint(["world_id"], ["worlds.world_id"], ondelete="CASCADE",
                                name="fk_risk_snapshots_world_id_worlds"),
        sa.PrimaryKeyConstraint("snapshot_id", name="pk_risk_snapshots"),
        sa.UniqueConstraint("content_hash", name="uq_risk_snapshots_content_hash"),
    )
    op.create_index("ix_risk_snapshots_latest", "risk_snapshots",
                    ["world_id", "strategy_id", "snapshot_id"])
    op.create_table(
        "control_events",
        sa.Column("event_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("world_id", ID, nullable=False),
        sa.Column("type", NAME, nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_control_events"),
    )
    op.create_index("ix_control_events_world_id", "control_events", ["world_id"])


def _tokens_and_audit() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.String(32), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("role", NAME, nullable=False),
        sa.Column("secret_hash", HASH, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("token_id", name="pk_api_tokens"),
    )
    op.create_table(
        "audit_log",
        sa.Column("audit_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("world_id", ID, nullable=True),
        sa.Column("actor", NAME, nullable=False),
        sa.Column("action", NAME, nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("before_hash", HASH, nullable=True),
        sa.Column("after_hash", HASH, nullable=True),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("audit_id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_world_id", "audit_log", ["world_id"])


def downgrade() -> None:
    for index, table in (("ix_audit_log_world_id", "audit_log"),
                         ("ix_control_events_world_id", "control_events"),
                         ("ix_risk_snapshots_latest", "risk_snapshots"),
                         ("ix_evaluation_runs_lookup", "evaluation_runs")):
        op.drop_index(index, table_name=table)
    for table in ("audit_log", "api_tokens", "control_events", "risk_snapshots",
                  "evaluation_revisions", "evaluation_runs", "world_policies", "worlds"):
        op.drop_table(table)
