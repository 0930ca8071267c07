"""The pipeline event log: ``pipeline_events.jsonl`` (seed 004 §3.1).

Events: ``STAGE_STARTED``, ``STAGE_COMPLETED`` (SUCCESS/PARTIAL), ``STAGE_FAILED``,
``STAGE_RETRY_SCHEDULED``, ``STAGE_STOPPED``, ``BRANCH_TAKEN`` (seed 004), the retry
outcomes ``ITER_RETRY_SCHEDULED`` / ``ITER_RETRY_SUCCESS`` / ``ITER_RETRY_FAIL``
(seed 003 §6.3), the state moves ``RUN_STATE`` / ``ITERATION_STATE``, and
``WORLD_SUBMITTED`` (a survivor handed to a world, with the world's answer) and
``WORK_SHARED`` (what a backtesting stage computed itself and what it read from
another run's claim on the same knowledge base). Each line
carries at least the seed's fields: run_id, iteration_id, stage_id, status_before,
status_after, attempt, max_attempts, error_code, stop_reason, ts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from alphaloop.orchestrator.artifacts import append_line, read_lines

EVENTS = ("STAGE_STARTED", "STAGE_COMPLETED", "STAGE_FAILED", "STAGE_RETRY_SCHEDULED",
          "STAGE_STOPPED", "BRANCH_TAKEN", "ITER_RETRY_SCHEDULED", "ITER_RETRY_SUCCESS",
          "ITER_RETRY_FAIL", "RUN_STATE", "ITERATION_STATE",
          # not in seed 004: the hand-off of survivors to a world (seed 000), and the
          # work shared with other runs on one knowledge base (claims)
          "WORLD_SUBMITTED", "WORK_SHARED")
FILE = "pipeline_events.jsonl"


class EventLog:
    """Appends events for one run (flushed at once, so a killed process loses none)."""

    def __init__(self, folder: Path, run_id: str) -> None:
        self.path = folder / FILE
        self.run_id = run_id

    def emit(self, event: str, *, iteration: int | None = None, stage_id: str | None = None,
             status_before: str | None = None, status_after: str | None = None,
             attempt: int | None = None, max_attempts: int | None = None,
             error_code: str | None = None, stop_reason: str | None = None,
             **details: Any) -> dict[str, Any]:
        if event not in EVENTS:
            raise ValueError(f"unknown pipeline event {event!r}")
        row = {"event": event, "run_id": self.run_id, "iteration_id": iteration,
               "stage_id": stage_id, "status_before": status_before,
               "status_after": status_after, "attempt": attempt,
               "max_attempts": max_attempts, "error_code": error_code,
               "stop_reason": stop_reason, "ts": time.time(), **details}
        # flushed, not fsynced: the log narrates; stage markers and the KB carry the state
        append_line(self.path, row, sync=False)
        return row

    def read(self) -> list[dict[str, Any]]:
        return read_lines(self.path)
