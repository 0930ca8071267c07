"""alphaloop: an autonomous research loop for systematic trading strategies.

The public face, imported lazily so that ``alphaloop --help`` stays fast::

    from alphaloop import load_bars, StrategySpec, backtest, run_sweep

    bars = load_bars("us_indices")                  # real S&P 500 + NASDAQ daily bars
    spec = StrategySpec(entry="sma(close, 10) > sma(close, 50)",
                        exit="sma(close, 10) < sma(close, 50)")
    print(backtest(spec, bars).metrics)             # fees and slippage on by default
    table = run_sweep("sma_cross", bars, n=200)     # engine A over sampled candidates

    from alphaloop import RunConfig, Runner         # the research loop
    summary = Runner(RunConfig.from_yaml("examples/run.yaml")).run()
    summary.iterations_frame                        # one row per iteration
    summary.best_frame                              # the survivors
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Bars": "alphaloop.data",
    "load_bars": "alphaloop.data",
    "list_datasets": "alphaloop.data",
    "StrategySpec": "alphaloop.strategy",
    "FAMILIES": "alphaloop.strategy.templates",
    "get_family": "alphaloop.strategy.templates",
    "make_sampler": "alphaloop.strategy.samplers",
    "Constraint": "alphaloop.strategy.constraints",
    "CostModel": "alphaloop.engines",
    "backtest": "alphaloop.engines",
    "run_batch": "alphaloop.engines",
    "run_sweep": "alphaloop.engines.sweep",
    "run": "alphaloop.orchestrator",
    "Runner": "alphaloop.orchestrator",
    "RunConfig": "alphaloop.orchestrator",
    "RunSummary": "alphaloop.orchestrator",
    "KnowledgeBase": "alphaloop.kb.store",
    "register_operator": "alphaloop.strategy.operators",
    "AlphaloopError": "alphaloop.errors",
    "ErrorClass": "alphaloop.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'alphaloop' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
