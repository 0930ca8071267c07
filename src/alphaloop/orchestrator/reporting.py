"""A loop run as the run report's iteration table (``alphaloop report --run ID``).

The numbers are the ones the run recorded: its ``summary.json`` (counts per iteration)
and the failure records of its knowledge base; nothing is recomputed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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
