"""A loop run as the run report's iteration table (``alphaloop report --run ID``), and
a strategy it tested as a strategy report (``alphaloop report --strategy ID``).

The numbers are the ones the run recorded: its ``summary.json`` (counts per iteration)
and the records of its knowledge base; nothing is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from alphaloop.data.bars import Bars
from alphaloop.evaluation.reports import MetricColumn, Recorded
from alphaloop.kb.store import KnowledgeBase
from alphaloop.orchestrator.config import (
    ConfigError,
    RunSummary,
    run_label,
)
from alphaloop.orchestrator.folders import (
    SUMMARY_FILE,
    abandoned,
    read_run_file,
    read_stored_config,
    run_folder,
)


def find_loop_run(prefix: str, out_dir: str | None = None) -> Path | None:
    """The one loop run folder whose id starts with ``prefix`` (None if none; see
    :func:`~alphaloop.orchestrator.runner.run_folder` for where it looks)."""
    try:
        return run_folder(prefix, out_dir)
    except ConfigError as exc:
        if exc.code == "RUN_NOT_FOUND":  # perhaps an evaluate run: the caller looks there
            return None
        raise


LOOP_PASSED = "survived every gate (scores, engine B, robustness, holdout)"
"""What a loop run's ``passed`` column counts (the run report's label for it)."""


def loop_iterations(folder: Path) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """(iteration frame with ``iteration, best_score, tried, passed`` (the survivors,
    :data:`LOOP_PASSED`) and the funnel before them (``passed_score_gates`` as the
    knowledge base's scores record it, ``passed_B``, ``passed_robustness``), the failure codes as
    ``failure:<CODE>``, ``constraints`` (rules in force after the iteration),
    ``constraints_added`` and the learning curves; a title; the survivors, best first)."""
    cfg = read_stored_config(folder)
    summary = read_run_file(folder / SUMMARY_FILE, RunSummary.model_validate_json)
    frame = pd.DataFrame({
        "iteration": [it.iteration for it in summary.iterations],
        "best_score": [it.best_score if it.best_score is not None else float("nan")
                       for it in summary.iterations],
        # as the run recorded it (an iteration that scored nothing keeps the earlier best)
        "best_score_so_far": [it.best_score_so_far if it.best_score_so_far is not None
                              else float("nan") for it in summary.iterations],
        "tried": [it.tested_A + it.reused_A for it in summary.iterations],
        "passed": [it.survivors for it in summary.iterations],
        "passed_B": [it.passed_B for it in summary.iterations],
        "passed_robustness": [it.passed_robustness for it in summary.iterations],
        "constraints_added": [it.constraints_added for it in summary.iterations],
        # issue 10's three curves: what learning changes, iteration by iteration
        "rejected_share": [it.failures_created / it.tested_A if it.tested_A else float("nan")
                           for it in summary.iterations],
        "forbidden_share": [it.forbidden_share if it.forbidden_share is not None
                            else float("nan") for it in summary.iterations],
        "best_verified_so_far": [it.best_verified_so_far if it.best_verified_so_far is not None
                                else float("nan") for it in summary.iterations],
    })
    kb = KnowledgeBase(cfg.kb.url)
    scores = kb.scores(cfg.run_id)
    passed = (scores[scores["passed"].astype(bool)].groupby("iteration").size()
              if len(scores) else pd.Series(dtype=int))
    frame.insert(4, "passed_score_gates", [int(passed.get(i, 0)) for i in frame["iteration"]])
    sizes = {s: len(kb.constraints(s)) for s in {it.constraint_set_id
                                                 for it in summary.iterations} if s}
    frame.insert(5, "constraints", [sizes.get(it.constraint_set_id or "", 0)
                                    for it in summary.iterations])
    failures = kb.failures(cfg.run_id)
    if len(failures):
        counts = failures.groupby(["iteration", "code"]).size().unstack(fill_value=0)
        counts.columns = [f"failure:{c}" for c in counts.columns]
        frame = frame.merge(counts, left_on="iteration", right_index=True, how="left")
        frame = frame.fillna({c: 0 for c in counts.columns})
    title = (f"run {run_label(cfg.run_id)}: {_state(folder, summary)}, "
             f"{summary.stats.iterations} iterations, {summary.stats.backtests} backtests "
             f"on {cfg.data.source}{'' if cfg.learning.enabled else ', learning off'}")
    return frame, title, summary.best_frame


def _state(folder: Path, summary: RunSummary) -> str:
    """The run's status as `status` tells it: with its stop reason, and, for a run whose
    process is gone before it ended, that nothing runs it."""
    text = summary.status if not summary.stop_reason \
        else f"{summary.status} ({summary.stop_reason})"
    if abandoned(folder, summary.status):
        text += " (no process is running it: killed or crashed; resume continues it)"
    return text


WHAT_CHANGED = {"search": "the search window", "validation": "search + validation",
                "all": "the whole panel"}
"""The windows ``data_ref.json`` records, as a message names them."""


@dataclass(frozen=True)
class LoopStrategyPage:
    """What ``report --strategy`` draws for a strategy a loop run tested: the backtest
    over the run's whole panel (the charts; the holdout marked), the numbers the run
    recorded (the metrics table, its source and the robustness panel) and the run's
    benchmark."""

    result: Any
    bars: Bars
    robustness: dict[str, Any]
    recorded: Recorded
    benchmark: Any


def loop_strategy_page(folder: Path, strategy: str) -> LoopStrategyPage:
    """The page of ``strategy`` (an id or a unique prefix) in the loop run of
    ``folder``. Only the drawn series are computed here, on the run's data and costs;
    every number in the tables is one the run recorded in its knowledge base (engine A
    on the search and validation windows, engine B, the score and, for a survivor, its
    holdout Sharpe as its ``best_strategies`` entry has it). ``RUN_NOT_FOUND`` if the
    run did not test it, ``RUN_DATA_CHANGED`` if its data changed since."""
    from alphaloop.engines import CostModel
    from alphaloop.engines import backtest as run_backtest
    from alphaloop.evaluation.benchmark import resolve_benchmark
    from alphaloop.evaluation.scoring import load_policy
    from alphaloop.orchestrator.runner import data_changed, run_windows
    from alphaloop.strategy.spec import StrategySpec

    cfg = read_stored_config(folder)
    run_id = cfg.run_id
    with KnowledgeBase(cfg.kb.url, create=False) as kb:
        record = kb.strategy(strategy)
        run = kb.get_run(run_id)
    mine = [b for b in record["backtests"] if b["run_id"] == run_id]
    if run is None or not mine:
        raise ConfigError(f"run {run_label(run_id)} did not test a strategy {strategy!r}",
                          code="RUN_NOT_FOUND")
    bars, search_end, val_end = run_windows(cfg)
    changed = data_changed(folder, bars, search_end, val_end, run.data_ref)
    if changed:  # the charts would draw other bars than the run's numbers came from
        raise ConfigError(f"data {cfg.data.source!r} changed since run {run_label(run_id)} "
                          f"used it (changed: {', '.join(WHAT_CHANGED[c] for c in changed)})",
                          code="RUN_DATA_CHANGED")
    costs = CostModel(fees_bps=cfg.engines.fees_bps, slippage_bps=cfg.engines.slippage_bps)
    spec = StrategySpec.from_dict(record["spec"], source="the knowledge base")
    result = run_backtest(spec, bars, costs)
    bench = resolve_benchmark(cfg.benchmark or load_policy(cfg.policies.scoring).benchmark,
                              bars, costs)
    survived = [s for s in record["survived"] if s["run_id"] == run_id]
    scores = [s for s in record["scores"] if s["run_id"] == run_id]
    failures = [f for f in record["failures"] if f["run_id"] == run_id]
    # ``passed`` is the score's, as recorded (the policy's gates); a candidate that
    # passed them may still be held back (a duplicate) or fail engine B or robustness
    robustness = {**({k: v for k, v in scores[-1].items()
                      if k not in ("run_id", "strategy_id")} if scores else {}),
                  "survived_every_gate": bool(survived),
                  **({f"survivor_{k}": v for k, v in survived[-1].items()
                      if k not in ("run_id", "strategy_id", "family", "params")}
                     if survived else {}),
                  "failures": [f"{f['code']} ({f['stage_id']}, iteration {f['iteration']})"
                               for f in failures] or None}
    recorded = Recorded(
        source=_loop_source(cfg, run, bars, search_end, val_end, mine, survived),
        metrics=_loop_columns(bars, search_end, val_end, mine, survived),
        holdout_start=bars.index[val_end])
    return LoopStrategyPage(result, bars, robustness, recorded, bench)


def _loop_columns(bars: Bars, search_end: int, val_end: int, backtests: list[dict[str, Any]],
                  survived: list[dict[str, Any]]) -> list[MetricColumn]:
    """One metrics column per window and engine the run recorded (its latest record
    of each), then the holdout's Sharpe for a survivor."""
    latest = {(b["engine"], b["window"]): b for b in backtests}  # oldest first: last wins
    spans = {"search": (0, search_end), "validation": (search_end, val_end)}
    columns = []
    for (engine, window), b in sorted(latest.items()):
        lo, hi = spans.get(window, (0, bars.n_bars))
        columns.append(MetricColumn(
            f"{engine}_{window}".lower(),
            f"{window}, engine {engine}: {_span(bars, lo, hi)} (recorded, iteration "
            f"{b['iteration']})", _recorded_metrics(b)))
    if survived:
        columns.append(MetricColumn(
            "holdout", f"holdout: {_span(bars, val_end, bars.n_bars)} (recorded: its Sharpe "
            "only, read once as it entered best_strategies)",
            {"sharpe": survived[-1]["sharpe_holdout"]}))
    return columns


def _recorded_metrics(backtest: dict[str, Any]) -> dict[str, Any]:
    """A backtest record's metrics with its headline columns (a validation record
    keeps those as columns and only its out-of-sample ratio in ``metrics``)."""
    headline = {k: backtest[k] for k in ("sharpe", "total_return", "max_drawdown",
                                         "n_trades") if backtest.get(k) is not None}
    return {**(backtest["metrics"] or {}), **headline}


def _loop_source(cfg: Any, run: Any, bars: Bars, search_end: int, val_end: int,
                 backtests: list[dict[str, Any]], survived: list[dict[str, Any]]
                 ) -> list[tuple[str, str]]:
    run_id, search_ref = run.run_id, run.data_ref
    status = ("RUNNING: unfinished (`alphaloop status` says whether a process runs it)"
              if run.status == "RUNNING" else run.status)
    holdout = ("its Sharpe, read once as the strategy entered best_strategies" if survived
               else "no number: the loop reads the holdout only for a candidate that passed "
                    "every other gate and records it only for a survivor; the charts draw "
                    "it")
    return [("run", f"{run_id} (research loop, {cfg.mode}, {status})"),
            ("iterations with a record", ", ".join(sorted({str(b["iteration"])
                                                         for b in backtests}, key=int))),
            ("data", f"{cfg.data.source}"),
            ("data_ref of the search window (the knowledge base's)", search_ref),
            ("windows", f"search {_span(bars, 0, search_end)}; validation "
                        f"{_span(bars, search_end, val_end)}; holdout "
                        f"{_span(bars, val_end, bars.n_bars)}"),
            ("holdout", holdout),
            ("survived", "yes: it passed every gate (scores, engine B, robustness, "
                         "holdout)" if survived else "no")]


def _span(bars: Bars, lo: int, hi: int) -> str:
    """Bars ``[lo, hi)`` as their first and last dates and count."""
    return (f"{bars.index[lo]:%Y-%m-%d} .. {bars.index[hi - 1]:%Y-%m-%d} ({hi - lo} bars)"
            if hi > lo else "none")
