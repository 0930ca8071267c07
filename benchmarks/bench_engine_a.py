#!/usr/bin/env python
"""Engine A vs vectorbt on an SMA-crossover grid, side by side in one process.

The workload (issue spec): SMA crossover grid, fast 5..50 step 5 × slow 20..200
step 10 with fast < slow (174 combos), long only, level signals
``entry = sma_fast > sma_slow``, ``exit = sma_fast < sma_slow``, decided at bar t's
close and filled at bar t+1's open, fees 0.1 % per side on traded notional, all-in
sizing, on a synthetic 100 symbols × 2520 bars daily panel (``--quick``: 10 symbols).

- alphaloop: ``run_batch([StrategySpec(...) for the grid], bars, CostModel(10, 0))``,
  end to end: building the specs, signal evaluation, simulation and metrics.
- vectorbt: ``vbt.MA.run`` for the fast and the slow window of every combo (explicit
  combos, 174 × N columns), ``ma_above``/``ma_below`` level signals shifted one bar,
  ``Portfolio.from_signals(close, entries, exits, price=open, fees=0.001,
  size=np.inf, direction='longonly', init_cash=1.0, freq='1D')`` and
  ``.total_return()``. Shifting the signals by one bar and filling at ``price=open``
  is the same timeline as alphaloop's "signal at t close, fill at t+1 open".

Both use the same sizing: an all-in buy of q = cash / (p · (1 + fee)), fees on the
filled notional on both sides, so the per-column total returns agree to float
rounding; the script checks that (see ``--tol``) and exits 1 when they do not.

Timing: the first call of each side (numba compile or on-disk cache load) is timed
separately; then ``--repeats`` steady-state calls, reported as best and median.
Data generation is excluded. Throughput = combos / s and bar-evaluations / s
(combos × symbols × bars / s). The ratio is vectorbt time / alphaloop time.

Peak memory: measured in-process per side. Before a side runs, the kernel's RSS
high-water mark is reset (``echo 5 > /proc/self/clear_refs``, Linux ≥ 4.0); after it,
``VmHWM`` from ``/proc/self/status`` is that side's peak RSS (numba and numpy
allocations included, unlike tracemalloc). "delta" is peak minus the RSS just before
the call (interpreter, libraries and the data panel excluded). Where the reset is not
available the script falls back to ``ru_maxrss`` deltas, which can only show growth
beyond the previous high-water mark (it says so in the output).

Compile times depend on numba's on-disk cache (both libraries use ``cache=True``):
by default the caches are whatever is on disk (a second run loads them); ``--cold``
points ``NUMBA_CACHE_DIR`` at a fresh temporary folder so the first calls are true
compile times.

Usage::

    python benchmarks/bench_engine_a.py                 # full size
    python benchmarks/bench_engine_a.py --quick         # CI smoke size
    python benchmarks/bench_engine_a.py --cold --profile --json out.json
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

FAST = range(5, 51, 5)
SLOW = range(20, 201, 10)
FEES_BPS = 10.0
SEED = 20260101


def grid() -> list[tuple[int, int]]:
    return [(f, s) for f in FAST for s in SLOW if f < s]


# ---------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smaller panel (10 symbols × 2520 bars, fewer repeats) for CI smoke tests")
    p.add_argument("--symbols", type=int, default=None, help="override the number of symbols")
    p.add_argument("--bars", type=int, default=None, help="override the number of bars")
    p.add_argument("--repeats", type=int, default=None,
                   help="steady-state calls per side (default 5 alphaloop / 3 vectorbt; quick 3/2)")
    p.add_argument("--vbt-repeats", type=int, default=None, help="steady-state calls for vectorbt")
    p.add_argument("--vbt-chunk", type=int, default=0,
                   help="combos per vectorbt chunk (0 = all 174 at once)")
    p.add_argument("--threads", type=int, default=None,
                   help="numba.set_num_threads(N) (default: numba's default, all cores)")
    p.add_argument("--cold", action="store_true",
                   help="fresh NUMBA_CACHE_DIR so the first calls measure real compile time")
    p.add_argument("--skip-vectorbt", action="store_true", help="alphaloop side only")
    p.add_argument("--no-fused", action="store_true",
                   help="skip the hand-fused numba reference kernel (the 'bound')")
    p.add_argument("--profile", action="store_true",
                   help="cProfile one steady-state alphaloop call and print the breakdown")
    p.add_argument("--tol", type=float, default=1e-6,
                   help="max abs difference of total returns tolerated by the cross-check")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


# ------------------------------------------------------------ measurements
class PeakRSS:
    """Per-phase peak RSS (bytes) via a reset of the kernel's high-water mark."""

    def __init__(self) -> None:
        self.method = "VmHWM after /proc/self/clear_refs reset"
        try:
            self._reset()
            self._status("VmHWM")
        except OSError:
            self.method = "ru_maxrss delta (high-water mark NOT reset: growth only)"

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as fh:
            m = re.search(rf"^{key}:\s+(\d+)\s+kB", fh.read(), re.M)
        if m is None:
            raise OSError(key)
        return int(m.group(1)) * 1024

    @staticmethod
    def _reset() -> None:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    def current(self) -> int:
        try:
            return self._status("VmRSS")
        except OSError:
            return self._maxrss()

    @staticmethod
    def _maxrss() -> int:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb if sys.platform == "darwin" else kb * 1024

    def start(self) -> int:
        gc.collect()
        if self.method.startswith("VmHWM"):
            self._reset()
            return self.current()
        return self._maxrss()

    def peak(self) -> int:
        return self._status("VmHWM") if self.method.startswith("VmHWM") else self._maxrss()


def timed(fn: Callable[[], Any], mem: PeakRSS) -> tuple[float, Any, dict[str, float]]:
    base = mem.start()
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    peak = mem.peak()
    return dt, out, {"peak_rss": peak, "base_rss": base, "delta_rss": max(peak - base, 0),
                     "cpu_s": cpu}


def run_side(name: str, fn: Callable[[], Any], repeats: int, mem: PeakRSS) -> dict[str, Any]:
    load = os.getloadavg()[0]
    print(f"[{name}] first call (compile / cache load) ... (load average {load:.2f})", flush=True)
    first, out, first_mem = timed(fn, mem)
    print(f"[{name}] first call {first:.2f} s; {repeats} steady-state calls ...", flush=True)
    times, mems = [], []
    for _ in range(repeats):
        del out
        dt, out, m = timed(fn, mem)
        times.append(dt)
        mems.append(m)
        print(f"[{name}]   {dt:.3f} s wall, {m['cpu_s']:.3f} s CPU", flush=True)
    worst = max(mems, key=lambda m: m["peak_rss"])
    return {"first_call_s": first, "times_s": times, "best_s": min(times),
            "median_s": statistics.median(times),
            "cpu_s_median": statistics.median(m["cpu_s"] for m in mems),
            "loadavg_before": load, "first_call_mem": first_mem,
            "steady_mem": worst, "result": out}


# ------------------------------------------------------------------- data
def make_bars(n_symbols: int, n_bars: int, seed: int) -> Any:
    try:
        from alphaloop.data.synthetic import generate
    except ImportError:  # generator not there yet: a seeded GBM OHLC panel inline
        return _gbm_bars(n_symbols, n_bars, seed)
    return generate(n_symbols, n_bars, seed=seed)


def _gbm_bars(n_symbols: int, n_bars: int, seed: int) -> Any:
    import numpy as np
    import pandas as pd

    from alphaloop.data.bars import Bars

    rng = np.random.default_rng(seed)
    sd = 0.2 / np.sqrt(252)
    logc = np.log(100.0) + np.cumsum(0.05 / 252 - 0.5 * sd**2 + sd * rng.standard_normal(
        (n_bars, n_symbols)), axis=0)
    close = np.exp(logc)
    prev = np.vstack([np.full((1, n_symbols), 100.0), close[:-1]])
    opn = prev * np.exp(0.2 * sd * rng.standard_normal(close.shape))
    ext = np.abs(rng.standard_normal((2, *close.shape))) * 0.5 * sd
    high = np.maximum(opn, close) * np.exp(ext[0])
    low = np.minimum(opn, close) * np.exp(-ext[1])
    index = pd.bdate_range("2010-01-04", periods=n_bars, tz="UTC")
    return Bars(index=index, symbols=tuple(f"SYN{i:03d}" for i in range(n_symbols)),
                open=opn, high=high, low=low, close=close,
                volume=np.full(close.shape, 1e6), name="gbm-inline")


# ------------------------------------------------------------- the sides
def alphaloop_side(bars: Any, combos: list[tuple[int, int]]) -> Callable[[], Any]:
    from alphaloop.engines.costs import CostModel
    from alphaloop.engines.engine_a import run_batch
    from alphaloop.strategy import expression
    from alphaloop.strategy.spec import StrategySpec

    costs = CostModel(fees_bps=FEES_BPS, slippage_bps=0)

    def run() -> Any:
        # every call starts cold for the expression layer: the parse / canonical-form
        # memos would otherwise make repeated calls cheaper than a user's first sweep
        expression.clear_caches()
        specs = [StrategySpec(entry=f"sma(close,{f}) > sma(close,{s})",
                              exit=f"sma(close,{f}) < sma(close,{s})") for f, s in combos]
        return run_batch(specs, bars, costs)

    return run


def alphaloop_single(bars: Any, sym: str, f: int, s: int) -> tuple[float, int]:
    from alphaloop.engines.costs import CostModel
    from alphaloop.engines.engine_a import run_batch
    from alphaloop.strategy.spec import StrategySpec

    spec = StrategySpec(entry=f"sma(close,{f}) > sma(close,{s})",
                        exit=f"sma(close,{f}) < sma(close,{s})")
    res = run_batch([spec], bars.select([sym]), CostModel(fees_bps=FEES_BPS, slippage_bps=0))
    row = res.metrics.iloc[0]
    return float(row["total_return"]), int(row["n_trades"])


def vectorbt_side(bars: Any, combos: list[tuple[int, int]], chunk: int,
                  with_pf: bool = False) -> Callable[[], Any]:
    import numpy as np
    import pandas as pd
    import vectorbt as vbt

    n_sym = bars.n_symbols
    step = chunk or len(combos)

    def run() -> Any:
        close = bars.frame("close")
        opn = bars.frame("open")
        out, pfs = [], []
        for start in range(0, len(combos), step):
            part = combos[start:start + step]
            k = len(part)
            fast = vbt.MA.run(close, window=[f for f, _ in part], short_name="fast")
            slow = vbt.MA.run(close, window=[s for _, s in part], short_name="slow")
            # level signals at t's close; shifted one bar they execute at t+1 at price=open
            entries = fast.ma_above(slow).shift(1, fill_value=False)
            exits = fast.ma_below(slow).shift(1, fill_value=False)
            cols = entries.columns  # (fast_window, slow_window, symbol), combo-major
            price = pd.DataFrame(np.tile(opn.to_numpy(), (1, k)), index=close.index, columns=cols)
            value = pd.DataFrame(np.tile(close.to_numpy(), (1, k)), index=close.index,
                                 columns=cols)
            pf = vbt.Portfolio.from_signals(value, entries, exits, price=price,
                                            fees=FEES_BPS / 1e4, size=np.inf, init_cash=1.0,
                                            direction="longonly", freq="1D")
            out.append(pf.total_return().to_numpy().reshape(k, n_sym))
            if with_pf:
                pfs.append(pf)
            del fast, slow, entries, exits, price, value, pf
        tr = np.concatenate(out)
        return (tr, pfs) if with_pf else tr

    return run


# ------------------------------------------------- fused-kernel reference
_FUSED: Any = None


def _fused_kernel() -> Any:
    """A hand-fused numba kernel for exactly this workload (the DESIGN "bound").

    Per (combo, symbol) it reads the two cached SMA rows, decides at t's close,
    fills at t+1's open with all-in sizing and per-side fees, and keeps only the
    final equity: no signal arrays, no per-bar outputs, no metrics. Same arithmetic
    as ``kernel_a._sleeve`` for a long-only sleeve without stops; it assumes a panel
    without missing bars (true of the synthetic one).
    """
    global _FUSED
    if _FUSED is None:
        import numpy as np
        from numba import njit, prange

        @njit(cache=True, parallel=True)
        def fused(o: Any, c: Any, smas: Any, fast: Any, slow: Any, fee: float) -> Any:
            n_sym, n_bars = c.shape
            k_total = fast.shape[0]
            final = np.empty((k_total, n_sym))
            for j in prange(k_total * n_sym):
                k, i = j // n_sym, j % n_sym
                fa, sl = smas[fast[k], i], smas[slow[k], i]
                cash, qty, pos, pending = 1.0, 0.0, 0, 0
                for t in range(n_bars):
                    if pending == 1:
                        p = o[i, t]
                        q = cash / (p * (1.0 + fee))
                        cash -= q * p + q * p * fee
                        qty, pos = q, 1
                    elif pending == -1:
                        p = o[i, t]
                        cash += qty * p - qty * p * fee
                        qty, pos = 0.0, 0
                    pending = 0
                    if t + 1 < n_bars:
                        if pos == 0 and fa[t] > sl[t]:
                            pending = 1
                        elif pos == 1 and fa[t] < sl[t]:
                            pending = -1
                final[k, i] = cash + qty * c[i, n_bars - 1]
            return final

        _FUSED = fused
    return _FUSED


def fused_side(bars: Any, combos: list[tuple[int, int]]) -> Callable[[], Any]:
    import numpy as np

    from alphaloop.engines import indicators as ind

    fee = FEES_BPS / 1e4
    kernel = _fused_kernel()

    def run() -> Any:
        c = np.ascontiguousarray(bars.close.T)
        o = np.ascontiguousarray(bars.open.T)
        windows = sorted({w for fs in combos for w in fs})
        pos = {w: j for j, w in enumerate(windows)}
        smas = np.stack([ind.sma(c, w) for w in windows])
        fast = np.array([pos[f] for f, _ in combos], dtype=np.int64)
        slow = np.array([pos[s] for _, s in combos], dtype=np.int64)
        final = kernel(o, c, smas, fast, slow, fee)
        return final.mean(axis=1) - 1.0  # equal 1/N sleeves: portfolio total return

    return run


# -------------------------------------------------------------- profile
class PhaseTimer:
    """``perf_counter`` wrappers around named functions, patched on their owner
    (a module or class) and summed per name in ``acc``; :meth:`restore` undoes them."""

    def __init__(self) -> None:
        self.acc: dict[str, float] = {}
        self._patched: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str) -> None:
        orig = getattr(owner, name)
        acc = self.acc

        def timed_call(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                acc[name] = acc.get(name, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed_call)
        self._patched.append((owner, name, orig))

    def restore(self) -> None:
        for owner, name, orig in reversed(self._patched):
            setattr(owner, name, orig)
        self._patched.clear()


def split_alphaloop(bars: Any, combos: list[tuple[int, int]], repeats: int) -> dict[str, float]:
    """A low-overhead split of one call (medians over ``repeats``): building the specs,
    parsing their expressions (``entry_node``/``exit_node``, cached on the spec) and
    ``run_batch`` on the parsed specs, the latter divided by wrapping a
    ``perf_counter`` around ``SignalEvaluator.comparison`` (indicators, operands),
``simulate_blocked`` (the kernel, which compares the operands bar by bar and
    computes returns, turnover and exposure) and ``_simulate_blocked`` (~350 wrapped calls, unlike cProfile's ~300,000, which
    inflates the Python-heavy spec building and parsing)."""
    from alphaloop.engines import engine_a
    from alphaloop.engines.costs import CostModel
    from alphaloop.engines.signals import SignalEvaluator
    from alphaloop.strategy.spec import StrategySpec

    costs = CostModel(fees_bps=FEES_BPS, slippage_bps=0)
    timer = PhaseTimer()
    for n in ("simulate_blocked", "_simulate_blocked", "core_metrics"):
        timer.wrap(engine_a, n)
    timer.wrap(SignalEvaluator, "comparison")
    acc = timer.acc
    rows: dict[str, list[float]] = {}
    try:
        from alphaloop.strategy import expression

        for _ in range(repeats):
            acc.clear()
            expression.clear_caches()  # cold expression layer, as in the timed runs
            gc.collect()
            t0 = time.perf_counter()
            specs = [
                StrategySpec(
                    entry=f"sma(close,{f}) > sma(close,{s})", exit=f"sma(close,{f}) < sma(close,{s})"
                )
                for f, s in combos
            ]
            t1 = time.perf_counter()
            for sp in specs:
                sp.entry_node, sp.exit_node  # noqa: B018  (cached_property: parse once)
            t2 = time.perf_counter()
            engine_a.run_batch(specs, bars, costs)
            t3 = time.perf_counter()
            split = {
                "build specs (pydantic, expression validation)": t1 - t0,
                "parse to canonical trees (entry_node/exit_node)": t2 - t1,
                "signal operands (SignalEvaluator.comparison: sma)": acc["comparison"],
                "simulation kernel + returns (simulate_blocked)": acc["simulate_blocked"],
                "other in _simulate_blocked (sizes, risk arrays, cuts)":
                    acc["_simulate_blocked"] - acc["simulate_blocked"],
                "metrics: core_metrics": acc["core_metrics"],
                "rest of run_batch (universe, chunking, ids, frame)": (t3 - t2)
                - acc["_simulate_blocked"] - acc["comparison"] - acc["core_metrics"],
            }
            for k, v in split.items():
                rows.setdefault(k, []).append(v)
    finally:
        timer.restore()
    return {k: statistics.median(v) for k, v in rows.items()}


def profile_alphaloop(fn: Callable[[], Any]) -> dict[str, Any]:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    gc.collect()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]

    def cum(file_end: str, func: str, own: bool = False) -> float:
        return sum((v[2] if own else v[3]) for (f, _, n), v in stats.items()
                   if f.replace(os.sep, "/").endswith(file_end) and n == func)

    total = cum("bench_engine_a.py", "run")
    run_batch = cum("engines/engine_a.py", "run_batch")
    chunk = cum("engines/engine_a.py", "_simulate_blocked")
    parse = cum("strategy/spec.py", "entry_node") + cum("strategy/spec.py", "exit_node")
    signal = cum("engines/signals.py", "comparison")
    kernel = cum("engines/kernel_a.py", "simulate_blocked")
    ev_init = cum("engines/signals.py", "__init__")
    metrics = cum("engines/metrics.py", "core_metrics")
    rows = {
        "build specs (pydantic validation, expression check)": total - run_batch,
        "signal operands: SignalEvaluator.comparison": signal,
        "  of which indicators.sma (numba)": cum("engines/indicators.py", "sma", own=True),
        "spec.entry_node/exit_node (canonical trees)": parse,
        "simulation + returns: kernel_a.simulate_blocked (numba)": kernel,
        "other in _simulate_blocked (risk/size arrays, cuts)": chunk - kernel,
        "SignalEvaluator.__init__ (transpose OHLCV)": ev_init,
        "metrics: core_metrics": metrics,
        "rest of run_batch (universe, operands, ids, frame)":
            run_batch - chunk - ev_init - metrics - signal - parse,
    }
    return {"wall_s": wall, "profiled_total_s": total, "rows": rows}


# ---------------------------------------------------------------- machine
def _peer_version(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except (ImportError, AttributeError):
        return None


def machine_info(peers: tuple[str, ...] = ("vectorbt",)) -> dict[str, Any]:
    """CPU, memory, versions (ours and each peer's) and numba's threading set-up."""
    import numba
    import numpy as np
    import pandas as pd

    cpu, mhz = "", ""
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        cpu = m.group(1).strip() if m else ""
        m = re.search(r"^cpu MHz\s*:\s*(.+)$", text, re.M)
        mhz = m.group(1).strip() if m else ""
    except OSError:
        pass
    ram = 0
    try:
        with open("/proc/meminfo") as fh:
            m = re.search(r"^MemTotal:\s+(\d+)", fh.read(), re.M)
            ram = int(m.group(1)) * 1024 if m else 0
    except OSError:
        pass
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = None
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu or platform.processor(), "cpu_mhz": mhz,
        "ram_bytes": ram,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "numba": numba.__version__,
        **{p: _peer_version(p) for p in peers},
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": layer,
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR") or "(default: __pycache__)",
    }


def use_cold_numba_cache() -> None:
    """A fresh NUMBA_CACHE_DIR (removed at exit), so first calls are real compiles.
    Must run before numba is imported."""
    cache_dir = tempfile.mkdtemp(prefix="alphaloop-bench-numba-")
    os.environ["NUMBA_CACHE_DIR"] = cache_dir
    atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cold:
        use_cold_numba_cache()
    import numba
    import numpy as np

    if args.threads:
        numba.set_num_threads(args.threads)
    n_sym = args.symbols or (10 if args.quick else 100)
    n_bars = args.bars or 2520
    al_rep = args.repeats or (3 if args.quick else 5)
    vb_rep = args.vbt_repeats or args.repeats or (2 if args.quick else 3)
    combos = grid()
    k = len(combos)
    work = k * n_sym * n_bars
    load0 = os.getloadavg()

    vbt_ok = not args.skip_vectorbt
    if vbt_ok:
        try:
            import vectorbt  # noqa: F401  (import time is not part of the benchmark)
        except ImportError:
            print("vectorbt is not installed (pip install -e '.[bench]'): alphaloop side only")
            vbt_ok = False

    bars = make_bars(n_sym, n_bars, SEED)
    mem = PeakRSS()
    print(f"panel: {n_sym} symbols × {n_bars} bars ({bars.name}), grid: {k} combos, "
          f"work = {work:,} bar-evaluations; memory: {mem.method}", flush=True)

    al_fn = alphaloop_side(bars, combos)
    al = run_side("alphaloop", al_fn, al_rep, mem)
    al_tr = al.pop("result").metrics["total_return"].to_numpy()
    info = machine_info()
    info["numba_threading_layer"] = numba.threading_layer()

    fused = None
    if not args.no_fused:
        fused = run_side("fused-ref", fused_side(bars, combos), al_rep, mem)
        fused_tr = fused.pop("result")
        fused["max_abs_diff_vs_alphaloop"] = float(np.max(np.abs(fused_tr - al_tr)))

    prof = None
    if args.profile:
        prof = profile_alphaloop(al_fn)
        prof["split_unprofiled_median_s"] = split_alphaloop(bars, combos, al_rep)

    vb = None
    check: dict[str, Any] = {}
    if vbt_ok:
        vb_fn = vectorbt_side(bars, combos, args.vbt_chunk)
        vb = run_side("vectorbt", vb_fn, vb_rep, mem)
        vb_tr = vb.pop("result")  # (K, N) per-column total returns
        check = cross_check(bars, combos, al_tr, vb_tr)
    load1 = os.getloadavg()

    def rates(side: dict[str, Any]) -> dict[str, float]:
        return {"combos_per_s_median": k / side["median_s"], "combos_per_s_best": k / side["best_s"],
                "bar_evals_per_s_median": work / side["median_s"],
                "bar_evals_per_s_best": work / side["best_s"]}

    results: dict[str, Any] = {
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "config": {"symbols": n_sym, "bars": n_bars, "combos": k, "bar_evaluations": work,
                   "fees_bps": FEES_BPS, "seed": SEED, "data": bars.name,
                   "repeats": {"alphaloop": al_rep, "vectorbt": vb_rep if vbt_ok else 0},
                   "vbt_chunk": args.vbt_chunk or k, "cold_cache": args.cold,
                   "memory_method": mem.method},
        "machine": info,
        "loadavg_start": load0, "loadavg_end": load1,
        "alphaloop": {**al, **rates(al)},
    }
    if fused is not None:
        results["fused_reference"] = {**fused, **rates(fused)}
        # alphaloop over the bound (target <= 1.5): wall and CPU time of the same run
        results["alphaloop_over_fused_median"] = al["median_s"] / fused["median_s"]
        results["alphaloop_over_fused_best"] = al["best_s"] / fused["best_s"]
        results["alphaloop_over_fused_cpu_median"] = al["cpu_s_median"] / fused["cpu_s_median"]
    if vb is not None:
        results["vectorbt"] = {**vb, **rates(vb)}
        results["ratio_median"] = vb["median_s"] / al["median_s"]
        results["ratio_best"] = vb["best_s"] / al["best_s"]
        results["ratio_cpu_median"] = vb["cpu_s_median"] / al["cpu_s_median"]
        results["cross_check"] = check
    if prof is not None:
        results["profile"] = prof
    print_table(results)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=float)
        print(f"wrote {args.json}")
    if check and not check["max_abs_diff"] <= args.tol:
        print(f"CROSS-CHECK FAILED: max abs diff {check['max_abs_diff']:.3g} > {args.tol:g}")
        return 1
    return 0


def cross_check(bars: Any, combos: list[tuple[int, int]], al_tr: Any, vb_tr: Any) -> dict[str, Any]:
    """alphaloop single-symbol runs vs vectorbt columns, and portfolio vs column means."""
    import numpy as np

    n = bars.n_symbols
    ks = sorted({0, len(combos) // 3, 2 * len(combos) // 3, len(combos) - 1})
    syms = sorted({0, n // 2, n - 1})
    sub = [combos[i] for i in ks]
    sub_bars = bars.select([bars.symbols[i] for i in syms])
    tr, pfs = vectorbt_side(sub_bars, sub, 0, with_pf=True)()
    vb_trades = pfs[0].trades.count().to_numpy().reshape(len(sub), len(syms))
    rows, diffs, trade_mismatch = [], [], 0
    for a, ki in enumerate(ks):
        f, s = combos[ki]
        for b, si in enumerate(syms):
            sym = bars.symbols[si]
            al, n_tr = alphaloop_single(bars, sym, f, s)
            d = abs(al - vb_tr[ki, si])
            diffs.append(d)
            diffs.append(abs(tr[a, b] - vb_tr[ki, si]))  # the small run agrees with the grid run
            trade_mismatch += int(n_tr != vb_trades[a, b])
            rows.append({"fast": f, "slow": s, "symbol": sym, "alphaloop": al,
                         "vectorbt": float(vb_tr[ki, si]), "abs_diff": d,
                         "trades_alphaloop": n_tr, "trades_vectorbt": int(vb_trades[a, b])})
    # alphaloop's portfolio = equal sleeves of 1/N per symbol, so its total return is the
    # mean of the per-symbol total returns: compare all combos at once
    port = float(np.max(np.abs(al_tr - vb_tr.mean(axis=1))))
    single = float(max(diffs))
    return {"pairs": rows, "max_abs_diff_single_symbol": single,
            "max_abs_diff_portfolio_all_combos": port, "max_abs_diff": max(single, port),
            "trade_count_mismatches": trade_mismatch}


def _fmt_rate(x: float) -> str:
    return f"{x:.3g}"


def _mb(x: int) -> str:
    return f"{x / 2**20:,.0f} MiB"


def print_table(r: dict[str, Any]) -> None:
    c, m = r["config"], r["machine"]
    print()
    print(f"SMA grid: {c['combos']} combos × {c['symbols']} symbols × {c['bars']} bars "
          f"= {c['bar_evaluations']:,} bar-evaluations; fees {c['fees_bps']:g} bps/side, "
          "next-open fills")
    print(f"machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_bytes'] / 2**30:.1f} GiB RAM; "
          f"python {m['python']}, numba {m['numba']} ({m['numba_threading_layer']}, "
          f"{m['numba_threads']} threads), vectorbt {m['vectorbt']}")
    print(f"load average at start / end: {r['loadavg_start'][0]:.2f} / {r['loadavg_end'][0]:.2f}"
          f"   (cold numba cache: {c['cold_cache']})")
    sides = [s for s in ("alphaloop", "vectorbt", "fused_reference") if s in r]
    w = 26
    names = {"alphaloop": "alphaloop", "vectorbt": "vectorbt", "fused_reference": "fused ref."}
    head = f"{'':<{w}}" + "".join(f"{names[s]:>18}" for s in sides)
    if "ratio_median" in r:
        head += f"{'vbt / alphaloop':>18}"
    print(head)
    print("-" * len(head))

    def line(label: str, vals: list[str], ratio: str = "") -> None:
        print(f"{label:<{w}}" + "".join(f"{v:>18}" for v in vals) + (f"{ratio:>18}" if ratio else ""))

    def ratio(key: str) -> str:
        if "ratio_median" not in r:
            return ""
        return f"{r['vectorbt'][key] / r['alphaloop'][key]:.1f}×"

    def inv_ratio(key: str) -> str:
        if "ratio_median" not in r:
            return ""
        return f"{r['alphaloop'][key] / r['vectorbt'][key]:.1f}×"

    line("first call (compile), s", [f"{r[s]['first_call_s']:.2f}" for s in sides],
         ratio("first_call_s"))
    line("steady median, s", [f"{r[s]['median_s']:.3f}" for s in sides], ratio("median_s"))
    line("steady best, s", [f"{r[s]['best_s']:.3f}" for s in sides], ratio("best_s"))
    line("CPU time (median), s", [f"{r[s]['cpu_s_median']:.3f}" for s in sides],
         ratio("cpu_s_median"))
    line("load average before", [f"{r[s]['loadavg_before']:.2f}" for s in sides])
    line("combos/s (median)", [f"{r[s]['combos_per_s_median']:.1f}" for s in sides],
         inv_ratio("combos_per_s_median"))
    line("bar-evals/s (median)", [_fmt_rate(r[s]["bar_evals_per_s_median"]) for s in sides],
         inv_ratio("bar_evals_per_s_median"))
    line("bar-evals/s (best)", [_fmt_rate(r[s]["bar_evals_per_s_best"]) for s in sides],
         inv_ratio("bar_evals_per_s_best"))
    line("peak RSS, first call", [_mb(r[s]["first_call_mem"]["peak_rss"]) for s in sides])
    line("peak RSS, steady", [_mb(r[s]["steady_mem"]["peak_rss"]) for s in sides])
    line("  delta over baseline", [_mb(r[s]["steady_mem"]["delta_rss"]) for s in sides])
    if "fused_reference" in r:
        print(f"alphaloop / fused ref.: wall median {r['alphaloop_over_fused_median']:.2f}×, "
              f"wall best {r['alphaloop_over_fused_best']:.2f}×, "
              f"CPU median {r['alphaloop_over_fused_cpu_median']:.2f}×")
        print("fused ref. = hand-fused numba kernel for this grid only (SMAs + decide/fill/"
              "final equity, no signal arrays or metrics); |Δ total return| vs alphaloop "
              f"{r['fused_reference']['max_abs_diff_vs_alphaloop']:.2e}")
    if "cross_check" in r:
        cc = r["cross_check"]
        print(f"cross-check: max |Δ total return| single-symbol {cc['max_abs_diff_single_symbol']:.2e}"
              f" ({len(cc['pairs'])} combo×symbol pairs), portfolio (all {c['combos']} combos) "
              f"{cc['max_abs_diff_portfolio_all_combos']:.2e}; "
              f"trade-count mismatches {cc['trade_count_mismatches']}")
    if "profile" in r:
        p = r["profile"]
        print(f"\ncProfile of one steady-state alphaloop call ({p['profiled_total_s']:.3f} s "
              f"profiled, {p['wall_s']:.3f} s wall):")
        for label, t in p["rows"].items():
            print(f"  {label:<55}{t:8.3f} s {100 * t / p['profiled_total_s']:6.1f} %")
        split = p["split_unprofiled_median_s"]
        tot = sum(split.values())
        print(f"the same call timed with perf_counter wrappers instead of cProfile (medians of "
              f"{c['repeats']['alphaloop']} calls, {tot:.3f} s in all):")
        for label, t in split.items():
            print(f"  {label:<55}{t:8.3f} s {100 * t / tot:6.1f} %")


if __name__ == "__main__":
    sys.exit(main())
