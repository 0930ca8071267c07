#!/usr/bin/env python
"""Cross-sectional engine A vs vectorbt: ranked long-short books, in one process.

The workload (issue 16): 1,000 ``xs_momentum`` candidates (the family's Sobol
sample, seed 0: window 20..260, skip 0/5/21, long = short = 10/20/30 % of the
names, exit buffer 0/10/20 %, rebalance every 1/5/21 bars, equal or rank weights,
dollar-neutral) on a synthetic 500 symbols × 2,520 bars daily panel, 10 bps fees +
5 bps slippage per side (``--quick``: 50 symbols, 100 candidates).

- alphaloop: ``run_batch(specs, bars, CostModel(10, 5))``, end to end (spec building,
  score evaluation, the rankings, the kernel, metrics), all candidates in one call.
- vectorbt: per candidate, the targets computed with numpy (score, per-bar ranking,
  top/bottom books, weights: what a vectorbt user writes, since vectorbt has no
  ranked book) and ``vbt.Portfolio.from_orders(close, size=targets,
  size_type="targetpercent", price=open, val_price=open, fees=0.001,
  slippage=0.0005, direction="both", cash_sharing=True, group_by=True,
  call_seq="auto", init_cash=1.0, freq="1D")`` with one group of 500 columns, then
  ``.value()``. A target set at bar t's close is the order of bar t+1 (filled at that
  open), which is alphaloop's timeline.

vectorbt cannot take 1,000 × 500 columns at once (every (bars × columns) array would be
10 GB), so it runs a **subset** of the candidates (``--vbt-candidates``, default 16),
one ``from_orders`` call each, and the comparison is per candidate: alphaloop's time
for all of them divided by their number against vectorbt's mean time per candidate.
The subset is the first candidates of the sample *without* an exit buffer: with a
buffer the books depend on what is held (a path-dependent loop vectorbt's
vectorized API cannot express; ``from_order_func`` could, at the cost of writing the
kernel again). alphaloop's time on the same subset alone is reported too.

Agreement, on that subset: the same targets also go through a plain numpy loop
(:func:`reference`: at each order bar, shares = weight × equity at the open / open,
fill at open × (1 ± slippage), fees on the filled notional, no margin or cash rule),
written from the documented semantics. alphaloop must equal it (the script exits 1
when the largest absolute difference of the equity curves, which start at 1.0,
exceeds ``--tol``). vectorbt is the same simulation but for one rule of its own: it
tracks a free cash (cash net of what the shorts borrowed) and, while that is negative,
rejects orders as ``MinSizeNotReached`` (small resizes of held names, buys and sells),
so those positions keep their old size; the difference is reported, with the number of
rejected orders of the first subset candidate (one extra, untimed call with
``log=True``).

Timing: the first call of each side (numba compile or cache load) separately; then
``--repeats`` steady calls of alphaloop (best and median) and one pass over the
vectorbt subset (mean per candidate). Wall time (``perf_counter``) and process CPU
time (``process_time``: all threads). Data generation is excluded.

Usage::

    python benchmarks/bench_xs.py                    # full size
    python benchmarks/bench_xs.py --quick            # smoke size
    python benchmarks/bench_xs.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

FEES_BPS, SLIPPAGE_BPS = 10.0, 5.0
SEED = 20261201


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="50 symbols, 100 candidates")
    p.add_argument("--symbols", type=int, default=None)
    p.add_argument("--bars", type=int, default=2520)
    p.add_argument("--candidates", type=int, default=None)
    p.add_argument("--vbt-candidates", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tol", type=float, default=1e-9)
    p.add_argument("--no-vbt", action="store_true", help="alphaloop only")
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args(argv)
    a.symbols = a.symbols or (50 if a.quick else 500)
    a.candidates = a.candidates or (100 if a.quick else 1000)
    a.vbt_candidates = a.vbt_candidates or (4 if a.quick else 16)
    return a


# ------------------------------------------------------------------ timing
def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


# ------------------------------------------------------------------ alphaloop
def candidates(n: int) -> list[dict[str, Any]]:
    from alphaloop.strategy.samplers import make_sampler

    got = make_sampler("sobol", "xs_momentum", seed=0).ask(n)
    if len(got) < n:
        raise SystemExit(f"the xs_momentum sample has only {len(got)} candidates")
    return got


def alphaloop_batch(params: list[dict[str, Any]], bars: Any) -> Any:
    from alphaloop.engines.costs import CostModel
    from alphaloop.engines.engine_a import run_batch
    from alphaloop.strategy import expression
    from alphaloop.strategy.templates import get_family

    expression.clear_caches()  # a cold expression layer on every call, as a user's sweep
    fam = get_family("xs_momentum")
    specs = [fam.build(p) for p in params]
    return run_batch(specs, bars, CostModel(fees_bps=FEES_BPS, slippage_bps=SLIPPAGE_BPS))


# ------------------------------------------------------------------ vectorbt
def targets(p: dict[str, Any], close: np.ndarray) -> np.ndarray:
    """(T, N) target weights of the equity, NaN where no order: the book decided at
    bar t's close (a buffer-free xs_momentum candidate) is the order of bar t+1."""
    n_bars, n_sym = close.shape
    window, skip, frac = int(p["window"]), int(p["skip"]), float(p["fraction"])
    every, rank_w = int(p["rebalance"]), p["weighting"] == "rank"
    score = np.full_like(close, np.nan)
    score[window:] = close[window - skip:n_bars - skip] / close[:n_bars - window] - 1.0
    size = np.full_like(close, np.nan)
    for t in range(0, n_bars - 1, every):
        ok = np.flatnonzero(np.isfinite(score[t]))
        n = ok.size
        if n == 0:
            continue
        order = ok[np.argsort(-score[t, ok], kind="stable")]  # best first, ties by name
        k_long = min(max(int(np.floor(frac * n + 1e-9)), 1), n)
        k_short = min(min(max(int(np.floor(frac * n + 1e-9)), 1), n), n - k_long)
        w = np.zeros(n_sym)
        for book, names in ((1.0, order[:k_long]), (-1.0, order[::-1][:k_short])):
            m = names.size
            if m == 0:
                continue
            parts = np.arange(m, 0, -1, dtype=float) if rank_w else np.ones(m)
            w[names] = book * 0.5 * parts / parts.sum()  # gross 1, net 0
        size[t + 1] = w
    return size


def reference(size: np.ndarray, close: np.ndarray, open_: np.ndarray) -> np.ndarray:
    """Equity (T,) of the target weights ``size`` by a plain loop: at a bar with
    orders, shares = weight × (cash + positions at the open) / open; each order fills
    at open × (1 ± slippage) and pays the fee on its filled notional."""
    fee, slip = FEES_BPS / 1e4, SLIPPAGE_BPS / 1e4
    pos, cash = np.zeros(close.shape[1]), 1.0
    equity = np.empty(close.shape[0])
    for t in range(close.shape[0]):
        if not np.isnan(size[t]).all():
            value = cash + pos @ open_[t]
            new = np.nan_to_num(size[t]) * value / open_[t]
            delta = new - pos
            price = open_[t] * (1.0 + np.sign(delta) * slip)
            cash -= delta @ price + np.abs(delta) @ price * fee
            pos = new
        equity[t] = cash + pos @ close[t]
    return equity


def vbt_portfolio(size: np.ndarray, close: np.ndarray, open_: np.ndarray,
                  log: bool = False) -> Any:
    import vectorbt as vbt

    return vbt.Portfolio.from_orders(
        close, size=size, size_type="targetpercent", price=open_, val_price=open_,
        fees=FEES_BPS / 1e4, slippage=SLIPPAGE_BPS / 1e4, direction="both",
        cash_sharing=True, group_by=True, call_seq="auto", init_cash=1.0, freq="1D",
        log=log)


def vbt_run(p: dict[str, Any], close: np.ndarray, open_: np.ndarray) -> np.ndarray:
    pf = vbt_portfolio(targets(p, close), close, open_)
    return np.asarray(pf.value()).ravel()


def vbt_rejections(p: dict[str, Any], close: np.ndarray, open_: np.ndarray) -> int:
    """Orders vectorbt rejected for candidate ``p`` (its free-cash rule)."""
    from vectorbt.portfolio.enums import OrderStatus

    logs = vbt_portfolio(targets(p, close), close, open_, log=True).logs.records
    return int((logs["res_status"] == OrderStatus.Rejected).sum())


# ------------------------------------------------------------------ main
def machine() -> dict[str, Any]:
    import numba
    import pandas as pd

    info: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__,
                            "pandas": pd.__version__, "numba": numba.__version__,
                            "cpus": os.cpu_count(), "numba_threads": numba.get_num_threads()}
    try:
        import vectorbt as vbt
        info["vectorbt"] = vbt.__version__
    except ImportError:
        info["vectorbt"] = None
    return info


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from alphaloop.data.synthetic import CrossSectionalEffect, generate

    bars = generate(a.symbols, a.bars, seed=SEED,
                    cross_sectional=CrossSectionalEffect(strength=0.04, lookback=60))
    params = candidates(a.candidates)
    plain = [i for i, p in enumerate(params) if p["buffer"] == 0][:a.vbt_candidates]
    size = a.candidates * a.symbols * a.bars
    print(f"panel {a.symbols} symbols × {a.bars} bars; {a.candidates} xs_momentum "
          f"candidates ({sum(p['buffer'] == 0 for p in params)} without a buffer); "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    out: dict[str, Any] = {"machine": machine(), "symbols": a.symbols, "bars": a.bars,
                           "candidates": a.candidates, "vbt_subset": plain}

    # alphaloop: first call, then steady calls over all candidates
    first_w, first_c, res = timed(lambda: alphaloop_batch(params, bars))
    runs = [timed(lambda: alphaloop_batch(params, bars)) for _ in range(a.repeats)]
    walls, cpus = [r[0] for r in runs], [r[1] for r in runs]
    al: dict[str, Any] = {"first_call_s": first_w, "first_call_cpu_s": first_c,
          "wall_median_s": statistics.median(walls), "wall_best_s": min(walls),
          "cpu_median_s": statistics.median(cpus), "walls": walls}
    al["per_candidate_wall_s"] = al["wall_median_s"] / a.candidates
    al["per_candidate_cpu_s"] = al["cpu_median_s"] / a.candidates
    al["bar_evals_per_s"] = size / al["wall_median_s"]
    sub_w, sub_c, sub = timed(lambda: alphaloop_batch([params[i] for i in plain], bars))
    al["subset_wall_s"], al["subset_cpu_s"] = sub_w, sub_c
    out["alphaloop"] = al
    print(f"alphaloop: first call {first_w:.2f} s; {a.candidates} candidates in "
          f"{al['wall_median_s']:.2f} s median ({min(walls):.2f} best), CPU "
          f"{al['cpu_median_s']:.2f} s; {al['per_candidate_wall_s'] * 1e3:.2f} ms/candidate; "
          f"{al['bar_evals_per_s']:.3g} bar-evals/s; the {len(plain)}-candidate subset "
          f"alone {sub_w:.2f} s", flush=True)
    sharpe = res.metrics["sharpe"].to_numpy()
    print(f"  Sharpe over the candidates: median {np.nanmedian(sharpe):.2f}, "
          f"max {np.nanmax(sharpe):.2f}", flush=True)

    if a.no_vbt:
        _write(a.json, out)
        return 0
    close, open_ = np.asarray(bars.close), np.asarray(bars.open)
    print(f"vectorbt: first call (compile or cache load) ... load "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    vfirst_w, vfirst_c, _ = timed(lambda: vbt_run(params[plain[0]], close, open_))
    t_walls, t_cpus, v_walls, v_cpus, diffs, ref_diffs = [], [], [], [], [], []
    for k, i in enumerate(plain):
        p_k = params[i]
        tw, tc, size_k = timed(lambda: targets(p_k, close))  # noqa: B023 (called now)
        vw, vc, value = timed(lambda: vbt_run(p_k, close, open_))  # noqa: B023
        t_walls.append(tw)
        t_cpus.append(tc)
        v_walls.append(vw)
        v_cpus.append(vc)
        diff = float(np.max(np.abs(value - sub.equity[k])))
        ref = float(np.max(np.abs(reference(size_k, close, open_) - sub.equity[k])))
        diffs.append(diff)
        ref_diffs.append(ref)
        print(f"  {k:2d} {params[i]}: {vw:.2f} s (targets {tw:.2f} s); max |equity diff| "
              f"alphaloop-vectorbt {diff:.2e}, alphaloop-reference {ref:.2e}", flush=True)
    rejected = vbt_rejections(params[plain[0]], close, open_)
    vb: dict[str, Any] = {"first_call_s": vfirst_w, "first_call_cpu_s": vfirst_c,
          "per_candidate_wall_s": statistics.mean(v_walls),
          "per_candidate_cpu_s": statistics.mean(v_cpus),
          "targets_share": statistics.mean(t_walls) / statistics.mean(v_walls),
          "walls": v_walls, "max_equity_diff": max(diffs), "diffs": diffs,
          "rejected_orders_candidate_0": rejected}
    out["max_equity_diff_reference"] = max(ref_diffs)
    out["vectorbt"] = vb
    out["ratio_wall"] = vb["per_candidate_wall_s"] / al["per_candidate_wall_s"]
    out["ratio_cpu"] = vb["per_candidate_cpu_s"] / al["per_candidate_cpu_s"]
    out["ratio_wall_subset"] = vb["per_candidate_wall_s"] * len(plain) / sub_w
    print(f"vectorbt: first call {vfirst_w:.2f} s; {vb['per_candidate_wall_s']:.3f} s per "
          f"candidate (CPU {vb['per_candidate_cpu_s']:.3f} s; targets "
          f"{vb['targets_share']:.0%} of it)")
    print(f"ratio vectorbt / alphaloop per candidate: wall {out['ratio_wall']:.0f}×, "
          f"CPU {out['ratio_cpu']:.0f}× (on the subset alone: wall "
          f"{out['ratio_wall_subset']:.1f}×)")
    print(f"agreement on {len(plain)} candidates: alphaloop vs the numpy reference "
          f"{max(ref_diffs):.2e} (tol {a.tol:g}); alphaloop vs vectorbt {max(diffs):.2e} "
          f"(vectorbt rejected {rejected} orders of candidate 0 while its free cash was "
          "negative)")
    _write(a.json, out)
    return 0 if max(ref_diffs) <= a.tol else 1


def _write(path: str | None, out: dict[str, Any]) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(out, fh, indent=2, default=float)


if __name__ == "__main__":
    sys.exit(main())
