"""The knowledge base schema (MOD-460) as SQLAlchemy 2 declarative models.

One table per record of :mod:`alphaloop.kb.records`, with the record's fields as
columns. Natural keys are the primary keys wherever a record has one, so every write
can be an upsert and replaying a write changes nothing:

==================  =====================================================
table               key (what makes a write idempotent)
==================  =====================================================
``runs``            ``run_id``
``iterations``      ``(run_id, iteration)``
``transitions``     ``transition_key`` = sha256 of all the record's fields
``stage_runs``      ``stage_run_id``
``strategies``      ``strategy_id`` (the normalizer hash of the spec)
``backtests``       ``(run_id, iteration, strategy_id, engine, window)``
``scores``          ``(run_id, iteration, strategy_id)``
``failures``        ``(run_id, iteration, strategy_id, stage_id, code)``
``constraint_sets`` ``constraint_set_id``
``constraints``     ``constraint_id``
``claims``          ``(work_key, strategy_id)``
==================  =====================================================

Foreign keys tie each iteration's rows to their iteration and to the strategy they
describe, so a half-written or orphaned row cannot exist. No column holds a
wall-clock time that the store invents: two databases that received the same
records hold the same rows.

These models describe the schema at the newest migration. The migrations under
``migrations/versions`` are frozen copies written by hand; a test checks that the
two agree, so change both together (a new revision, never an edited one).
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Explicit constraint names: PostgreSQL needs them to alter or drop a constraint,
# and SQLite batch migrations need them to recreate a table faithfully.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(128)  # run ids, strategy ids (sha256 hex), data refs, stage run ids
NAME = String(128)  # states, statuses, codes, engines, windows, families


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    # a Python None is SQL NULL, not the JSON text 'null' (so IS NULL finds it)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON(none_as_null=True),
                                                     list[str]: JSON(none_as_null=True)}


class Run(Base):
    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(ID, primary_key=True)
    status: Mapped[str] = mapped_column(NAME)
    seed: Mapped[int] = mapped_column(BigInteger)
    data_ref: Mapped[str] = mapped_column(ID, index=True)
    config: Mapped[dict[str, Any]]
    created_ns: Mapped[int] = mapped_column(BigInteger)
    updated_ns: Mapped[int] = mapped_column(BigInteger)
    summary: Mapped[dict[str, Any] | None]
    # revision 0008: when the run reached its final state (set once, never moved)
    finished_ns: Mapped[int | None] = mapped_column(BigInteger)


class Iteration(Base):
    __tablename__ = "iterations"

    run_id: Mapped[str] = mapped_column(
        ID, ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True)
    iteration: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(NAME)
    summary: Mapped[dict[str, Any]]
    # revision 0013: when the iteration's records were first stored (set once, never
    # moved): a later run's "earlier trials" are those stored before it was created
    stored_ns: Mapped[int | None] = mapped_column(BigInteger)


class Transition(Base):
    """Append-only; ``transition_key`` makes a replayed transition a no-op."""

    __tablename__ = "transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transition_key: Mapped[str] = mapped_column(String(64), unique=True)
    run_id: Mapped[str] = mapped_column(
        ID, ForeignKey("runs.run_id", ondelete="CASCADE"), index=True)
    iteration: Mapped[int | None] = mapped_column(Integer)
    entity: Mapped[str] = mapped_column(NAME)
    stage_id: Mapped[str | None] = mapped_column(NAME)
    from_state: Mapped[str] = mapped_column(NAME)
    to_state: Mapped[str] = mapped_column(NAME)
    ts: Mapped[float] = mapped_column(Double)
    duration_ms: Mapped[float] = mapped_column(Double)
    error_code: Mapped[str | None] = mapped_column(NAME)


class StageRun(Base):
    __tablename__ = "stage_runs"
    __table_args__ = (
        Index("ix_stage_runs_lookup", "run_id", "iteration", "stage_id", "inputs_hash"),
    )

    stage_run_id: Mapped[str] = mapped_column(ID, primary_key=True)
    run_id: Mapped[str] = mapped_column(
        ID, ForeignKey("runs.run_id", ondelete="CASCADE"), index=True)
    iteration: Mapped[int] = mapped_column(Integer)
    stage_id: Mapped[str] = mapped_column(NAME)
    attempt: Mapped[int] = mapped_column(Integer)
    inputs_hash: Mapped[str] = mapped_column(ID)
    status: Mapped[str] = mapped_column(NAME)
    started_ts: Mapped[float] = mapped_column(Double)
    finished_ts: Mapped[float] = mapped_column(Double)
    error_code: Mapped[str | None] = mapped_column(NAME)
    error_class: Mapped[str | None] = mapped_column(NAME)
    output_ref: Mapped[str | None] = mapped_column(Text)  # revision 0002


class Strategy(Base):
    __tablename__ = "strategies"

    strategy_id: Mapped[str] = mapped_column(ID, primary_key=True)
    spec: Mapped[dict[str, Any]]
    family: Mapped[str | None] = mapped_column(NAME, index=True)
    params: Mapped[dict[str, Any]]


def _iteration_fk() -> ForeignKeyConstraint:
    return ForeignKeyConstraint(["run_id", "iteration"],
                                ["iterations.run_id", "iterations.iteration"],
                                ondelete="CASCADE")


class Backtest(Base):
    __tablename__ = "backtests"
    __table_args__ = (
        _iteration_fk(),
        # revision 0002: what trial_count/tested filter by
        Index("ix_backtests_data_ref_engine_window", "data_ref", "engine", "window"),
    )

    run_id: Mapped[str] = mapped_column(ID, primary_key=True)
    iteration: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy_id: Mapped[str] = mapped_column(
        ID, ForeignKey("strategies.strategy_id"), primary_key=True, index=True)
    engine: Mapped[str] = mapped_column(NAME, primary_key=True)
    window: Mapped[str] = mapped_column(NAME, primary_key=True)
    data_ref: Mapped[str] = mapped_column(ID, index=True)
    sharpe: Mapped[float | None] = mapped_column(Double)
    sharpe_per_period: Mapped[float | None] = mapped_column(Double)
    total_return: Mapped[float | None] = mapped_column(Double)
    max_drawdown: Mapped[float | None] = mapped_column(Double)
    n_trades: Mapped[int | None] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]]


class Score(Base):
    __tablename__ = "scores"
    __table_args__ = (_iteration_fk(),)

    run_id: Mapped[str] = mapped_column(ID, primary_key=True)
    iteration: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy_id: Mapped[str] = mapped_column(
        ID, ForeignKey("strategies.strategy_id"), primary_key=True, index=True)
    policy_version: Mapped[str] = mapped_column(NAME)
    score_total: Mapped[float] = mapped_column(Double)
    passed: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[list[str]]
    dsr: Mapped[float | None] = mapped_column(Double)
    psr: Mapped[float | None] = mapped_column(Double)


class Failure(Base):
    __tablename__ = "failures"
    __table_args__ = (_iteration_fk(),)

    run_id: Mapped[str] = mapped_column(ID, primary_key=True)
    iteration: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy_id: Mapped[str] = mapped_column(
        ID, ForeignKey("strategies.strategy_id"), primary_key=True, index=True)
    stage_id: Mapped[str] = mapped_column(NAME, primary_key=True)
    code: Mapped[str] = mapped_column(NAME, primary_key=True, index=True)
    secondary: Mapped[list[str]]
    evidence: Mapped[dict[str, Any]]


class ConstraintSet(Base):
    """A version of the learned rules. ``parent_id`` is not a foreign key: a run may
    start from a base set (``cs_base``) that no database has seen."""

    __tablename__ = "constraint_sets"

    constraint_set_id: Mapped[str] = mapped_column(ID, primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(ID, index=True)
    run_id: Mapped[str | None] = mapped_column(ID, index=True)
    iteration: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text)


class Constraint(Base):
    __tablename__ = "constraints"

    constraint_id: Mapped[str] = mapped_column(ID, primary_key=True)
    constraint_set_id: Mapped[str] = mapped_column(
        ID, ForeignKey("constraint_sets.constraint_set_id", ondelete="CASCADE"), index=True)
    family: Mapped[str | None] = mapped_column(NAME)
    kind: Mapped[str] = mapped_column(NAME)
    rule: Mapped[dict[str, Any]]
    support: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[float | None] = mapped_column(Double)


class Claim(Base):
    """Revision 0008: who does a piece of work (``work_key`` names the data, the engine
    and its settings) on a strategy, and its result once done. The first insert of a
    key owns it; a ``claimed`` row whose ``lease_until_ns`` has passed may be taken
    over (``takeovers`` counts how often). ``result`` is JSON text (NaN kept, so the
    numbers read back are the numbers written), ``payload`` its binary part."""

    __tablename__ = "claims"

    work_key: Mapped[str] = mapped_column(ID, primary_key=True)
    strategy_id: Mapped[str] = mapped_column(ID, primary_key=True)
    run_id: Mapped[str] = mapped_column(ID, index=True)
    status: Mapped[str] = mapped_column(NAME)
    lease_until_ns: Mapped[int] = mapped_column(BigInteger)
    takeovers: Mapped[int] = mapped_column(Integer)
    result: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)


TABLES = ("runs", "iterations", "transitions", "stage_runs", "strategies", "backtests",
          "scores", "failures", "constraint_sets", "constraints", "claims")
