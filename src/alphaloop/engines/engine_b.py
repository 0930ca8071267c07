"""Engine B: the realistic verifier.

Engine A explores thousands of candidates with simple costs; engine B replays one
strategy the way a broker would have executed it: event by event, with commission,
spread, square-root impact, a cap on participation in the average volume before
each bar (partial fills carried to later bars), whole lots, cash and leverage limits
and short borrow (see :mod:`alphaloop.engines.execution` for every rule and its default, and
:mod:`alphaloop.engines.kernel_b` for the order of events in a bar).

>>> from alphaloop import load_bars, StrategySpec
>>> from alphaloop.engines.engine_b import verify
>>> spec = StrategySpec(entry="sma(close, 10) > sma(close, 50)",
...                     exit="sma(close, 10) < sma(close, 50)")
>>> result = verify(spec, load_bars("us_indices"))      # doctest: +SKIP
>>> result.execution["fill_rate"], result.metrics["sharpe"]  # doctest: +SKIP

Before simulating, every symbol passes the data-quality gate; a symbol that fails
is excluded from the first bar where the failure is observable on (its position
closed at its last good close, with costs; the bars before are untouched) and
reported (``result.excluded``), and the result is ``PARTIAL``.
With every friction off (:meth:`ExecutionModel.frictionless`) engine B reproduces
engine A's returns; :func:`classify_failures` in
:mod:`alphaloop.engines.verification` turns a result into failure codes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from alphaloop.data.bars import Bars
from alphaloop.data.quality import QualityReport, quality_report
from alphaloop.engines import indicators as ind
from alphaloop.engines import kernel_b as kb
from alphaloop.engines.engine_a import _DIRECTION, effective_years, member_rows, trade_frame
from alphaloop.engines.execution import ExecutionModel
from alphaloop.engines.kernel_a import TRADE_FIELDS, portfolio_series
from alphaloop.engines.metrics import CORE_METRICS, core_metrics, return_metrics, to_jsonable
from alphaloop.engines.portfolio import simulate_xs, xs_inputs, years_between
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.engines.sizing import bar_returns, size_arrays
from alphaloop.engines.universe import Universe, UniverseRule, build_universe
from alphaloop.errors import DataError
from alphaloop.strategy.spec import StrategySpec

ENGINE_VERSION = "engine-b-v1"
# capacity curve: the configured capital times 10**(j/2), j = 0..16 (eight decades)
CAPACITY_STEPS = tuple(10.0 ** (j / 2.0) for j in range(17))


@dataclass
class VerificationResult:
    """What engine B found for one strategy.

    - ``returns``: per-bar simple returns of the portfolio; ``daily_returns`` the
      same compounded per UTC calendar day; ``equity`` in account currency.
    - ``metrics``: the core metrics (:data:`CORE_METRICS`), annualized with the
      panel's ``periods_per_year``.
    - ``fills``: the ledger, one row per fill (timestamp, symbol, side, quantity,
      price, ref_price, fee, spread_cost, impact_cost, participation, adv_util,
      slippage, reason); costs in currency, ``price`` after spread and impact,
      ``slippage`` = spread_cost + impact_cost.
    - ``orders``: the order ledger, one row per order in the order placed
      (:func:`orders_frame`); ``len(orders) == execution["n_orders"]``, and each
      fill belongs to exactly one order.
    - ``trades``: round trips as in engine A, but ``pnl`` in account currency
      (after every cost, borrow included) and ``qty`` the largest size held.
    - ``positions``: shares held at each close (T × N).
    - ``execution``: fill rate, costs by component, participation and ADV
      utilization p95, order counts and the capacity estimate. ``filled_notional``,
      ``unfilled_notional`` and ``pending_at_end_notional`` value shares at the
      reference price (the fills' ``ref_price``, before spread and impact), so that the
      fill rate compares like with like; the cost of the fills is in ``costs``.
    - ``status``: ``SUCCESS``, or ``PARTIAL`` when symbols failed the data gate
      (``excluded`` says which, from which bar and why).
    - ``output_hash``: sha256 of equity, fills and positions, for determinism checks.

    The frames (``fills``, ``orders``, ``trades``, ``positions``, ``daily_returns``) are built
    from the kernel's arrays on first access, so a caller that needs only the metrics
    (a sweep of verifications) does not pay for them.
    """

    spec: StrategySpec
    model: ExecutionModel
    returns: pd.Series
    equity: pd.Series
    metrics: dict[str, float]
    execution: dict[str, Any]
    bars: Bars = field(repr=False)
    fill_rows: np.ndarray = field(repr=False)
    trade_rows: np.ndarray = field(repr=False)
    position_rows: np.ndarray = field(repr=False)
    order_rows: np.ndarray = field(repr=False)
    status: str
    excluded: list[dict[str, Any]]
    data_ref: str
    periods_per_year: float
    output_hash: str
    engine_version: str = ENGINE_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def _repr_html_(self) -> str:  # a summary in Jupyter
        from alphaloop.engines.display import result_html, spec_facts

        ex = self.execution
        cap = (ex.get("capacity") or {}).get("capital")
        facts = [*spec_facts(self.spec), ("status", self.status), ("data", self.data_ref),
                 ("model", self.model.version),
                 ("fill rate", f"{100 * ex.get('fill_rate', float('nan')):.2f}%"),
                 ("fills", f"{ex.get('n_fills')} (.fills)"),
                 ("capacity", "n/a" if cap is None else f"{cap:,.0f} (Sharpe halves)")]
        return result_html("VerificationResult (engine B)", facts, self.metrics)

    @cached_property
    def fills(self) -> pd.DataFrame:
        return fills_frame(self.fill_rows, self.bars)

    @cached_property
    def orders(self) -> pd.DataFrame:
        return orders_frame(self.order_rows, self.bars)

    @cached_property
    def trades(self) -> pd.DataFrame:
        return trade_frame(self.trade_rows, self.bars)

    @cached_property
    def positions(self) -> pd.DataFrame:
        return pd.DataFrame(self.position_rows.T, index=self.bars.index,
                            columns=list(self.bars.symbols))

    @cached_property
    def daily_returns(self) -> pd.Series:
        return daily_returns(self.returns)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no per-bar series)."""
        return {
            "strategy_id": self.spec.strategy_id, "engine_version": self.engine_version,
            "execution_model": self.model.version, "data_ref": self.data_ref,
            "status": self.status, "excluded": self.excluded,
            "metrics": to_jsonable(self.metrics),
            "execution": to_jsonable(self.execution),
            "output_hash": self.output_hash,
        }


def verify(spec: StrategySpec, bars: Bars, model: ExecutionModel | None = None, *,
           capacity: bool = True, evaluator: SignalEvaluator | None = None,
           universe: UniverseRule | None = None) -> VerificationResult:
    """Simulate ``spec`` on ``bars`` under ``model`` (default: realistic frictions).

    ``capacity=True`` also reruns the strategy at increasing capital (the configured
    capital × 10^0.5 … 10^8, in parallel) to find where its Sharpe ratio halves.
    ``evaluator`` may share signal computations with other runs on the same bars.
    ``universe`` says when a symbol that stopped printing bars counts as delisted.
    """
    model = model or ExecutionModel()
    if evaluator is None or evaluator.bars is not bars:
        evaluator = SignalEvaluator(bars)
    uni, excluded = data_gate(bars, model, evaluator.valid, universe or UniverseRule())
    capitals = np.array([model.initial_capital * f
                         for f in (CAPACITY_STEPS if capacity else (1.0,))])
    extra: dict[str, Any] = {}
    out: tuple[np.ndarray, ...]
    if spec.portfolio.cross_sectional:  # a ranked book: one cash account, one kernel
        xs = simulate_xs(market_array(evaluator, model), evaluator, uni,
                         xs_inputs([spec] * len(capitals), evaluator, uni), model,
                         years_between(bars.index.asi8), capitals, record=True)
        out = (xs.equity, xs.traded, xs.gross, xs.stats, xs.fills, xs.trades, xs.positions,
               xs.orders)
        extra["net_exposure"] = xs.net[0] / np.where(xs.equity[0] > 0, xs.equity[0], np.nan)
    else:
        out = _simulate(_kernel_inputs(spec, bars, model, evaluator, uni), capitals)
    equity, traded, gross, stats, fills, trades, positions, orders = out
    cap = model.initial_capital
    # portfolio_series wants equity starting at 1.0; it also zeroes a ruined run
    scaled = equity[:1] / cap
    returns, turnover_sum, exposure = portfolio_series(scaled, traded[:1] / cap,
                                                       gross[:1] / cap)
    ppy = bars.periods_per_year
    n_bars = bars.n_bars
    st = stats[0]
    m = core_metrics(returns[0], ppy, n_trades=st[kb.S_TRADES], n_wins=st[kb.S_WINS],
                     gross_profit=st[kb.S_GPROFIT], gross_loss=st[kb.S_GLOSS],
                     turnover=turnover_sum[0] / (n_bars / ppy), exposure=exposure[0],
                     effective_history_years=effective_years([spec], bars)[0])
    metrics = {k: (int(m[k]) if k == "n_trades" else float(m[k])) for k in CORE_METRICS}
    execution = _execution_stats(st, fills, scaled[0] * cap, bars, cap)
    execution["capacity"] = (_capacity(equity, capitals, ppy) if capacity
                             else {"capital": None, "note": "not computed"})
    ret = pd.Series(returns[0], index=bars.index, name="returns")
    eq = pd.Series(scaled[0] * cap, index=bars.index, name="equity")
    digest = hashlib.sha256()
    for arr in (equity[0], fills, positions):
        digest.update(np.ascontiguousarray(arr).tobytes())
    return VerificationResult(
        spec=spec, model=model, returns=ret, equity=eq, metrics=metrics, execution=execution,
        bars=bars, fill_rows=fills, trade_rows=trades, position_rows=positions,
        order_rows=orders,
        status="PARTIAL" if excluded else "SUCCESS", excluded=excluded,
        data_ref=bars.data_ref, periods_per_year=ppy, output_hash=digest.hexdigest(),
        extra={"ruined_bar": int(st[kb.S_RUINED]),
               "realized_leverage": _leverage(gross[0], scaled[0] * cap), **extra})


# ----------------------------------------------------------------- data gate
def data_gate(bars: Bars, model: ExecutionModel, valid: np.ndarray,
              rule: UniverseRule) -> tuple[Universe, list[dict[str, Any]]]:
    """The universe engine B trades: the causal listing/delisting rule, plus the
    data-quality gate, which acts only from the bar where a failure is observable.

    A symbol fails at the first bar of any data-quality *error* (``DQ_*`` error codes
    of :func:`quality_report`) and is excluded from that bar on. When the model needs
    volume (a participation cap or impact) a symbol is tradable only from its first
    bar with positive volume (``DQ_NO_VOLUME`` until then; one that never has any is
    reported). Warnings pass. Panel-wide errors, and a panel where no symbol is ever
    tradable, raise ``DataError`` (``DATA_FAILURE``): the panel is refused outright.
    ``valid`` is the (N, T) mask of bars with all of OHLC.
    """
    report = _quality(bars)
    fail_bar = np.full(bars.n_symbols, bars.n_bars, dtype=np.int64)
    reasons: dict[str, list[str]] = {}
    col = {sym: j for j, sym in enumerate(bars.symbols)}
    for issue in report.errors:
        if issue.symbol is None:
            raise DataError(f"the panel fails the data gate: {issue.message}",
                            code="DATA_FAILURE")
        j = col[issue.symbol]
        fail_bar[j] = min(int(fail_bar[j]), issue.first if issue.first is not None else 0)
        reasons.setdefault(issue.symbol, []).append(f"{issue.code}: {issue.message}")
    volume = np.ascontiguousarray(bars.volume.T) if model.needs_volume else None
    uni = build_universe(valid, bars.index, rule, volume=volume, fail_bar=fail_bar,
                         member=member_rows(bars))
    if volume is not None:
        for k in np.flatnonzero(~np.any(volume > 0, axis=1)):
            sym = bars.symbols[int(k)]
            reasons.setdefault(sym, []).append(
                f"DQ_NO_VOLUME: symbol {sym!r} has no positive volume, but the "
                "execution model caps participation or charges impact")
    if not uni.live.any():
        raise DataError("no symbol is ever tradable: " + "; ".join(
            r for rs in reasons.values() for r in rs), code="DATA_FAILURE")
    excluded = [{"symbol": sym, "code": "DATA_FAILURE",
                 "from": (bars.index[fail_bar[col[sym]]].isoformat()
                          if fail_bar[col[sym]] < bars.n_bars else None),
                 "reasons": rs} for sym, rs in reasons.items()]
    return uni, excluded


_REPORTS: dict[str, QualityReport] = {}


def _quality(bars: Bars) -> QualityReport:
    """The quality report of ``bars``, remembered by content hash (``data_ref``):
    verifying many strategies on one panel checks its data once."""
    hit = _REPORTS.get(bars.data_ref)
    if hit is None:
        if len(_REPORTS) >= 16:
            _REPORTS.pop(next(iter(_REPORTS)))
        hit = _REPORTS[bars.data_ref] = quality_report(bars)
    return hit


# ------------------------------------------------------------------ kernel I/O
@dataclass
class _Inputs:
    market: np.ndarray
    valid: np.ndarray
    universe: Universe
    en: np.ndarray
    ex: np.ndarray
    size: np.ndarray
    use_size: bool
    dt_years: np.ndarray
    params: np.ndarray


def market_array(ev: SignalEvaluator, model: ExecutionModel | None) -> np.ndarray:
    """The kernels' (8, N, T) market array (``kernel_b.M_*`` rows): prices, volume,
    and what is known before each bar under ``model``; with ``model=None`` those last
    three rows are zero, which engine A's costs (a fixed spread, no impact, no volume
    cap) never read."""
    f = ev.fields
    market = np.zeros((kb.N_MARKET, *ev.shape))
    for row, name in ((kb.M_O, "open"), (kb.M_H, "high"), (kb.M_L, "low"),
                      (kb.M_C, "close"), (kb.M_V, "volume")):
        market[row] = f[name]
    if model is not None:
        market[kb.M_SIGMA] = _sigma_before(f["close"], model.impact.vol_window)
        market[kb.M_ADV] = _mean_before(f["volume"], model.volume.adv_window)
        market[kb.M_RANGE] = _last_before((f["high"] - f["low"]) / f["close"], ev.valid)
    return market


def _kernel_inputs(spec: StrategySpec, bars: Bars, model: ExecutionModel,
                   ev: SignalEvaluator, uni: Universe) -> _Inputs:
    if spec.portfolio.cross_sectional:  # its entry/exit are filters, not a strategy
        raise ValueError("a ranked book cannot run as sleeves (use engines.portfolio)")
    f = ev.fields
    market = market_array(ev, model)
    sizes, idx = size_arrays([spec], f, bars)
    risk = spec.risk
    params = kb.strategy_params(model.kernel_params(), _DIRECTION[spec.direction],
                                risk.stop_loss or 0.0, risk.trailing_stop or 0.0,
                                risk.take_profit or 0.0, risk.max_bars or 0)
    dt = years_between(bars.index.asi8)
    return _Inputs(market=market, valid=ev.valid, universe=uni,
                   en=ev.signal(spec.entry_node, canonical=True),
                   ex=ev.signal(spec.exit_node, canonical=True),
                   size=sizes[idx[0]] if idx[0] >= 0 else np.ones((1, 1)),
                   use_size=bool(idx[0] >= 0), dt_years=dt, params=params)


def _sigma_before(close: np.ndarray, window: int) -> np.ndarray:
    """Sample std of the last ``window`` bar returns before bar t (NaN until there
    are that many): the estimator vol-target sizing uses, shifted one bar."""
    return _shift(ind.rolling_std(bar_returns(close), window))


def _mean_before(volume: np.ndarray, window: int) -> np.ndarray:
    """Average volume over the bars a symbol printed among the last ``window`` panel
    bars before bar t (NaN when it printed none): window sums of running totals."""
    n_bars = volume.shape[1]
    have = ~np.isnan(volume)
    total = np.zeros((volume.shape[0], n_bars + 1))
    count = np.zeros_like(total)
    np.cumsum(np.where(have, volume, 0.0), axis=1, out=total[:, 1:])
    np.cumsum(have, axis=1, out=count[:, 1:])
    rows = np.arange(n_bars)
    lo = np.maximum(rows - window, 0)
    n = count[:, rows] - count[:, lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (total[:, rows] - total[:, lo]) / n, np.nan)


def _last_before(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``x`` at each symbol's latest bar before bar t (NaN before its first)."""
    n_bars = x.shape[1]
    rows = np.maximum.accumulate(np.where(valid, np.arange(n_bars), -1), axis=1)
    prev = np.full(x.shape, -1, dtype=np.int64)
    prev[:, 1:] = rows[:, :-1]
    out = np.take_along_axis(x, np.maximum(prev, 0), axis=1)
    return np.where(prev >= 0, out, np.nan)


def _shift(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    out[:, 0] = np.nan
    out[:, 1:] = x[:, :-1]
    return out


def _simulate(x: _Inputs, capitals: np.ndarray) -> tuple[np.ndarray, ...]:
    """Run the kernel; if the ledgers were too small, run again with the exact size
    (the simulation is deterministic, so the second run is the same run)."""
    n_sym, n_bars = x.valid.shape
    # room for a trade every 8 bars per symbol: more than a realistic strategy needs
    n_trades = n_sym * n_bars // 8 + 16
    n_fills = n_orders = 2 * n_trades
    positions = np.zeros((n_sym, n_bars))
    for _ in range(2):
        fills = np.empty((n_fills, len(kb.FILL_FIELDS)))
        orders = np.empty((n_orders, len(kb.ORDER_FIELDS)))
        trades = np.empty((n_trades, len(TRADE_FIELDS)))
        u = x.universe
        equity, traded, gross, stats, n_rec = kb.simulate(
            x.market, x.valid, u.state, u.alloc, u.reallocate, x.en, x.ex, x.size, x.use_size, x.dt_years, x.params,
            capitals, fills, orders, trades, positions)
        need_fills, need_trades = int(stats[0, kb.S_FILLS]), int(stats[0, kb.S_TRADES])
        need_orders = int(stats[0, kb.S_ORDERS])
        if need_fills <= n_fills and need_trades <= n_trades and need_orders <= n_orders:
            return (equity, traded, gross, stats, fills[:need_fills],
                    trades[: n_rec[0]], positions, orders[:need_orders])
        n_fills, n_trades = max(n_fills, need_fills), max(n_trades, need_trades)
        n_orders = max(n_orders, need_orders)
    raise AssertionError("engine B ledger sizing did not converge")  # pragma: no cover


# ------------------------------------------------------------------ outputs
_LEDGER_NAMES = {"qty": "quantity", "commission": "fee"}


def fills_frame(rows: np.ndarray, bars: Bars) -> pd.DataFrame:
    """The kernel's fill rows as the ledger frame: timestamp, symbol, side, quantity,
    price (after spread and impact), ref_price, fee (commission), spread_cost,
    impact_cost, participation, adv_util, slippage (spread + impact cost), reason."""
    sym = rows[:, 1].astype(np.int64)
    cols: dict[str, Any] = {
        "timestamp": bars.index.take(rows[:, 0].astype(np.int64)),
        "symbol": np.asarray(bars.symbols, dtype=object)[sym],
        "side": np.where(rows[:, 2] > 0, "buy", "sell").astype(object),
    }
    for j, name in enumerate(kb.FILL_FIELDS[3:11], start=3):
        cols[_LEDGER_NAMES.get(name, name)] = rows[:, j]
    cols["slippage"] = rows[:, 7] + rows[:, 8]
    cols["reason"] = np.asarray(kb.FILL_REASONS, dtype=object)[rows[:, 11].astype(np.int64)]
    return pd.DataFrame(cols)


def orders_frame(rows: np.ndarray, bars: Bars) -> pd.DataFrame:
    """The kernel's order rows as the order ledger frame, one row per order in the
    order placed: timestamp (the bar it was decided at: at that bar's close for a
    signal or a rebalance, fills from the next open; inside the bar for a stop; at the
    open for a universe change), symbol, side (buy, sell, or None while not known:
    a rebalance or a cross-sectional target is sized at the open), quantity (the
    shares asked; NaN until known), target_weight (signed; of the sleeve's equity, or
    of the book's for a cross-sectional order; 0 for a close, NaN for a universe
    resize), reason (as the fills'), filled_quantity, n_fills, last_fill and ended
    (timestamps, NaT when none) and status (``kernel_b.ORDER_STATUSES``: pending,
    filled, partial_cancelled, cancelled, no_trade)."""
    def when(col: int) -> pd.Series:
        at = rows[:, col].astype(np.int64)
        out = pd.Series(bars.index.take(np.maximum(at, 0)))
        return out.where(at >= 0)  # NaT where none

    sides = np.array(["sell", None, "buy"], dtype=object)
    return pd.DataFrame({
        "timestamp": bars.index.take(rows[:, kb.O_BAR].astype(np.int64)),
        "symbol": np.asarray(bars.symbols, dtype=object)[rows[:, kb.O_SYMBOL].astype(np.int64)],
        "side": sides[np.sign(rows[:, kb.O_SIDE]).astype(np.int64) + 1],
        "quantity": rows[:, kb.O_QTY],
        "target_weight": rows[:, kb.O_WEIGHT],
        "reason": np.asarray(kb.FILL_REASONS, dtype=object)[rows[:, kb.O_REASON].astype(np.int64)],
        "filled_quantity": rows[:, kb.O_FILLED],
        "n_fills": rows[:, kb.O_NFILLS].astype(np.int64),
        "last_fill": when(kb.O_LAST),
        "ended": when(kb.O_END),
        "status": np.asarray(kb.ORDER_STATUSES, dtype=object)[rows[:, kb.O_STATUS].astype(np.int64)],
    })


def daily_returns(returns: pd.Series) -> pd.Series:
    """Per-bar returns compounded within each UTC calendar day."""
    ns = pd.DatetimeIndex(returns.index).asi8
    days = ns // 86_400_000_000_000
    if len(days) < 2 or bool(np.all(np.diff(days) > 0)):  # one bar per day or coarser
        return returns.rename("daily_returns")
    day = pd.DatetimeIndex(returns.index).floor("D")
    out = (1.0 + returns).groupby(day).prod() - 1.0
    out.name = "daily_returns"
    return out


def _execution_stats(st: np.ndarray, fills: np.ndarray, equity: np.ndarray,
                     bars: Bars, capital: float) -> dict[str, Any]:
    filled, unfilled = st[kb.S_FILLED], st[kb.S_UNFILLED]
    costs = {"commission": float(st[kb.S_COMM]), "spread": float(st[kb.S_SPREAD]),
             "impact": float(st[kb.S_IMPACT]), "borrow": float(st[kb.S_BORROW])}
    total = sum(costs.values())
    years = bars.n_bars / bars.periods_per_year
    mean_eq = float(np.mean(equity)) if equity.size else math.nan
    part = fills[:, kb.FILL_FIELDS.index("participation")]
    util = fills[:, kb.FILL_FIELDS.index("adv_util")]
    return {
        "fill_rate": float(filled / (filled + unfilled)) if filled + unfilled > 0 else math.nan,
        "filled_notional": float(filled), "unfilled_notional": float(unfilled),
        "pending_at_end_notional": float(st[kb.S_PENDING_END]),
        "n_orders": int(st[kb.S_ORDERS]), "n_fills": int(st[kb.S_FILLS]),
        "n_partial_fills": int(st[kb.S_PARTIAL]), "n_clipped": int(st[kb.S_CLIPPED]),
        "n_cancelled": int(st[kb.S_CANCELLED]),
        "costs": {**costs, "total": total},
        "cost_bps_per_year": (total / mean_eq / years * 1e4
                              if mean_eq > 0 and years > 0 else math.nan),
        "participation_p95": _p95(part), "adv_utilization_p95": _p95(util),
        "initial_capital": capital,
    }


def _p95(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, 95)) if finite.size else math.nan


def _leverage(gross: np.ndarray, equity: np.ndarray) -> float:
    """The largest gross exposure / equity at any close (0 without exposure)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lev = np.where(equity > 0, gross / equity, 0.0)
    return float(lev.max()) if lev.size else 0.0


def _capacity(equity: np.ndarray, capitals: np.ndarray, ppy: float) -> dict[str, Any]:
    """The capital at which the Sharpe ratio falls to half its value at the
    configured capital, interpolated in log10(capital) between the two runs that
    bracket it. ``capital`` is None when the base Sharpe is not positive (no
    capacity to speak of) and a lower bound (``bounded: false``) when even the
    largest run keeps more than half."""
    scaled = equity / capitals[:, None]
    rets, _, _ = portfolio_series(np.ascontiguousarray(scaled), np.zeros_like(scaled),
                                  np.zeros_like(scaled))
    sharpe = np.asarray(return_metrics(rets, ppy)["sharpe"], dtype=float)
    curve = [{"capital": float(c), "sharpe": float(s)} for c, s in zip(capitals, sharpe, strict=True)]
    base = sharpe[0]
    if not base > 0:
        return {"capital": None, "base_sharpe": float(base), "bounded": False,
                "note": "the Sharpe ratio at the configured capital is not positive",
                "curve": curve}
    half = base / 2.0
    for j in range(1, len(capitals)):
        if not sharpe[j] > half:  # NaN (nothing traded) counts as halved
            lo_c, hi_c = math.log10(capitals[j - 1]), math.log10(capitals[j])
            s0, s1 = sharpe[j - 1], sharpe[j]
            frac = (s0 - half) / (s0 - s1) if np.isfinite(s1) and s0 != s1 else 1.0
            return {"capital": float(10.0 ** (lo_c + frac * (hi_c - lo_c))),
                    "base_sharpe": float(base), "bounded": True, "curve": curve}
    return {"capital": float(capitals[-1]), "base_sharpe": float(base), "bounded": False,
            "note": "the Sharpe ratio stays above half up to the largest capital tried",
            "curve": curve}
