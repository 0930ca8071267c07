"""The research loop: iterations of the stage pipeline until a budget or a stop rule.

>>> from alphaloop.orchestrator import RunConfig, Runner
>>> cfg = RunConfig.from_dict({"data": {"source": "us_indices"},
...                            "budgets": {"max_iterations": 3, "max_backtests": 2000}})
>>> summary = Runner(cfg).run()                 # doctest: +SKIP
>>> summary.status, summary.best_strategies     # doctest: +SKIP

What the runner guarantees (seeds 003 and 004, DESIGN §3 "Orchestrator"):

- **States**: the run, each iteration and each stage attempt move only along the
  tables of :mod:`alphaloop.orchestrator.states`; every move is recorded in the
  knowledge base and the event log.
- **Retries** only for TRANSIENT errors on the allowed list, within the stage's and the
  iteration's budgets, after a seeded backoff; PERMANENT errors fail at once
  (the run ends FAILED_FATAL), CRITICAL ones stop the run (DONE_EARLY_STOPPED), an
  exhausted retry budget pauses it (PAUSED: ``alphaloop resume`` continues).
- **Resume**: a stage's output is stored with a ``.stage_done`` marker keyed by the
  hash of its inputs; a resumed run walks the same iterations and loads every finished
  stage instead of running it, so it ends with the RunSummary an uninterrupted run of
  the same config would have (everything derives from ``seed``, nothing from time).
- **One knowledge base, several runs**: a run's "earlier runs" are those that had
  *finished* before it was created (``runs.finished_ns``): their backtests are reused
  and count as trials, the same set whenever the run asks (a resume included). Runs
  going on at the same time share their work instead: every backtesting stage (S50,
  S70, S75, S80) claims its candidates in the KB first and reads back what another run
  computed (:mod:`alphaloop.orchestrator.claims`); those results count as the run's
  own tests, exactly as if it had computed them, so its RunSummary is that of a run
  alone on the database.
- **Honest selection**: engine A and scoring see the search window, robustness the
  validation window; the holdout is read only by :func:`stages.holdout_check` for a
  candidate about to become a survivor, and what it finds feeds nothing back.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import pandas as pd

from alphaloop import interrupts
from alphaloop.data.bars import Bars
from alphaloop.engines.costs import CostModel
from alphaloop.engines.execution import ExecutionModel
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.errors import AlphaloopError, DataError, ErrorClass, LookaheadError
from alphaloop.evaluation.benchmark import resolve_benchmark
from alphaloop.evaluation.factors import factor_columns
from alphaloop.evaluation.robustness import (
    MIN_WINDOW_BARS,
    benchmark_exposure,
    holdout_split,
    relative_columns,
)
from alphaloop.evaluation.scoring import load_policy
from alphaloop.kb import records as rec
from alphaloop.kb.store import KBError, KnowledgeBase
from alphaloop.numbers import finite
from alphaloop.orchestrator import stages as st
from alphaloop.orchestrator.artifacts import (
    OUTPUT,
    StageStore,
    append_line,
    inputs_hash,
    read_lines,
    stage_run_id,
    write_atomic,
    write_json,
)
from alphaloop.orchestrator.claims import (
    A_CODEC,
    JSON_CODEC,
    AResult,
    ClaimBook,
    Codec,
    assemble_a,
    split_a,
    work_key,
)
from alphaloop.orchestrator.config import (
    BASE_SET,
    BestStrategy,
    ConfigError,
    IterationSummary,
    RunConfig,
    RunStats,
    RunSummary,
    bar_interval,
    utc,
)
from alphaloop.orchestrator.events import EventLog
from alphaloop.orchestrator.executors import CHUNK, backtest_all, make_executor
from alphaloop.orchestrator.folders import (  # noqa: F401  (re-exported: the public place)
    CONFIG_FILE,
    OWNER_FILE,
    SUMMARY_FILE,
    loop_alive,
    read_run_file,
    read_stored_config,
    run_folder,
    runs_root,
)
from alphaloop.orchestrator.policies import (
    BranchLog,
    BranchLoopDetected,
    EarlyStop,
    RetryBudgetExceeded,
    RetryPolicy,
    StoppedCritical,
    classify,
    is_critical,
)
from alphaloop.orchestrator.states import (
    FINAL_RUN_STATES,
    IterationState,
    Machine,
    RunState,
    StageStatus,
    Transition,
    iteration_machine,
    run_machine,
    stage_machine,
)
from alphaloop.research.learning import ConstraintSet, Observation, RowCache, set_id
from alphaloop.strategy.constraints import Constraint
from alphaloop.strategy.spec import StrategySpec

if TYPE_CHECKING:  # the SDK is imported when a world is used (it pulls in httpx)
    from alphaloop.world.client import SubmitResult

DQ_FILE = "dq_report.json"  # OBS-540
WAL_FILE = "kb_wal.jsonl"
CLOCK_FILE = "clock.json"  # wall time used by earlier sessions (max_walltime_sec spans them)
PENDING_FILE = "kb_pending.jsonl"  # transitions and stage runs written while the KB was locked
DATA_REF_FILE = "data_ref.json"  # the data the run started on: a resume needs the same
INPUTS_FILE = "inputs.json"  # the scoring policy and execution model it started with, by
# content: a resume needs the same (the config names them by path or name only)
LOCK_FILE = "resume.lock"  # held (flock) by the process resuming the run
WORLD_FILE = "world_submissions.jsonl"  # what the world decided for each survivor handed off
_RECORDS: dict[str, type[rec.TransitionRecord] | type[rec.StageRunRecord]] = {
    "record_transition": rec.TransitionRecord, "save_stage_run": rec.StageRunRecord,
    "add_stage_run": rec.StageRunRecord}

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


def trial_sharpes(prior: np.ndarray, prior_ids: set[str],
                  run: Mapping[str, float]) -> list[float]:
    """The per-period Sharpe of each trial the DSR counts: the earlier runs' (``prior``,
    one per id of ``prior_ids``) and this run's new ones. A strategy an earlier run
    tested and this one backtests again (mode verification) is one trial, counted once,
    as in the trial count."""
    return [*prior.tolist(), *(sr for sid, sr in run.items() if sid not in prior_ids)]


MIN_BOOK_NAMES = 4
"""Names a loop's ranked-book family needs: with fewer, a long book, a short book and a
buffer between them cover the whole panel, and the book never changes."""


def _book_families(names: Iterable[str]) -> list[str]:
    """The families among ``names`` whose specs are ranked books (cross-sectional)."""
    from alphaloop.strategy.templates import get_family

    out = []
    for name in names:
        family = get_family(name)
        first = next(family.grid(), None) if all(
            p.n_points is not None for p in family.params.values()) else None
        if first is not None and family.build(first).portfolio.cross_sectional:
            out.append(name)
    return out


def _done_status(out: Any) -> StageStatus:
    """How a stage that returned ``out`` ends: PARTIAL when the output says so."""
    return StageStatus.PARTIAL if getattr(out, "partial", False) else StageStatus.SUCCESS


@contextmanager
def _sigint_held() -> Iterator[None]:
    """SIGINT held back until the block ends, then delivered as it would have been.
    A handler that only notes it, not a blocked signal mask: a signal sent to the
    process may reach any of its threads (numba's, pyarrow's), and Python raises it in
    the main thread whichever thread the C handler ran in. Main thread only (where
    Python lets a handler be set)."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is None:  # a handler Python did not set
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)  # to the handler that was there before


def _uninterrupted(move: F) -> F:
    """A state move is recorded everywhere (state machine, knowledge base, event log)
    or nowhere: Ctrl-C during it is raised right after it, not half-way."""
    @functools.wraps(move)
    def held(*args: Any, **kwargs: Any) -> Any:
        with _sigint_held():
            return move(*args, **kwargs)
    return cast(F, held)


EVALUATOR_BYTES = 512 << 20  # each of the run's three shared signal evaluators

Fault = Callable[[int, str, int], None]
"""A test seam: called as ``fault(iteration, stage_id, attempt)`` before each attempt."""


class StageFailed(AlphaloopError):
    """A stage that failed for good; carries the original code and class."""

    code = "STAGE_FAILED"


class _Stop(Exception):
    """Internal: end the run with this state and reason."""

    def __init__(self, state: RunState, reason: str) -> None:
        super().__init__(reason)
        self.state, self.reason = state, reason


def _recorded_claims(survivors: list[BestStrategy], verified: list[dict[str, Any]],
                     scored: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per survivor, the numbers the loop recorded that a world's policy may gate on:
    engine B's core metrics (the verification on the search window) and the scoring's
    DSR, PSR and PBO, only the keys a world's metrics have, None where unknown."""
    from alphaloop.world.schemas import Metrics

    keys = set(Metrics.model_fields)
    b_metrics = {v["strategy_id"]: v["metrics"] for v in verified}
    rows = scored.set_index("strategy_id")
    out: dict[str, dict[str, Any]] = {}
    for b in survivors:
        claim = {k: v for k, v in b_metrics.get(b.strategy_id, {}).items() if k in keys}
        for k in ("dsr", "psr", "pbo"):
            claim[k] = finite(rows.at[b.strategy_id, k]) if k in rows.columns else None
        out[b.strategy_id] = claim
    return out


class Runner:
    """Runs (or resumes) one research loop; see the module docstring."""

    def __init__(self, config: RunConfig, *, fault: Fault | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg = config
        self.fault, self.sleep, self.progress = fault, sleep, progress
        self.root = runs_root(config.out_dir) / config.run_id
        self._prepare()

    # ------------------------------------------------------------ set-up
    def _prepare(self) -> None:
        """Everything that can refuse the config, before anything is written."""
        from alphaloop.kb.store import inspect_before_use

        cfg = self.cfg
        inspect_before_use(cfg.kb.url)  # a damaged KB file stops the run before its work
        self.bars, self.search_end, self.val_end = run_windows(cfg)
        out = runs_root(cfg.out_dir)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"out_dir: {out} is a file, not a folder",
                              code="INVALID_CONFIG")
        # a window knows only the symbols that have a bar in it: one listed later is not
        # in the search universe (and engine B's data gate never sees it empty)
        self.search = self.bars.slice(0, self.search_end, drop_empty=True)
        self.search_ref = self.search.data_ref
        if cfg.mode == "verification":
            self._something_to_verify()
        if cfg.base_constraint_set_id != BASE_SET:
            self._base_set_known()
        books = _book_families(cfg.generation.families)
        if books and self.search.n_symbols < MIN_BOOK_NAMES:
            raise ConfigError(
                f"generation.families: {', '.join(books)} rank the names of the panel, "
                f"which has {self.search.n_symbols} in the search window; a ranked book "
                f"needs at least {MIN_BOOK_NAMES} (a long book, a short book and room "
                "between them), or it holds the same names whatever the ranks",
                code="INVALID_CONFIG")
        self.validation = self.bars.slice(0, self.val_end, drop_empty=True)  # search + val.
        self._evaluators: dict[str, SignalEvaluator] = {}
        try:
            self.policy = load_policy(cfg.policies.scoring)
            self.model = (ExecutionModel.from_yaml(cfg.engines.execution)
                          if cfg.engines.execution else ExecutionModel())
        except AlphaloopError as exc:
            raise ConfigError(f"{exc.message}", code="INVALID_CONFIG") from None
        if cfg.mode != "exploration" and self.model.needs_volume \
                and not np.any(self.search.volume > 0):
            # engine B could trade nothing: say so now, not after an iteration of work
            raise ConfigError(
                "data: no symbol has a bar with positive volume in the search window, and "
                "engine B's execution model caps participation or charges impact by "
                "volume; give the data volume, set engines.execution to a model without "
                "them, or use mode exploration", code="INVALID_CONFIG")
        self.costs = CostModel(fees_bps=cfg.engines.fees_bps,
                               slippage_bps=cfg.engines.slippage_bps)
        # S50's work key in the claims table: engine A, the search window, the costs
        self.search_key = work_key("A", "search", self.search_ref, self.costs)
        try:  # over the search window, with the run's costs, through engine A
            self.bench = resolve_benchmark(cfg.benchmark or self.policy.benchmark,
                                           self.search, self.costs)
        except AlphaloopError as exc:
            raise ConfigError(f"benchmark: {exc.message}", code="INVALID_CONFIG") from None
        self.brief = _read_brief(cfg)

    def _something_to_verify(self) -> None:
        """Mode verification takes earlier runs' candidates on this search window: with
        none in the knowledge base there is nothing to run (and no KB is created)."""
        try:
            with KnowledgeBase(self.cfg.kb.url, create=False) as kb:
                n = len(kb.tested(self.search_ref, engine="A", window="search",
                                  exclude_run=self.cfg.run_id))
        except KBError as exc:
            if exc.code != "KB_NOT_FOUND":
                raise
            n = 0
        if n == 0:
            raise ConfigError("mode: verification takes the candidates earlier runs "
                              "backtested on this data, and the knowledge base holds none; "
                              "run mode exploration or mixed on it first",
                              code="INVALID_CONFIG")

    def _base_set_known(self) -> None:
        """A base set the user names must be one the knowledge base holds: a misspelt
        id would otherwise start the run from no rule at all, silently."""
        wanted = self.cfg.base_constraint_set_id
        try:
            with KnowledgeBase(self.cfg.kb.url, create=False) as kb:
                known = kb.constraint_set(wanted) is not None
        except KBError as exc:
            if exc.code != "KB_NOT_FOUND":
                raise
            known = False
        if not known:
            raise ConfigError(f"base_constraint_set_id: the knowledge base holds no "
                              f"constraint set {wanted!r} (`alphaloop kb constraints` "
                              f"lists them); leave it out to start from no rule",
                              code="INVALID_CONFIG")

    def _open(self, *, resuming: bool) -> None:
        cfg = self.cfg
        self.kb = KnowledgeBase(cfg.kb.url, busy_timeout_s=cfg.kb.busy_timeout_s)
        self._kb_down = False
        self.kb_behind = False  # see _settle
        self._stage_run_ids: set[str] | None = None  # see _recorded_stage_runs
        self.events = EventLog(self.root, cfg.run_id)
        self.store = StageStore(self.root)
        self.retry = RetryPolicy(cfg.policies.retry, cfg.seed)
        self.branches = BranchLog(max_repeats=cfg.policies.stops.max_branch_repeats)
        self.early = EarlyStop(cfg.policies.early_stop.patience_iters,
                               cfg.policies.early_stop.min_improve)
        self.generator = st.Generator(cfg.generation.families, cfg.generation.sampler,
                                      cfg.seed)
        self.executor = make_executor(cfg.executor.kind, cfg.executor.workers, self.bars,
                                      address=cfg.executor.address)
        stored = self.kb.get_run(cfg.run_id) if resuming else None
        self.created_ns = stored.created_ns if stored is not None else time.time_ns()
        # the run's earlier trials: every other run's iterations stored before it was
        # created, a killed run's included. The same set whenever the run asks (a
        # resumed run included); what runs still going store later is shared through
        # claims instead (see ``claims``)
        prior = self.kb.tested(self.search_ref, engine="A", window="search",
                               exclude_run=cfg.run_id, stored_before=self.created_ns)
        self.prior_ids = set(prior["strategy_id"]) if len(prior) else set()
        self.prior_sharpes = np.array([np.nan if v is None or pd.isna(v) else float(v)
                                       for v in prior["sharpe_per_period"]], dtype=float)
        self.claims = ClaimBook(self.kb, cfg.run_id, lease_s=cfg.kb.claim_lease_s,
                                poll_s=cfg.kb.claim_poll_s)
        self.claims.down = not cfg.kb.share_work
        self.claims.on_wait = self._waiting
        self.shared: dict[str, int] = {"computed": 0, "taken": 0, "unclaimed": 0}
        self._at: tuple[int, str] = (0, "")  # the stage running now (for its events)
        self.run_sharpes: dict[str, float] = {}
        self.run_tested: set[str] = set()
        self.backtests = 0
        self.failures = 0
        self.constraints_added = 0
        self.reused = 0
        self.survivors: list[BestStrategy] = []
        self.summaries: list[IterationSummary] = []
        self.best_so_far: float | None = None
        self.best_verified: float | None = None  # best score engine B verified, so far
        self.empty_shortlists = 0
        self.low_generation = 0
        self.non_deterministic = 0  # engine B reruns that disagreed (seed 003 §7.3)
        self.next_n = cfg.generation.candidates_per_iteration
        self.top_k = cfg.policies.promotion.top_k_to_verify
        self.relax = 0.0  # S60 branch A (exploration only): points off the score threshold
        self.last_diagnosis: str | None = ""  # S60 branch D: what bound the last time
        self.extra_families: tuple[str, ...] = ()
        self.force_baseline = False
        self.pending_world: list[StrategySpec] = []  # survivors the world has not seen
        self.pending_claims: dict[str, dict[str, Any]] = {}  # their recorded metrics
        self.observations: list[Observation] = []  # every candidate of the run (MOD-450)
        self.row_cache = RowCache()  # their feature rows, built once (a resume rebuilds)
        self._kb_iterations: set[int] | None = None  # resume: the iterations the KB holds
        self.disabled_rules: tuple[str, ...] = ()  # seed 004 §6.2 B, for one generation
        self.cset = self._base_constraints()
        if cfg.learning.enabled:
            self._apply_constraints()
        used = 0.0
        if resuming and (self.root / CLOCK_FILE).exists():
            used = read_run_file(self.root / CLOCK_FILE, _elapsed_sec)
        self.started = time.monotonic() - used

    # ------------------------------------------------------------ public
    def run(self) -> RunSummary:
        """A new run. Its folder must not exist yet (``resume`` continues one)."""
        if (self.root / CONFIG_FILE).exists():
            raise ConfigError(f"run {self.cfg.run_id} exists already: use "
                              f"`alphaloop resume {self.cfg.run_id}`", code="INVALID_CONFIG")
        self._open(resuming=False)
        if self.kb.get_run(self.cfg.run_id) is not None:  # a run of another out_dir
            raise ConfigError(f"run {self.cfg.run_id} exists already in the knowledge base "
                              f"({self.kb.url}): give the new run another run_id",
                              code="INVALID_CONFIG")
        write_json(self.root / CONFIG_FILE, self.cfg.model_dump(mode="json"))
        write_json(self.root / DATA_REF_FILE, self._data_refs())
        write_json(self.root / INPUTS_FILE, self._input_refs())
        return self._start()

    def _start(self) -> RunSummary:
        """The run's KB row (RUN_CREATED), then RUNNING and the loop."""
        now = self.created_ns
        self.kb.save_run(rec.RunRecord(run_id=self.cfg.run_id, status=RunState.RUN_CREATED,
                                       seed=self.cfg.seed, data_ref=self.search_ref,
                                       config=self.cfg.model_dump(mode="json"),
                                       created_ns=now, updated_ns=now))
        machine = run_machine()
        self._move_run(machine, RunState.RUNNING)
        return self._loop(machine)

    @classmethod
    def resume(cls, run_id: str, *, out_dir: str | None = None, kb_url: str | None = None,
               **kwargs: Any) -> RunSummary:
        """Continue a stopped or killed run; a finished one returns its RunSummary.
        ``run_id`` may be a unique prefix; see :func:`run_folder` for where it is found."""
        return cls.of_run(run_id, out_dir=out_dir, kb_url=kb_url, **kwargs).resume_run()

    @classmethod
    def of_run(cls, run_id: str, *, out_dir: str | None = None, kb_url: str | None = None,
               **kwargs: Any) -> Runner:
        """A runner for the stored run ``run_id`` (a unique prefix works), to resume."""
        path = run_folder(run_id, out_dir) / CONFIG_FILE
        data = read_run_file(path, json.loads)
        if kb_url is not None:
            data["kb"] = {"url": kb_url}
        return cls(RunConfig.from_dict(data, source=str(path)), **kwargs)

    def resume_run(self) -> RunSummary:
        """:meth:`resume` on this runner."""
        with _resume_lock(self.root, self.cfg.run_id):
            return self._resume_locked()

    def _resume_locked(self) -> RunSummary:
        runner = self
        busy = _running_here(self.root)
        if busy is not None:  # two processes would run one run's stages twice
            raise ConfigError(f"run {self.cfg.run_id} is running now, in process {busy} "
                              f"on this machine: wait for it to end (or stop it) before "
                              f"resuming", code="RUN_BUSY")
        runner._open(resuming=True)
        stored = runner.kb.get_run(runner.cfg.run_id)
        status = RunState(stored.status) if stored else RunState.RUNNING
        ended = runner._ended()
        if ended is not None:
            runner._settle(ended)  # what the KB could not take when the run ended
            return ended
        runner._same_data(stored)
        runner._same_inputs()
        if stored is None:  # killed (or refused) before its KB row was written
            return runner._start()
        machine = run_machine(RunState.PAUSED if status == RunState.PAUSED
                              else RunState.RUNNING)
        if machine.state == RunState.PAUSED:
            runner._move_run(machine, RunState.RUNNING)
        return runner._loop(machine)

    def _ended(self) -> RunSummary | None:
        """The final RunSummary the run wrote when it ended, else None. The file, not
        the KB, says so: the KB may not have taken the final status."""
        path = self.root / SUMMARY_FILE
        if not path.exists():
            return None
        summary = read_run_file(path, RunSummary.model_validate_json)
        return summary if summary.status in FINAL_RUN_STATES else None

    def _data_refs(self) -> dict[str, str]:
        return window_refs(self.bars, self.search, self.validation)

    def _same_data(self, stored: rec.RunRecord | None) -> None:
        """A resumed run continues on the data it started on, or not at all: mixing
        results of two data versions in one run would make its numbers nobody's."""
        known = {"search": stored.data_ref} if stored is not None else {}
        changed = _changed_since_start(self.root / DATA_REF_FILE, self._data_refs(), known)
        if changed:
            raise ConfigError(f"run {self.cfg.run_id}: its data ({self.cfg.data.source}) "
                              f"changed since the run started ({', '.join(changed)} "
                              "window); resume needs the same data: start a new run",
                              code="DATA_CHANGED")

    def _input_refs(self) -> dict[str, str]:
        """The scoring policy and the execution model the run uses, each by the hash of
        its content (a file the config names may change while the run is stopped)."""
        return {key: hashlib.sha256(model.model_dump_json().encode()).hexdigest()
                for key, model in (("policies.scoring", self.policy),
                                   ("engines.execution", self.model))}

    def _same_inputs(self) -> None:
        """A resumed run scores and verifies as it started, or not at all: a policy or
        a cost model changed in between would rescore finished iterations under other
        rules and mix two sets of numbers in one run's records."""
        # a folder written before this check existed has no file: nothing to compare
        changed = _changed_since_start(self.root / INPUTS_FILE, self._input_refs(), {})
        if changed:
            named = {"policies.scoring": self.cfg.policies.scoring,
                     "engines.execution": self.cfg.engines.execution or "the default model"}
            what = ", ".join(f"{key} ({named.get(key)})" for key in changed)
            raise ConfigError(f"run {self.cfg.run_id}: {what} changed since the run "
                              "started; resume needs what it started with: put it back, "
                              "or start a new run", code="INPUT_CHANGED")

    # ------------------------------------------------------------ the loop
    def _loop(self, machine: Machine[RunState]) -> RunSummary:
        final, reason = RunState.DONE_BUDGET_EXHAUSTED, "max_iterations"
        write_json(self.root / OWNER_FILE, {"pid": os.getpid(), "host": socket.gethostname()})
        thresholds = gc.get_threshold()
        gc.set_threshold(*RUN_GC_THRESHOLD)
        try:
            self._kb_catch_up()
            i = 0
            while True:
                stop = self._budget_stop(i)
                if stop:
                    final, reason = RunState.DONE_BUDGET_EXHAUSTED, stop
                    break
                i += 1
                _age_out_of_gc()
                self._iteration(i)
                self._record_so_far(self._write_summary(machine.state, None))
                write_json(self.root / CLOCK_FILE,
                           {"elapsed_sec": time.monotonic() - self.started})
                self._after_iteration(i)
        except _Stop as stop:
            final, reason = stop.state, stop.reason
        except KeyboardInterrupt:
            final, reason = RunState.PAUSED, "interrupted"
        finally:
            self.executor.close()
            gc.unfreeze()  # what the run held is the collector's again
            gc.set_threshold(*thresholds)
            (self.root / OWNER_FILE).unlink(missing_ok=True)
        self._move_run(machine, final, error_code=None if final != RunState.FAILED_FATAL
                       else reason.split(":")[0], stop_reason=reason)
        summary = self._write_summary(final, reason)
        self._settle(summary)
        return summary

    def _record_so_far(self, summary: RunSummary) -> None:
        """The summary so far in the knowledge base too, so that `kb runs`, `kb show` and
        `status` tell a run killed mid-way by what it did. A copy: the summary file is
        the run's own record, and a knowledge base that cannot take it now gets the
        final one from :meth:`_settle`."""
        if not self._kb_down:
            self._store_status(summary)

    def _settle(self, summary: RunSummary) -> None:
        """The knowledge base takes what waits in the run's logs and the run's status.
        Where it cannot now (locked, unreachable), ``kb_behind`` says so: the logs and
        the summary file keep it all, and ``resume`` writes it later."""
        self._kb_catch_up()
        if not self._store_status(summary):
            self._kb_down = True
        self.kb_behind = self._kb_down

    def _store_status(self, summary: RunSummary) -> bool:
        """The run's status and summary into the knowledge base; False when it cannot
        take them now (a TRANSIENT error)."""
        try:
            self.kb.set_run_status(self.cfg.run_id, summary.status,
                                   summary=summary.model_dump(mode="json"),
                                   finished=summary.status in FINAL_RUN_STATES)
        except KBError as exc:
            if exc.error_class is not ErrorClass.TRANSIENT:
                raise
            return False
        return True

    def _budget_stop(self, done: int) -> str | None:
        b = self.cfg.budgets
        if done >= b.max_iterations:
            return "max_iterations"
        if self.backtests >= b.max_backtests:
            return "max_backtests"
        if time.monotonic() - self.started >= b.max_walltime_sec:
            return "max_walltime_sec"
        return None

    def _after_iteration(self, i: int) -> None:
        """Stop rules after a finished iteration (seed 003 §7, seed 004 §5.2)."""
        s = self.summaries[-1]
        t = self.cfg.budgets.target_survivors
        if t is not None and len(self.survivors) >= t:
            raise _Stop(RunState.DONE_SUCCESS, f"target_survivors: {len(self.survivors)}")
        stops = self.cfg.policies.stops
        if self.non_deterministic >= stops.max_non_deterministic:
            raise _Stop(RunState.DONE_EARLY_STOPPED,
                        f"NON_DETERMINISTIC: engine B disagreed with itself "
                        f"{self.non_deterministic} times")
        if self.empty_shortlists >= stops.empty_shortlist_iters:
            raise _Stop(RunState.DONE_EARLY_STOPPED,
                        f"empty shortlist for {self.empty_shortlists} iterations")
        if self.low_generation >= stops.low_generation_iters:
            raise _Stop(RunState.DONE_EARLY_STOPPED,
                        f"fewer than {stops.min_deduped} new candidates for "
                        f"{self.low_generation} iterations")
        if self.early.update(s.best_score, constraints_changed=s.constraints_added > 0):
            raise _Stop(RunState.DONE_EARLY_STOPPED,
                        f"no improvement of the best score for {self.early.waited} iterations")

    # ------------------------------------------------------------ one iteration
    def _iteration(self, i: int) -> None:
        self._kb_catch_up()  # seed 004 §6.5 B: queued writes go first
        # claims again once the database takes writes (unless the config says no sharing)
        self.claims.down = self._kb_down or not self.cfg.kb.share_work
        self._hashes: dict[str, str] = {}  # this iteration's stage inputs
        self._loaded: set[str] = set()  # this iteration's stages loaded, not run (resume)
        im = iteration_machine()
        self.retry.new_iteration()
        timings: dict[str, float] = {}
        self._imove(i, im, IterationState.GENERATION)
        try:
            summary = self._pipeline(i, im, timings)
        except (StoppedCritical, StageFailed, RetryBudgetExceeded, BranchLoopDetected) as exc:
            self._imove(i, im, IterationState.ITER_FAILED, error_code=exc.code)
            self.summaries.append(_failed_summary(i, self.best_so_far, timings))
            self._write_iteration_failure(i, exc)
            raise _Stop(*_run_outcome(exc)) from None
        self.summaries.append(summary)

    def _pipeline(self, i: int, im: Machine[IterationState],
                  timings: dict[str, float]) -> IterationSummary:
        cfg = self.cfg
        scen = self._scenario(i, timings)
        alloc = self.generator.allocation(self.next_n, scen, self.extra_families)
        kind, seed = cfg.generation.sampler, cfg.seed
        if cfg.mode == "verification":  # the best earlier candidates, not new ones
            cands = self._stage(i, "S20", ("verification", self.next_n,
                                           inputs_hash(self.run_tested)),
                                lambda: self._from_kb(self.next_n), timings)
        else:
            cands = self._stage(i, "S20", (alloc, kind, seed, cfg.base_constraint_set_id,
                                           self.force_baseline,
                                           sorted(self.generator.widenings.items())),
                                lambda: self._generate(alloc), timings,
                                on_load=lambda _: self._advance(alloc))
        if self.disabled_rules:  # branch B lasted one generation: the next update restores
            self.disabled_rules = ()
        budget_left = cfg.budgets.max_backtests - self.backtests
        # verification re-runs engine A on earlier candidates (their returns are needed
        # for PBO and clustering), so nothing counts as "reused" there
        prior = set() if cfg.mode == "verification" else self.prior_ids
        ded = self._stage(i, "S30", ([c["strategy_id"] for c in cands],
                                     inputs_hash(self.run_tested), inputs_hash(prior),
                                     budget_left),
                          lambda: st.dedup(cands, self.run_tested, prior, budget_left),
                          timings)
        self._stage(i, "S40", (self.search_ref,), self._dq_gate, timings)
        branches = self._generation_branches(i, ded)
        self._imove(i, im, IterationState.BACKTEST_A)
        fresh_specs = {c["strategy_id"]: self.generator.spec(c) for c in ded.fresh}
        a = self._stage(i, "S50", (list(fresh_specs), self.search_end, self.costs),
                        lambda: self._backtest_a(list(fresh_specs.values())), timings)
        self.backtests += len(fresh_specs)
        self.reused += len(ded.reused)
        self._imove(i, im, IterationState.SCORING)
        for sid, sr in zip(a.metrics["strategy_id"], a.metrics["sr_per_period"], strict=True):
            self.run_sharpes[str(sid)] = float(sr)
        self.run_tested |= set(fresh_specs) | set(ded.reused)
        trials = len(self.prior_ids) + len(set(self.run_sharpes) - self.prior_ids)
        var = _variance(trial_sharpes(self.prior_sharpes, self.prior_ids, self.run_sharpes))
        cand_frame = pd.DataFrame([{"strategy_id": c["strategy_id"], "family": c["family"],
                                    "params": _json(c["params"])} for c in ded.fresh],
                                  columns=["strategy_id", "family", "params"])
        threshold = max(cfg.policies.promotion.score_threshold - self.relax, 0.0)
        top_k = min(self.top_k, max((cfg.budgets.max_backtests - self.backtests) // 2, 0))
        short = self._stage(
            i, "S60", (list(fresh_specs), trials, var, a.pbo, top_k, threshold,
                       self.policy.policy_version, self.bench.name),
            lambda: st.shortlist(a.metrics, a.returns, cand_frame, self.policy,
                                 cfg.policies.promotion, trials, var, a.pbo, top_k,
                                 threshold, self._relative(
                                     a.returns, trials, var,
                                     [fresh_specs[str(sid)] for sid in a.metrics["strategy_id"]])),
            timings)
        self.generator.tell(short.scored)
        look = self._stage(i, "S65", (short.shortlist,),
                           lambda: self._lookahead(short.shortlist, fresh_specs), timings)
        listed = [s for s in short.shortlist if s not in look]
        branches += self._shortlist_branches(i, listed, short.scored, threshold)
        verified: list[dict[str, Any]] = []
        if listed and cfg.mode != "exploration":
            self._imove(i, im, IterationState.BACKTEST_B)
            ver = self._stage(i, "S70", (listed, self.model.version, self.search_ref),
                              lambda: self._verify_b(fresh_specs, listed), timings)
            self.backtests += ver.evaluations
            verified = ver.rows
            branches += self._verification_branches(i, verified)
            self.non_deterministic += sum("NON_DETERMINISTIC" in v["codes"] for v in verified)
        passed_b = [v["strategy_id"] for v in verified if v["passed"]]
        robust: list[dict[str, Any]] = []
        if passed_b:
            self._imove(i, im, IterationState.ROBUSTNESS)
            left = max(cfg.budgets.max_backtests - self.backtests, 0)
            check = passed_b[:left]
            sharpe = dict(zip(a.metrics["strategy_id"], a.metrics["sharpe"], strict=True))
            robust = self._stage(
                i, "S75", (check, self.search_end, self.val_end, self.costs),
                lambda: self._validation([fresh_specs[s] for s in check], sharpe), timings)
            self.backtests += len(check)
        robust_ok = [r["strategy_id"] for r in robust if r["passed"]]
        survivors: list[BestStrategy] = []
        if robust_ok:
            self._imove(i, im, IterationState.REPORTING)
            left = max(cfg.budgets.max_backtests - self.backtests, 0)
            final = robust_ok[:left]
            hold = self._stage(i, "S80", (final, self.val_end, self.costs),
                               lambda: self._holdout([fresh_specs[s] for s in final]),
                               timings)
            self.backtests += len(final)
            survivors = self._survivors(i, hold, short, verified, robust)
            self.survivors += survivors
        self._imove(i, im, IterationState.ANALYSIS)
        fails = self._stage(i, "S85", (list(fresh_specs), short.shortlist, len(verified),
                                       len(robust), sorted(look)),
                            lambda: st.failure_records(
                                short.scored, short, threshold, verified, robust, look,
                                self.policy.gates.model_dump(), self.costs,
                                cfg.policies.promotion), timings)
        self.failures += len(fails)
        self._imove(i, im, IterationState.CONSTRAINT_UPDATE)
        learned = self._constraint_update(i, ded.fresh, fails, timings)
        added = learned.added if learned is not None else 0
        self.constraints_added += added
        best = (float(short.scored["score_total"].max()) if len(short.scored) else None)
        if best is not None and (self.best_so_far is None or best > self.best_so_far):
            self.best_so_far = best
        ok_b = short.scored[short.scored["strategy_id"].isin(passed_b)]["score_total"]
        best_b = float(ok_b.max()) if len(ok_b) else None
        if best_b is not None and (self.best_verified is None or best_b > self.best_verified):
            self.best_verified = best_b
        summary = IterationSummary(
            iteration=i, state=str(IterationState.ITER_DONE),
            generated_candidates=len(cands), deduped_candidates=len(ded.fresh),
            tested_A=len(fresh_specs), reused_A=len(ded.reused),
            promoted_to_B=len(verified), passed_B=len(passed_b),
            passed_robustness=len(robust_ok), survivors=len(survivors),
            failures_created=len(fails), constraints_added=added, best_score=best,
            best_verified_score=best_b, best_verified_so_far=self.best_verified,
            forbidden_share=None if learned is None else learned.forbidden_share,
            constraint_set_id=self.cset.constraint_set_id if self.cset.rules else None,
            best_score_so_far=self.best_so_far, branches=tuple(branches),
            diversity=st.diversity(short), stage_ms=timings)
        self._imove(i, im, IterationState.KB_PERSIST)
        batch = self._batch(i, summary, ded, fresh_specs, a, short, verified, robust, fails,
                            learned)
        # the batch is a function of the earlier stages' inputs (their outputs are)
        self._stage(i, "S95", tuple(sorted(self._hashes.items())),
                    lambda: self._persist(i, batch), timings,
                    on_load=lambda done: self._persist_again_if_lost(i, batch, done))
        if cfg.world is not None:  # no world, nothing to hand off
            self._hand_off(i, [fresh_specs[b.strategy_id] for b in survivors],
                           _recorded_claims(survivors, verified, short.scored))
        self._imove(i, im, IterationState.ITER_DONE)
        return summary

    # ------------------------------------------------------------ stage runner
    def _stage(self, i: int, stage_id: str, inputs: tuple[Any, ...],
               fn: Callable[[], Any], timings: dict[str, float], *,
               on_load: Callable[[Any], None] | None = None, skip: bool = False) -> Any:
        """Run one stage with retries, or load its stored output (resume)."""
        h = inputs_hash(stage_id, *inputs)
        self._hashes[stage_id] = h
        sm = stage_machine()
        if skip:
            self._smove(i, stage_id, sm, StageStatus.SKIPPED, 1, h, "STAGE_COMPLETED")
            return None
        stored = self.store.load(i, stage_id, h)
        if stored is not None:
            self._loaded.add(stage_id)
            self._stored_stage_run(i, stage_id, h, stored)
            if on_load is not None:
                on_load(stored)
            self.events.emit("STAGE_COMPLETED", iteration=i, stage_id=stage_id,
                             status_before=str(StageStatus.PENDING),
                             status_after=str(StageStatus.SUCCESS), attempt=0,
                             max_attempts=self.retry.max_attempts(stage_id), reused=True)
            return stored
        attempt = 1
        t0 = time.monotonic()
        srid: str | None = None
        while True:
            try:
                # inside: a Ctrl-C held during the move is raised as it ends, stage started
                self._smove(i, stage_id, sm, StageStatus.RUNNING, attempt, h, "STAGE_STARTED")
                try:
                    if self.fault is not None:
                        self.fault(i, stage_id, attempt)
                    self._at = (i, stage_id)
                    out = fn()
                except Exception as exc:
                    attempt = self._stage_error(i, stage_id, sm, attempt, h, exc)
                    continue
                srid = stage_run_id(self.cfg.run_id, i, stage_id, attempt, h)
                ref = self.store.save(i, stage_id, h, srid, out)
                interrupts.check()  # a Ctrl-C the stage's C code swallowed pauses here
            except KeyboardInterrupt:
                # the run pauses: the stage is closed in the log (seed 004 STAGE_STOPPED),
                # or, its output stored already, completed (a resume reuses that output)
                if srid is not None and sm.state is StageStatus.RUNNING \
                        and self.store.marker(i, stage_id).get("stage_run_id") == srid:
                    self._smove(i, stage_id, sm, _done_status(out), attempt, h,
                                "STAGE_COMPLETED", output_ref=self._output_ref(i, stage_id))
                elif sm.state in (StageStatus.RUNNING, StageStatus.RETRYING):
                    self._smove(i, stage_id, sm, StageStatus.STOPPED, attempt, h,
                                "STAGE_STOPPED", stop_reason="interrupted")
                raise
            self._smove(i, stage_id, sm, _done_status(out), attempt, h, "STAGE_COMPLETED",
                        output_ref=ref)
            if attempt > 1:
                self.events.emit("ITER_RETRY_SUCCESS", iteration=i, stage_id=stage_id,
                                 attempt=attempt)
            timings[stage_id] = round((time.monotonic() - t0) * 1000.0, 3)
            self._report(i, stage_id)
            return out

    def _stored_stage_run(self, i: int, stage_id: str, h: str, out: Any) -> None:
        """The KB row of a stage loaded from its stored output, where it is missing: a
        process killed between storing the output and moving the stage to SUCCESS left
        the output but not the row. The attempt is the one whose ``stage_run_id`` the
        marker holds; the times are unknown (now, zero duration)."""
        srid = self.store.marker(i, stage_id).get("stage_run_id")
        if srid in self._recorded_stage_runs():  # the common case: nothing to write
            return
        tries = range(1, self.retry.max_attempts(stage_id) + 1)
        attempt = next((a for a in tries
                        if stage_run_id(self.cfg.run_id, i, stage_id, a, h) == srid), None)
        if attempt is None:
            return
        now = time.time()
        self._kb_write("add_stage_run", rec.StageRunRecord(
            stage_run_id=str(srid), run_id=self.cfg.run_id, iteration=i, stage_id=stage_id,
            attempt=attempt, inputs_hash=h, status=str(_done_status(out)), started_ts=now,
            finished_ts=now, error_code=None, error_class=None,
            output_ref=self._output_ref(i, stage_id)))

    def _recorded_stage_runs(self) -> set[str]:
        """The run's stage_run_ids in the KB, read once per session (a resume loads every
        finished stage again; one read instead of a write for each). A KB that cannot
        be read now answers nothing: the insert-if-absent writes are safe anyway."""
        if self._stage_run_ids is None:
            try:
                frame = self.kb.stage_runs(self.cfg.run_id)
                self._stage_run_ids = set(frame["stage_run_id"]) if len(frame) else set()
            except KBError as exc:
                if exc.error_class is not ErrorClass.TRANSIENT:
                    raise
                return set()
        return self._stage_run_ids

    def _output_ref(self, i: int, stage_id: str) -> str:
        return str(self.store.folder(i, stage_id) / OUTPUT)

    def _stage_error(self, i: int, stage_id: str, sm: Machine[StageStatus], attempt: int,
                     h: str, exc: Exception) -> int:
        """Decide: retry (returns the next attempt), stop or fail (raises)."""
        code, cls = classify(exc)
        max_att = self.retry.max_attempts(stage_id)
        if is_critical(code, cls):
            self._smove(i, stage_id, sm, StageStatus.STOPPED, attempt, h, "STAGE_STOPPED",
                        error_code=code, stop_reason=f"PIPE_STOPPED_CRITICAL: {code}",
                        message=str(exc))
            raise StoppedCritical(f"{stage_id}: {exc}", code="PIPE_STOPPED_CRITICAL") from exc
        if self.retry.should_retry(stage_id, attempt, code, cls):
            delay = self.retry.backoff(i, stage_id, attempt)
            self._smove(i, stage_id, sm, StageStatus.RETRYING, attempt, h,
                        "STAGE_RETRY_SCHEDULED", error_code=code, backoff_sec=delay,
                        message=str(exc))
            self.events.emit("ITER_RETRY_SCHEDULED", iteration=i, stage_id=stage_id,
                             attempt=attempt, max_attempts=max_att, error_code=code)
            self.retry.used_in_iteration += 1
            self.sleep(delay)
            return attempt + 1
        self._smove(i, stage_id, sm, StageStatus.FAILED, attempt, h, "STAGE_FAILED",
                    error_code=code, message=str(exc))
        if attempt > 1:
            self.events.emit("ITER_RETRY_FAIL", iteration=i, stage_id=stage_id,
                             attempt=attempt, error_code=code)
        # the code once: str() of an AlphaloopError starts with it already
        detail = exc.message if isinstance(exc, AlphaloopError) else str(exc)
        if cls is ErrorClass.TRANSIENT:
            raise RetryBudgetExceeded(f"{stage_id}: {code} after {attempt} attempt(s): "
                                      f"{detail}", code="PIPE_RETRY_BUDGET_EXCEEDED") from exc
        raise StageFailed(f"{stage_id}: {detail}", code=code, error_class=cls) from exc

    # ------------------------------------------------------------ stage bodies
    def _scenario(self, i: int, timings: dict[str, float]) -> st.ScenarioOutcome | None:
        sc = self.cfg.scenario
        out = self._stage(i, "S10", (self.brief, sc.policy, self.cfg.generation.families),
                          lambda: st.scenario_intake(self.brief, self.cfg.generation.families,
                                                     sc.policy), timings,
                          skip=not sc.enabled)
        if out is not None and not out.applied and out.problems:
            self._branch(i, "S10", "IGNORE_SCENARIO", effective=True,
                         problems=list(out.problems))
        return out if out is not None and out.applied else None

    def _generate(self, alloc: dict[str, int]) -> list[dict[str, Any]]:
        out = self.generator.generate(alloc, self.cfg.generation.sampler, self.cfg.seed)
        if self.force_baseline:
            out.append(st.baseline_candidate())
        return out

    def _from_kb(self, n: int) -> list[dict[str, Any]]:
        """Mode ``verification``: the ``n`` earlier candidates on this search window with
        the best search Sharpe that no run has verified with engine B yet."""
        tested = self.kb.tested(self.search_ref, engine="A", window="search",
                                exclude_run=self.cfg.run_id)
        verified = self.kb.tested(self.search_ref, engine="B", window="search")
        done = set(verified["strategy_id"]) if len(verified) else set()
        if not len(tested):
            return []
        pool = tested[~tested["strategy_id"].isin(done | self.run_tested)]
        pool = pool.sort_values(["sharpe", "strategy_id"], ascending=[False, True]).head(n)
        ids = [str(sid) for sid in pool["strategy_id"]]
        stored = self.kb.strategy_rows(ids)  # every tested strategy has its row
        out = []
        for sid in ids:
            row = stored[sid]
            out.append({"strategy_id": sid, "spec": row["spec"],
                        "family": row.get("family"), "params": row.get("params") or {}})
        return out

    def _advance(self, alloc: dict[str, int]) -> None:
        """Resume: move the samplers past what this stored stage had asked."""
        self.generator.advance(alloc, self.cfg.generation.sampler, self.cfg.seed)

    def _dq_gate(self) -> dict[str, Any]:
        found = st.data_quality(self.search)
        write_json(self.root / DQ_FILE, found)  # OBS-540, kept even when the run stops
        if found["critical"]:
            raise DataError(f"data-quality CRITICAL: {', '.join(found['critical'])} "
                            f"(see {self.root / DQ_FILE})", code=found["critical"][0],
                            error_class=ErrorClass.CRITICAL)
        return found

    def _backtest_a(self, specs: list[StrategySpec]) -> st.BacktestA:
        """Engine A on the search window, each candidate claimed first: what another run
        on this knowledge base computed (or is computing) is read back, not rerun."""
        by_id = {s.strategy_id: s for s in specs}

        def compute(ids: list[str]) -> dict[str, AResult]:
            return split_a(*backtest_all(self.executor, [by_id[s] for s in ids],
                                         self.search_end, self.costs))

        batch = max(CHUNK, 2 * CHUNK * self.executor.workers)
        got = self._shared(self.search_key, list(by_id), compute, A_CODEC, batch)
        metrics, returns = assemble_a(list(by_id), [got[s] for s in by_id], self.search_end)
        return st.BacktestA(metrics, returns, st.pbo_of(returns))

    def _verify_b(self, specs: dict[str, StrategySpec], ids: list[str]) -> st.Verified:
        """Engine B (with its determinism rerun) on the search window, claimed first;
        one signal evaluator on the search window for every candidate and iteration."""
        ev = self._evaluator("search")

        def compute(part: list[str]) -> dict[str, dict[str, Any]]:
            return {r["strategy_id"]: r
                    for r in st.verify_b(specs, part, self.search, self.model,
                                         evaluator=ev).rows}

        key = work_key("B", "search", self.search_ref, self.model.version)
        got = self._shared(key, ids, compute, JSON_CODEC, len(ids))
        return st.Verified([got[s] for s in ids], 2 * len(ids))

    def _validation(self, specs: list[StrategySpec], sharpe: dict[str, float]
                    ) -> list[dict[str, Any]]:
        """S75's out-of-sample check, claimed first; one evaluator on the search and
        validation windows for every iteration."""
        by_id = {s.strategy_id: s for s in specs}
        ratio = self.cfg.policies.promotion.min_oos_ratio
        ev = self._evaluator("validation")

        def compute(part: list[str]) -> dict[str, dict[str, Any]]:
            return {r["strategy_id"]: r
                    for r in st.validation_check([by_id[s] for s in part], self.validation,
                                                 self.search_end, self.val_end, self.costs,
                                                 sharpe, ratio, evaluator=ev)}

        key = work_key("A", "validation", self.validation.data_ref, self.search_end,
                       self.costs, ratio)
        got = self._shared(key, list(by_id), compute, JSON_CODEC, len(by_id))
        return [got[s] for s in by_id]

    def _holdout(self, specs: list[StrategySpec]) -> dict[str, float]:
        """S80, the holdout (read here only), claimed first like the other checks: the
        claim holds the same number the survivor's RunSummary shows, and only this
        stage reads it back."""
        by_id = {s.strategy_id: s for s in specs}
        ev = self._evaluator("full")

        def compute(part: list[str]) -> dict[str, float]:
            return st.holdout_check([by_id[s] for s in part], self.bars, self.val_end,
                                    self.costs, evaluator=ev)

        key = work_key("A", "holdout", self.bars.data_ref, self.val_end, self.costs)
        got = self._shared(key, list(by_id), compute, JSON_CODEC, len(by_id))
        return {s: float(got[s]) for s in by_id}

    def _shared(self, key: str, ids: list[str], compute: Callable[[list[str]], dict[str, R]],
                codec: Codec[R], batch: int) -> dict[str, R]:
        got, how = self.claims.run(key, ids, compute, codec, batch=max(batch, 1))
        counts: dict[str, Any] = how.as_dict()
        for k in self.shared:
            self.shared[k] += counts[k]
        i, stage_id = self._at
        self.events.emit("WORK_SHARED", iteration=i, stage_id=stage_id, **counts)
        return got

    def _evaluator(self, window: str) -> SignalEvaluator:
        """One signal evaluator per panel the evaluation stages read (the search
        window, search + validation, the whole panel), kept for the whole run: an
        indicator a candidate needs is computed once, not once per stage and check."""
        ev = self._evaluators.get(window)
        if ev is None:
            bars = {"search": self.search, "validation": self.validation,
                    "full": self.bars}[window]
            ev = self._evaluators[window] = SignalEvaluator(bars,
                                                            max_cache_bytes=EVALUATOR_BYTES)
        return ev

    def _relative(self, returns: np.ndarray, trials: int, var: float,
                  specs: list[StrategySpec]) -> pd.DataFrame:
        """Each candidate against the run's benchmark (at its stated net exposure: a
        dollar-neutral book against cash) over the search window: what the policy's
        relative gates read (IR, beta, alpha, ...; the DSR of the excess returns deflated
        exactly as the plain DSR: by every trial of the run and the KB). With a factor
        gate in the policy, ranked books also carry their score's rank IC (``rank_ic_t``)
        on the search window."""
        cols = relative_columns(returns.astype(np.float64), self.bench.returns,
                                self.bench.name, trials, self.search.periods_per_year, var,
                                exposure=benchmark_exposure(specs))
        if self.policy.gates.min_rank_ic_t is not None:
            factors = factor_columns(specs, self.search)
            cols = pd.concat([cols, factors.reset_index(drop=True)], axis=1)
        return cols

    def _lookahead(self, ids: list[str], specs: dict[str, StrategySpec]) -> dict[str, str]:
        """Every shortlisted candidate's signals recomputed on truncated data; a
        difference is CRITICAL (seed 004 §5.1): the run stops, the evidence is kept."""
        from alphaloop.engines.lookahead import check_lookahead

        found: dict[str, str] = {}
        ev = self._evaluator("search")
        for sid in ids:
            report = check_lookahead(specs[sid], self.search, seed=self.cfg.seed,
                                     evaluator=ev)
            if not report.ok:
                found[sid] = report.findings[0].describe()
        if found:
            write_json(self.root / "lookahead.json", found)
            if len(found) >= self.cfg.policies.stops.max_lookahead:
                raise LookaheadError(f"lookahead in {len(found)} shortlisted candidate(s) "
                                     f"(all in lookahead.json): {_grouped(found)}",
                                     code="LOOKAHEAD_POLICY_VIOLATION")
        return found

    def _persist(self, i: int, batch: rec.IterationBatch) -> dict[str, str]:
        how = self.kb.persist_or_queue(batch, self.root / WAL_FILE)
        if how == "queued":
            self._branch(i, "S95", "A_LOCAL_FALLBACK", effective=True)
        return {"persisted": how}

    def _persist_again_if_lost(self, i: int, batch: rec.IterationBatch,
                               done: dict[str, str]) -> None:
        """Resume: an iteration the knowledge base took once but no longer holds (the file
        was moved away, as KB_CORRUPT advises, or lost its -wal) is written again from
        the same stage outputs, so the KB ends as complete as after an unbroken run. A
        queued batch is not: the run's write-ahead log replays it."""
        if done.get("persisted") != "persisted":
            return
        if self._kb_iterations is None:
            held = self.kb.iterations(self.cfg.run_id)
            self._kb_iterations = set() if held.empty else {int(n) for n in held["iteration"]}
        if i not in self._kb_iterations:
            self._persist(i, batch)

    # ------------------------------------------------------------ learning
    def _base_constraints(self) -> ConstraintSet:
        """The run starts from ``base_constraint_set_id`` when the knowledge base holds
        that set (a rule learned by an earlier run), else from no rule."""
        rows = self.kb.constraints(self.cfg.base_constraint_set_id)
        rules = [Constraint.model_validate(r["rule"]) for r in rows]
        if not rules:
            return ConstraintSet.build(())
        return ConstraintSet(constraint_set_id=self.cfg.base_constraint_set_id,
                             rules=tuple(sorted(rules, key=lambda r: r.rule_id)))

    def _constraint_update(self, i: int, fresh: list[dict[str, Any]],
                           fails: list[dict[str, Any]], timings: dict[str, float]
                           ) -> st.Learned | None:
        """S90 (MOD-450/451): this iteration's candidates join the run's observations
        (failed or not); the constraint set is updated and the samplers get its rules.
        With ``learning.enabled: false`` nothing is learned and no rule applies."""
        codes = {f["strategy_id"]: [f["code"], *f["secondary"]] for f in fails}
        self.observations += [
            Observation(family=str(c["family"]), params=dict(c["params"]),
                        codes=tuple(codes.get(c["strategy_id"], ())),
                        strategy_id=c["strategy_id"], iteration=i) for c in fresh]
        if not self.cfg.learning.enabled:
            self._stage(i, "S90", (False,), lambda: None, timings, skip=True)
            return None
        broken = self.generator.broken_rules(fresh)
        learned: st.Learned = self._stage(
            i, "S90", (self.cset.constraint_set_id, sorted(codes.items()),
                       sorted(broken.items()), len(self.observations)),
            lambda: st.learn_constraints(self.cset, self.observations,
                                         self.generator.families(), broken, codes, i,
                                         self.cfg.seed, self.row_cache), timings)
        self.cset = learned.constraint_set
        self._apply_constraints()
        return learned

    def _apply_constraints(self) -> None:
        """The rules in force for the next generation, less those branch B disabled."""
        self.generator.set_constraints(self.cset.active_without(self.disabled_rules))

    # ------------------------------------------------------------ the world
    def _hand_off(self, i: int, survivors: list[StrategySpec],
                  claims: dict[str, dict[str, Any]]) -> None:
        """Seed 000: survivors go to the configured world at the end of their iteration,
        through the SDK client only (DESIGN §2), as one cohort whose evaluation runs
        are keyed by this run: sending them again (a retry, a resumed run walking its
        iterations) changes nothing. The world's policy decides what they may do; the
        loop records the answer in ``world_submissions.jsonl``. An unreachable world
        leaves them pending for the next iteration; a refusal is recorded, and the
        research goes on (the knowledge base holds everything).

        A world with data of its own sources the backtest metrics itself (engine B on
        its data); to a world without, the loop sends the numbers it recorded for each
        survivor (``claims``: engine B's core metrics, its DSR, PSR and PBO), as
        :func:`_recorded_claims` takes them."""
        link = self.cfg.world
        if link is None:  # no world: nothing to hand off, nothing to keep
            return
        self.pending_world += [s for s in survivors if s not in self.pending_world]
        self.pending_claims |= claims
        if not self.pending_world:
            return
        from alphaloop.world.client import WorldClient, WorldClientError, submit_many

        token = os.environ.get(link.token_env)
        try:
            with WorldClient(link.url, token) as http:
                sourced = http.get_world(link.id).data is not None
            results = submit_many(
                link.url, link.id, token, self.pending_world, self.cfg.run_id,
                metrics=None if sourced else {s.strategy_id: self.pending_claims.get(
                    s.strategy_id, {}) for s in self.pending_world})
        except WorldClientError as exc:
            self.events.emit("WORLD_SUBMITTED", iteration=i, error_code=exc.code,
                             message=exc.message, pending=len(self.pending_world))
            append_line(self.root / WORLD_FILE, {"iteration": i, "error_code": exc.code,
                                                 "message": exc.message})
            if exc.error_class is not ErrorClass.TRANSIENT:
                self.pending_world, self.pending_claims = [], {}
            return
        self.pending_world, self.pending_claims = [], {}
        for r in results:
            row: dict[str, Any] = {
                "world_id": r.world_id, "strategy_id": r.strategy_id, "stage": r.stage,
                "downgraded": r.downgraded, "downgrade_reason": r.downgrade_reason,
                "reasons": r.reasons, "evaluation_run": r.evaluation.run_id}
            self.events.emit("WORLD_SUBMITTED", iteration=i, **row)
            append_line(self.root / WORLD_FILE, {"iteration": i, **row})

    @staticmethod
    def submit(strategy: Any, world: str, *, url: str, token: str | None = None,
               **kwargs: Any) -> SubmitResult:
        """Seed 000's ``Runner.submit(strategy, world=...)``: evaluate one strategy (a
        StrategySpec, a spec file or a strategy id) in ``world`` and return the world's
        decision (:class:`alphaloop.world.client.SubmitResult`). The token defaults to
        ``$ALPHALOOP_WORLD_TOKEN``. There is no client-side mode: the stage is the
        world's, downgraded to backtest-only when its decision is missing or stale."""
        from alphaloop.world.client import TOKEN_ENV, submit

        return submit(strategy, world, url=url, token=token or os.environ.get(TOKEN_ENV),
                      **kwargs)

    # ------------------------------------------------------------ branches
    def _generation_branches(self, i: int, ded: st.Deduped) -> list[str]:
        """Seed 004 §6.2: nothing new to test -> widen the families' ranges (A), then
        switch family (C), then a baseline (D). Branch B (disable the newest
        constraints) belongs to the constraints the learner adds."""
        from alphaloop.strategy.templates import FAMILIES

        stops = self.cfg.policies.stops
        self.low_generation = self.low_generation + 1 if len(ded.fresh) < stops.min_deduped \
            else 0
        taken: list[str] = []
        if self.force_baseline:
            self.force_baseline = False
        if ded.fresh or ded.truncated:  # something new was found (or the budget is out)
            return taken
        gen = self.cfg.generation
        widened = {f: r for f in self.generator.samplers
                   if (r := self.generator.widen(f, gen.sampler, self.cfg.seed,
                                                 gen.max_widenings)) is not None}
        if widened:
            return [self._branch(i, "S30", "A_WIDEN_RANGES", effective=True,
                                 ranges=widened)]
        newest = self.cset.newest()
        if newest and not self.disabled_rules:  # B: the newest soft rules, for one round
            self.disabled_rules = newest
            self._apply_constraints()
            return [self._branch(i, "S30", "B_DISABLE_NEWEST_RULES", effective=True,
                                 rules=list(newest),
                                 constraint_set_id=self.cset.constraint_set_id)]
        unused = [f for f in FAMILIES if f not in self.generator.samplers]
        if unused:
            self.extra_families = (*self.extra_families, unused[0])
            taken.append(self._branch(i, "S30", "C_SWITCH_FAMILY", effective=True,
                                      family=unused[0]))
        else:  # a baseline that keeps finding nothing new is a loop
            self.force_baseline = True
            taken.append(self._branch(i, "S30", "D_BASELINE",
                                      effective=not self._took(i - 1, "S30", "D_BASELINE")))
        return taken

    def _shortlist_branches(self, i: int, listed: list[str], scored: pd.DataFrame,
                            threshold: float) -> list[str]:
        """Seed 004 §6.3: an empty shortlist -> generate more next time (C); in
        exploration mode also lower the score threshold (A: never the policy's gates,
        which stay fixed for the run, and at most 30 points); diagnose what binds (D:
        recorded whenever the diagnosis changes; nothing is relaxed, as the gates and
        penalties are the policy's). B (other score weights) is never taken: the
        weights belong to the policy version, fixed within a run as the seed advises."""
        if listed:
            self.empty_shortlists = 0
            self.next_n = self.cfg.generation.candidates_per_iteration
            return []
        taken = self._diagnosis_branch(i, st.binding_gates(scored, threshold))
        self.empty_shortlists += 1
        gen = self.cfg.generation
        self.next_n = min(self.next_n * 2, int(gen.max_growth * gen.candidates_per_iteration))
        again = self._took(i - 1, "S60", "C_MORE_CANDIDATES")  # it did not help last time
        taken.append(self._branch(i, "S60", "C_MORE_CANDIDATES", effective=not again,
                                  next_candidates=self.next_n))
        if self.cfg.mode == "exploration" and self.relax < 30.0:
            self.relax += 10.0
            taken.append(self._branch(i, "S60", "A_RELAX_THRESHOLD", effective=True,
                                      threshold_next=max(self.cfg.policies.promotion
                                                         .score_threshold - self.relax, 0.0)))
        return taken

    def _diagnosis_branch(self, i: int, found: dict[str, Any]) -> list[str]:
        if not found["candidates"] or found["binding"] == self.last_diagnosis:
            return []
        self.last_diagnosis = found["binding"]
        return [self._branch(i, "S60", "D_DIAGNOSE_GATES", effective=True, **found)]

    def _verification_branches(self, i: int, rows: list[dict[str, Any]]) -> list[str]:
        """Seed 004 §6.4: mass engine B failure -> branch by its main cause."""
        failed = [r for r in rows if not r["passed"]]
        limit = self.cfg.policies.stops.b_failure_rate
        if not rows or len(failed) / len(rows) < limit:
            self.top_k = self.cfg.policies.promotion.top_k_to_verify
            return []
        codes = [r["codes"][0] for r in failed]
        cause = max(set(codes), key=lambda c: (codes.count(c), c))
        if cause == "EXECUTION_INFEASIBLE":
            self.top_k = max(self.top_k // 2, 1)
        return [self._branch(i, "S70", f"CAUSE_{cause}", effective=True,
                             failure_rate=len(failed) / len(rows), next_top_k=self.top_k)]

    def _took(self, i: int, stage_id: str, branch: str) -> bool:
        return (i, stage_id, branch) in self.branches.taken

    def _branch(self, i: int, stage_id: str, branch: str, *, effective: bool,
                **details: Any) -> str:
        self.branches.take(i, stage_id, branch, effective=effective)
        # a resumed run walks its finished iterations again: their branches are taken
        # again (the run's state needs them) and say so, as their loaded stages do
        if stage_id in self._loaded:
            details["reused"] = True
        self.events.emit("BRANCH_TAKEN", iteration=i, stage_id=stage_id, branch=branch,
                         **details)
        return f"{stage_id}:{branch}"

    # ------------------------------------------------------------ results
    def _survivors(self, i: int, hold: dict[str, float], short: st.Shortlist,
                   verified: list[dict[str, Any]], robust: list[dict[str, Any]]
                   ) -> list[BestStrategy]:
        scored = {str(r["strategy_id"]): r for r in short.scored.to_dict("records")}
        b = {v["strategy_id"]: v for v in verified}
        r = {x["strategy_id"]: x for x in robust}
        out = []
        for sid, sharpe in hold.items():
            if not sharpe > 0:
                continue
            row = scored[sid]
            out.append(BestStrategy(
                strategy_id=sid, score_total=float(row["score_total"]),
                family=str(row["family"]), params=_loads(row["params"]), iteration=i,
                sharpe_search=float(row["sharpe"]),
                sharpe_validation=float(r[sid]["sharpe_validation"]),
                sharpe_holdout=float(sharpe), dsr=float(row["dsr"]),
                pbo=None if pd.isna(row["pbo"]) else float(row["pbo"]),
                engine_b_sharpe=float(b[sid]["sharpe"])))
        return out

    def _batch(self, i: int, summary: IterationSummary, ded: st.Deduped,
               specs: dict[str, StrategySpec], a: st.BacktestA, short: st.Shortlist,
               verified: list[dict[str, Any]], robust: list[dict[str, Any]],
               fails: list[dict[str, Any]], learned: st.Learned | None
               ) -> rec.IterationBatch:
        """The KB records of the iteration. The holdout is not among them."""
        rid = self.cfg.run_id
        # the spec's JSON form as S20 made it (the same dict as ``model_dump``)
        fam = {c["strategy_id"]: c for c in ded.fresh}
        strategies = [rec.StrategyRecord(strategy_id=sid, spec=fam[sid]["spec"],
                                         family=fam[sid]["family"],
                                         params=fam[sid]["params"])
                      for sid in specs]
        backtests = [_backtest_record(rid, i, {str(k): v for k, v in row.items()}, "A",
                                      "search", self.search_ref)
                     for row in a.metrics.to_dict("records")]
        backtests += [rec.BacktestRecord(
            run_id=rid, iteration=i, strategy_id=v["strategy_id"], engine="B",
            window="search", data_ref=self.search_ref, sharpe=finite(v["sharpe"]),
            **_headline(v["metrics"]), metrics=v["metrics"]) for v in verified]
        backtests += [rec.BacktestRecord(
            run_id=rid, iteration=i, strategy_id=x["strategy_id"], engine="A",
            window="validation", data_ref=self.search_ref,
            sharpe=finite(x["sharpe_validation"]), metrics={"oos_ratio": finite(
                x["oos_ratio"])}) for x in robust]
        scores = [rec.ScoreRecord(run_id=rid, iteration=i, strategy_id=str(r["strategy_id"]),
                                  policy_version=self.policy.policy_version,
                                  score_total=float(r["score_total"]),
                                  passed=bool(r["passed"]), reasons=list(r["reasons"]),
                                  dsr=finite(r["dsr"]), psr=finite(r["psr"]))
                  for r in short.scored.to_dict("records")]
        failures = [rec.FailureRecord(run_id=rid, iteration=i, **f) for f in fails]
        it = rec.IterationRecord(run_id=rid, iteration=i, state=summary.state,
                                 summary=summary.model_dump(mode="json"))
        sets, rules = self._constraint_records(i, learned)
        return rec.IterationBatch(iteration=it, strategies=strategies, backtests=backtests,
                                  scores=scores, failures=failures, constraint_sets=sets,
                                  constraints=rules)

    def _constraint_records(self, i: int, learned: st.Learned | None
                            ) -> tuple[list[rec.ConstraintSetRecord], list[rec.ConstraintRecord]]:
        """A new constraint set version, when the update made one: what changed and why,
        and its rules (keyed by set and rule, as a rule lives on in later versions)."""
        cs = None if learned is None else learned.constraint_set
        if cs is None or cs.iteration != i or not cs.changes:  # no new version this time
            return [], []
        note = "; ".join(f"{c.action} {c.rule_id}: {c.why}" for c in cs.changes)
        # the first version grows from no rule at all, a set never stored: it is a root
        parent = None if cs.parent_id == set_id(()) else cs.parent_id
        sets = [rec.ConstraintSetRecord(constraint_set_id=cs.constraint_set_id,
                                        parent_id=parent, run_id=self.cfg.run_id,
                                        iteration=i, note=note)]
        rules = [rec.ConstraintRecord(
            constraint_id=f"{cs.constraint_set_id}:{r.rule_id}",
            constraint_set_id=cs.constraint_set_id, family=r.family, kind=r.kind,
            rule=r.model_dump(mode="json"), support=r.support, confidence=r.confidence)
            for r in cs.rules]
        return sets, rules

    def _write_summary(self, state: RunState, reason: str | None) -> RunSummary:
        best = sorted(self.survivors, key=lambda b: (-b.score_total, b.strategy_id))
        summary = RunSummary(
            run_id=self.cfg.run_id, status=str(state), stop_reason=reason,
            best_strategies=tuple(best),
            stats=RunStats(iterations=len(self.summaries), backtests=self.backtests,
                           failures=self.failures, constraints_added=self.constraints_added,
                           trials=len(self.prior_ids) + len(set(self.run_sharpes)
                                                            - self.prior_ids),
                           reused=self.reused),
            iterations=tuple(self.summaries))
        write_json(self.root / SUMMARY_FILE, summary.model_dump(mode="json"))
        return summary

    def _write_iteration_failure(self, i: int, exc: AlphaloopError) -> None:
        """Seed 004 §5.3: even a stopped iteration leaves its summary with the reason."""
        write_json(self.root / f"iter_{i:04d}" / "iteration_summary.json",
                   {"iteration": i, "state": str(IterationState.ITER_FAILED),
                    "error_code": exc.code, "error_class": str(exc.error_class),
                    "message": exc.message})

    # ------------------------------------------------------------ recording
    @_uninterrupted
    def _move_run(self, machine: Machine[RunState], to: RunState, *,
                  error_code: str | None = None, stop_reason: str | None = None) -> None:
        before = machine.state
        if before == to:
            return
        moved = machine.move(to, error_code=error_code)
        self._record(moved, None, None)
        self.events.emit("RUN_STATE", status_before=str(before), status_after=str(to),
                         error_code=error_code, stop_reason=stop_reason)
        try:
            self.kb.set_run_status(self.cfg.run_id, str(to))
        except KBError as exc:
            if exc.error_class is not ErrorClass.TRANSIENT:
                raise

    @_uninterrupted
    def _imove(self, i: int, im: Machine[IterationState], to: IterationState, *,
               error_code: str | None = None) -> None:
        before = im.state
        self._record(im.move(to, error_code=error_code), i, None)
        self.events.emit("ITERATION_STATE", iteration=i, status_before=str(before),
                         status_after=str(to), error_code=error_code)
        if self.progress is not None:
            self.progress({"iteration": i, "state": str(to), "backtests": self.backtests,
                           "best": self.best_so_far, "survivors": len(self.survivors)})

    @_uninterrupted
    def _smove(self, i: int, stage_id: str, sm: Machine[StageStatus], to: StageStatus,
               attempt: int, h: str, event: str, *, error_code: str | None = None,
               stop_reason: str | None = None, output_ref: str | None = None,
               **details: Any) -> None:
        before = sm.state
        moved = sm.move(to, error_code=error_code)
        self._record(moved, i, stage_id)
        max_att = self.retry.max_attempts(stage_id)
        self.events.emit(event, iteration=i, stage_id=stage_id, status_before=str(before),
                         status_after=str(to), attempt=attempt, max_attempts=max_att,
                         error_code=error_code, stop_reason=stop_reason, **details)
        if to != StageStatus.RUNNING:
            now = time.time()
            self._kb_write("save_stage_run", rec.StageRunRecord(
                stage_run_id=stage_run_id(self.cfg.run_id, i, stage_id, attempt, h),
                run_id=self.cfg.run_id, iteration=i, stage_id=stage_id, attempt=attempt,
                inputs_hash=h, status=str(to), started_ts=now - moved.duration_ms / 1e3,
                finished_ts=now, error_code=error_code,
                error_class=None, output_ref=output_ref))

    def _record(self, moved: Transition, i: int | None, stage_id: str | None) -> None:
        self._kb_write("record_transition", rec.TransitionRecord(
            run_id=self.cfg.run_id, iteration=i, entity=moved.entity, stage_id=stage_id,
            from_state=moved.from_state, to_state=moved.to_state, ts=moved.ts,
            duration_ms=moved.duration_ms, error_code=moved.error_code))

    def _kb_write(self, method: str, record: rec.TransitionRecord | rec.StageRunRecord) -> None:
        """A small record to the KB; while it is locked, to ``kb_pending.jsonl``
        (fsynced) instead, caught up before the next iteration: nothing is lost, and a
        locked database costs one busy timeout, not one per record."""
        if not self._kb_down:
            try:
                getattr(self.kb, method)(record)
                return
            except KBError as exc:
                if exc.error_class is not ErrorClass.TRANSIENT:
                    raise
                self._kb_down = True
        append_line(self.root / PENDING_FILE, {"method": method,
                                               "record": record.model_dump(mode="json")})

    def _kb_catch_up(self) -> None:
        """Replay queued batches (S95's fallback) and pending records, in order."""
        pending = self.root / PENDING_FILE
        try:
            self.kb.replay(self.root / WAL_FILE)
            for row in read_lines(pending):
                record = _RECORDS[row["method"]].model_validate(row["record"])
                getattr(self.kb, row["method"])(record)
        except KBError as exc:
            if exc.error_class is not ErrorClass.TRANSIENT:
                raise
            self._kb_down = True
            return
        if pending.exists():
            write_atomic(pending, b"")
        self._kb_down = False

    def _waiting(self, n: int) -> None:
        """The live view says why a stage stands still: another run holds results."""
        if self.progress is not None:
            i, stage_id = self._at
            lease = self.cfg.kb.claim_lease_s
            self.progress({"iteration": i, "stage": f"{stage_id}, waiting for {n} results "
                           f"another run claimed (a dead run's claims lapse within "
                           f"{lease:g} s)", "backtests": self.backtests,
                           "best": self.best_so_far, "survivors": len(self.survivors)})

    def _report(self, i: int, stage_id: str) -> None:
        if self.progress is not None:
            self.progress({"iteration": i, "stage": stage_id, "backtests": self.backtests,
                           "best": self.best_so_far, "survivors": len(self.survivors)})


# ---------------------------------------------------------------- helpers
#: The cyclic collector's thresholds while a run runs (restored after it). An iteration
#: allocates some 10^5-10^6 short-lived containers (parameter sets, specs, expression
#: trees, records), nearly all freed by their reference counts; at CPython's default
#: (700, 10, 10) the collector still stopped about 500 times an iteration to walk them
#: (3.9 s of pauses in a 59.5 s bench_loop run; 0.7 s at these values, 51.1 s in all).
RUN_GC_THRESHOLD = (50_000, 20, 10)


def _age_out_of_gc() -> None:
    """Move everything alive now out of the cyclic collector's sight (``gc.freeze``).

    Why: an iteration allocates some 10^5 container objects (specs, expression trees,
    candidate dicts, records) that live just long enough to be promoted, so CPython runs
    a full collection once or twice an iteration, and a full collection walks every
    object the process holds: the panel's frames, the evaluators' caches, the learner's
    rows, everything frozen in earlier iterations included. On the bench_loop workload
    that was 0.16 s a collection, about a tenth of each iteration's wall time. What
    survived into a new iteration is the run's long-lived state; freezing it leaves the
    collector only this iteration's objects to walk. Objects are still freed by their
    reference counts; only a reference cycle that became garbage before the freeze
    waits for the ``gc.unfreeze()`` at the end of the run.
    """
    gc.freeze()


def _run_outcome(exc: AlphaloopError) -> tuple[RunState, str]:
    """Seed 003 §10: CRITICAL -> DONE_EARLY_STOPPED; retries exhausted -> PAUSED
    (resumable); anything else permanent -> FAILED_FATAL."""
    if isinstance(exc, StoppedCritical):
        return RunState.DONE_EARLY_STOPPED, f"PIPE_STOPPED_CRITICAL: {exc.message}"
    if isinstance(exc, RetryBudgetExceeded):
        return RunState.PAUSED, f"PIPE_RETRY_BUDGET_EXCEEDED: {exc.message}"
    if isinstance(exc, BranchLoopDetected):
        return RunState.DONE_EARLY_STOPPED, f"PIPE_BRANCH_LOOP_DETECTED: {exc.message}"
    return RunState.FAILED_FATAL, f"{exc.code}: {exc.message}"


def _failed_summary(i: int, best: float | None, timings: dict[str, float]) -> IterationSummary:
    return IterationSummary(iteration=i, state=str(IterationState.ITER_FAILED),
                            generated_candidates=0, deduped_candidates=0, tested_A=0,
                            reused_A=0, promoted_to_B=0, passed_B=0, passed_robustness=0,
                            survivors=0, failures_created=0, constraints_added=0,
                            best_score=None, best_score_so_far=best, stage_ms=timings)


def run_windows(cfg: RunConfig) -> tuple[Bars, int, int]:
    """The run's panel (``data.source`` within ``data.period``) and where its windows
    end: bars ``[0, search_end)`` are the search window, ``[search_end, val_end)`` the
    validation, ``[val_end, n)`` the holdout. ``ConfigError`` ``INVALID_CONFIG`` for
    data that cannot be read or windows too short to decide anything."""
    from alphaloop.data import load_bars

    try:
        bars = load_bars(cfg.data.source)
    except DataError as exc:
        raise ConfigError(f"data.source ({exc.code}): {exc.message}",
                          code="INVALID_CONFIG") from None
    bars = _period(bars, cfg.data.period.start, cfg.data.period.end)
    _check_interval(bars, cfg.data.bar_interval)
    n = bars.n_bars
    val_end = holdout_split(n, cfg.data.windows.holdout)
    search_end = val_end - round(cfg.data.windows.validation * n)
    if search_end < 60:
        raise ConfigError(f"data: {n} bars leave {search_end} for the search "
                          "window; at least 60 are needed", code="INVALID_CONFIG")
    for window, length in (("validation", val_end - search_end), ("holdout", n - val_end)):
        if length < MIN_WINDOW_BARS:  # a Sharpe ratio of a few bars decides nothing
            raise ConfigError(f"data.windows.{window}: {length} of {n} bars; at least "
                              f"{MIN_WINDOW_BARS} are needed", code="INVALID_CONFIG")
    return bars, search_end, val_end


def _period(bars: Bars, start: str | None, end: str | None) -> Bars:
    if start is None and end is None:
        return bars
    idx = bars.index
    lo = 0 if start is None else int(idx.searchsorted(utc(start)))
    hi = len(idx) if end is None else int(idx.searchsorted(utc(end), side="right"))
    return bars.slice(lo, hi, drop_empty=True)


def _elapsed_sec(text: str) -> float:
    """The wall time earlier sessions of a run used, from its clock file."""
    data = json.loads(text)
    value = data.get("elapsed_sec") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"elapsed_sec is not a number of seconds: {value!r}")
    return float(value)


@contextmanager
def _resume_lock(folder: Path, run_id: str) -> Iterator[None]:
    """One resume of a run at a time on this machine: an exclusive lock on the run
    folder's lock file, from before the owner check until the resumed run ends (the
    owner file is written only when the loop starts, so two resumes started together
    could both pass the check). The system drops the lock of a killed process."""
    import fcntl

    with open(folder / LOCK_FILE, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"run {run_id} is being resumed now by another process on "
                              "this machine: wait for it to end (or stop it)",
                              code="RUN_BUSY") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def window_refs(bars: Bars, search: Bars, validation: Bars) -> dict[str, str]:
    """What a run folder's ``data_ref.json`` records at the start: the data ref of the
    search window, of search + validation, and of the whole panel."""
    return {"search": search.data_ref, "validation": validation.data_ref,
            "all": bars.data_ref}


def data_changed(folder: Path, bars: Bars, search_end: int, val_end: int,
                 search_ref: str) -> list[str]:
    """The windows of the run in ``folder`` whose data differ from those it started on
    (``search_ref``, the knowledge base's, for a folder without ``data_ref.json``)."""
    now = window_refs(bars, bars.slice(0, search_end, drop_empty=True),
                      bars.slice(0, val_end, drop_empty=True))
    return _changed_since_start(folder / DATA_REF_FILE, now, {"search": search_ref})


def _changed_since_start(path: Path, now: dict[str, str], known: dict[str, str]
                         ) -> list[str]:
    """The keys whose ref differs from what the run folder's ``path`` recorded when the
    run started (``known`` when the file is not there)."""
    then = read_run_file(path, json.loads) if path.exists() else known
    return [key for key, ref in then.items() if now.get(key) != ref]


def _running_here(folder: Path) -> int | None:
    """The pid of another live process of this machine running this run, else None
    (an owner on another machine cannot be checked from here: not refused)."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
        pid = int(owner["pid"])
        same_host = owner["host"] == socket.gethostname()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not same_host or pid == os.getpid() or not loop_alive(folder):
        return None
    return pid


def _check_interval(bars: Bars, interval: str | None) -> None:
    """``data.bar_interval``, when given, must be the data's typical bar spacing."""
    if interval is None or bars.n_bars < 2:
        return
    spacing = pd.Series(bars.index).diff().median()
    if spacing != bar_interval(interval):
        raise ConfigError(f"data.bar_interval is {interval} but the bars of "
                          f"{bars.n_bars} dates are {spacing} apart (median)",
                          code="INVALID_CONFIG")


def _read_brief(cfg: RunConfig) -> dict[str, Any] | None:
    if not cfg.scenario.enabled or not cfg.scenario.path:
        return None
    from alphaloop.yamlio import read_yaml

    data = read_yaml(cfg.scenario.path, ConfigError, what="scenario",
                     not_found="INVALID_CONFIG", malformed="INVALID_CONFIG")
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg.scenario.path}: a scenario must be a mapping",
                          code="INVALID_CONFIG")
    return data


def _variance(values: list[float]) -> float:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    return float(np.var(arr, ddof=1)) if arr.size >= 2 else 0.0


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def _loads(text: Any) -> dict[str, Any]:
    return dict(json.loads(str(text)))


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """A record's own columns, from its engine's metrics (as engine A's rows fill them)."""
    trades = metrics.get("n_trades")
    return {"total_return": finite(metrics.get("total_return")),
            "max_drawdown": finite(metrics.get("max_drawdown")),
            "n_trades": None if trades is None else int(trades)}


def _backtest_record(rid: str, i: int, row: dict[str, Any], engine: str, window: str,
                     data_ref: str) -> rec.BacktestRecord:
    metrics = {k: finite(v) for k, v in row.items() if k != "strategy_id"}
    return rec.BacktestRecord(run_id=rid, iteration=i, strategy_id=str(row["strategy_id"]),
                              engine=engine, window=window, data_ref=data_ref,
                              sharpe=finite(row["sharpe"]),
                              sharpe_per_period=finite(row["sr_per_period"]),
                              **_headline(row), metrics=metrics)


def _grouped(found: dict[str, str], shown: int = 3) -> str:
    """Findings by what was found, each with the ids (8 hex digits) it was found in: one
    non-causal operator shared by a family repeats the same finding in every candidate."""
    by_what: dict[str, list[str]] = {}
    for sid, what in found.items():
        by_what.setdefault(what, []).append(sid[:8])
    parts = [f"{what} [{', '.join(ids[:4])}{', …' if len(ids) > 4 else ''}]"
             for what, ids in list(by_what.items())[:shown]]
    more = len(by_what) - shown
    return "; ".join(parts) + (f"; and {more} other finding(s)" if more > 0 else "")
