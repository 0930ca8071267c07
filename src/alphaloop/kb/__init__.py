"""The knowledge base (MOD-460/461/462): runs, iterations, stage runs, strategies,
backtests, scores, failures and constraints, in SQLite by default or any SQLAlchemy URL.

:mod:`alphaloop.kb.records` holds the typed records the loop builds;
:class:`KnowledgeBase` stores and queries them; :mod:`alphaloop.kb.models` is the schema
and :mod:`alphaloop.kb.migrations` its history.
"""

from alphaloop.kb.records import (
    BacktestRecord,
    ConstraintRecord,
    ConstraintSetRecord,
    FailureRecord,
    IterationBatch,
    IterationRecord,
    RunRecord,
    ScoreRecord,
    StageRunRecord,
    StrategyRecord,
    TransitionRecord,
)
from alphaloop.kb.store import KBError, KnowledgeBase, default_url, dispose_engines

__all__ = [
    "BacktestRecord",
    "ConstraintRecord",
    "ConstraintSetRecord",
    "FailureRecord",
    "IterationBatch",
    "IterationRecord",
    "KBError",
    "KnowledgeBase",
    "RunRecord",
    "ScoreRecord",
    "StageRunRecord",
    "StrategyRecord",
    "TransitionRecord",
    "default_url",
    "dispose_engines",
]
