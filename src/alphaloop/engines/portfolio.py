"""Cross-sectional portfolios in both engines: the wrapper around :mod:`kernel_xs`.

A spec with ``portfolio: {method: cross_sectional, ...}`` (see
:class:`alphaloop.strategy.spec.Portfolio`) is a ranked book, not a set of sleeves.
This module turns such specs into the kernel's arrays: the score of each spec
evaluated once per distinct expression, the ranking of the eligible names at every
bar once per distinct (score, eligibility), the portfolio settings as float rows.
Engine A runs many specs at once (:func:`run_xs`), engine B one spec at several
capital levels (:func:`simulate_xs`); both call the same kernel, engine A with its
cost model written as an execution model (:meth:`ExecutionModel.from_cost_model`).

>>> from alphaloop import load_bars, StrategySpec, backtest
>>> spec = StrategySpec.from_dict({"portfolio": {
...     "method": "cross_sectional", "score": "roc(close, 60)",
...     "long": 0.1, "short": 0.1, "buffer": 0.05, "rebalance_every": 5}})
>>> backtest(spec, load_bars("us_indices")).metrics["sharpe"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numba.typed import List as NumbaList

from alphaloop.data.bars import Bars
from alphaloop.engines import indicators as ind
from alphaloop.engines import kernel_b as kb
from alphaloop.engines import kernel_xs as kx
from alphaloop.engines.costs import CostModel
from alphaloop.engines.execution import ExecutionModel
from alphaloop.engines.kernel_a import portfolio_series
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.engines.sizing import bar_returns
from alphaloop.engines.universe import Universe, UniverseRule, build_universe
from alphaloop.strategy.expression import lookback
from alphaloop.strategy.spec import Portfolio, StrategySpec

if TYPE_CHECKING:
    from alphaloop.engines.engine_a import BatchResult

FILL_ROWS_PER_BAR = 4  # ledger room per name and bar before the exact-size rerun


def is_cross_sectional(spec: StrategySpec) -> bool:
    return spec.portfolio.cross_sectional


def portfolio_row(p: Portfolio) -> np.ndarray:
    """The kernel's settings vector (``kernel_xs.C_*``) for one portfolio."""
    cfg = np.zeros(kx.N_CFG)
    for value, at in ((p.long, kx.C_LONG), (p.short, kx.C_SHORT), (p.buffer, kx.C_BUFFER)):
        if value is not None:
            cfg[at] = float(value)
            cfg[at + 1] = 1.0 if isinstance(value, int) else 0.0
    cfg[kx.C_WEIGHTING] = kx.WEIGHTINGS.index(p.weighting)
    net = p.net_exposure
    cfg[kx.C_GROSS_LONG] = (p.gross + net) / 2.0
    cfg[kx.C_GROSS_SHORT] = (p.gross - net) / 2.0
    cfg[kx.C_REBALANCE] = p.rebalance_every
    cfg[kx.C_MAX_WEIGHT] = p.max_weight or 0.0
    return cfg


def warmup_bars(spec: StrategySpec) -> int:
    """Bars of history the spec's expressions (and inverse-vol weights) need."""
    warm = max(lookback(node) for _, node in spec.expression_nodes())
    p = spec.portfolio
    return max(warm, p.vol_window) if p.weighting == "inverse_vol" else warm


@dataclass
class XsInputs:
    """Everything :func:`kernel_xs.simulate` reads besides the market and the model."""

    orders: NumbaList
    counts: NumbaList
    operands: NumbaList
    runs: np.ndarray
    cfg: np.ndarray


def xs_inputs(specs: Sequence[StrategySpec], ev: SignalEvaluator,
              uni: Universe) -> XsInputs:
    """Scores, exits and rankings for ``specs`` (cross-sectional ones), sharing every
    distinct expression and every distinct ranking across the batch."""
    operands: list[np.ndarray] = []
    slot: dict[int, int] = {}
    rankings: dict[tuple[str, ...], int] = {}
    orders: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    tradable = uni.live & ev.valid

    def index(arr: np.ndarray) -> int:  # the kernel's time-major copy, once per array
        if id(arr) not in slot:
            slot[id(arr)] = len(operands)
            operands.append(np.ascontiguousarray(arr.T))
        return slot[id(arr)]

    runs = np.empty((len(specs), 7), dtype=np.int64)
    exits: dict[str, bool] = {}
    for r, spec in enumerate(specs):
        p = spec.portfolio
        score = ev.values(spec.score_node) if spec.score_node is not None else None
        if score is None:
            raise ValueError(f"spec {spec.strategy_id[:12]} is not cross-sectional")
        vol = _volatility(ev, p.vol_window) if p.weighting == "inverse_vol" else None
        xa, xb, xop = ev.comparison(spec.exit_node)
        key = (str(spec.score_node), str(spec.entry_node), str(spec.exit_node),
               str(p.vol_window) if vol is not None else "")
        if key not in rankings:
            eligible = (tradable & np.isfinite(score) & ev.signal(spec.entry_node, canonical=True)
                        & ~ev.signal(spec.exit_node, canonical=True))
            if vol is not None:
                eligible &= np.isfinite(vol) & (vol > 0)
            order, count = kx.rank_order(np.ascontiguousarray(score.T),
                                         np.ascontiguousarray(eligible.T))
            rankings[key] = len(orders)
            orders.append(order)
            counts.append(count)
        if key[2] not in exits:  # a never-true exit (the default) skips its pass
            exits[key[2]] = bool(ev.signal(spec.exit_node, canonical=True).any())
        runs[r] = (rankings[key], index(score), index(vol) if vol is not None else -1,
                   index(xa), index(xb), xop, exits[key[2]])
    cfg = np.stack([portfolio_row(s.portfolio) for s in specs])
    return XsInputs(orders=NumbaList(orders), counts=NumbaList(counts),
                    operands=NumbaList(operands), runs=runs, cfg=cfg)


def _volatility(ev: SignalEvaluator, window: int) -> np.ndarray:
    """Per-bar std of close-to-close returns over ``window`` bars ending at t."""
    return ev.cached(f"xs_vol({window})",
                     lambda: ind.rolling_std(bar_returns(ev.fields["close"]), window))


@dataclass
class XsOutput:
    equity: np.ndarray
    traded: np.ndarray
    gross: np.ndarray
    net: np.ndarray
    stats: np.ndarray
    fills: np.ndarray
    trades: np.ndarray
    positions: np.ndarray
    orders: np.ndarray  # run 0's orders ledger (``kernel_b.ORDER_FIELDS``) with record


def simulate_xs(market: np.ndarray, ev: SignalEvaluator, uni: Universe,
                inputs: XsInputs, model: ExecutionModel, dt_years: np.ndarray,
                capitals: np.ndarray, *, record: bool = False) -> XsOutput:
    """Run the kernel; with ``record`` run 0 keeps its ledgers (fills, orders), trades
    and positions (rerun once with the exact ledger sizes if the first guess was too
    small: the simulation is deterministic, so the second run is the same run)."""
    n_sym, n_bars = ev.shape
    n_fills = n_sym * FILL_ROWS_PER_BAR + n_bars if record else 0
    n_trades = n_sym * n_bars // 4 + 16 if record else 0
    n_orders = n_fills
    prm = model.kernel_params()
    market_t = np.ascontiguousarray(market.transpose(0, 2, 1))  # time-major (8, T, N)
    valid_t = np.ascontiguousarray(ev.valid.T)
    state_t = np.ascontiguousarray(uni.state.T)
    for _ in range(2):
        fills = np.empty((n_fills, len(kb.FILL_FIELDS)))
        orders = np.empty((n_orders, len(kb.ORDER_FIELDS)))
        trades = np.empty((n_trades, len(kx.TRADE_FIELDS)))
        positions = np.zeros((n_sym, n_bars) if record else (0, 0))
        equity, traded, gross, net, stats, n_rec = kx.simulate(
            market_t, valid_t, state_t, inputs.orders, inputs.counts, inputs.operands,
            inputs.runs, inputs.cfg, prm, dt_years, capitals, fills, orders, trades,
            positions)
        need_f, need_t = int(stats[0, kb.S_FILLS]), int(stats[0, kb.S_TRADES])
        need_o = int(stats[0, kb.S_ORDERS])
        if not record or (need_f <= n_fills and need_t <= n_trades and need_o <= n_orders):
            return XsOutput(equity, traded, gross, net, stats, fills[:need_f] if record
                            else fills, trades[: n_rec[0]], positions,
                            orders[:need_o] if record else orders)
        n_fills, n_trades = max(n_fills, need_f), max(n_trades, need_t)
        n_orders = max(n_orders, need_o)
    raise AssertionError("ledger sizing did not converge")  # pragma: no cover


def years_between(index_ns: np.ndarray) -> np.ndarray:
    """Calendar years elapsed since the previous bar (0 at the first): borrow accrual."""
    seconds = np.diff(index_ns) / 1e9
    return np.concatenate([[0.0], seconds / (365.0 * 86400.0)])





def run_mixed_batch(specs: Sequence[StrategySpec], bars: Bars, costs: CostModel, *,
                    evaluator: SignalEvaluator | None = None, chunk_size: int = 256,
                    progress: Callable[[int], None] | None = None,
                    record_trades: bool = False,
                    universe: UniverseRule | None = None,
                    keep_equity: bool = True) -> BatchResult:
    """Engine A's batch when it holds cross-sectional specs: those run through
    :mod:`kernel_xs`, the others through :func:`engine_a.run_batch`; one result in the
    order of ``specs``, with the same metrics code for both (``keep_equity`` as there)."""
    from alphaloop.engines.engine_a import BatchResult, member_rows, metrics_frame, run_batch

    specs = list(specs)
    ev = evaluator or SignalEvaluator(bars)
    xs = [k for k, s in enumerate(specs) if is_cross_sectional(s)]
    rest = [k for k, s in enumerate(specs) if not is_cross_sectional(s)]
    n_bars = ev.shape[1]
    returns = np.empty((len(specs), n_bars))
    equity = np.empty((len(specs) if keep_equity else 0, n_bars))
    frames: list[pd.DataFrame] = []
    extra: dict[str, Any] = {}
    if rest:
        sub = run_batch([specs[k] for k in rest], bars, costs, evaluator=ev,
                        chunk_size=chunk_size, universe=universe, keep_equity=keep_equity)
        returns[rest] = sub.returns
        if keep_equity:
            equity[rest] = sub.equity
        frames.append(sub.metrics)
    uni = build_universe(ev.valid, bars.index, universe or UniverseRule(),
                         member=member_rows(bars))
    from alphaloop.engines.engine_b import market_array

    market, model = market_array(ev, None), ExecutionModel.from_cost_model(costs)
    dt = years_between(bars.index.asi8)
    for start in range(0, len(xs), chunk_size):
        rows = xs[start:start + chunk_size]
        chunk = [specs[k] for k in rows]
        out = simulate_xs(market, ev, uni, xs_inputs(chunk, ev, uni), model, dt,
                          np.ones(len(chunk)), record=record_trades)
        ret, turnover, exposure = portfolio_series(out.equity, out.traded, out.gross)
        returns[rows] = ret
        if keep_equity:
            equity[rows] = out.equity
        frames.append(metrics_frame(chunk, ret, out.stats, turnover, exposure, bars))
        if record_trades:
            extra = {"trades": out.trades, "net": out.net[0]}
        if progress is not None:
            progress(len(rest) + start + len(rows))
    frame = pd.concat(frames).loc[[s.strategy_id for s in specs]] if len(frames) > 1 \
        else frames[0]
    return BatchResult(specs=specs, index=bars.index, returns=returns, equity=equity,
                       metrics=frame, costs=costs, data_ref=bars.data_ref,
                       periods_per_year=bars.periods_per_year, extra=extra)

