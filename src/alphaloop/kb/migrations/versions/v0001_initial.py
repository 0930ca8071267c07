"""The initial knowledge base tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-20

Frozen DDL: never import alphaloop.kb.models here; a later revision changes the schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(128)
NAME = sa.String(128)


def _json() -> sa.JSON:
    return sa.JSON(none_as_null=True)


def _iteration_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["run_id", "iteration"], ["iterations.run_id", "iterations.iteration"],
        name=f"fk_{table}_run_id_iteration_iterations", ondelete="CASCADE")


def _strategy_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["strategy_id"], ["strategies.strategy_id"],
                                   name=f"fk_{table}_strategy_id_strategies")


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"],
                                   name=f"fk_{table}_run_id_runs", ondelete="CASCADE")


def _runs_and_iterations() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("status", NAME, nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("data_ref", ID, nullable=False),
        sa.Column("config", _json(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.Column("summary", _json(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name="pk_runs"),
    )
    op.create_index("ix_runs_data_ref", "runs", ["data_ref"])
    op.create_table(
        "iterations",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("state", NAME, nullable=False),
        sa.Column("summary", _json(), nullable=False),
        _run_fk("iterations"),
        sa.PrimaryKeyConstraint("run_id", "iteration", name="pk_iterations"),
    )


def _transitions_and_stage_runs() -> None:
    op.create_table(
        "transitions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("transition_key", sa.String(64), nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=True),
        sa.Column("entity", NAME, nullable=False),
        sa.Column("stage_id", NAME, nullable=True),
        sa.Column("from_state", NAME, nullable=False),
        sa.Column("to_state", NAME, nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("duration_ms", sa.Double(), nullable=False),
        sa.Column("error_code", NAME, nullable=True),
        _run_fk("transitions"),
        sa.PrimaryKeyConstraint("id", name="pk_transitions"),
        sa.UniqueConstraint("transition_key", name="uq_transitions_transition_key"),
    )
    op.create_index("ix_transitions_run_id", "transitions", ["run_id"])
    op.create_table(
        "stage_runs",
        sa.Column("stage_run_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("stage_id", NAME, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("inputs_hash", ID, nullable=False),
        sa.Column("status", NAME, nullable=False),
        sa.Column("started_ts", sa.Double(), nullable=False),
        sa.Column("finished_ts", sa.Double(), nullable=False),
        sa.Column("error_code", NAME, nullable=True),
        sa.Column("error_class", NAME, nullable=True),
        _run_fk("stage_runs"),
        sa.PrimaryKeyConstraint("stage_run_id", name="pk_stage_runs"),
    )
    op.create_index("ix_stage_runs_run_id", "stage_runs", ["run_id"])
    op.create_index("ix_stage_runs_lookup", "stage_runs",
                    ["run_id", "iteration", "stage_id", "inputs_hash"])


def _strategies() -> None:
    op.create_table(
        "strategies",
        sa.Column("strategy_id", ID, nullable=False),
        sa.Column("spec", _json(), nullable=False),
        sa.Column("family", NAME, nullable=True),
        sa.Column("params", _json(), nullable=False),
        sa.PrimaryKeyConstraint("strategy_id", name="pk_strategies"),
    )
    op.create_index("ix_strategies_family", "strategies", ["family"])


def _per_candidate_keys() -> list[sa.Column[object]]:
    return [sa.Column("run_id", ID, nullable=False),
            sa.Column("iteration", sa.Integer(), nullable=False),
            sa.Column("strategy_id", ID, nullable=False)]


def _backtests() -> None:
    op.create_table(
        "backtests",
        *_per_candidate_keys(),
        sa.Column("engine", NAME, nullable=False),
        sa.Column("window", NAME, nullable=False),
        sa.Column("data_ref", ID, nullable=False),
        sa.Column("sharpe", sa.Double(), nullable=True),
        sa.Column("sharpe_per_period", sa.Double(), nullable=True),
        sa.Column("total_return", sa.Double(), nullable=True),
        sa.Column("max_drawdown", sa.Double(), nullable=True),
        sa.Column("n_trades", sa.Integer(), nullable=True),
        sa.Column("metrics", _json(), nullable=False),
        _iteration_fk("backtests"),
        _strategy_fk("backtests"),
        sa.PrimaryKeyConstraint("run_id", "iteration", "strategy_id", "engine", "window",
                                name="pk_backtests"),
    )
    op.create_index("ix_backtests_strategy_id", "backtests", ["strategy_id"])
    op.create_index("ix_backtests_data_ref", "backtests", ["data_ref"])


def _scores_and_failures() -> None:
    op.create_table(
        "scores",
        *_per_candidate_keys(),
        sa.Column("policy_version", NAME, nullable=False),
        sa.Column("score_total", sa.Double(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("reasons", _json(), nullable=False),
        sa.Column("dsr", sa.Double(), nullable=True),
        sa.Column("psr", sa.Double(), nullable=True),
        _iteration_fk("scores"),
        _strategy_fk("scores"),
        sa.PrimaryKeyConstraint("run_id", "iteration", "strategy_id", name="pk_scores"),
    )
    op.create_index("ix_scores_strategy_id", "scores", ["strategy_id"])
    op.create_table(
        "failures",
        *_per_candidate_keys(),
        sa.Column("stage_id", NAME, nullable=False),
        sa.Column("code", NAME, nullable=False),
        sa.Column("secondary", _json(), nullable=False),
        sa.Column("evidence", _json(), nullable=False),
        _iteration_fk("failures"),
        _strategy_fk("failures"),
        sa.PrimaryKeyConstraint("run_id", "iteration", "strategy_id", "stage_id", "code",
                                name="pk_failures"),
    )
    op.create_index("ix_failures_strategy_id", "failures", ["strategy_id"])
    op.create_index("ix_failures_code", "failures", ["code"])


def _constraints() -> None:
    op.create_table(
        "constraint_sets",
        sa.Column("constraint_set_id", ID, nullable=False),
        sa.Column("parent_id", ID, nullable=True),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("iteration", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("constraint_set_id", name="pk_constraint_sets"),
    )
    op.create_index("ix_constraint_sets_parent_id", "constraint_sets", ["parent_id"])
    op.create_index("ix_constraint_sets_run_id", "constraint_sets", ["run_id"])
    op.create_table(
        "constraints",
        sa.Column("constraint_id", ID, nullable=False),
        sa.Column("constraint_set_id", ID, nullable=False),
        sa.Column("family", NAME, nullable=True),
        sa.Column("kind", NAME, nullable=False),
        sa.Column("rule", _json(), nullable=False),
        sa.Column("support", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(["constraint_set_id"], ["constraint_sets.constraint_set_id"],
                                name="fk_constraints_constraint_set_id_constraint_sets",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("constraint_id", name="pk_constraints"),
    )
    op.create_index("ix_constraints_constraint_set_id", "constraints", ["constraint_set_id"])


def upgrade() -> None:
    _runs_and_iterations()
    _transitions_and_stage_runs()
    _strategies()
    _backtests()
    _scores_and_failures()
    _constraints()


def downgrade() -> None:
    for table in ("constraints", "constraint_sets", "failures", "scores", "backtests",
                  "strategies", "stage_runs", "transitions", "iterations", "runs"):
        op.drop_table(table)
