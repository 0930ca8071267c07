"""Retry, stop and branch rules (seed 004 PIPE-210 §4-§6, seed 003 §6-§7).

Pure functions and small value objects: the runner asks, these answer. Nothing here
sleeps or touches storage, so every rule is tested on its own.

- **Retry** (§4): only ``TRANSIENT`` errors are retried, only codes on the allowed
  list, within the stage's attempt budget and ``max_total_retries_per_iteration``.
  Backoff is exponential with jitter, ``base · 2^k`` capped, the jitter drawn from a
  generator seeded by (run seed, iteration, stage, attempt): two runs of the same
  config wait the same.
- **Stops** (§5): CRITICAL codes stop at once (``PIPE_STOPPED_CRITICAL``); soft stops
  end the run early after repeated empty shortlists, too few new candidates, or an
  engine B failure rate above the limit.
- **Branches** (§6): what to change when a stage produces nothing; each branch is
  logged (``BRANCH_TAKEN``) and one that repeats without effect raises
  ``PIPE_BRANCH_LOOP_DETECTED``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from alphaloop.errors import AlphaloopError, ErrorClass
from alphaloop.orchestrator.config import Retry
from alphaloop.orchestrator.states import PipelineError

# seed 004 §4.3
RETRY_ALLOWED = frozenset({"DATA_LOAD_FAIL", "TIMEOUT", "OUT_OF_MEMORY", "DB_LOCKED",
                           "KB_WRITE_FAIL", "IO_ERROR"})
RETRY_FORBIDDEN = frozenset({"LOOKAHEAD_POLICY_VIOLATION", "SURVIVORSHIP_CHECK_FAIL",
                             "SCHEMA_MISMATCH", "INVALID_CONFIG", "RISK_GUARD_TRIPPED"})
# seed 004 §5.1 (and the data layer's CRITICAL quality codes)
CRITICAL_STOP_CODES = frozenset({"LOOKAHEAD", "LOOKAHEAD_POLICY_VIOLATION",
                                 "SURVIVORSHIP_CHECK_FAIL", "DQ_DUPLICATE_DAY",
                                 "DQ_DUPLICATE_TIMESTAMP", "PORTFOLIO_STATE_CORRUPT",
                                 "SCHEMA_MISMATCH", "NON_DETERMINISTIC",
                                 "PIPE_POLICY_VIOLATION", "KB_CORRUPT", "KB_FOREIGN",
                                 "KB_SCHEMA_NEWER"})


class RetryBudgetExceeded(PipelineError):
    code = "PIPE_RETRY_BUDGET_EXCEEDED"
    error_class = ErrorClass.PERMANENT


class StoppedCritical(PipelineError):
    code = "PIPE_STOPPED_CRITICAL"
    error_class = ErrorClass.CRITICAL


class BranchLoopDetected(PipelineError):
    code = "PIPE_BRANCH_LOOP_DETECTED"
    error_class = ErrorClass.PERMANENT


def classify(exc: BaseException) -> tuple[str, ErrorClass]:
    """(error_code, error class) of any exception, classified where it arose when it
    is one of ours. Foreign exceptions: OS-level I/O is TRANSIENT (``IO_ERROR``),
    memory ``OUT_OF_MEMORY``, timeouts ``TIMEOUT``; anything else is a bug, PERMANENT."""
    if isinstance(exc, AlphaloopError):
        return exc.code, exc.error_class
    if isinstance(exc, MemoryError):
        return "OUT_OF_MEMORY", ErrorClass.TRANSIENT
    if isinstance(exc, TimeoutError):
        return "TIMEOUT", ErrorClass.TRANSIENT
    if isinstance(exc, OSError):
        return "IO_ERROR", ErrorClass.TRANSIENT
    return f"INTERNAL_{type(exc).__name__.upper()}", ErrorClass.PERMANENT


def is_critical(code: str, error_class: ErrorClass) -> bool:
    return error_class is ErrorClass.CRITICAL or code in CRITICAL_STOP_CODES


@dataclass
class RetryPolicy:
    """Attempt budgets and backoff of one run (seed 004 §4.1-§4.2)."""

    config: Retry
    seed: int
    used_in_iteration: int = 0

    def max_attempts(self, stage_id: str) -> int:
        return self.config.stage_max_attempts.get(stage_id, self.config.default_attempts)

    def should_retry(self, stage_id: str, attempt: int, code: str,
                     error_class: ErrorClass) -> bool:
        """Retry ``attempt`` (1-based, just failed) of ``stage_id``?"""
        if error_class is not ErrorClass.TRANSIENT or code in RETRY_FORBIDDEN:
            return False
        if code not in RETRY_ALLOWED:
            return False
        if attempt >= min(self.max_attempts(stage_id), self.config.max_retries + 1):
            return False
        return self.used_in_iteration < self.config.max_total_retries_per_iteration

    def backoff(self, iteration: int, stage_id: str, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``: base·2^(attempt-1) with
        multiplicative jitter in [1, 2), capped; the same for the same inputs."""
        base = self.config.base_backoff_sec * 2.0 ** (attempt - 1)
        rng = np.random.default_rng(_derive(self.seed, "backoff", iteration, stage_id,
                                            attempt))
        return float(min(base * (1.0 + rng.random()), self.config.max_backoff_sec))

    def new_iteration(self) -> None:
        self.used_in_iteration = 0


def _derive(seed: int, *parts: object) -> int:
    """A child seed for one purpose: sha256 of the run seed and the parts."""
    text = "\x1f".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


derive_seed = _derive


@dataclass
class BranchLog:
    """Branches taken in one run; a branch that repeats without effect is a loop."""

    max_repeats: int = 2
    taken: list[tuple[int, str, str]] = field(default_factory=list)
    _streak: dict[str, int] = field(default_factory=dict)

    def take(self, iteration: int, stage_id: str, branch: str, *, effective: bool) -> None:
        """Record ``branch``; ``effective`` says whether it changed the outcome
        (e.g. the shortlist is no longer empty)."""
        self.taken.append((iteration, stage_id, branch))
        key = f"{stage_id}:{branch}"
        self._streak[key] = 0 if effective else self._streak.get(key, 0) + 1
        if self._streak[key] > self.max_repeats:
            raise BranchLoopDetected(
                f"branch {branch} of {stage_id} taken {self._streak[key]} times in a row "
                "without effect", code="PIPE_BRANCH_LOOP_DETECTED")


@dataclass
class EarlyStop:
    """Seed 003 §7.2: stop when the best score has not improved by more than
    ``min_improve × |best|`` for ``patience`` iterations; a constraint change resets."""

    patience: int
    min_improve: float
    best: float | None = None
    waited: int = 0

    def update(self, score: float | None, *, constraints_changed: bool) -> bool:
        """Feed one iteration's best score; True when the run should stop."""
        if constraints_changed:
            self.waited = 0
        if score is not None and (self.best is None
                                  or score > self.best + self.min_improve * abs(self.best)):
            self.best, self.waited = score, 0
            return False
        if not constraints_changed:
            self.waited += 1
        return self.waited >= self.patience
