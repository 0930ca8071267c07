"""Learning from failure, measured (issue 10): the same budget twice on the same data,
with and without learning, on (a) the bundled real data and (b) a seeded synthetic panel
with a planted effect.

Per iteration, from each run's recorded RunSummary (the numbers the run report plots):
the share of the tested candidates that were rejected, the share of the families'
parameter space the rules in force forbid, and the best score engine B verified so far;
and from the run's knowledge base: the mean score of the tested candidates and the share
of them rejected with a code of a parameter region (what the learner learns from).
Per run: backtests spent, survivors, the first iteration with a survivor.

Workload: five template families (sma_cross, momentum, rsi_reversion,
bollinger_reversion, donchian_breakout), Sobol sampling, 80 candidates per iteration,
12 iterations, the default policies, a fresh SQLite knowledge base per run; the stop
rules that would end a run early are off, so both runs of a pair spend the same
iterations. ``learning.enabled`` is the only difference within a pair.

``--panel noise`` runs the pair on the planted panel's twin without the effect (the
same seed and symbols, no drift): nothing may survive, with or without learning.

``--panel xs`` runs the pair on one seeded 50-name panel with a planted
cross-sectional momentum effect (``CrossSectionalEffect(0.04, 60)``: rank IC about 0.04)
with the four ranked-book families (xs_momentum, xs_reversal, xs_low_volatility,
xs_factor): a planted effect strong enough to survive the deflated gates, so that what
learning does to the share of rejected candidates and to the best verified score shows.

``--learn-deflated`` is an experiment: the learner also learns rules from the deflated
selection gates (OVERFIT_DSR, BENCHMARK_NOT_BEATEN), which the loop deliberately does
not (see ``alphaloop.orchestrator.stages.LEARNING``); it shows what that choice avoids.
``--learn-deflated-below MARGIN`` learns from them only where the gate's value (the DSR
or the excess DSR) is below MARGIN: candidates far below the hurdle, not near misses.

    .venv/bin/python benchmarks/bench_learning.py [--iterations 12] [--candidates 80]
        [--panel trend|xs|noise] [--learn-deflated | --learn-deflated-below 0.001]
        [--json benchmarks/results/bench_learning.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_engine_a import machine_info

FAMILIES = ["sma_cross", "momentum", "rsi_reversion", "bollinger_reversion",
            "donchian_breakout"]
XS_FAMILIES = ["xs_momentum", "xs_reversal", "xs_low_volatility", "xs_factor"]


def planted_panel(path: Path) -> Path:
    """Six symbols, no drift, a causal trend effect on all of them (seed 21)."""
    from alphaloop.data.synthetic import PlantedEffect, generate

    effect = PlantedEffect(symbols=tuple(range(6)), strength=0.3, lookback=20)
    generate(6, 2520, seed=21, mu=0.0, planted=effect,
             name="planted").to_long().to_parquet(path)
    return path


def noise_panel(path: Path) -> Path:
    """The planted panel's twin without the effect: six symbols, no drift (seed 21)."""
    from alphaloop.data.synthetic import generate

    generate(6, 2520, seed=21, mu=0.0, name="noise").to_long().to_parquet(path)
    return path


def xs_panel(path: Path) -> Path:
    """50 names, 2,520 days, a planted cross-sectional momentum effect (seed 1)."""
    from alphaloop.data.synthetic import CrossSectionalEffect, generate

    generate(50, 2520, seed=1, cross_sectional=CrossSectionalEffect(0.04, 60),
             name="xs_planted").to_long().to_parquet(path)
    return path


def one_run(source: str, learning: bool, work: Path, iterations: int,
            candidates: int, families: list[str], sampler: str = "sobol") -> dict[str, Any]:
    from alphaloop.orchestrator import RunConfig, Runner

    tag = f"{Path(source).stem}-{'learn' if learning else 'plain'}"
    cfg = RunConfig.from_dict({
        "run_id": tag, "seed": 3, "data": {"source": source},
        "budgets": {"max_iterations": iterations, "max_backtests": 10**6},
        "generation": {"families": families, "sampler": sampler,
                       "candidates_per_iteration": candidates, "max_growth": 1.0},
        "learning": {"enabled": learning},
        "policies": {"early_stop": {"patience_iters": 10**6},
                     "stops": {"empty_shortlist_iters": 10**6, "low_generation_iters": 10**6,
                               "max_branch_repeats": 10**6}},
        "kb": {"url": f"sqlite:///{work / (tag + '.sqlite')}"}, "out_dir": str(work / "runs")})
    t0 = time.perf_counter()
    summary = Runner(cfg).run()
    wall = time.perf_counter() - t0
    quality = _quality(cfg.kb.url, tag)
    rows = [{"iteration": it.iteration, "tested": it.tested_A,
             "mean_score": quality.get(it.iteration, {}).get("mean_score"),
             "region_share": quality.get(it.iteration, {}).get("region_share"),
             "rejected_share": it.failures_created / it.tested_A if it.tested_A else None,
             "forbidden_share": it.forbidden_share,
             "best_verified_so_far": it.best_verified_so_far, "survivors": it.survivors,
             "hurdle_sr": quality.get(it.iteration, {}).get("hurdle_sr"),
             "best_sr": quality.get(it.iteration, {}).get("best_sr"),
             "constraints_added": it.constraints_added} for it in summary.iterations]
    first = next((r["iteration"] for r in rows if r["survivors"]), None)
    return {"run_id": tag, "learning": learning, "wall_s": wall, "status": summary.status,
            "backtests": summary.stats.backtests, "survivors": len(summary.best_strategies),
            "first_survivor_iteration": first, "rows": rows,
            "report": str(work / "runs" / tag / "report.html")}


REGION_CODES = ("NO_TRADES", "TOO_FEW_TRADES", "SHORT_HISTORY", "COST_DOMINATED",
                "EXCESSIVE_TURNOVER", "DRAWDOWN_BREACH", "LOW_SHARPE", "LOW_INFORMATION_RATIO",
                "EXECUTION_INFEASIBLE", "RISK_MODEL_FAILURE", "OOS_DECAY")


def _quality(url: str, run_id: str) -> dict[int, dict[str, float]]:
    """Per iteration, from the run's knowledge base: the mean score_total of the tested
    candidates, and the share of them rejected with a code the learner learns from (a
    failure that belongs to a region of the parameter space, see orchestrator.stages
    LEARNING) as their primary code."""
    from alphaloop.kb import KnowledgeBase

    kb = KnowledgeBase(url)
    scores, fails = kb.scores(run_id), kb.failures(run_id)
    hurdles = _hurdles(kb, run_id)
    out: dict[int, dict[str, float]] = {}
    for it, group in scores.groupby("iteration"):
        f = fails[fails["iteration"] == it] if len(fails) else fails
        region = int(f["code"].isin(REGION_CODES).sum()) if len(f) else 0
        out[int(it)] = {"mean_score": float(group["score_total"].mean()),
                        "region_share": region / len(group), **hurdles.get(int(it), {})}
    return out


def _hurdles(kb: Any, run_id: str) -> dict[int, dict[str, float]]:
    """Per iteration, over the run's engine A trials so far (the loop deflates by them;
    each run here has a knowledge base of its own): the DSR's noise hurdle SR0
    (``expected_max_sharpe`` of N trials with the sample variance of their per-period
    Sharpe ratios, as the loop computes it) and the best trial Sharpe, both annualized
    (x sqrt(252)). A candidate's DSR is above one half only when its Sharpe is above
    SR0: this is why a planted effect that many trials capture fails the deflated gates."""
    import math

    import numpy as np

    from alphaloop.evaluation.statistics import expected_max_sharpe

    run = kb.get_run(run_id)
    frame = kb.tested(run.data_ref) if run is not None else None
    if frame is None or frame.empty:
        return {}
    out: dict[int, dict[str, float]] = {}
    for it in sorted(frame["iteration"].unique()):
        sr = frame.loc[frame["iteration"] <= it, "sharpe_per_period"].astype(float).to_numpy()
        sr = sr[np.isfinite(sr)]
        if sr.size < 2:
            continue
        hurdle = expected_max_sharpe(sr.size, float(np.var(sr, ddof=1)))
        out[int(it)] = {"hurdle_sr": hurdle * math.sqrt(252), "best_sr": sr.max() * math.sqrt(252)}
    return out



def _learn_from_deflated_gates() -> None:
    """The experiment's one change: the loop's learning config without the deflated
    selection codes in its skip list (the stage reads the module attribute per call)."""
    from alphaloop.orchestrator import stages

    deflated = {"OVERFIT_DSR", "BENCHMARK_NOT_BEATEN"}
    skip = tuple(c for c in stages.LEARNING.skip_codes if c not in deflated)
    stages.LEARNING = stages.LEARNING.model_copy(update={"skip_codes": skip})


def _learn_from_hopeless_deflation(margin: float) -> None:
    """The second experiment: learn from the deflated gates only where the candidate
    failed them by far (the gate's value, a DSR or an excess DSR, below ``margin``).
    The hurdle only rises with the trials, so such a candidate would fail at any later
    point of the run too; near misses stay out of learning."""
    from alphaloop.orchestrator import runner

    _learn_from_deflated_gates()
    deflated = {"OVERFIT_DSR", "BENCHMARK_NOT_BEATEN"}
    update = runner.Runner._constraint_update

    def far_only(self: Any, i: int, fresh: Any, fails: list[dict[str, Any]],
                 timings: Any) -> Any:
        kept = []
        for f in fails:
            ev = f.get("evidence") or {}
            codes = [c for c in (f["code"], *f["secondary"]) if c not in deflated or (
                isinstance(ev.get(c), dict) and ev[c].get("value") is not None
                and ev[c]["value"] < margin)]
            if codes:
                kept.append({**f, "code": codes[0], "secondary": codes[1:]})
        return update(self, i, fresh, kept, timings)

    runner.Runner._constraint_update = far_only  # type: ignore[method-assign]


def _half_means(rows: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    shares = [r["rejected_share"] for r in rows if r["rejected_share"] is not None]
    if len(shares) < 2:
        return None, None
    k = len(shares) // 2
    return sum(shares[:k]) / k, sum(shares[k:]) / (len(shares) - k)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=12)
    ap.add_argument("--candidates", type=int, default=80)
    ap.add_argument("--families", default=None,
                    help="comma-separated (default: the panel's families)")
    ap.add_argument("--panel", choices=("trend", "xs", "noise"), default="trend")
    ap.add_argument("--sampler", choices=("grid", "random", "sobol", "tpe"), default="sobol")
    ap.add_argument("--learn-deflated", action="store_true",
                    help="experiment: learn rules from OVERFIT_DSR and BENCHMARK_NOT_BEATEN too")
    ap.add_argument("--learn-deflated-below", type=float, default=None, metavar="MARGIN",
                    help="experiment: ... only from candidates whose DSR (excess DSR) is "
                         "below MARGIN, far below the hurdle")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.learn_deflated:
        _learn_from_deflated_gates()
    if args.learn_deflated_below is not None:
        _learn_from_hopeless_deflation(args.learn_deflated_below)
    work = Path(tempfile.mkdtemp(prefix="bench_learning_"))
    if args.panel == "xs":
        sources = [str(xs_panel(work / "xs_planted.parquet"))]
        families = (args.families or ",".join(XS_FAMILIES)).split(",")
    elif args.panel == "noise":
        sources = [str(noise_panel(work / "noise.parquet"))]
        families = (args.families or ",".join(FAMILIES)).split(",")
    else:
        sources = ["us_indices", str(planted_panel(work / "planted.parquet"))]
        families = (args.families or ",".join(FAMILIES)).split(",")
    runs = [one_run(src, learn, work, args.iterations, args.candidates, families,
                    args.sampler)
            for src in sources for learn in (False, True)]
    for r in runs:
        r["rejected_first_half"], r["rejected_second_half"] = _half_means(r["rows"])
    result = {"machine": machine_info(peers=()), "panel": args.panel, "sampler": args.sampler,
              "learn_deflated": args.learn_deflated,
              "learn_deflated_below": args.learn_deflated_below,
              "iterations": args.iterations,
              "candidates_per_iteration": args.candidates, "families": families,
              "runs": runs}
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.0f} %" if pct else (f"{v:.1f}" if isinstance(v, float) else str(v))


def _print(result: dict[str, Any]) -> None:
    for r in result["runs"]:
        print(f"{r['run_id']}: {r['status']}, {r['backtests']} backtests, {r['survivors']} "
              f"survivors (first at iteration {_fmt(r['first_survivor_iteration'])}), "
              f"rejected {_fmt(r['rejected_first_half'], True)} -> "
              f"{_fmt(r['rejected_second_half'], True)} (first -> second half), "
              f"{r['wall_s']:.1f} s")
        print("  it  tested  rejected  region-coded  forbidden  mean score  best verified"
              "  DSR hurdle SR0  best trial SR")
        for row in r["rows"]:
            print(f"  {row['iteration']:>2}  {row['tested']:>6}  "
                  f"{_fmt(row['rejected_share'], True):>8}  "
                  f"{_fmt(row['region_share'], True):>12}  "
                  f"{_fmt(row['forbidden_share'], True):>9}  "
                  f"{_fmt(row['mean_score']):>10}  "
                  f"{_fmt(row['best_verified_so_far']):>13}  "
                  f"{_fmt(row.get('hurdle_sr')):>14}  {_fmt(row.get('best_sr')):>13}")


if __name__ == "__main__":
    raise SystemExit(main())
