"""The research loop at scale: where an iteration's time goes, and the loop's own cost.

Workload (issue 9): 20 iterations × 2,000 candidates on the bundled ``synth_100`` panel
(100 symbols × 2,520 business days), Sobol sampling, the default scoring policy, engine
B's realistic defaults, one local worker, a fresh SQLite knowledge base. The bundled
template families hold about 2,700 distinct candidates in all, fewer than one run needs
(40,000 new ones), so the benchmark adds one family of its own, ``sma_band``: an SMA
cross with a band, ``sma(close, f) > sma(close, s) * (1 + b)`` with ``b`` on a grid of
0.0001 (10 × 19 × 501 = 95,190 candidates); its cost per candidate is a bundled
family's. The stop rules that end a run early are switched off, and so is the growth
of the candidate count after an empty shortlist (``max_growth: 1``), so that every
iteration tests 2,000 candidates; the budgets stay.

Every top-level call the stages make into an engine, a statistic or the knowledge base
is wrapped with a ``perf_counter`` (the wrapped calls do not nest, so the sums add up):

- engines: engine A batches (search, validation, holdout), engine B verification with
  its determinism rerun, the lookahead check, the data-quality report;
- statistics: scoring, DSR deflation and the shortlist's clustering, PBO, the
  candidates' metrics against the benchmark (beta, alpha, IR, excess DSR);
- KB I/O: building the iteration's records and every KnowledgeBase write and read the
  runner makes;
- generation: the samplers (their rule updates and, after a widening, the new
  sampler with its grid table) and building the candidate specs (the strategy layer);
- analysis: the failure records of the rejected candidates (root cause);
- learning: the constraint update (rules learned from every candidate of the run so
  far, re-tests, the share of the space the rules forbid);
- artifacts: the stage outputs written for resume (pickled, fsynced, renamed);
- claims: claiming each candidate in the knowledge base before it is backtested and
  storing its result there (metrics and per-bar returns), so that another run on the
  same knowledge base reads it instead of backtesting it again.

The orchestrator's own overhead is the rest of the iteration's wall time: the state
machines, the event log, dedup, bookkeeping. The issue counts everything that is not an
engine, a statistic or KB I/O as overhead; that sum is reported too.

    .venv/bin/python benchmarks/bench_loop.py [--iterations 20] [--candidates 2000]
        [--json benchmarks/results/bench_loop.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_engine_a import PhaseTimer, machine_info

GROUPS: dict[str, list[tuple[str, str]]] = {
    "engines": [("alphaloop.orchestrator.runner", "backtest_all"),
                ("alphaloop.orchestrator.stages", "verify_b"),
                ("alphaloop.orchestrator.stages", "validation_check"),
                ("alphaloop.orchestrator.stages", "holdout_check"),
                ("alphaloop.engines.lookahead", "check_lookahead"),
                ("alphaloop.orchestrator.stages", "data_quality")],
    "statistics": [("alphaloop.orchestrator.stages", "shortlist"),
                   ("alphaloop.orchestrator.stages", "pbo_of"),
                   ("alphaloop.orchestrator.runner", "relative_columns")],
    "generation": [("alphaloop.orchestrator.stages.Generator", "generate"),
                   ("alphaloop.orchestrator.stages.Generator", "set_constraints"),
                   ("alphaloop.orchestrator.stages.Generator", "widen")],
    "analysis": [("alphaloop.orchestrator.stages", "failure_records")],
    "learning": [("alphaloop.orchestrator.stages", "learn_constraints")],
    "artifacts": [("alphaloop.orchestrator.artifacts.StageStore", "save"),
                  ("alphaloop.orchestrator.artifacts.StageStore", "load")],
    "kb_io": [("alphaloop.orchestrator.runner.Runner", "_batch"),
              *[("alphaloop.kb.store.KnowledgeBase", m) for m in (
                  "persist_or_queue", "record_transition", "save_stage_run",
                  "set_run_status", "save_run", "replay", "tested", "trial_sharpes",
                  "get_run")]],
    # the claims (shared work between runs on one KB): the KB writes and reads, and the
    # encoding of each result for its claim row
    "claims": [*[("alphaloop.kb.store.KnowledgeBase", m) for m in (
        "claim", "finish_claims", "claims")],
               ("alphaloop.orchestrator.claims", "_encode_a"),
               ("alphaloop.orchestrator.claims", "_decode_a"),
               ("alphaloop.orchestrator.claims", "assemble_a"),
               ("alphaloop.orchestrator.claims", "split_a")],
}


EVALUATION = ("S65", "S70", "S75", "S80")  # lookahead, engine B, validation, holdout


def _add_band_family() -> None:
    """The benchmark's own family (see the module docstring)."""
    from alphaloop.strategy import templates as t
    from alphaloop.strategy.spec import StrategySpec

    def build(p: dict[str, Any]) -> StrategySpec:
        fast, slow = f"sma(close, {p['fast']})", f"sma(close, {p['slow']})"
        return StrategySpec(entry=f"{fast} > {slow} * {1 + p['band']:.4f}",
                            exit=f"{fast} < {slow}")

    t.FAMILIES["sma_band"] = t.Family(
        "sma_band", "SMA cross with an entry band (benchmark only)",
        {"fast": t.IntParam(5, 50, 5), "slow": t.IntParam(20, 200, 10),
         "band": t.FloatParam(0.0, 0.05, 0.0001)},
        (t.Rule.less("fast", "slow"),), build)


def _planted_panel(work: Path) -> Path:
    """100 symbols × 2,520 business days, no drift, each with a planted causal trend
    (next-bar drift 0.1 × daily sigma × sign(close − SMA20)), as long Parquet."""
    from alphaloop.data.synthetic import PlantedEffect, generate

    bars = generate(100, 2520, seed=20261201, mu=0.0,
                    planted=PlantedEffect(symbols=tuple(range(100)), strength=0.1,
                                          lookback=20))
    path = work / "planted_100.parquet"
    bars.to_long().to_parquet(path)
    return path


class GCPauses:
    """The cyclic collector's pauses while active: seconds in all, collections per
    generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = {0: 0, 1: 0, 2: 0}
        self._t = 0.0

    def _hook(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t
            self.count[info["generation"]] += 1

    def __enter__(self) -> GCPauses:
        gc.callbacks.append(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._hook)


def _owner(path: str) -> Any:
    import importlib

    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                raise ImportError(path)
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=2000)
    ap.add_argument("--data", default="synth_100")
    ap.add_argument("--planted", action="store_true",
                    help="instead of --data: a panel of the same size (100 x 2,520) with a "
                         "planted causal trend on every symbol, so that candidates reach "
                         "the shortlist and the evaluation stages (S65-S80) run")
    ap.add_argument("--no-freeze", action="store_true",
                    help="for comparison: the loop does not freeze what it holds at each "
                         "iteration (gc.freeze), as before that change")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from alphaloop.orchestrator import RunConfig, Runner

    if args.no_freeze:
        import alphaloop.orchestrator.runner as runner_module

        runner_module._age_out_of_gc = lambda: None  # type: ignore[attr-defined]
    gc_pauses = GCPauses()

    _add_band_family()
    timer = PhaseTimer()
    for targets in GROUPS.values():
        for owner, name in targets:
            try:
                obj = _owner(owner)
            except ImportError:  # an older alphaloop (to compare versions): not there
                continue
            if hasattr(obj, name):
                timer.wrap(obj, name)
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    snapshots: dict[int, dict[str, float]] = {}

    def progress(event: dict[str, Any]) -> None:
        i = event["iteration"]
        if event.get("state") == "GENERATION":
            starts[i] = time.perf_counter()
            snapshots[i] = dict(timer.acc)
        if event.get("state") == "ITER_DONE":
            ends[i] = time.perf_counter()
            snapshots[-i] = dict(timer.acc)

    work = Path(tempfile.mkdtemp(prefix="bench_loop_"))
    if args.planted:
        args.data = str(_planted_panel(work))
    cfg = RunConfig.from_dict({
        "run_id": "bench", "seed": 1, "data": {"source": args.data},
        "budgets": {"max_iterations": args.iterations, "max_backtests": 10**9},
        "generation": {"families": ["sma_band"], "sampler": "sobol",
                       "candidates_per_iteration": args.candidates, "max_growth": 1.0},
        "policies": {"early_stop": {"patience_iters": 10**6},
                     "stops": {"empty_shortlist_iters": 10**6,
                               "low_generation_iters": 10**6,
                               "max_branch_repeats": 10**6}},
        "kb": {"url": f"sqlite:///{work / 'kb.sqlite'}"}, "out_dir": str(work / "runs")})
    t0 = time.perf_counter()
    with gc_pauses:
        summary = Runner(cfg, progress=progress).run()
    total = time.perf_counter() - t0
    timer.restore()

    rows = []
    for it in summary.iterations:
        i = it.iteration
        if i not in ends:  # a failed iteration (the status says why)
            continue
        wall = ends[i] - starts[i]
        before, after = snapshots[i], snapshots[-i]
        spent = {g: sum(after.get(n, 0.0) - before.get(n, 0.0) for _, n in targets)
                 for g, targets in GROUPS.items()}
        ms = it.stage_ms
        rows.append({"iteration": i, "wall_s": wall, **{f"{g}_s": v for g, v in spent.items()},
                     "overhead_s": wall - sum(spent.values()),
                     "stage_ms": ms, "tested_A": it.tested_A,
                     "promoted_to_B": it.promoted_to_B,
                     "sweep_s": ms.get("S50", 0.0) / 1000.0,
                     "evaluation_s": sum(ms.get(s, 0.0) for s in EVALUATION) / 1000.0})
    wall = sum(r["wall_s"] for r in rows)
    share = {k: sum(r[f"{k}_s"] for r in rows) / wall for k in (*GROUPS, "overhead")}
    stages: dict[str, float] = {}
    for r in rows:
        for s, ms in r["stage_ms"].items():
            stages[s] = stages.get(s, 0.0) + ms / 1000.0
    result = {"machine": machine_info(peers=()), "iterations": len(rows),
              "candidates_per_iteration": args.candidates, "data": args.data,
              "total_s": total, "iteration_wall_s_median": sorted(
                  r["wall_s"] for r in rows)[len(rows) // 2],
              "share": share,
              "overhead_by_the_issue": share["overhead"] + share["generation"]
              + share["analysis"] + share["learning"] + share["artifacts"],
              "overhead_by_the_issue_with_claims": share["overhead"] + share["generation"]
              + share["analysis"] + share["learning"] + share["artifacts"]
              + share["claims"],
              "stage_s_total": stages, "status": summary.status,
              "evaluation_vs_sweep": {
                  "sweep_s": sum(r["sweep_s"] for r in rows),
                  "evaluation_s": sum(r["evaluation_s"] for r in rows),
                  "iterations_evaluation_below_sweep": sum(
                      r["evaluation_s"] < r["sweep_s"] for r in rows),
                  "iterations_with_evaluation": sum(r["promoted_to_B"] > 0 for r in rows)},
              "backtests": summary.stats.backtests, "freeze": not args.no_freeze,
              "gc_pause_s": gc_pauses.seconds, "gc_collections": gc_pauses.count,
              "rows": rows}
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


def _print(r: dict[str, Any]) -> None:
    print(f"{r['iterations']} iterations × {r['candidates_per_iteration']} candidates on "
          f"{r['data']}: {r['total_s']:.1f} s in all, median iteration "
          f"{r['iteration_wall_s_median']:.2f} s, {r['backtests']} backtests, "
          f"status {r['status']}")
    print("share of iteration wall time:")
    for k, v in r["share"].items():
        print(f"  {k:<12} {100 * v:6.2f} %")
    print(f"  not engine, statistic or KB I/O (the issue's overhead) "
          f"{100 * r['overhead_by_the_issue']:.2f} %; with the claims counted as overhead "
          f"too {100 * r['overhead_by_the_issue_with_claims']:.2f} %")
    print(f"garbage collector pauses (whole run, inside every group above): "
          f"{r['gc_pause_s']:.2f} s in {sum(r['gc_collections'].values())} collections "
          f"{r['gc_collections']} (loop {'freezes' if r['freeze'] else 'does not freeze'} "
          f"what it holds at each iteration)")
    print("time by stage (all iterations):")
    for s, v in sorted(r["stage_s_total"].items()):
        print(f"  {s:<5} {v:8.2f} s")
    ev = r["evaluation_vs_sweep"]
    print(f"evaluation + verification (S65-S80) {ev['evaluation_s']:.2f} s vs engine A's "
          f"sweep (S50) {ev['sweep_s']:.2f} s; below the sweep in "
          f"{ev['iterations_evaluation_below_sweep']} of {r['iterations']} iterations "
          f"({ev['iterations_with_evaluation']} verified something)")
    names = [*GROUPS, "overhead"]
    print("per iteration (s): wall, " + ", ".join(names) + ", S50, S65-S80, promoted")
    for row in r["rows"]:
        cells = " ".join(f"{row[f'{k}_s']:7.2f}" for k in names)
        print(f"  {row['iteration']:>3} {row['wall_s']:7.2f} {cells} {row['sweep_s']:7.2f} "
              f"{row['evaluation_s']:7.2f} {row['promoted_to_B']:>4}")


if __name__ == "__main__":
    raise SystemExit(main())
