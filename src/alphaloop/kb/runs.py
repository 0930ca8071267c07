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
- ``reports.json``: the robustness reports of the top candidates, exactly as
  ``evaluate`` printed them, so a report renders the recorded numbers;
- ``.stage_done``: written last; a folder without it is not a run.

The ``run_id`` is a hash of the inputs (results content, policy content, data,
holdout, trial count, how many top candidates got a report), so evaluating the same
thing twice is the same run: it is written once (tmp folder → rename) and found
again, never half-written. The orchestrator's multi-iteration runs use the same
layout.

"Newest" is by ``created_ns``: nanoseconds, forced above every run already recorded
under the same root, so the order of recording is strict even within one second or
after the clock steps back; equal values (two writers at once) fall back to the
``run_id``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from alphaloop.data.catalog import home
from alphaloop.engines.metrics import CORE_METRICS
from alphaloop.errors import AlphaloopError, ErrorClass
from alphaloop.kb import records as rec
from alphaloop.kb.store import KnowledgeBase
from alphaloop.numbers import finite
from alphaloop.research.rootcause import GATE_FAILURE_CODES, gate_code

DONE = ".stage_done"
REPORTS = "reports.json"

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
    # optional so that runs recorded before these fields existed still load
    created_ns: int | None = None
    results_sha256: str | None = None
    top: int | None = None
    var_trial_sharpe: float | None = None
    expected_max_sharpe: float | None = None
    # what the candidates were measured against (None: nothing, before score-v2)
    benchmark: str | None = None
    benchmark_label: str | None = None
    benchmark_sharpe: float | None = None
    spa_pvalue_benchmark: float | None = None
    n_beat_benchmark: int | None = None
    data_warnings: list[str] = []
    # the results file's costs (bps per side), when every candidate had the same
    costs: dict[str, float] | None = None

    def order_key(self) -> tuple[int, str]:
        """Sort key, oldest first: ``created_ns`` (else ``created_at``), then run_id."""
        ns = self.created_ns
        if ns is None:  # an older record: second resolution only
            ns = int(datetime.fromisoformat(self.created_at).timestamp()) * 1_000_000_000
        return ns, self.run_id


@dataclass
class Run:
    record: RunRecord
    iterations: pd.DataFrame
    candidates: pd.DataFrame
    path: Path
    reports: list[dict[str, Any]] = field(default_factory=list)

    def report_of(self, strategy_id: str) -> dict[str, Any] | None:
        """The recorded robustness report of one candidate, if it was among the top."""
        return next((r for r in self.reports if r.get("strategy_id") == strategy_id), None)


def runs_dir() -> Path:
    return home() / "runs"


def run_id_for(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def iteration_row(frame: pd.DataFrame, iteration: int = 1, *,
                  beat_benchmark: int | None = None) -> dict[str, Any]:
    """One iteration's summary from a scored frame (``score_total``, ``passed``,
    ``failed_gates``): best score, tried, passed and one ``failure:<CODE>`` count
    per failure code among the rejected candidates; ``beat_benchmark`` (the
    evaluation's count of candidates that beat their benchmark significantly) when
    given."""
    row: dict[str, Any] = {
        "iteration": iteration, "best_score": float(frame["score_total"].max()),
        "tried": len(frame), "passed": int(frame["passed"].sum())}
    if beat_benchmark is not None:
        row["beat_benchmark"] = int(beat_benchmark)
    for code in sorted(set(GATE_FAILURE_CODES.values())):
        row[f"failure:{code}"] = 0
    for gates in frame["failed_gates"]:
        for code in {gate_code(g) for g in gates}:
            row[f"failure:{code}"] = row.get(f"failure:{code}", 0) + 1
    return row


def record_in_kb(kb: KnowledgeBase, record: RunRecord, candidates: pd.DataFrame,
                 iteration: dict[str, Any]) -> None:
    """Index an ``evaluate`` run in the knowledge base, beside the research loop's runs:
    the run (its :class:`RunRecord` as config, ``kind: evaluate``), every candidate's
    strategy, its metrics on the selection window (engine A, window ``selection``, so
    it never counts as a loop trial on a search window), its score and, if rejected,
    its failure record (stage ``evaluate``, the failed gates' codes). One transaction;
    recording the same run again changes nothing. The run folder stays the record of
    the artifacts (reports, candidates) that ``report`` renders."""
    now = record.created_ns or 0
    kb.save_run(rec.RunRecord(run_id=record.run_id, status="DONE_SUCCESS", seed=0,
                              data_ref=record.data_ref, config=record.model_dump(mode="json"),
                              created_ns=now, updated_ns=now, summary=_jsonable(iteration)))
    rows = [{str(k): v for k, v in r.items()} for r in candidates.to_dict("records")]
    kb.persist_iteration(rec.IterationBatch(
        iteration=rec.IterationRecord(run_id=record.run_id, iteration=1, state="ITER_DONE",
                                      summary=_jsonable(iteration)),
        strategies=[_strategy(r) for r in rows],
        backtests=[_backtest(record, r) for r in rows],
        scores=[_score(record, r) for r in rows],
        failures=[_failure(record, r) for r in rows if not r["passed"]]))


def import_runs(kb: KnowledgeBase, root: Path | None = None) -> int:
    """Index every complete run folder under ``root`` (runs recorded before evaluate
    wrote to the knowledge base) with :func:`record_in_kb`; idempotent. How many."""
    paths = _complete_runs(root or runs_dir())
    for path in paths:
        run = load_run(path)
        first = run.iterations.iloc[0].to_dict() if len(run.iterations) else {}
        record_in_kb(kb, run.record, run.candidates, {str(k): v for k, v in first.items()})
    return len(paths)


def _strategy(row: dict[str, Any]) -> rec.StrategyRecord:
    spec = json.loads(row["spec"]) if isinstance(row["spec"], str) else dict(row["spec"])
    params = json.loads(row["params"]) if isinstance(row["params"], str) else row["params"]
    return rec.StrategyRecord(strategy_id=row["strategy_id"], spec=spec,
                              family=row.get("family"), params=params or {})


def _backtest(record: RunRecord, row: dict[str, Any]) -> rec.BacktestRecord:
    metrics = {k: row[k] for k in CORE_METRICS if k in row}
    return rec.BacktestRecord(
        run_id=record.run_id, iteration=1, strategy_id=row["strategy_id"], engine="A",
        window="selection", data_ref=record.data_ref, sharpe=finite(row.get("sharpe")),
        total_return=finite(row.get("total_return")),
        max_drawdown=finite(row.get("max_drawdown")),
        n_trades=None if finite(row.get("n_trades")) is None else int(row["n_trades"]),
        metrics=_jsonable(metrics))


def _score(record: RunRecord, row: dict[str, Any]) -> rec.ScoreRecord:
    return rec.ScoreRecord(run_id=record.run_id, iteration=1, strategy_id=row["strategy_id"],
                           policy_version=record.policy_version,
                           score_total=float(row["score_total"]), passed=bool(row["passed"]),
                           reasons=_list(row["reasons"], "; "), dsr=finite(row.get("dsr")),
                           psr=finite(row.get("psr")))


def _failure(record: RunRecord, row: dict[str, Any]) -> rec.FailureRecord:
    codes = list(dict.fromkeys(gate_code(g) for g in _list(row["failed_gates"], ","))) \
        or ["LOW_SCORE"]
    return rec.FailureRecord(run_id=record.run_id, iteration=1, strategy_id=row["strategy_id"],
                             stage_id="evaluate", code=codes[0], secondary=codes[1:],
                             evidence={"reasons": _list(row["reasons"], "; "),
                                       "score_total": float(row["score_total"])})


def _list(value: Any, sep: str) -> list[str]:
    """Gates and reasons: a list in memory, joined by ``sep`` in a stored table."""
    if isinstance(value, str):
        return [v for v in value.split(sep) if v]
    return [str(v) for v in value]


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    """Plain JSON: numpy scalars as numbers, NaN and infinities as null."""
    text = json.dumps(data, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    out: dict[str, Any] = json.loads(text, parse_constant=lambda _: None)
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_run(record: RunRecord, iterations: pd.DataFrame, candidates: pd.DataFrame,
             root: Path | None = None, reports: list[dict[str, Any]] | None = None) -> Path:
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
        if reports is not None:
            (tmp / REPORTS).write_text(json.dumps(reports, indent=1) + "\n", encoding="utf-8")
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
    if len(hits) > 1:  # not "none": more of the id picks one
        raise RunError(f"{len(hits)} runs match {prefix!r} under {root}: "
                       + ", ".join(p.name[:16] for p in hits[:5]) + "; give more of the id",
                       code="RUN_AMBIGUOUS")
    if not hits:
        loop = " (a research-loop run? its page is `alphaloop report --run`, without "\
            "--strategy)" if prefix and root.is_dir() \
            and any(p.is_dir() for p in root.glob(f"{prefix}*")) else ""
        raise RunError(f"no recorded run matches {prefix!r} under {root}{loop}",
                       code="RUN_NOT_FOUND")
    return hits[0]


def load_run(path: Path) -> Run:
    """Read a recorded run back; a damaged one is a CRITICAL error naming the file."""
    try:
        record = RunRecord.model_validate(json.loads((path / "run.json").read_text("utf-8")))
        iterations = pd.read_parquet(path / "iterations.parquet")
        candidates = pd.read_parquet(path / "candidates.parquet")
        reports = (json.loads((path / REPORTS).read_text("utf-8"))
                   if (path / REPORTS).is_file() else [])  # older runs have none
    except (OSError, ValueError, ValidationError) as exc:
        raise RunError(f"run {path.name[:16]} cannot be read back ({path}): {exc}",
                       code="RUN_CORRUPT", error_class=ErrorClass.CRITICAL) from None
    return Run(record, iterations, candidates, path, reports)


def _complete_runs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / DONE).is_file())


def runs_with_strategy(strategy_prefix: str, root: Path | None = None, *,
                       results_sha256: str | None = None, policy_hash: str | None = None,
                       data_ref: str | None = None) -> list[Run]:
    """Recorded runs whose candidates include a strategy id starting with the prefix,
    newest first; the keyword filters keep only runs of that results content, policy
    content or data."""
    wanted = {"results_sha256": results_sha256, "policy_hash": policy_hash,
              "data_ref": data_ref}
    found: list[Run] = []
    for path in _complete_runs(root or runs_dir()):
        run = load_run(path)
        if any(v is not None and getattr(run.record, k) != v for k, v in wanted.items()):
            continue
        if "strategy_id" in run.candidates.columns and \
                run.candidates["strategy_id"].str.startswith(strategy_prefix).any():
            found.append(run)
    return sorted(found, key=lambda r: r.record.order_key(), reverse=True)


def check_results_file(record: RunRecord) -> bool:
    """True if the run's results file is there unchanged; False if it is gone or the
    run (recorded before results were hashed) cannot vouch for it, so the run's stored
    candidates stand in; a file whose content changed since the run hashed it is refused
    (the user most likely re-swept into the same path)."""
    path = Path(record.results_file)
    if record.results_sha256 is None or not path.is_file():
        return False
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}",
                       code="RUN_RESULTS_UNREADABLE") from None
    if digest != record.results_sha256:
        raise RunError(
            f"{path} changed since run {record.run_id[:16]} evaluated it (sha256 "
            f"{record.results_sha256[:16]}… then, {digest[:16]}… now): evaluate it again, "
            "or move it away to report from the run's stored candidates",
            code="RUN_RESULTS_CHANGED")
    return True


def stamp(root: Path | None = None) -> tuple[str, int]:
    """``created_at`` (ISO, UTC) and ``created_ns`` for a new run: ``created_ns`` is
    above every complete run's under ``root``, so recording order is strict."""
    latest = 0
    for path in _complete_runs(root or runs_dir()):
        try:
            ns = json.loads((path / "run.json").read_text("utf-8")).get("created_ns")
        except (OSError, ValueError):
            continue  # a damaged run says so when it is loaded, not here
        if isinstance(ns, int):
            latest = max(latest, ns)
    ns = max(time.time_ns(), latest + 1)
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds"), ns

