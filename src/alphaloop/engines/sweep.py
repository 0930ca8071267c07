"""Sweep: sample a template family, backtest every candidate with engine A, tabulate.

This is the exploration step of the research loop on its own: the same call the
orchestrator's GENERATION → BACKTEST_A stages will make, usable from the CLI
(``alphaloop sweep``) or a notebook. Candidates that mean the same thing (equal
``strategy_id``) are run once.

Model-based samplers (TPE) learn from results, so candidates are asked, run and
told in rounds; the other samplers are asked for everything up front.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from alphaloop.data.bars import Bars
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import run_batch
from alphaloop.engines.metrics import CORE_METRICS
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.strategy.constraints import ConstraintLike
from alphaloop.strategy.samplers import make_sampler
from alphaloop.strategy.spec import StrategySpec
from alphaloop.strategy.templates import get_family

MAIN_METRICS: tuple[str, ...] = ("sharpe", "total_return", "max_drawdown", "n_trades")
"""Right after the id, family and params: what a notebook shows first."""
RESULT_COLUMNS: tuple[str, ...] = (
    "strategy_id", "family", "params", *MAIN_METRICS,
    *(m for m in CORE_METRICS if m not in MAIN_METRICS), "entry", "exit", "direction",
    "spec", "data_ref", "fees_bps", "slippage_bps", "sampler", "seed")


def run_sweep(family: str, bars: Bars, *, n: int, sampler: str = "sobol", seed: int = 0,
              costs: CostModel | None = None, constraints: Sequence[ConstraintLike] = (),
              objective: str = "sharpe", round_size: int = 64,
              progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Backtest up to ``n`` distinct candidates of ``family`` on ``bars``.

    Returns one row per candidate: its id, family, params (JSON) and the main metrics
    first (:data:`MAIN_METRICS`), then the other core metrics, the expressions and what
    reproduces it: the whole spec (JSON), the
    data_ref, the costs, the sampler and the seed. ``objective`` is the metric told to model-based samplers.
    """
    costs = costs or CostModel()
    fam = get_family(family)
    smp = make_sampler(sampler, fam, seed=seed, constraints=constraints)
    ev = SignalEvaluator(bars)
    seen: set[str] = set()
    frames: list[pd.DataFrame] = []
    done = 0
    ask_size = round_size if sampler == "tpe" else n
    while done < n and not smp.exhausted:
        params = smp.ask(min(ask_size, n - done))
        if not params:
            break
        specs = _distinct([fam.build(p) for p in params], seen)
        if specs:
            res = run_batch(specs, bars, costs, evaluator=ev,
                            progress=_offset(progress, done), keep_equity=False)
            frames.append(_rows(specs, res.metrics, bars, costs, sampler, seed))
            for spec, value in zip(specs, res.metrics[objective].to_numpy(), strict=True):
                smp.tell(spec.params, float(value) if np.isfinite(value) else -1e9)
        done += len(specs)
        if progress:
            progress(done)
    if not frames:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def _offset(progress: Callable[[int], None] | None,
            base: int) -> Callable[[int], None] | None:
    """Report a batch's progress as part of the whole sweep."""
    if progress is None:
        return None
    return lambda k: progress(base + k)


def _distinct(specs: list[StrategySpec], seen: set[str]) -> list[StrategySpec]:
    out = []
    for s in specs:
        if s.strategy_id not in seen:
            seen.add(s.strategy_id)
            out.append(s)
    return out


def _rows(specs: list[StrategySpec], metrics: pd.DataFrame, bars: Bars, costs: CostModel,
          sampler: str, seed: int) -> pd.DataFrame:
    frame = metrics.reset_index()
    frame.insert(1, "family", [s.family for s in specs])
    frame.insert(2, "params", [json.dumps(s.params, sort_keys=True) for s in specs])
    frame.insert(3, "entry", [s.entry for s in specs])
    frame.insert(4, "exit", [s.exit for s in specs])
    frame.insert(5, "direction", [s.direction for s in specs])
    frame["spec"] = [s.model_dump_json() for s in specs]  # the whole spec: risk, sizing
    frame["data_ref"] = bars.data_ref
    frame["fees_bps"] = costs.fees_bps
    frame["slippage_bps"] = costs.slippage_bps
    frame["sampler"] = sampler
    frame["seed"] = seed
    return frame[list(RESULT_COLUMNS)]
