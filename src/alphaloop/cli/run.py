"""``alphaloop run | resume | status``: the research loop from the command line.

The live view goes to stderr (so ``--json`` output on stdout stays one JSON object);
the RunSummary ends every command.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from alphaloop.cli._common import _friendly, announce_compiles, err, out

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the RunSummary as one JSON "
                                                       "object on stdout.")]
OutDirOpt = Annotated[str | None, typer.Option("--out-dir", help="Where runs live "
                                                                  "(default $ALPHALOOP_HOME/runs).")]


@_friendly
def run(config: Annotated[Path, typer.Argument(metavar="CONFIG.yaml",
                                               help="A RunConfig (YAML).")],
        as_json: JsonOpt = False) -> None:
    """Run the research loop until a budget or a stop rule ends it."""
    from alphaloop.orchestrator import RunConfig, Runner

    cfg = RunConfig.from_yaml(config)
    announce_compiles()
    with _stdout_kept(as_json), _LiveView(cfg.budgets.max_iterations,
                                          cfg.budgets.max_backtests) as view:
        runner = Runner(cfg, progress=view.update)
        summary = runner.run()
    executor = getattr(runner, "executor", None)
    if executor is not None:  # where engine A's work ran: nodes, workers
        err.print(f"work ran on {executor.describe()}", highlight=False, markup=False,
                  soft_wrap=True)
    _print_summary(summary, as_json)
    _kb_behind(runner)
    _write_report(runner.root, as_json)
    _exit_for(summary, runner.root)


@_friendly
def resume(run_id: Annotated[str, typer.Argument(help="The run to continue.")],
           as_json: JsonOpt = False, out_dir: OutDirOpt = None) -> None:
    """Continue a stopped or killed run (a finished one just prints its summary and
    exits 0)."""
    from alphaloop.orchestrator import Runner
    from alphaloop.orchestrator.config import ConfigError
    from alphaloop.orchestrator.folders import run_folder
    from alphaloop.orchestrator.states import FINAL_RUN_STATES

    folder = run_folder(run_id, out_dir)
    announce_compiles()
    stored = _stored_summary(folder)
    ended = stored is not None and stored.status in FINAL_RUN_STATES
    with _stdout_kept(as_json), _LiveView(None, None) as view:
        try:
            runner = Runner.of_run(folder.name, out_dir=str(folder.parent),
                                   progress=view.update)
        except ConfigError as exc:
            if not ended or exc.code != "INVALID_CONFIG":  # damaged files stay refused
                raise
            runner = None  # an ended run whose families only its own process knew
        summary = runner.resume_run() if runner is not None else stored
    assert summary is not None
    _print_summary(summary, as_json)
    if runner is None:
        _write_report(folder, as_json)
        return
    _kb_behind(runner)
    _write_report(folder, as_json)
    if not ended:  # what this resume did decides the exit code
        _exit_for(summary, folder)


@_friendly
def status(run_id: Annotated[str, typer.Argument(help="A run id.")],
           as_json: JsonOpt = False, out_dir: OutDirOpt = None) -> None:
    """Where a run stands: its state and the summary of the iterations so far."""
    from alphaloop.orchestrator.config import RunSummary
    from alphaloop.orchestrator.folders import abandoned, loop_alive, run_folder

    folder = run_folder(run_id, out_dir)
    summary = (_stored_summary(folder) or _recorded_summary(folder)
               or RunSummary(run_id=folder.name, status="RUNNING"))
    _print_summary(summary, as_json, extra={"process_alive": loop_alive(folder)})
    if abandoned(folder, summary.status):
        # the summary is the last one written: the process that wrote it is gone
        err.print(f"no process is running {folder.name} (it was killed or crashed after "
                  f"{summary.stats.iterations} iteration(s)): {_resume_hint(folder)}",
                  highlight=False, markup=False, soft_wrap=True)


def _resume_hint(folder: Path) -> str:
    from alphaloop.orchestrator.folders import runs_root

    where = "" if folder.parent == runs_root(None) else f" --out-dir {folder.parent}"
    return f"`alphaloop resume {folder.name}{where}` continues it"


def register(app: typer.Typer) -> None:
    for command in (run, resume, status):
        app.command()(command)


# ------------------------------------------------------------------ output
@contextmanager
def _stdout_kept(as_json: bool) -> Iterator[None]:
    """With ``--json``, whatever the run's libraries write to the process's stdout
    (Ray's log of a lost node, from its own threads and C++ core) goes to stderr: stdout
    holds the one JSON object printed after the run."""
    if not as_json:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _stored_summary(folder: Path) -> Any:
    """The run's last written RunSummary, or None before its first one."""
    from alphaloop.orchestrator.config import RunSummary
    from alphaloop.orchestrator.folders import SUMMARY_FILE, read_run_file

    path = folder / SUMMARY_FILE
    return read_run_file(path, RunSummary.model_validate_json) if path.exists() else None


def _recorded_summary(folder: Path) -> Any:
    """The last summary the run's knowledge base recorded (after each iteration, and
    when the run ended), for a folder that lost its summary.json (None when the KB has
    none or cannot be read)."""
    from alphaloop.kb import KBError, KnowledgeBase
    from alphaloop.orchestrator.config import RunSummary
    from alphaloop.orchestrator.folders import CONFIG_FILE, read_stored_config

    if not (folder / CONFIG_FILE).is_file():
        return None
    cfg = read_stored_config(folder)
    try:
        with KnowledgeBase(cfg.kb.url, create=False) as kb:
            record = kb.get_run(folder.name)
    except KBError:
        return None
    if record is None or record.summary is None:
        return None
    return RunSummary.model_validate(record.summary)


def _kb_behind(runner: Any) -> None:
    """The run's last records wait in its logs when the knowledge base could not take
    them (locked, unreachable): say so, and exit 75 (EX_TEMPFAIL, try again later)
    instead of a report that would read a knowledge base without them."""
    if not getattr(runner, "kb_behind", False):
        return
    err.print(f"warning: the knowledge base did not take this run's last records; they "
              f"wait in the run's folder ({runner.root}), and `alphaloop resume "
              f"{runner.cfg.run_id} --out-dir {runner.root.parent}` writes them",
              highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(75)


def _exit_for(summary: Any, folder: Path) -> None:
    """A run that did not end DONE_* exits non-zero: 130 when Ctrl-C paused it (as
    shells expect), 75 (EX_TEMPFAIL) when exhausted retries paused it (resume it later),
    1 when it failed (FAILED_FATAL). A paused run says how it continues."""
    if summary.status == "PAUSED":
        err.print(f"paused: {_resume_hint(folder)}", highlight=False, markup=False,
                  soft_wrap=True)
        if summary.stop_reason == "interrupted":
            from alphaloop._console import said_interrupted

            said_interrupted()  # the summary says it
            raise typer.Exit(130)
        raise typer.Exit(75)
    if summary.status == "FAILED_FATAL":
        raise typer.Exit(1)


def _write_report(folder: Path, as_json: bool) -> None:
    """The run report (HTML) next to the run's files; its path on stderr."""
    from alphaloop.evaluation.reports import write_run_report
    from alphaloop.orchestrator.reporting import LOOP_PASSED, loop_iterations

    frame, title, best = loop_iterations(folder)
    if frame.empty:
        return
    path = write_run_report(folder / "report.html", frame, title=title, survivors=best,
                            passed_label=LOOP_PASSED)
    (err if as_json else out).print(f"run report: {path}", highlight=False)


def _print_summary(summary: Any, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    """The summary as a table, or as one JSON object (with ``extra`` keys beside it:
    ``status`` adds whether a process still runs the run)."""
    if as_json:  # plain print: a console could wrap long lines inside strings
        print(json.dumps({**summary.model_dump(mode="json"), **(extra or {})}))
        return
    from rich.table import Table

    s = summary.stats
    out.print(f"run {summary.run_id}: [bold]{summary.status}[/]"
              + (f" ({summary.stop_reason})" if summary.stop_reason else ""))
    out.print(f"iterations {s.iterations}, backtests {s.backtests}, trials {s.trials} "
              f"(deflating the DSR: this run's and earlier runs' on the same data; reused "
              f"{s.reused}), failures {s.failures}, constraints {s.constraints_added}")
    if not summary.best_strategies:
        out.print("no strategy survived every gate (score, engine B, robustness, holdout)")
        return
    table = Table(title="best strategies")
    for col in ("id", "family", "score", "Sharpe search", "validation", "holdout", "DSR"):
        table.add_column(col)
    for b in summary.best_strategies:
        table.add_row(b.strategy_id[:12], b.family or "", f"{b.score_total:.1f}",
                      f"{b.sharpe_search:.2f}", f"{b.sharpe_validation:.2f}",
                      f"{b.sharpe_holdout:.2f}", f"{b.dsr:.3f}")
    out.print(table)


class _LiveView:
    """A one-line Rich status on stderr: iteration, stage, backtests, best score."""

    def __init__(self, iterations: int | None, backtests: int | None) -> None:
        import time

        from rich.status import Status

        self.iterations, self.backtests = iterations, backtests
        self.status = Status("starting", console=err)
        self.clock = time.monotonic
        self.t0 = self.clock()

    def __enter__(self) -> _LiveView:
        self.status.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.status.stop()

    def update(self, event: dict[str, Any]) -> None:
        it = f"{event['iteration']}" + (f"/{self.iterations}" if self.iterations else "")
        bt = f"{event['backtests']}" + (f"/{self.backtests}" if self.backtests else "")
        best = "-" if event.get("best") is None else f"{event['best']:.1f}"
        where = event.get("stage") or event.get("state")
        self.status.update(f"iteration {it} · {where} · backtests {bt} · best score {best}"
                           f" · survivors {event.get('survivors', 0)}{self._eta(event)}")

    def _eta(self, event: dict[str, Any]) -> str:
        """Time left if the iteration budget is used up, from the pace so far."""
        done = event["iteration"] - 1
        if not self.iterations or done < 1:
            return ""
        left = (self.clock() - self.t0) / done * (self.iterations - done)
        return f" · ETA {left / 60:.1f} min" if left >= 60 else f" · ETA {left:.0f} s"
