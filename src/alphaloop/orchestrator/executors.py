"""Executors: where engine A's batches run. The choice changes speed, never results.

The protocol is shaped like :class:`concurrent.futures.Executor`'s ``map``: the stages
hand it a function and chunks of candidates and get the results back in order. Every
candidate is simulated on its own (engine A's sleeves never look at other
candidates), so splitting a batch into chunks, or the chunks over workers, cannot
change a number.

- ``local`` with ``workers: 1`` runs in the calling process;
- ``local`` with ``workers: N`` runs a process pool (spawned; one numba thread each);
  the panel goes to each worker once (pickled into its initializer), the chunks go as
  spec JSON. Operators registered at run time exist only in the parent process: use one
  worker with them.

- ``ray`` runs the chunks as tasks on a Ray cluster
  (:mod:`alphaloop.orchestrator.ray_executor`, imported only when asked for).

Every executor can say where its work ran (:meth:`Executor.describe`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, Protocol

import numpy as np
import pandas as pd

from alphaloop.data.bars import Bars
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import run_batch
from alphaloop.engines.metrics import CORE_METRICS
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.evaluation.statistics import return_moments_rows
from alphaloop.strategy.spec import StrategySpec

CHUNK = 256
MIN_CHUNK = 16


class Executor(Protocol):
    """What a stage needs from an executor."""

    workers: int

    @property
    def in_process(self) -> bool:
        """Whether :meth:`map` calls ``fn`` in this process (chunks then need no
        serializing: specs travel as the objects they are)."""
        ...

    def map(self, fn: Callable[..., Any], chunks: Sequence[Any]) -> list[Any]:
        """``[fn(chunk) for chunk in chunks]``, in order, possibly elsewhere."""
        ...

    def close(self) -> None: ...

    def describe(self) -> str:
        """Where the work ran, in one line (``alphaloop run`` prints it)."""
        ...


_PANEL: dict[str, Bars] = {}
_WINDOWS: dict[tuple[str, int], tuple[Bars, SignalEvaluator]] = {}


def _init_worker(bars: Bars) -> None:
    import numba

    _PANEL["bars"] = bars
    numba.set_num_threads(1)  # the pool is the parallelism; threads would oversubscribe


class LocalExecutor:
    """In-process (one worker) or a process pool (several)."""

    def __init__(self, workers: int, bars: Bars) -> None:
        self.workers = workers
        self.bars = bars
        self._pool: ProcessPoolExecutor | None = None

    @property
    def in_process(self) -> bool:
        return self.workers <= 1

    def map(self, fn: Callable[..., Any], chunks: Sequence[Any]) -> list[Any]:
        if self.workers <= 1 or len(chunks) <= 1:
            _PANEL["bars"] = self.bars
            return [fn(c) for c in chunks]
        if self._pool is None:
            # spawn, not fork: numba's OpenMP runtime in the parent is not fork-safe
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                             initializer=_init_worker, initargs=(self.bars,))
        return list(self._pool.map(fn, chunks))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def describe(self) -> str:
        return ("local: this process" if self.workers <= 1
                else f"local: a pool of {self.workers} processes")


def make_executor(kind: str, workers: int | None, bars: Bars, *,
                  address: str | None = None) -> Executor:
    """The executor of ``kind``: ``local`` (``workers`` processes, None = 1) or ``ray``
    (attached to the cluster at ``address``; ``workers`` None = the cluster's CPUs)."""
    if kind == "local":
        return LocalExecutor(workers or 1, bars)
    if kind == "ray":
        from alphaloop.orchestrator.ray_executor import RayExecutor

        return RayExecutor(workers, bars, address)
    raise ValueError(f"unknown executor kind {kind!r}")


# ------------------------------------------------------------- the work itself
def backtest_chunk(job: tuple[Sequence[str | StrategySpec], int, float, float]
                   ) -> tuple[pd.DataFrame, np.ndarray]:
    """Engine A on bars ``0..stop-1`` of the worker's panel for specs given as JSON
    (or, in the calling process, as the spec objects): the core metrics and return
    moments (for DSR) per candidate, and the per-bar returns as float32 (for PBO and
    return correlation)."""
    given, stop, fees_bps, slippage_bps = job
    bars, evaluator = _window(stop)
    # a spec refused here (an operator this worker process never registered) is one
    # classified SPEC_INVALID naming it, not a pydantic traceback
    specs = [s if isinstance(s, StrategySpec) else StrategySpec.from_dict(json.loads(s))
             for s in given]
    res = run_batch(specs, bars, CostModel(fees_bps=fees_bps, slippage_bps=slippage_bps),
                    evaluator=evaluator, keep_equity=False)
    frame = res.metrics.reset_index()
    sr, skew, kurt = return_moments_rows(res.returns)
    frame["sr_per_period"], frame["skew"], frame["kurtosis"] = sr, skew, kurt
    frame["n_obs"] = res.returns.shape[1]
    return frame[["strategy_id", *CORE_METRICS, "sr_per_period", "skew", "kurtosis",
                  "n_obs"]], res.returns.astype(np.float32)


def _window(stop: int) -> tuple[Bars, SignalEvaluator]:
    """The panel's first ``stop`` bars and their signal evaluator, kept between chunks:
    indicators shared by candidates of different chunks are computed once."""
    key = (_PANEL["bars"].data_ref, stop)
    hit = _WINDOWS.get(key)
    if hit is None:
        _WINDOWS.clear()  # one window at a time: the search window, mostly
        bars = _PANEL["bars"].slice(0, stop, drop_empty=True)  # as the runner's windows
        hit = _WINDOWS[key] = (bars, SignalEvaluator(bars))
    return hit


def backtest_all(executor: Executor, specs: Sequence[StrategySpec], stop: int,
                 costs: CostModel) -> tuple[pd.DataFrame, np.ndarray]:
    """Every spec through :func:`backtest_chunk`, chunked, results in spec order."""
    if not specs:
        columns = ["strategy_id", *CORE_METRICS, "sr_per_period", "skew", "kurtosis", "n_obs"]
        return pd.DataFrame(columns=columns), np.zeros((0, stop), np.float32)
    # in this process the objects themselves: their parse and id are computed already
    # (JSON and back would validate, parse and hash every spec again)
    payload: Sequence[str | StrategySpec] = (
        specs if executor.in_process else [s.model_dump_json() for s in specs])
    # enough chunks to keep every worker busy, each big enough to amortize its overhead
    size = CHUNK if executor.workers <= 1 else max(
        MIN_CHUNK, min(CHUNK, -(-len(payload) // (4 * executor.workers))))
    jobs = [(payload[i:i + size], stop, costs.fees_bps, costs.slippage_bps)
            for i in range(0, len(payload), size)]
    parts = executor.map(backtest_chunk, jobs)
    frame = pd.concat([p[0] for p in parts], ignore_index=True)
    returns = np.concatenate([p[1] for p in parts], axis=0)
    return frame, returns
