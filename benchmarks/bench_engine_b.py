#!/usr/bin/env python
"""Engine B vs backtrader (and backtesting.py) on an SMA crossover with a stop loss.

Two workloads (issue spec), side by side in one process:

1. **single symbol, 10 years**: the last 2,520 daily bars of the real S&P 500
   (``load_bars("us_indices").select(["SPX"])``, 2008-12-26..2018-12-31);
2. **panel**: 100 symbols × 2,520 bars (the bundled ``synth_100`` =
   ``synthetic.generate(100, 2520, seed=7)``, GBM OHLC with lognormal volume).

The strategy everywhere: long only, ``entry = sma(close, 10) > sma(close, 50)``,
``exit = sma(close, 10) < sma(close, 50)`` decided at bar t's close and filled at
bar t+1's open, a 5 % stop loss below the entry (intrabar, at the level or at the
open when the open gapped through it), capital 1,000,000 split in equal sleeves.

- **engine B**: ``verify(StrategySpec(..., risk={"stop_loss": 0.05}), bars,
  ExecutionModel(), capacity=False)`` with the default realistic model: 10 bps
  commission, 10 bps spread (half per fill), square-root impact (k = 1), a 10 %
  cap on participation in each bar's volume (remainder carried), whole shares,
  50 bps/yr borrow, 2× gross leverage cap, plus the data-quality gate and every
  output frame (fills ledger, trades, positions, daily returns, metrics, hash).
  Timed end to end: building the spec, the gate, signals, kernel, frames.
  On the panel it is also timed with ``capacity=True`` (17 capital levels).
- **backtrader**: one ``Cerebro(stdstats=False)`` per run, one ``PandasData`` feed
  per symbol, two ``bt.ind.SMA`` per feed, market orders at the next open sized
  from the symbol's own sleeve (whole shares), a ``Stop`` sell order at
  ``fill price × 0.95`` placed when the entry fills (cancelled on a signal exit),
  ``setcommission(commission=0.001)``, ``set_slippage_perc(0.0005)`` (the half
  spread) and the ``FixedBarPerc(perc=10)`` volume filler (the participation cap).
- **backtesting.py** (single symbol only: it trades one instrument):
  ``Backtest(df, Strategy, cash=1e6, commission=0.001, spread=0.0005,
  trade_on_close=False, finalize_trades=True).run()``, ``self.I`` SMAs,
  ``self.buy(sl=close × 0.95)`` (all-in, whole units), ``position.close()``.

The peers model less (no impact, no borrow, no leverage rule, no data gate,
backtesting.py has no volume cap) and do not produce engine B's outputs, so
their numbers need not match engine B's; the script prints each side's total
return and trade count as a sanity check that all sides trade the same rule.

Timing: the first call of each side (numba compile or on-disk cache load, or
backtrader's class set-up) is timed separately; then ``--repeats`` steady-state
calls, reported as median and best. The data panels are built outside the timed
region (engine B: a ``Bars``; the peers: pandas frames). Throughput = bars / s
(single symbol) and symbol-bars / s (symbols × bars / s, panel).

Targets (issue): single symbol ≥ 100× backtrader's bars / s; panel ≥ 1,000,000
symbol-bars / s.

``--profile`` splits one engine B call into its phases (``perf_counter``
wrappers around the functions ``verify`` calls, medians over the repeats).

Usage::

    python benchmarks/bench_engine_b.py                   # full size
    python benchmarks/bench_engine_b.py --quick           # smoke: 10 feeds for backtrader's panel
    python benchmarks/bench_engine_b.py --cold --profile --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine_a import (  # same measurement helpers
    PeakRSS,
    PhaseTimer,
    machine_info,
    run_side,
    use_cold_numba_cache,
)

FAST, SLOW = 10, 50
STOP = 0.05
CAPITAL = 1_000_000.0
COMMISSION = 0.001  # 10 bps, engine B's default commission
HALF_SPREAD = 0.0005  # engine B's default 10 bps spread, half of it per fill
PARTICIPATION = 10.0  # % of a bar's volume, engine B's default cap
SINGLE_BARS = 2520
ENTRY = f"sma(close, {FAST}) > sma(close, {SLOW})"
EXIT = f"sma(close, {FAST}) < sma(close, {SLOW})"
TARGET_VS_BACKTRADER = 100.0
TARGET_PANEL = 1_000_000.0
ISSUE_BACKTRADER_BARS_S = 3_300.0  # "it does about 3,300 bars/s here" (the issue)


# ---------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke size: backtrader's panel on 10 feeds, fewer repeats")
    p.add_argument("--repeats", type=int, default=None,
                   help="steady-state calls of engine B (default 9; quick 3)")
    p.add_argument("--peer-repeats", type=int, default=None,
                   help="steady-state calls of backtrader / backtesting.py on the single "
                        "symbol (default 5; quick 2)")
    p.add_argument("--bt-panel-repeats", type=int, default=None,
                   help="steady-state calls of backtrader on the panel (default 3; quick 1)")
    p.add_argument("--bt-symbols", type=int, default=None,
                   help="feeds in backtrader's panel run (default all 100; quick 10); "
                        "its symbol-bars/s is then measured on fewer feeds")
    p.add_argument("--threads", type=int, default=None,
                   help="numba.set_num_threads(N) (default: numba's default, all cores)")
    p.add_argument("--cold", action="store_true",
                   help="fresh NUMBA_CACHE_DIR so the first calls measure real compile time")
    p.add_argument("--skip-peers", action="store_true", help="engine B only")
    p.add_argument("--skip-capacity", action="store_true",
                   help="do not time the panel with capacity=True")
    p.add_argument("--profile", action="store_true",
                   help="split engine B calls into phases (single symbol and panel)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


# ------------------------------------------------------------------- data
def single_bars() -> Any:
    from alphaloop import load_bars

    spx = load_bars("us_indices").select(["SPX"])
    return spx.slice(spx.n_bars - SINGLE_BARS, None)


def panel_bars() -> Any:
    from alphaloop import load_bars

    return load_bars("synth_100")


def frames(bars: Any) -> list[Any]:
    """One OHLCV DataFrame per symbol (tz-naive index) for the peers."""
    import pandas as pd

    idx = pd.DatetimeIndex(bars.index).tz_localize(None)
    out = []
    for j in range(bars.n_symbols):
        out.append(pd.DataFrame({
            "Open": bars.open[:, j], "High": bars.high[:, j], "Low": bars.low[:, j],
            "Close": bars.close[:, j], "Volume": bars.volume[:, j]}, index=idx))
    return out


# ------------------------------------------------------------- the sides
def engine_b_side(bars: Any, capacity: bool, build_frames: bool = False) -> Callable[[], Any]:
    """One ``verify`` call; with ``build_frames`` the result's lazily built frames
    (fills ledger, trades, positions, daily returns) are built too."""
    from alphaloop.engines.engine_b import verify
    from alphaloop.engines.execution import ExecutionModel
    from alphaloop.strategy import expression
    from alphaloop.strategy.spec import Risk, StrategySpec

    def run() -> Any:
        # cold expression layer on every call, as in bench_engine_a
        expression.clear_caches()
        spec = StrategySpec(entry=ENTRY, exit=EXIT, risk=Risk(stop_loss=STOP))
        res = verify(spec, bars, ExecutionModel(), capacity=capacity)
        if build_frames:
            _ = (res.fills, res.trades, res.positions, res.daily_returns)
        return res

    return run


def engine_b_summary(res: Any) -> dict[str, Any]:
    trades = res.trades
    return {"total_return": float(res.metrics["total_return"]),
            "n_trades": int(res.metrics["n_trades"]),
            "n_stop_exits": int((trades["reason"] == "stop_loss").sum()),
            "n_fills": int(res.execution["n_fills"]),
            "n_partial_fills": int(res.execution["n_partial_fills"]),
            "fill_rate": float(res.execution["fill_rate"])}


_BT_STRATEGY: Any = None


def _bt_strategy() -> Any:
    global _BT_STRATEGY
    if _BT_STRATEGY is not None:
        return _BT_STRATEGY
    import backtrader as bt

    class SmaCrossStop(bt.Strategy):
        """Level SMA crossover, next-open market orders, 5 % stop below the fill.
        Each symbol trades its own sleeve of capital / N (cash tracked per symbol)."""

        params = (("fast", FAST), ("slow", SLOW), ("stop", STOP), ("capital", CAPITAL))

        def __init__(self) -> None:
            n = len(self.datas)
            self.smas = [(bt.ind.SMA(d.close, period=self.p.fast),
                          bt.ind.SMA(d.close, period=self.p.slow)) for d in self.datas]
            self.sleeve = [self.p.capital / n] * n
            self.entries: list[Any] = [None] * n
            self.stops: list[Any] = [None] * n  # not self.stop: a Strategy method
            self.exits: list[Any] = [None] * n
            self.pos = {d: i for i, d in enumerate(self.datas)}
            self.n_trades = 0
            self.n_stop_exits = 0

        def notify_order(self, order: Any) -> None:
            if order.status in (order.Submitted, order.Accepted, order.Partial):
                return
            i = self.pos[order.data]
            if order.status == order.Completed:
                ex = order.executed
                notional = abs(ex.size) * ex.price
                self.sleeve[i] += (-notional if order.isbuy() else notional) - ex.comm
            # notifications carry clones of the orders: match them by ``ref``
            ref = order.ref
            if self.entries[i] is not None and ref == self.entries[i].ref:
                self.entries[i] = None
                if order.status == order.Completed:
                    self.n_trades += 1
                    self.stops[i] = self.sell(data=order.data, size=order.executed.size,
                                             exectype=bt.Order.Stop,
                                             price=order.executed.price * (1.0 - self.p.stop))
            elif self.stops[i] is not None and ref == self.stops[i].ref:
                self.stops[i] = None
                self.n_stop_exits += int(order.status == order.Completed)
            elif self.exits[i] is not None and ref == self.exits[i].ref:
                self.exits[i] = None

        def next(self) -> None:
            for i, d in enumerate(self.datas):
                if self.entries[i] is not None or self.exits[i] is not None:
                    continue
                fast, slow = self.smas[i]
                if self.getposition(d).size == 0:
                    if fast[0] > slow[0]:
                        # sized at the signal close; 2 % headroom for a gap up and costs
                        size = int(self.sleeve[i] * 0.98 / d.close[0])
                        if size > 0:
                            self.entries[i] = self.buy(data=d, size=size)
                elif fast[0] < slow[0]:
                    if self.stops[i] is not None:
                        self.cancel(self.stops[i])
                        self.stops[i] = None
                    self.exits[i] = self.close(data=d)

    _BT_STRATEGY = SmaCrossStop
    return SmaCrossStop


def backtrader_side(dfs: list[Any]) -> Callable[[], Any]:
    import backtrader as bt

    strategy = _bt_strategy()
    feeds_cols = {"open": "Open", "high": "High", "low": "Low", "close": "Close",
                  "volume": "Volume", "openinterest": None}

    def run() -> Any:
        cerebro = bt.Cerebro(stdstats=False)
        for j, df in enumerate(dfs):
            cerebro.adddata(bt.feeds.PandasData(dataname=df, **feeds_cols), name=f"S{j}")
        cerebro.addstrategy(strategy)
        cerebro.broker.setcash(CAPITAL)
        cerebro.broker.setcommission(commission=COMMISSION)
        cerebro.broker.set_slippage_perc(HALF_SPREAD)
        cerebro.broker.set_filler(bt.broker.fillers.FixedBarPerc(perc=PARTICIPATION))
        strat = cerebro.run()[0]
        return {"total_return": cerebro.broker.getvalue() / CAPITAL - 1.0,
                "n_trades": strat.n_trades, "n_stop_exits": strat.n_stop_exits}

    return run


def backtesting_side(df: Any) -> Callable[[], Any]:
    import numpy as np
    import pandas as pd
    from backtesting import Backtest, Strategy

    def sma(x: Any, n: int) -> Any:
        return pd.Series(np.asarray(x)).rolling(n).mean().to_numpy()

    class SmaCrossStop(Strategy):
        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, FAST)
            self.slow = self.I(sma, self.data.Close, SLOW)

        def next(self) -> None:
            fast, slow = self.fast[-1], self.slow[-1]
            if not self.position:
                if fast > slow:  # all-in, whole units; stop 5 % below the signal close
                    self.buy(sl=self.data.Close[-1] * (1.0 - STOP))
            elif fast < slow:
                self.position.close()

    def run() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bt = Backtest(df, SmaCrossStop, cash=CAPITAL, commission=COMMISSION,
                          spread=HALF_SPREAD, trade_on_close=False, finalize_trades=True)
            stats = bt.run()
        return {"total_return": float(stats["Return [%]"]) / 100.0,
                "n_trades": int(stats["# Trades"])}

    return run


# -------------------------------------------------------------- profile
def split_engine_b(bars: Any, capacity: bool, repeats: int) -> dict[str, float]:
    """Phases of one ``verify`` call, medians over ``repeats`` calls: a
    ``perf_counter`` wrapper around each function ``verify`` calls (looked up in
    ``engine_b``'s namespace, so patching them there is enough); nested phases are
    reported exclusive of their children."""
    from alphaloop.engines import engine_b as eb
    from alphaloop.engines import kernel_b as kb
    from alphaloop.engines.signals import SignalEvaluator

    timer = PhaseTimer()
    acc = timer.acc
    wrap = timer.wrap
    for name in ("data_gate", "_quality", "SignalEvaluator", "_kernel_inputs",
                 "_sigma_before", "_mean_before", "size_arrays", "_simulate",
                 "portfolio_series", "core_metrics", "effective_years", "fills_frame",
                 "_execution_stats", "_capacity", "trade_frame", "daily_returns"):
        wrap(eb, name)
    wrap(kb, "simulate")
    wrap(SignalEvaluator, "signal")
    fn = engine_b_side(bars, capacity, build_frames=True)
    rows: dict[str, list[float]] = {}
    try:
        fn()
        for _ in range(repeats):
            acc.clear()
            gc.collect()
            t0 = time.perf_counter()
            fn()
            total = time.perf_counter() - t0
            a = acc
            top = ("data_gate", "SignalEvaluator", "_kernel_inputs", "_simulate",
                   "portfolio_series", "core_metrics", "effective_years", "fills_frame",
                   "_execution_stats", "_capacity", "trade_frame", "daily_returns")
            split = {
                "data gate (cached quality report + volume check)": a["data_gate"],
                "  of which the quality report (cached by data_ref)": a["_quality"],
                "SignalEvaluator(bars) (transpose OHLCV, valid mask)": a["SignalEvaluator"],
                "signals: 2 × SignalEvaluator.signal (sma, compare)": a["signal"],
                "impact sigma: _sigma_before (numba rolling std)": a["_sigma_before"],
                "ADV: _mean_before (running sums)": a["_mean_before"],
                "other in _kernel_inputs (market array, sizes, params)":
                    a["_kernel_inputs"] - a["signal"] - a["_sigma_before"]
                    - a["_mean_before"],
                "kernel: kernel_b.simulate (numba)": a["simulate"],
                "other in _simulate (ledger allocation)": a["_simulate"] - a["simulate"],
                "portfolio_series + core_metrics + effective_years":
                    a["portfolio_series"] + a["core_metrics"] + a["effective_years"],
                "fills_frame (ledger DataFrame)": a.get("fills_frame", 0.0),
                "_execution_stats (percentiles)": a["_execution_stats"],
                "trade_frame (trades DataFrame)": a.get("trade_frame", 0.0),
                "daily_returns (groupby per day, skipped for daily bars)": a.get("daily_returns", 0.0),
                "capacity curve (_capacity)": a.get("_capacity", 0.0),
                "rest (spec build, series/positions frames, sha256)":
                    total - sum(a.get(k, 0.0) for k in top),
            }
            split["total"] = total
            for k, v in split.items():
                rows.setdefault(k, []).append(v)
    finally:
        timer.restore()
    return {k: statistics.median(v) for k, v in rows.items()}


# ---------------------------------------------------------------- machine
# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cold:
        use_cold_numba_cache()
    import numba

    if args.threads:
        numba.set_num_threads(args.threads)
    eb_rep = args.repeats or (3 if args.quick else 9)
    peer_rep = args.peer_repeats or (2 if args.quick else 5)
    btp_rep = args.bt_panel_repeats or (1 if args.quick else 3)
    peers = not args.skip_peers
    if peers:
        os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bar
        try:
            import backtesting  # noqa: F401  (import time is not part of the benchmark)
            import backtrader  # noqa: F401
        except ImportError as exc:
            print(f"{exc.name} is not installed: engine B only")
            peers = False

    load0 = os.getloadavg()
    mem = PeakRSS()
    single = single_bars()
    panel = panel_bars()
    n_bt = min(args.bt_symbols or (10 if args.quick else panel.n_symbols), panel.n_symbols)
    single_work = single.n_symbols * single.n_bars
    panel_work = panel.n_symbols * panel.n_bars
    bt_panel_work = n_bt * panel.n_bars
    print(f"single symbol: {single!r}; panel: {panel!r}; memory: {mem.method}", flush=True)

    res: dict[str, Any] = {"single": {}, "panel": {}}
    # ---- single symbol
    side = run_side("engine B single", engine_b_side(single, capacity=False), eb_rep, mem)
    side["check"] = engine_b_summary(side.pop("result"))
    res["single"]["engine_b"] = side
    side = run_side("engine B single + frames",
                    engine_b_side(single, capacity=False, build_frames=True), eb_rep, mem)
    side["check"] = engine_b_summary(side.pop("result"))
    res["single"]["engine_b_frames"] = side
    if peers:
        dfs = frames(single)
        side = run_side("backtrader single", backtrader_side(dfs), peer_rep, mem)
        side["check"] = side.pop("result")
        res["single"]["backtrader"] = side
        side = run_side("backtesting.py single", backtesting_side(dfs[0]), peer_rep, mem)
        side["check"] = side.pop("result")
        res["single"]["backtesting"] = side
    # ---- panel
    side = run_side("engine B panel", engine_b_side(panel, capacity=False), eb_rep, mem)
    side["check"] = engine_b_summary(side.pop("result"))
    res["panel"]["engine_b"] = side
    side = run_side("engine B panel + frames",
                    engine_b_side(panel, capacity=False, build_frames=True), eb_rep, mem)
    side["check"] = engine_b_summary(side.pop("result"))
    res["panel"]["engine_b_frames"] = side
    if not args.skip_capacity:
        side = run_side("engine B panel capacity=True", engine_b_side(panel, capacity=True),
                        max(3, eb_rep // 2), mem)
        r = side.pop("result")
        side["check"] = engine_b_summary(r)
        side["check"]["capacity_capital"] = r.execution["capacity"]["capital"]
        res["panel"]["engine_b_capacity"] = side
    if peers:
        dfs = frames(panel)[:n_bt]
        side = run_side(f"backtrader panel ({n_bt} feeds)", backtrader_side(dfs), btp_rep, mem)
        side["check"] = side.pop("result")
        side["feeds"] = n_bt
        res["panel"]["backtrader"] = side
    load1 = os.getloadavg()

    for s in res["single"].values():
        s["bars_per_s_median"] = single_work / s["median_s"]
        s["bars_per_s_best"] = single_work / s["best_s"]
    for name, s in res["panel"].items():
        work = bt_panel_work if name == "backtrader" else panel_work
        s["symbol_bars_per_s_median"] = work / s["median_s"]
        s["symbol_bars_per_s_best"] = work / s["best_s"]

    eb_single = res["single"]["engine_b"]["bars_per_s_median"]
    eb_panel = res["panel"]["engine_b"]["symbol_bars_per_s_median"]
    targets: dict[str, Any] = {
        "single_bars_per_s": eb_single,
        "single_vs_issue_backtrader_3300": eb_single / ISSUE_BACKTRADER_BARS_S,
        "panel_symbol_bars_per_s": eb_panel,
        "panel_target": TARGET_PANEL,
        "panel_met": eb_panel >= TARGET_PANEL,
    }
    if peers:
        bt_single = res["single"]["backtrader"]["bars_per_s_median"]
        targets["single_vs_backtrader"] = eb_single / bt_single
        targets["single_vs_backtesting"] = (
            eb_single / res["single"]["backtesting"]["bars_per_s_median"])
        targets["single_target_bars_per_s"] = TARGET_VS_BACKTRADER * bt_single
        targets["single_met"] = eb_single / bt_single >= TARGET_VS_BACKTRADER
        targets["single_with_frames_vs_backtrader"] = (
            res["single"]["engine_b_frames"]["bars_per_s_median"] / bt_single)
        targets["panel_vs_backtrader"] = (
            eb_panel / res["panel"]["backtrader"]["symbol_bars_per_s_median"])
    else:
        targets["single_target_bars_per_s"] = TARGET_VS_BACKTRADER * ISSUE_BACKTRADER_BARS_S
        targets["single_met"] = eb_single >= targets["single_target_bars_per_s"]

    prof = None
    if args.profile:
        print("[profile] splitting engine B calls into phases ...", flush=True)
        prof = {"single": split_engine_b(single, False, eb_rep),
                "panel": split_engine_b(panel, False, eb_rep)}

    results: dict[str, Any] = {
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "config": {"strategy": {"entry": ENTRY, "exit": EXIT, "stop_loss": STOP},
                   "capital": CAPITAL, "commission": COMMISSION, "half_spread": HALF_SPREAD,
                   "participation_pct": PARTICIPATION,
                   "single": {"data": "us_indices SPX, last 2520 bars",
                              "start": str(single.index[0]), "end": str(single.index[-1]),
                              "bars": single.n_bars},
                   "panel": {"data": panel.name, "symbols": panel.n_symbols,
                             "bars": panel.n_bars, "backtrader_feeds": n_bt},
                   "repeats": {"engine_b": eb_rep, "peers_single": peer_rep,
                               "backtrader_panel": btp_rep},
                   "cold_cache": args.cold, "memory_method": mem.method},
        "machine": machine_info(peers=("backtrader", "backtesting")),
        "loadavg_start": load0, "loadavg_end": load1,
        **res, "targets": targets,
    }
    if prof is not None:
        results["profile"] = prof
    print_table(results)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=float)
        print(f"wrote {args.json}")
    return 0


def _mb(x: int) -> str:
    return f"{x / 2**20:,.0f} MiB"


def print_table(r: dict[str, Any]) -> None:
    c, m, tg = r["config"], r["machine"], r["targets"]
    print()
    print(f"strategy: {c['strategy']['entry']} / exit {c['strategy']['exit']}, stop loss "
          f"{c['strategy']['stop_loss']:.0%}, next-open fills, capital {c['capital']:,.0f}")
    print(f"machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_bytes'] / 2**30:.1f} GiB RAM; "
          f"python {m['python']}, numba {m['numba']} ({m['numba_threading_layer']}, "
          f"{m['numba_threads']} threads), backtrader {m.get('backtrader')}, "
          f"backtesting.py {m.get('backtesting')}")
    print(f"load average at start / end: {r['loadavg_start'][0]:.2f} / {r['loadavg_end'][0]:.2f}"
          f"   (cold numba cache: {c['cold_cache']})")
    w = 24

    def table(title: str, sides: dict[str, Any], names: dict[str, str], rate: str,
              ref: str | None) -> None:
        keys = [k for k in names if k in sides]
        print(f"\n{title}")
        head = f"{'':<{w}}" + "".join(f"{names[k]:>20}" for k in keys)
        print(head)
        print("-" * len(head))

        def line(label: str, vals: list[str]) -> None:
            print(f"{label:<{w}}" + "".join(f"{v:>20}" for v in vals))

        line("first call, s", [f"{sides[k]['first_call_s']:.3f}" for k in keys])
        line("steady median, s", [f"{sides[k]['median_s']:.4f}" for k in keys])
        line("steady best, s", [f"{sides[k]['best_s']:.4f}" for k in keys])
        line("CPU time (median), s", [f"{sides[k]['cpu_s_median']:.4f}" for k in keys])
        line("load average before", [f"{sides[k]['loadavg_before']:.2f}" for k in keys])
        line(f"{rate} (median)", [f"{sides[k][rate + '_per_s_median']:,.0f}" for k in keys])
        line(f"{rate} (best)", [f"{sides[k][rate + '_per_s_best']:,.0f}" for k in keys])
        if ref is not None and ref in sides:
            ours = sides["engine_b"][rate + "_per_s_median"]
            line("engine B / this (median)",
                 [f"{ours / sides[k][rate + '_per_s_median']:.1f}×" if k != "engine_b" else ""
                  for k in keys])
        line("peak RSS, steady", [_mb(sides[k]["steady_mem"]["peak_rss"]) for k in keys])
        line("total return", [f"{sides[k]['check']['total_return']:+.4f}" for k in keys])
        line("trades", [str(sides[k]["check"]["n_trades"]) for k in keys])
        line("stop-loss exits", [str(sides[k]["check"].get("n_stop_exits", "n/a")) for k in keys])

    table(f"single symbol: SPX {c['single']['start'][:10]}..{c['single']['end'][:10]}, "
          f"{c['single']['bars']} bars", r["single"],
          {"engine_b": "engine B", "engine_b_frames": "B + frames", "backtrader": "backtrader",
           "backtesting": "backtesting.py"},
          "bars", "backtrader")
    bt_feeds = c["panel"]["backtrader_feeds"]
    table(f"panel: {c['panel']['data']}, {c['panel']['symbols']} symbols × {c['panel']['bars']} "
          f"bars (backtrader: {bt_feeds} feeds)", r["panel"],
          {"engine_b": "engine B", "engine_b_frames": "B + frames",
           "engine_b_capacity": "B capacity=True",
           "backtrader": f"backtrader ({bt_feeds})"}, "symbol_bars", "backtrader")
    print()
    single_line = (f"target single symbol ≥ {TARGET_VS_BACKTRADER:.0f}× backtrader: "
                   f"{tg['single_bars_per_s']:,.0f} bars/s")
    if "single_vs_backtrader" in tg:
        single_line += (f" = {tg['single_vs_backtrader']:.1f}× backtrader measured here "
                        f"(target {tg['single_target_bars_per_s']:,.0f} bars/s)")
    single_line += (f", {tg['single_vs_issue_backtrader_3300']:.1f}× the issue's 3,300 bars/s"
                    f" -> {'MET' if tg['single_met'] else 'NOT MET'}")
    print(single_line)
    if "single_with_frames_vs_backtrader" in tg:
        print(f"  (with the fills/trades/positions frames built as well: "
              f"{tg['single_with_frames_vs_backtrader']:.1f}× backtrader)")
    print(f"target panel ≥ {TARGET_PANEL:,.0f} symbol-bars/s: {tg['panel_symbol_bars_per_s']:,.0f}"
          f" -> {'MET' if tg['panel_met'] else 'NOT MET'}")
    if "profile" in r:
        for which, split in r["profile"].items():
            tot = split["total"]
            print(f"\nengine B {which}: phases of one call (perf_counter wrappers, medians of "
                  f"{c['repeats']['engine_b']} calls, {tot * 1e3:.1f} ms in all):")
            for label, t in split.items():
                if label != "total":
                    print(f"  {label:<58}{t * 1e3:9.2f} ms {100 * t / tot:6.1f} %")


if __name__ == "__main__":
    sys.exit(main())
