"""Backtest engines: causal indicators, engine A (fast sweep), costs and core metrics."""

from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import BacktestResult, BatchResult, backtest, run_batch

__all__ = ["BacktestResult", "BatchResult", "CostModel", "backtest", "run_batch"]
