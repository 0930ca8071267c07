"""The records the knowledge base keeps (MOD-460): typed, JSON-ready, loop-agnostic.

The orchestrator builds these; :class:`alphaloop.kb.store.KnowledgeBase` stores them.
Free-form parts (metrics, evidence, configs) are JSON objects; the columns the loop
queries by (ids, codes, data_ref, scores) are fields of their own.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunRecord(_Record):
    """One run (a loop, or a recorded ``evaluate``): its config, the data it read
    (``data_ref``), its status and, once it has one, its RunSummary as JSON."""

    run_id: str
    status: str
    seed: int
    data_ref: str
    config: dict[str, Any]
    created_ns: int
    updated_ns: int
    summary: dict[str, Any] | None = None
    finished_ns: int | None = None  # when it reached its final state (set once)


class TransitionRecord(_Record):
    """One state-machine move (seed 003 §2: ts, duration, status, error_code)."""

    run_id: str
    iteration: int | None = None  # None for the run itself
    entity: str  # run | iteration | stage
    stage_id: str | None = None
    from_state: str
    to_state: str
    ts: float
    duration_ms: float
    error_code: str | None = None


class StageRunRecord(_Record):
    """One attempt of one stage (seed 004 §7.1)."""

    stage_run_id: str
    run_id: str
    iteration: int
    stage_id: str
    attempt: int
    inputs_hash: str
    status: str
    started_ts: float
    finished_ts: float
    error_code: str | None = None
    error_class: str | None = None
    output_ref: str | None = None


class StrategyRecord(_Record):
    """One strategy, by its normalizer hash, with its spec and where it came from."""

    strategy_id: str
    spec: dict[str, Any]  # the canonical spec (StrategySpec.model_dump)
    family: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class BacktestRecord(_Record):
    """One evaluation of one strategy by one engine on one window of one data set."""

    run_id: str
    iteration: int
    strategy_id: str
    engine: str  # A | B
    window: str  # search | validation | holdout | search+validation
    data_ref: str
    sharpe: float | None = None  # annualized, as metrics report it
    sharpe_per_period: float | None = None  # what DSR deflates
    total_return: float | None = None
    max_drawdown: float | None = None
    n_trades: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)


class ScoreRecord(_Record):
    """One scoring of one strategy in one iteration: the policy's total, whether it
    passed every gate (``reasons`` says why not), its DSR and PSR."""

    run_id: str
    iteration: int
    strategy_id: str
    policy_version: str
    score_total: float
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    dsr: float | None = None
    psr: float | None = None


class FailureRecord(_Record):
    """MOD-440: why a candidate was rejected, with evidence."""

    run_id: str
    iteration: int
    strategy_id: str
    stage_id: str
    code: str
    secondary: list[str] = Field(default_factory=list)
    evidence: dict[str, Any] = Field(default_factory=dict)


class ConstraintSetRecord(_Record):
    """MOD-450: one version of the rules, its parent, and what changed and why."""

    constraint_set_id: str
    parent_id: str | None = None
    run_id: str | None = None
    iteration: int | None = None
    note: str = ""


class ConstraintRecord(_Record):
    """One rule of a constraint set: hard (never proposed) or soft (learned, with
    the support and confidence it was learned with)."""

    constraint_id: str
    constraint_set_id: str
    family: str | None = None
    kind: str  # hard | soft
    rule: dict[str, Any]
    support: int = 0
    confidence: float | None = None


class IterationRecord(_Record):
    """One iteration's final state and its summary (seed 003 §9)."""

    run_id: str
    iteration: int
    state: str
    summary: dict[str, Any]


class IterationBatch(_Record):
    """Everything one iteration persists, in one transaction (stage S95)."""

    iteration: IterationRecord
    strategies: list[StrategyRecord] = Field(default_factory=list)
    backtests: list[BacktestRecord] = Field(default_factory=list)
    scores: list[ScoreRecord] = Field(default_factory=list)
    failures: list[FailureRecord] = Field(default_factory=list)
    constraint_sets: list[ConstraintSetRecord] = Field(default_factory=list)
    constraints: list[ConstraintRecord] = Field(default_factory=list)
