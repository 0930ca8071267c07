"""Engine A: the fast explorer.

Runs a batch of :class:`StrategySpec` over a :class:`Bars` panel: signals are
evaluated once per distinct sub-expression (see :class:`SignalEvaluator`), then the
numba kernel in :mod:`alphaloop.engines.kernel_a` simulates every candidate ×
symbol sleeve in parallel. Semantics are documented in ``kernel_a``; in short:
signal at t's close, fill at t+1's open, per-side fees and slippage always applied,
capital split equally among the symbols tradable at each bar (see
:mod:`alphaloop.engines.universe`), gap-aware intrabar stops.

>>> from alphaloop import load_bars, StrategySpec, backtest
>>> bars = load_bars("us_indices")
>>> spec = StrategySpec(entry="sma(close, 10) > sma(close, 50)",
...                     exit="sma(close, 10) < sma(close, 50)")
>>> result = backtest(spec, bars)            # doctest: +SKIP
>>> result.metrics["sharpe"]                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pandas as pd
from numba.typed import List as NumbaList

from alphaloop.data.bars import Bars
from alphaloop.engines.costs import CostModel
from alphaloop.engines.kernel_a import (
    BOTH,
    LONG,
    SHORT,
    cuts,
    portfolio_series,
    simulate_batch,
    simulate_blocked,
)
from alphaloop.engines.kernel_b import FILL_REASONS
from alphaloop.engines.metrics import CORE_METRICS, core_metrics
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.engines.sizing import size_arrays
from alphaloop.engines.universe import Universe, UniverseRule, build_universe
from alphaloop.strategy.spec import StrategySpec

_DIRECTION = {"long": LONG, "short": SHORT, "both": BOTH}
ENGINE_VERSION = "engine-a-v1"
BLOCK_BARS = 4096
"""Bars per time block of :func:`kernel_a.simulate_blocked`. Long blocks: candidates with
operands of their own stream each row best in long runs (128-bar blocks were 2.4× slower
on a 500 × 5,040 panel of 40 distinct candidates than 1,024 or more); the grid's shared
indicators gained nothing measurable from short ones on this machine."""
GROUPS_PER_THREAD = 4
"""Candidate groups per thread in :func:`kernel_a.simulate_blocked`: more groups than
threads keep a thread that the machine slows down from holding up the others."""
OPERAND_BUDGET = 1 << 30
"""Bytes of distinct (N, T) operand arrays one chunk may hold: a chunk ends early
rather than pass more (each spec can bring two arrays of its own)."""
METRIC_CELLS = 1 << 17
"""Return cells (rows × T) per :func:`core_metrics` call: its temporaries (1 MiB each)
stay in cache instead of being mapped afresh for every pass (the numbers do not depend
on the cut: every metric is computed row by row)."""


@dataclass
class BatchResult:
    """Results of a batch, row k for ``specs[k]``.

    ``returns`` are per-bar simple portfolio returns (K, T); ``equity`` the equity
    curves (K, T), or (0, T) for a batch run with ``keep_equity=False``; ``metrics`` has
    one row per candidate (index ``strategy_id``) and the :data:`CORE_METRICS` columns.
    """

    specs: list[StrategySpec]
    index: pd.DatetimeIndex
    returns: np.ndarray
    equity: np.ndarray
    metrics: pd.DataFrame
    costs: CostModel
    data_ref: str
    periods_per_year: float
    engine_version: str = ENGINE_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def returns_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.returns.T, index=self.index,
                            columns=[s.strategy_id for s in self.specs])


@dataclass
class BacktestResult:
    """One strategy's result: per-bar returns, equity curve and core metrics."""

    spec: StrategySpec
    returns: pd.Series
    equity: pd.Series
    metrics: dict[str, float]
    costs: CostModel
    data_ref: str
    trades: pd.DataFrame = field(default_factory=pd.DataFrame)
    engine_version: str = ENGINE_VERSION

    def _repr_html_(self) -> str:  # a summary in Jupyter
        from alphaloop.engines.display import result_html, spec_facts

        facts = [*spec_facts(self.spec), ("data", self.data_ref),
                 ("costs", f"fees {self.costs.fees_bps:g} + slippage "
                           f"{self.costs.slippage_bps:g} bps per side"),
                 ("trades", f"{len(self.trades)} (.trades)")]
        return result_html("BacktestResult (engine A)", facts, self.metrics)


def backtest(spec: StrategySpec, bars: Bars, costs: CostModel | None = None, *,
             universe: UniverseRule | None = None) -> BacktestResult:
    """Backtest one spec on ``bars`` with ``costs`` (default: fees and slippage on).

    Unlike a batch, a single backtest also returns its trade list.
    """
    res = run_batch([spec], bars, costs, record_trades=True, universe=universe)
    row = res.metrics.iloc[0]
    metrics = {k: (int(row[k]) if k == "n_trades" else float(row[k])) for k in CORE_METRICS}
    return BacktestResult(
        spec=spec,
        returns=pd.Series(res.returns[0], index=bars.index, name="returns"),
        equity=pd.Series(res.equity[0], index=bars.index, name="equity"),
        metrics=metrics, costs=res.costs, data_ref=res.data_ref,
        trades=trade_frame(res.extra["trades"], bars))


def trade_frame(rows: np.ndarray, bars: Bars) -> pd.DataFrame:
    """The kernel's trade rows as a frame: timestamps, symbol names, exit reasons.

    ``qty`` is the largest size held (a position resized when the universe changes
    keeps its trade); ``pnl`` is in units of the portfolio's starting capital (1.0),
    after costs;
    ``return`` is the trade's pnl over its sleeve's equity at entry. A trade still
    open at the end has no exit time, and is valued at the last close (no exit cost,
    as the equity curve values it).
    Rows are sorted by entry time, then symbol.
    """
    names = np.asarray(bars.symbols, dtype=object)
    if len(rows):  # by entry bar, then symbol name (a stable sort)
        rows = rows[np.lexsort((names[rows[:, 0].astype(np.int64)].astype(str), rows[:, 1]))]
    sym = rows[:, 0].astype(np.int64)
    exit_bar = rows[:, 2].astype(np.int64)
    # a trade still open at the end has no exit time: NaT (the int64 minimum)
    exit_ns = np.where(exit_bar >= 0, bars.index.asi8.take(np.maximum(exit_bar, 0)),
                       np.iinfo(np.int64).min)
    exit_time = pd.DatetimeIndex(exit_ns.view("datetime64[ns]")).tz_localize(bars.index.tz)
    return pd.DataFrame({
        "symbol": names[sym],
        "side": np.where(rows[:, 3] > 0, "long", "short").astype(object),
        "entry_time": bars.index.take(rows[:, 1].astype(np.int64)),
        "exit_time": exit_time,
        "qty": rows[:, 4], "entry_price": rows[:, 5], "exit_price": rows[:, 6],
        "pnl": rows[:, 7], "return": rows[:, 8],
        # engine B's fill reasons extend the exit reasons (a ranked book's "rebalance")
        "reason": np.asarray(FILL_REASONS, dtype=object)[rows[:, 9].astype(np.int64)],
    })


def run_batch(specs: Sequence[StrategySpec], bars: Bars, costs: CostModel | None = None, *,
              evaluator: SignalEvaluator | None = None, chunk_size: int = 256,
              progress: Callable[[int], None] | None = None,
              record_trades: bool = False,
              universe: UniverseRule | None = None,
              keep_equity: bool = True) -> BatchResult:
    """Backtest many specs on one panel; ``progress(n_done)`` is called per chunk.

    ``record_trades`` (one spec only) puts the kernel's trade rows in ``extra["trades"]``.
    ``universe`` says when a symbol that stopped printing bars counts as delisted.
    ``keep_equity=False`` (a sweep, which needs the returns only) keeps no equity
    curves: the result's memory is halved, every number is the same.
    """
    costs = costs or CostModel()
    specs = list(specs)
    if not specs:
        raise ValueError("run_batch needs at least one spec")
    if record_trades and len(specs) != 1:
        raise ValueError("record_trades needs exactly one spec")
    if any(s.portfolio.cross_sectional for s in specs):  # ranked books: their own kernel
        from alphaloop.engines.portfolio import run_mixed_batch  # it builds on this module
        return run_mixed_batch(specs, bars, costs, evaluator=evaluator,
                               chunk_size=chunk_size, progress=progress,
                               record_trades=record_trades, universe=universe,
                               keep_equity=keep_equity)
    ev = evaluator or SignalEvaluator(bars)
    uni = build_universe(ev.valid, bars.index, universe or UniverseRule(),
                         member=member_rows(bars))
    k_total, n_bars = len(specs), ev.shape[1]
    equity = np.empty((k_total if keep_equity else 0, n_bars))
    # without kept curves the kernel writes each chunk's into one scratch block
    scratch = None if keep_equity else np.empty((min(chunk_size, k_total), n_bars))
    returns = np.empty((k_total, n_bars))
    turnover_sum = np.empty(k_total)
    exposure = np.empty(k_total)
    stats = np.empty((k_total, 4))
    trades = np.empty((0, 10))
    start = 0
    while start < k_total:
        n_take, operands, signals = _operands(specs, start, chunk_size, ev)
        sl = slice(start, start + n_take)
        if record_trades:
            eq, traded, gross, stats[sl], trades, n_rec = _simulate_chunk(
                specs[sl], operands, signals, ev, bars, uni, costs, record_trades=True)
            trades = trades[: n_rec[0]]
            returns[sl], turnover_sum[sl], exposure[sl] = portfolio_series(eq, traded, gross)
            if keep_equity:
                equity[sl] = eq
        else:
            eq_rows = equity[sl] if scratch is None else scratch[:n_take]
            turnover_sum[sl], exposure[sl], stats[sl] = _simulate_blocked(
                specs[sl], operands, signals, ev, bars, uni, costs, eq_rows, returns[sl])
        start = sl.stop
        if progress is not None:
            progress(start)
    frame = metrics_frame(specs, returns, stats, turnover_sum, exposure, bars)
    return BatchResult(specs=specs, index=bars.index, returns=returns, equity=equity,
                       metrics=frame, costs=costs, data_ref=bars.data_ref,
                       periods_per_year=bars.periods_per_year,
                       extra={"trades": trades} if record_trades else {})


def metrics_frame(specs: list[StrategySpec], returns: np.ndarray, stats: np.ndarray,
                  turnover_sum: np.ndarray, exposure: np.ndarray, bars: Bars
                  ) -> pd.DataFrame:
    """The core metrics, one row per spec (index ``strategy_id``): ``stats`` (K, >= 4)
    starts with [n_trades, n_wins, gross_profit, gross_loss], ``turnover_sum`` is
    traded notional over equity summed over the bars (annualized here)."""
    ppy = bars.periods_per_year
    n_bars = returns.shape[1]
    turnover = turnover_sum / (n_bars / ppy)
    hist = effective_years(specs, bars)
    rows = max(1, METRIC_CELLS // max(n_bars, 1))  # bounded temporaries, same numbers
    parts = [core_metrics(returns[a:a + rows], ppy, n_trades=stats[a:a + rows, 0],
                          n_wins=stats[a:a + rows, 1], gross_profit=stats[a:a + rows, 2],
                          gross_loss=stats[a:a + rows, 3], turnover=turnover[a:a + rows],
                          exposure=exposure[a:a + rows],
                          effective_history_years=hist[a:a + rows])
             for a in range(0, len(specs), rows)]
    frame = pd.DataFrame({k: np.concatenate([np.asarray(m[k]) for m in parts])
                          for k in CORE_METRICS},
                         index=pd.Index([s.strategy_id for s in specs], name="strategy_id"))
    frame["n_trades"] = frame["n_trades"].astype(np.int64)
    return frame


#: The kernels' operand type when a comparison has a constant side: any layout, read
#: only. The constant arrives as a zero-stride view (``SignalEvaluator._flat``).
OPERAND = numba.types.Array(numba.types.float64, 2, "A", readonly=True)


def operand_list(arrays: list[np.ndarray]) -> Any:
    """``arrays`` as the typed list the kernels index (no copies). Indicators alone
    keep the C-contiguous type, whose compiled kernels index without strides (1-2 %
    faster on an SMA grid); a chunk with a constant operand takes the general one."""
    if all(a.flags.c_contiguous and a.flags.writeable for a in arrays):
        return NumbaList(arrays)
    out = NumbaList.empty_list(OPERAND)
    for arr in arrays:
        out.append(arr)
    return out


def _operands(specs: list[StrategySpec], start: int, chunk_size: int, ev: SignalEvaluator
              ) -> tuple[int, Any, np.ndarray]:
    """The next chunk from ``specs[start]``: (how many specs, their distinct operand
    arrays as a typed list, signals (n, 2, 3) indexing it). Shared indicators are
    handed over as the evaluator's cached arrays, never copied. A chunk holds at most
    ``chunk_size`` specs and, past its first spec, at most :data:`OPERAND_BUDGET`
    bytes of operands, so that memory does not grow with the chunk."""
    operands: list[np.ndarray] = []
    slot: dict[int, int] = {}  # id(array) -> position in operands
    held = 0

    def index(arr: np.ndarray) -> int:
        nonlocal held
        if id(arr) not in slot:
            slot[id(arr)] = len(operands)
            operands.append(arr)
            held += arr.nbytes
        return slot[id(arr)]

    stop = min(len(specs), start + max(chunk_size, 1))
    signals = np.empty((stop - start, 2, 3), dtype=np.int64)
    n = 0
    for spec in specs[start:stop]:
        if n > 0 and held >= OPERAND_BUDGET:
            break
        for side, node in enumerate((spec.entry_node, spec.exit_node)):
            a, b, op = ev.comparison(node)
            signals[n, side] = (index(a), index(b), op)
        n += 1
    return n, operand_list(operands), signals[:n]


_RiskArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _risk_arrays(chunk: list[StrategySpec]) -> _RiskArrays:
    """Per candidate: direction, stop loss, trailing stop, take profit, max bars (0: off)."""
    risk = [s.risk for s in chunk]
    return (np.array([_DIRECTION[s.direction] for s in chunk], dtype=np.int64),
            np.array([r.stop_loss or 0.0 for r in risk]),
            np.array([r.trailing_stop or 0.0 for r in risk]),
            np.array([r.take_profit or 0.0 for r in risk]),
            np.array([r.max_bars or 0 for r in risk], dtype=np.int64))


def _simulate_chunk(chunk: list[StrategySpec], operands: Any, signals: np.ndarray,
                    ev: SignalEvaluator, bars: Bars, uni: Universe, costs: CostModel,
                    record_trades: bool = False) -> tuple[np.ndarray, ...]:
    """One chunk through :func:`kernel_a.simulate_batch` (per-bar traded notional and
    gross exposure come back as (n, T) arrays; the trade list on request)."""
    sizes, size_idx = size_arrays(chunk, ev.fields, bars, ev.cached)
    f = ev.fields
    return simulate_batch(
        f["open"], f["high"], f["low"], f["close"], ev.valid, uni.state, uni.alloc,
        boundaries(uni), uni.reallocate, operands, signals, *_risk_arrays(chunk),
        size_idx, sizes, costs.fee, costs.slippage, record_trades)


def _simulate_blocked(chunk: list[StrategySpec], operands: Any, signals: np.ndarray,
                      ev: SignalEvaluator, bars: Bars, uni: Universe, costs: CostModel,
                      equity: np.ndarray, returns: np.ndarray) -> tuple[np.ndarray, ...]:
    """One chunk through :func:`kernel_a.simulate_blocked`, which fills ``equity`` and
    ``returns`` (views of the batch's rows) and returns (turnover, exposure, stats)."""
    sizes, size_idx = size_arrays(chunk, ev.fields, bars, ev.cached)
    starts, at_bound = cuts(boundaries(uni), ev.shape[1], BLOCK_BARS)
    f = ev.fields
    return simulate_blocked(
        f["open"], f["high"], f["low"], f["close"], ev.valid, uni.state, uni.alloc,
        starts, at_bound, uni.reallocate, operands, signals, *_risk_arrays(chunk),
        size_idx, sizes, costs.fee, costs.slippage,
        max(1, min(len(chunk), GROUPS_PER_THREAD * numba.get_num_threads())), equity,
        returns)


def member_rows(bars: Bars) -> np.ndarray | None:
    """The panel's membership mask in the kernels' asset-major (N, T) layout, or None."""
    mask = bars.member_mask()
    return None if mask is None else np.ascontiguousarray(mask.T)


def boundaries(uni: Universe) -> np.ndarray:
    """Bars where sleeves meet: the allocation set changes or a symbol leaves."""
    live = uni.live
    leaves = np.zeros(live.shape[1], dtype=np.bool_)
    leaves[1:] = np.any(live[:, :-1] & ~live[:, 1:], axis=0)
    return np.flatnonzero(uni.reallocate | leaves).astype(np.int64)


def effective_years(specs: list[StrategySpec], bars: Bars) -> np.ndarray:
    """Years from the first bar where any symbol's signals are defined to the end:
    the first bar with a close in the panel plus the expressions' static warm-up."""
    from alphaloop.engines.portfolio import warmup_bars  # it builds on this module
    valid = ~np.isnan(bars.close)
    first = int(valid.any(axis=1).argmax()) if valid.any() else bars.n_bars
    warm = np.array([warmup_bars(s) for s in specs])
    return np.maximum(bars.n_bars - first - warm, 0) / bars.periods_per_year
