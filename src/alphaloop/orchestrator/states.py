"""The state machines of the loop, exactly as the seeds name them.

- :class:`RunState` and :class:`IterationState`: seed 003 (MOD-400) §2;
- :class:`StageStatus`: seed 004 (PIPE-210) §2.1 (its ErrorClass is
  :class:`alphaloop.errors.ErrorClass`).

Only the transitions in the tables below are possible: :meth:`Machine.move` raises
``PIPE_POLICY_VIOLATION`` for any other, so a bug in the runner cannot silently skip
a stage or revive a finished run. Every move returns a :class:`Transition` (from, to,
when, how long the previous state lasted, status, error code) for the knowledge base
and the event log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from alphaloop.errors import AlphaloopError, ErrorClass


class PipelineError(AlphaloopError):
    """A violation of the pipeline's own rules (seed 004 §8)."""

    code = "PIPE_POLICY_VIOLATION"
    error_class = ErrorClass.CRITICAL


class RunState(StrEnum):
    RUN_CREATED = "RUN_CREATED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    DONE_SUCCESS = "DONE_SUCCESS"
    DONE_BUDGET_EXHAUSTED = "DONE_BUDGET_EXHAUSTED"
    DONE_EARLY_STOPPED = "DONE_EARLY_STOPPED"
    FAILED_FATAL = "FAILED_FATAL"


class IterationState(StrEnum):
    ITER_CREATED = "ITER_CREATED"
    GENERATION = "GENERATION"
    BACKTEST_A = "BACKTEST_A"
    BACKTEST_B = "BACKTEST_B"
    SCORING = "SCORING"
    ROBUSTNESS = "ROBUSTNESS"
    REPORTING = "REPORTING"
    ANALYSIS = "ANALYSIS"
    CONSTRAINT_UPDATE = "CONSTRAINT_UPDATE"
    KB_PERSIST = "KB_PERSIST"
    ITER_DONE = "ITER_DONE"
    ITER_FAILED = "ITER_FAILED"


class StageStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    PARTIAL = "PARTIAL"
    SKIPPED = "SKIPPED"
    RETRYING = "RETRYING"
    STOPPED = "STOPPED"


FINAL_RUN_STATES = frozenset({RunState.DONE_SUCCESS, RunState.DONE_BUDGET_EXHAUSTED,
                              RunState.DONE_EARLY_STOPPED, RunState.FAILED_FATAL})
_DONE = tuple(FINAL_RUN_STATES)

RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.RUN_CREATED: frozenset({RunState.RUNNING, RunState.FAILED_FATAL}),
    RunState.RUNNING: frozenset({RunState.PAUSED, *_DONE}),
    # a paused run (storage failure, interrupted) resumes, or is given up
    RunState.PAUSED: frozenset({RunState.RUNNING, RunState.FAILED_FATAL}),
    **{s: frozenset() for s in _DONE},
}

# the pipeline of seed 003 §4.1: scoring gates the verification; B, robustness and
# reporting are conditional (skipped when nothing reaches them); any state may fail
_I = IterationState
ITERATION_TRANSITIONS: dict[IterationState, frozenset[IterationState]] = {
    _I.ITER_CREATED: frozenset({_I.GENERATION}),
    _I.GENERATION: frozenset({_I.BACKTEST_A}),
    _I.BACKTEST_A: frozenset({_I.SCORING}),
    _I.SCORING: frozenset({_I.BACKTEST_B, _I.ROBUSTNESS, _I.REPORTING, _I.ANALYSIS}),
    _I.BACKTEST_B: frozenset({_I.ROBUSTNESS, _I.REPORTING, _I.ANALYSIS}),
    _I.ROBUSTNESS: frozenset({_I.REPORTING, _I.ANALYSIS}),
    _I.REPORTING: frozenset({_I.ANALYSIS}),
    _I.ANALYSIS: frozenset({_I.CONSTRAINT_UPDATE}),
    _I.CONSTRAINT_UPDATE: frozenset({_I.KB_PERSIST}),
    _I.KB_PERSIST: frozenset({_I.ITER_DONE}),
    _I.ITER_DONE: frozenset(),
    _I.ITER_FAILED: frozenset(),
}
for _state in _I:
    if _state not in (_I.ITER_DONE, _I.ITER_FAILED):
        ITERATION_TRANSITIONS[_state] = ITERATION_TRANSITIONS[_state] | {_I.ITER_FAILED}

_S = StageStatus
STAGE_TRANSITIONS: dict[StageStatus, frozenset[StageStatus]] = {
    _S.PENDING: frozenset({_S.RUNNING, _S.SKIPPED, _S.STOPPED}),
    _S.RUNNING: frozenset({_S.SUCCESS, _S.PARTIAL, _S.FAILED, _S.RETRYING, _S.STOPPED}),
    _S.RETRYING: frozenset({_S.RUNNING, _S.FAILED, _S.STOPPED}),
    _S.SUCCESS: frozenset(), _S.PARTIAL: frozenset(), _S.FAILED: frozenset(),
    _S.SKIPPED: frozenset(), _S.STOPPED: frozenset(),
}

E = TypeVar("E", RunState, IterationState, StageStatus)


@dataclass(frozen=True)
class Transition:
    """One recorded move: seed 003 §2 "(ts, duration, status, error_code)"."""

    entity: str  # "run" | "iteration" | "stage"
    from_state: str
    to_state: str
    ts: float  # unix seconds
    duration_ms: float  # time spent in ``from_state``
    error_code: str | None = None


class Machine(Generic[E]):
    """A state and the table of its legal moves."""

    def __init__(self, entity: str, table: dict[E, frozenset[E]], state: E) -> None:
        self.entity = entity
        self.table: dict[E, frozenset[E]] = table
        self.state: E = state
        self._since = time.monotonic()

    def can(self, to: E) -> bool:
        return to in self.table[self.state]

    def move(self, to: E, *, error_code: str | None = None) -> Transition:
        """Go to ``to`` or raise ``PIPE_POLICY_VIOLATION`` naming both states."""
        if not self.can(to):
            raise PipelineError(f"{self.entity}: illegal transition {self.state} -> {to}",
                                code="PIPE_POLICY_VIOLATION")
        now = time.monotonic()
        moved = Transition(self.entity, str(self.state), str(to), time.time(),
                           round((now - self._since) * 1000.0, 3), error_code)
        self.state, self._since = to, now
        return moved


def run_machine(state: RunState = RunState.RUN_CREATED) -> Machine[RunState]:
    return Machine("run", RUN_TRANSITIONS, state)


def iteration_machine() -> Machine[IterationState]:
    return Machine("iteration", ITERATION_TRANSITIONS, IterationState.ITER_CREATED)


def stage_machine() -> Machine[StageStatus]:
    return Machine("stage", STAGE_TRANSITIONS, StageStatus.PENDING)
