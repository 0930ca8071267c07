#!/usr/bin/env python
"""Engine A on large panels: 2,000 candidates over a 500 × 5,040 daily panel and over a
50-symbol × 200,000-bar minute panel, with peak memory (issue 13, item 6).

Panels (synthetic, :func:`alphaloop.data.synthetic.generate`, seeded):

- **daily**: ``generate(500, 5040)``: 500 symbols × 5,040 business days (20 years);
- **minute**: 50 symbols × 200,000 bars on a 1-minute index, chained from
  ``generate(50, 50000)`` pieces (see :func:`make_panel`); annualization uses minute bars.

Candidates: 2,000 specs drawn with a fixed seed from five families a sweep proposes
(SMA and EMA crossovers, RSI thresholds, channel breakouts, a z-score reversion), long,
short or both, a quarter of them with a stop loss or a trailing stop, a fifth sized by
volatility target. They go through ``run_batch`` as one call, in its chunks.

Reported per panel: wall and CPU time of the ``run_batch`` call (the SignalEvaluator,
built from the panel, is inside it), candidates/s, bar-evaluations/s (candidates ×
symbols × bars / s) and peak RSS. Memory method: as in ``bench_engine_a.py``: the
kernel's RSS high-water mark is reset before the call (``/proc/self/clear_refs``) and
``VmHWM`` read after it; "delta" is the peak minus the RSS just before the call (the
panel and the interpreter excluded). What the batch must keep is its (K, T) returns
(K × T × 8 bytes; with ``--keep-equity`` its equity curves too, as ``run_batch`` keeps
them by default; a sweep does not), reported as "(K, T) outputs".

Usage::

    python benchmarks/bench_scale.py                      # both panels, 2,000 candidates
    python benchmarks/bench_scale.py --panel minute --candidates 200
    python benchmarks/bench_scale.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_engine_a import PeakRSS, machine_info

SEED = 20261201
PANELS = {"daily": (500, 5040), "minute": (50, 200_000)}


def make_panel(kind: str, n_symbols: int, n_bars: int) -> Any:
    """The daily panel is ``generate(n_symbols, n_bars)``. The generator's index is
    business days, and 200,000 of them run past pandas' last timestamp (2262), so the
    minute panel chains pieces of at most 50,000 bars (seeds SEED, SEED + 1, ...), each
    rescaled so that its first open is the previous piece's last close, on a 1-minute UTC index."""
    import numpy as np
    import pandas as pd

    from alphaloop.data.bars import Bars
    from alphaloop.data.synthetic import generate

    if kind == "daily":
        return generate(n_symbols, n_bars, seed=SEED, name="synthetic-daily")
    fields: dict[str, list[Any]] = {f: [] for f in ("open", "high", "low", "close", "volume")}
    level = np.ones(n_symbols)
    done = 0
    while done < n_bars:
        piece = generate(n_symbols, min(50_000, n_bars - done), seed=SEED + len(fields["close"]))
        scale = level / piece.open[0] if done else np.ones(n_symbols)  # opens at the last close
        for f in ("open", "high", "low", "close"):
            fields[f].append(getattr(piece, f) * scale)
        fields["volume"].append(piece.volume)
        level = fields["close"][-1][-1]
        done += piece.n_bars
    index = pd.date_range("2024-01-02 00:00", periods=n_bars, freq="1min", tz="UTC")
    return Bars(index=index.as_unit("ns"), symbols=piece.symbols,
                **{f: np.concatenate(v) for f, v in fields.items()}, name="synthetic-minute")


def candidates(n: int, seed: int = SEED) -> list[Any]:
    """``n`` specs from five families, drawn with a fixed seed (duplicates allowed: a
    sampler proposes some twice, and the batch must not care)."""
    import numpy as np

    from alphaloop.strategy.spec import StrategySpec

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        fam = rng.integers(5)
        if fam == 0:
            f = int(rng.integers(2, 60))
            s = int(rng.integers(f + 5, 300))
            entry, exit_ = f"sma(close, {f}) > sma(close, {s})", f"sma(close, {f}) < sma(close, {s})"
        elif fam == 1:
            f = int(rng.integers(2, 40))
            s = int(rng.integers(f + 5, 200))
            entry, exit_ = f"ema(close, {f}) > ema(close, {s})", f"ema(close, {f}) < ema(close, {s})"
        elif fam == 2:
            w = int(rng.integers(2, 30))
            lo = int(rng.integers(10, 40))
            hi = int(rng.integers(55, 90))
            entry, exit_ = f"rsi(close, {w}) < {lo}", f"rsi(close, {w}) > {hi}"
        elif fam == 3:
            w = int(rng.integers(5, 120))
            x = int(rng.integers(3, 60))
            entry, exit_ = f"close > highest(high, {w})", f"close < lowest(low, {x})"
        else:
            w = int(rng.integers(5, 100))
            z = round(float(rng.uniform(0.5, 2.5)), 1)
            entry, exit_ = f"zscore(close, {w}) < -{z}", f"zscore(close, {w}) > 0"
        direction = str(rng.choice(["long", "long", "short", "both"]))
        risk: dict[str, Any] = {}
        u = rng.random()
        if u < 0.15:
            risk = {"stop_loss": round(float(rng.uniform(0.02, 0.15)), 3)}
        elif u < 0.25:
            risk = {"trailing_stop": round(float(rng.uniform(0.03, 0.2)), 3)}
        sizing: dict[str, Any] = {"method": "equal_weight"}
        if rng.random() < 0.2:
            sizing = {"method": "vol_target", "target_vol": 0.15, "vol_window": 20}
        out.append(StrategySpec(entry=entry, exit=exit_, direction=direction, risk=risk,
                                sizing=sizing))
    return out


def run_panel(kind: str, n_cand: int, chunk_size: int, mem: PeakRSS,
              keep_equity: bool = False) -> dict[str, Any]:
    import numpy as np

    from alphaloop.engines.costs import CostModel
    from alphaloop.engines.engine_a import run_batch

    n_sym, n_bars = PANELS[kind]
    t0 = time.perf_counter()
    bars = make_panel(kind, n_sym, n_bars)
    specs = candidates(n_cand)
    gen_s = time.perf_counter() - t0
    print(f"[{kind}] panel {n_sym} × {n_bars} ({gen_s:.1f} s to generate), "
          f"{n_cand} candidates, chunk_size {chunk_size}", flush=True)
    done: list[tuple[int, float]] = []
    start = time.perf_counter()

    def progress(n: int) -> None:
        done.append((n, time.perf_counter() - start))
        if len(done) % 4 == 1 or n == n_cand:
            print(f"[{kind}]   {n} done, {done[-1][1]:.1f} s", flush=True)

    base = mem.start()
    c0 = time.process_time()
    w0 = time.perf_counter()
    res = run_batch(specs, bars, CostModel(fees_bps=10, slippage_bps=5), chunk_size=chunk_size,
                    progress=progress, keep_equity=keep_equity)
    wall = time.perf_counter() - w0
    cpu = time.process_time() - c0
    peak = mem.peak()
    finite = bool(np.isfinite(res.returns).all())
    out_bytes = res.returns.nbytes + res.equity.nbytes
    return {
        "panel": kind, "symbols": n_sym, "bars": n_bars, "candidates": n_cand,
        "chunk_size": chunk_size, "keep_equity": keep_equity, "wall_s": wall, "cpu_s": cpu,
        "candidates_per_s": n_cand / wall,
        "bar_evals_per_s": n_cand * n_sym * n_bars / wall,
        "peak_rss": peak, "base_rss": base, "delta_rss": max(peak - base, 0),
        "kt_outputs_bytes": out_bytes, "panel_bytes": 5 * n_sym * n_bars * 8,
        "returns_finite": finite, "chunks": len(done),
        "n_trades_total": int(res.metrics["n_trades"].sum()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--panel", choices=["daily", "minute", "both"], default="both")
    p.add_argument("--candidates", type=int, default=2000)
    p.add_argument("--minute-candidates", type=int, default=None,
                   help="candidates for the minute panel (default: --candidates)")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--keep-equity", action="store_true",
                   help="keep the (K, T) equity curves too (run_batch's default)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    mem = PeakRSS()
    kinds = ["daily", "minute"] if args.panel == "both" else [args.panel]
    rows = []
    info = machine_info(peers=())
    for kind in kinds:
        n = args.candidates if kind == "daily" else (args.minute_candidates or args.candidates)
        rows.append(run_panel(kind, n, args.chunk_size, mem, args.keep_equity))
        print(json.dumps(rows[-1], default=float), flush=True)  # kept if a later panel fails
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
                           "machine": info, "memory_method": mem.method, "results": rows},
                          fh, indent=2, default=float)
    print(f"\nmachine: {info['nproc']} CPUs ({info['cpu_model']}), "
          f"{info['ram_bytes'] / 2**30:.1f} GiB RAM; numba {info['numba']} "
          f"({info['numba_threads']} threads); memory: {mem.method}; "
          f"load average now {os.getloadavg()[0]:.2f}")
    head = (f"{'panel':<8}{'N × T':>16}{'cands':>7}{'wall s':>9}{'CPU s':>9}{'cand/s':>9}"
            f"{'bar-evals/s':>13}{'peak RSS':>11}{'delta':>10}{'(K,T) out':>11}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['panel']:<8}{r['symbols']:>7} × {r['bars']:<7}{r['candidates']:>7}"
              f"{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{r['candidates_per_s']:>9.1f}"
              f"{r['bar_evals_per_s']:>13.3g}{r['peak_rss'] / 2**20:>8,.0f} MiB"
              f"{r['delta_rss'] / 2**20:>7,.0f} MiB{r['kt_outputs_bytes'] / 2**20:>8,.0f} MiB")
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
