"""Recorded runs: what was evaluated, under which policy, with what outcome.

Every ``alphaloop evaluate`` is a run, stored under ``$ALPHALOOP_HOME/runs/<run_id>/``:

- ``run.json``: the :class:`RunRecord`: the scoring ``policy_version`` and its content
  hash (the policy itself is recorded once in the :class:`PolicyRegistry`, which
  refuses a changed policy under a used version), the data (``data_source``,
  ``data_ref``), the trial count used for deflation, the holdout, the results file;
- ``iterations.parquet``: one row per iteration (best score, tried, passed,
  ``failure:<CODE>`` counts), the input of :func:`run_report`;
- ``candidates.parquet``: the scored candidates, full specs included, so
  ``alphaloop report --strategy ID`` works from the run alone;
- ``.stage_done``: written last; a folder without it is not a run.

The ``run_id`` is a hash of the inputs (results content, policy content, data,
holdout, trial count), so evaluating the same thing twice is the same run: it is
written once (tmp folder → rename) and found again, never half-written. The
orchestrator's multi-iteration runs use the same layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from alphaloop.data.catalog import home
from alphaloop.errors import AlphaloopError, ErrorClass

# a failed scoring gate → the failure code it stands for (MOD-440)
GATE_FAILURE_CODES = {
    "min_trades": "TOO_FEW_TRADES", "max_drawdown": "DRAWDOWN_BREACH",
    "min_sharpe": "LOW_SHARPE", "max_turnover": "EXCESSIVE_TURNOVER",
    "min_history_years": "SHORT_HISTORY", "min_dsr": "DSR_BELOW_GATE",
    "max_pbo": "PBO_ABOVE_GATE",
}
DONE = ".stage_done"


class RunError(AlphaloopError):
    code = "RUN_ERROR"


class RunRecord(BaseModel):
    """What a run used and found (``run.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    kind: str
    created_at: str
    policy_version: str
    policy_hash: str
    data_source: str
    data_ref: str
    n_candidates: int
    n_trials: int
    holdout: float
    results_file: str
    pbo: float | None = None
    spa_pvalue: float | None = None


@dataclass
class Run:
    record: RunRecord
    iterations: pd.DataFrame
    candidates: pd.DataFrame
    path: Path


def runs_dir() -> Path:
    return home() / "runs"


def run_id_for(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def iteration_row(frame: pd.DataFrame, iteration: int = 1) -> dict[str, Any]:
    """One iteration's summary from a scored frame (``score_total``, ``passed``,
    ``failed_gates``): best score, tried, passed and one ``failure:<CODE>`` count
    per failure code among the rejected candidates."""
    row: dict[str, Any] = {
        "iteration": iteration, "best_score": float(frame["score_total"].max()),
        "tried": len(frame), "passed": int(frame["passed"].sum())}
    for code in sorted(set(GATE_FAILURE_CODES.values())):
        row[f"failure:{code}"] = 0
    for gates in frame["failed_gates"]:
        for code in {GATE_FAILURE_CODES.get(g, g.upper()) for g in gates}:
            row[f"failure:{code}"] = row.get(f"failure:{code}", 0) + 1
    return row


def save_run(record: RunRecord, iterations: pd.DataFrame, candidates: pd.DataFrame,
             root: Path | None = None) -> Path:
    """Write a run atomically; an existing complete run with this id is kept as is."""
    root = root or runs_dir()
    final = root / record.run_id
    if (final / DONE).is_file():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{record.run_id[:16]}."))
        (tmp / "run.json").write_text(record.model_dump_json(indent=1) + "\n", encoding="utf-8")
        iterations.to_parquet(tmp / "iterations.parquet", index=False)
        candidates.to_parquet(tmp / "candidates.parquet", index=False)
        (tmp / DONE).write_text(record.created_at + "\n", encoding="utf-8")
        if final.exists():  # an incomplete leftover of a crashed write
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        raise RunError(f"cannot record run {record.run_id[:16]} under {root}: "
                       f"{exc.strerror or exc}", code="STORAGE_WRITE_FAIL",
                       error_class=ErrorClass.TRANSIENT) from None
    return final


def find_run(prefix: str, root: Path | None = None) -> Path:
    """The one complete run whose id starts with ``prefix``."""
    root = root or runs_dir()
    hits = sorted(p for p in root.glob(f"{prefix}*") if (p / DONE).is_file()) \
        if prefix and root.is_dir() else []
    if len(hits) != 1:
        what = "no recorded run matches" if not hits else f"{len(hits)} runs match"
        raise RunError(f"{what} {prefix!r} under {root}", code="RUN_NOT_FOUND")
    return hits[0]


def load_run(path: Path) -> Run:
    """Read a recorded run back; a damaged one is a CRITICAL error naming the file."""
    try:
        record = RunRecord.model_validate(json.loads((path / "run.json").read_text("utf-8")))
        iterations = pd.read_parquet(path / "iterations.parquet")
        candidates = pd.read_parquet(path / "candidates.parquet")
    except (OSError, ValueError, ValidationError) as exc:
        raise RunError(f"run {path.name[:16]} cannot be read back ({path}): {exc}",
                       code="RUN_CORRUPT", error_class=ErrorClass.CRITICAL) from None
    return Run(record, iterations, candidates, path)


def runs_with_strategy(strategy_prefix: str, root: Path | None = None) -> list[Run]:
    """Recorded runs whose candidates include a strategy id starting with the prefix,
    newest first."""
    root = root or runs_dir()
    found: list[Run] = []
    if not root.is_dir():
        return found
    for path in root.iterdir():
        if not (path / DONE).is_file():
            continue
        run = load_run(path)
        if run.candidates["strategy_id"].str.startswith(strategy_prefix).any():
            found.append(run)
    return sorted(found, key=lambda r: r.record.created_at, reverse=True)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
