"""Evaluation: scoring policy, robustness statistics (MOD-432) and reports."""

from alphaloop.evaluation import statistics as _statistics
from alphaloop.evaluation.statistics import *  # noqa: F403  (the public statistics API)

__all__ = list(_statistics.__all__)
