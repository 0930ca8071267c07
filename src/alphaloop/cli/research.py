"""Research commands: backtest, verify, sweep, evaluate, report, families.

Heavy imports (engines, pandas, data) stay inside the command functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from alphaloop.cli._common import (
    DataOpt,
    FeesOpt,
    SlipOpt,
    _check_output,
    _costs,
    _fmt,
    _friendly,
    _params_text,
    _pct,
    _write_table,
    announce_compiles,
    err,
    out,
    short_id,
)
from alphaloop.errors import AlphaloopError


def register(app: typer.Typer) -> None:
    """Add this module's commands to APP (the order here is the order in --help)."""
    for command in (backtest, verify, sweep, evaluate, factor, report, families):
        app.command()(command)


# ------------------------------------------------------------------ backtest
@_friendly
def backtest(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="Strategy spec file.")],
    data: DataOpt,
    fees_bps: FeesOpt = None,
    slippage_bps: SlipOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    trades_path: Annotated[Path | None, typer.Option(
        "--trades", help="Write the trade list (CSV or Parquet by suffix).")] = None,
) -> None:
    """Backtest one strategy spec with engine A and print its metrics."""
    _check_output(trades_path)
    announce_compiles()
    from alphaloop.data import load_bars
    from alphaloop.engines import backtest as run_backtest
    from alphaloop.engines.metrics import to_jsonable
    from alphaloop.strategy.spec import StrategySpec

    spec = StrategySpec.from_yaml(spec_path)
    costs = _costs(fees_bps, slippage_bps)
    bars = load_bars(data)
    result = run_backtest(spec, bars, costs)
    if trades_path is not None:
        _write_table(result.trades, trades_path)
    if as_json:
        payload = {**to_jsonable(result.metrics), "strategy_id": spec.strategy_id,
                   "data_ref": bars.data_ref, "fees_bps": costs.fees_bps,
                   "slippage_bps": costs.slippage_bps, "periods_per_year": bars.periods_per_year}
        sys.stdout.write(json.dumps(payload, allow_nan=False) + "\n")
        return
    _print_metrics(f"{spec.name or spec.family or spec_path.name} on {bars!r}",
                   result.metrics)
    out.print(f"strategy_id {spec.strategy_id[:16]}…  fees {costs.fees_bps:g} bps, slippage "
              f"{costs.slippage_bps:g} bps per side; annualized with "
              f"{bars.periods_per_year:g} bars/year", highlight=False)


# -------------------------------------------------------------------- verify
@_friendly
def verify(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="Strategy spec file.")],
    data: DataOpt,
    costs_path: Annotated[Path | None, typer.Option(
        "--costs", help="Execution model YAML (default: realistic frictions).")] = None,
    policy_path: Annotated[Path | None, typer.Option(
        "--policy", help="Verification policy YAML (failure thresholds).")] = None,
    capital: Annotated[float | None, typer.Option(
        "--capital", help="Initial capital (overrides the execution model's).")] = None,
    capacity: Annotated[bool, typer.Option(
        "--capacity/--no-capacity", help="Estimate capacity (reruns at higher capital).")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    fills_path: Annotated[Path | None, typer.Option(
        "--fills", help="Write the fills ledger (CSV or Parquet by suffix).")] = None,
) -> None:
    """Verify one strategy with engine B: realistic fills, costs and capacity.

    Prints the metrics, execution statistics, the cost breakdown and any failure
    (EXECUTION_INFEASIBLE, DATA_FAILURE, RISK_MODEL_FAILURE, NON_DETERMINISTIC).
    Exit code 0 whether or not the strategy passes (DATA_FAILURE among the failures
    when some symbols fail the data gate); 2 on bad input, which includes data on
    which no symbol is ever tradable (DATA_FAILURE as the error).
    """
    _check_output(fills_path)
    announce_compiles()
    from alphaloop.data import load_bars
    from alphaloop.engines.engine_b import verify as run_verify
    from alphaloop.engines.execution import ExecutionModel
    from alphaloop.engines.verification import VerificationPolicy, classify_failures
    from alphaloop.strategy.spec import StrategySpec

    spec = StrategySpec.from_yaml(spec_path)
    model = ExecutionModel.from_yaml(costs_path) if costs_path else ExecutionModel()
    if capital is not None:
        model = ExecutionModel.from_dict({**model.model_dump(), "initial_capital": capital},
                                         source="--capital")
    policy = VerificationPolicy.from_yaml(policy_path) if policy_path else VerificationPolicy()
    bars = load_bars(data)
    result = run_verify(spec, bars, model, capacity=capacity)
    failures = classify_failures(
        result, policy, rerun=lambda: run_verify(spec, bars, model, capacity=False))
    if fills_path is not None:
        _write_table(result.fills, fills_path)
    note = _capacity_note(data, bars) if capacity else None
    if as_json:
        payload = {**result.to_dict(), "policy_version": policy.policy_version,
                   "passed": not failures, "execution_feasible": not failures,
                   "failures": [f.to_dict() for f in failures], "capacity_note": note}
        sys.stdout.write(json.dumps(payload, allow_nan=False, default=str) + "\n")
        return
    _print_verification(result, failures, spec_path, note)


def _capacity_note(source: str, bars: Any) -> str | None:
    from alphaloop.data.catalog import is_index_data

    if not is_index_data(source, tuple(bars.symbols)):
        return None
    return (f"{source} holds index levels: their volume is not a tradable instrument's, so "
            "participation, ADV utilization and capacity are not meaningful here")


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    """The core metrics as a two-column table (backtest and verify)."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, _fmt(key, value))
    out.print(table)


def _print_verification(result: Any, failures: list[Any], spec_path: Path,
                        note: str | None = None) -> None:
    spec, ex = result.spec, result.execution
    _print_metrics(f"engine B: {spec.name or spec.family or spec_path.name}",
                   result.metrics)
    exe = Table(title="execution")
    exe.add_column("statistic")
    exe.add_column("value", justify="right")
    cap = ex["capacity"].get("capital")
    bound = "" if ex["capacity"].get("bounded", True) else "≥ "
    rows = [("fill rate", _pct(ex["fill_rate"])),
            ("orders / fills / partial", f"{ex['n_orders']} / {ex['n_fills']} / "
                                         f"{ex['n_partial_fills']}"),
            ("clipped / cancelled", f"{ex['n_clipped']} / {ex['n_cancelled']}"),
            ("participation p95", _pct(ex["participation_p95"])),
            ("ADV utilization p95", _pct(ex["adv_utilization_p95"])),
            ("capacity (Sharpe halves)", "n/a" if cap is None else
             f"{bound}{cap:,.0f}" + (" (not meaningful)" if note else ""))]
    for name, text in rows:
        exe.add_row(name, text)
    out.print(exe)
    if note:
        err.print(f"[yellow]warning:[/] {note}", highlight=False)
    costs = Table(title=f"costs on {ex['initial_capital']:,.0f} capital")
    costs.add_column("component")
    costs.add_column("paid", justify="right")
    for name, value in ex["costs"].items():
        costs.add_row(name, f"{value:,.2f}")
    costs.add_row("bps of equity per year", _fmt("cost", ex["cost_bps_per_year"]))
    out.print(costs)
    for e in result.excluded:
        since = f" from {e['from']}" if e.get("from") else ""
        out.print(f"[yellow]excluded[/] {e['symbol']}{since}: {'; '.join(e['reasons'])}")
    if not failures:
        out.print(f"execution: [green]feasible[/] (status {result.status}); strategy_id "
                  f"{short_id(spec.strategy_id)}; {result.model.version}. Feasible says the "
                  "fills are realistic, not that the strategy passed a scoring gate "
                  "(`alphaloop evaluate`).", highlight=False)
    else:
        out.print("execution: [red]not feasible[/]", highlight=False)
    for f in failures:
        out.print(f"[red]{f.code}[/] ({f.error_class}): {f.message}", highlight=False)



# --------------------------------------------------------------------- sweep
@_friendly
def sweep(
    family: Annotated[str, typer.Argument(help="Template family, e.g. sma_cross.")],
    data: DataOpt,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Results Parquet file.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Candidates to sample.")] = 500,
    sampler: Annotated[str, typer.Option(help="grid | random | sobol | tpe")] = "sobol",
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Sampler seed.")] = 0,
    fees_bps: FeesOpt = None,
    slippage_bps: SlipOpt = None,
    top: Annotated[int, typer.Option(help="Rows of the ranked table to print.")] = 10,
) -> None:
    """Sample candidates of FAMILY, run them through engine A, write one row each."""
    _check_output(out_path)
    announce_compiles()
    from alphaloop.data import load_bars
    from alphaloop.engines.sweep import run_sweep
    costs = _costs(fees_bps, slippage_bps)
    bars = load_bars(data)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True,
                  disable=not err.is_terminal) as bar:  # off a terminal: no blank line
        task = bar.add_task(f"{family} on {bars.name or data}", total=n)
        frame = run_sweep(family, bars, n=n, sampler=sampler, seed=seed, costs=costs,
                          progress=lambda done: bar.update(task, completed=done))
    frame["data_source"] = data  # lets `alphaloop evaluate` find the same data
    _write_table(frame, out_path)
    ranked = frame.sort_values("sharpe", ascending=False, na_position="last").head(top)
    table = Table(title=f"{family}: {len(frame)} candidates on {bars!r}, top {len(ranked)} "
                        "by Sharpe", box=box.SIMPLE_HEAD)
    cols = ["strategy_id", "params", "sharpe", "total_return", "max_drawdown", "n_trades"]
    if out.width >= 100:  # at 80 columns the numbers matter more (--out has them all)
        cols.append("turnover")
    labels = {"strategy_id": "id", "total_return": "return", "max_drawdown": "max dd",
              "n_trades": "trades"}
    for c in cols:
        _add_column(table, labels.get(c, c), numeric=c not in ("strategy_id", "params"))
    for _, row in ranked.iterrows():
        table.add_row(*(_cell(c, row[c]) for c in cols))
    out.print(table)
    _print_sweep_benchmark(bars, costs)
    out.print(f"wrote {out_path} ({len(frame)} rows). Ranked in sample over {len(frame)} "
              "tries: the best of many looks better than it is. `alphaloop spec ID "
              f"--results {out_path}` prints one as YAML.", highlight=False)
    if len(frame) < n:
        _note_short_sweep(family, sampler, n, len(frame))


def _print_sweep_benchmark(bars: Any, costs: Any) -> None:
    """What holding the universe did over the same bars, beside the ranked table."""
    from alphaloop.engines.metrics import return_metrics
    from alphaloop.evaluation.benchmark import resolve_benchmark

    bench = resolve_benchmark(None, bars, costs)
    m = return_metrics(bench.returns, bars.periods_per_year)
    out.print(f"benchmark: {bench.label}, same bars and costs: Sharpe "
              f"{_fmt('sharpe', m['sharpe'])}, return {_fmt('total_return', m['total_return'])}"
              f", max dd {_fmt('max_drawdown', m['max_drawdown'])} (`alphaloop evaluate` "
              "measures every candidate against it).", highlight=False)


def _note_short_sweep(family: str, sampler: str, n: int, got: int) -> None:
    from alphaloop.strategy.templates import get_family

    size = get_family(family).size()
    why = (f"the {family} grid has only {size} points" if sampler == "grid" or got >= size
           else f"the {sampler} sampler found only {got} distinct candidates")
    err.print(f"[yellow]note:[/] --n {n} asked for {n} candidates, but {why}: wrote {got} "
              "rows.", highlight=False)


def _add_column(table: Table, label: str, *, numeric: bool) -> None:
    """Numbers never wrap or get cut; text columns (id, params) fold instead."""
    if numeric:
        table.add_column(label, justify="right", no_wrap=True)
    elif label == "id":
        table.add_column(label, no_wrap=True, min_width=8)
    else:
        table.add_column(label, overflow="fold", min_width=10)


def _cell(column: str, value: Any) -> str:
    if column == "strategy_id":
        return short_id(value)
    if column == "params":
        return _params(value)
    return _fmt(column, value)


def _params(text: str) -> str:
    return _params_text(json.loads(text))



# ------------------------------------------------------------------ evaluate
@_friendly
def evaluate(
    results_path: Annotated[Path, typer.Argument(metavar="RESULTS.parquet",
                                                 help="Output of `alphaloop sweep`.")],
    policy: Annotated[str, typer.Option(help="Scoring policy YAML or a bundled name.")]
    = "default",
    data: Annotated[str | None, typer.Option(
        "--data", "-d", help="Data set (default: the one the sweep used).")] = None,
    top: Annotated[int, typer.Option(min=1, help="Candidates to report in detail.")] = 5,
    n_trials: Annotated[int | None, typer.Option(
        min=1, help="Trials to deflate by, if more were run than the file holds.")] = None,
    holdout: Annotated[float, typer.Option(
        min=0.0, max=0.9, help="Last fraction of the data kept untouched for reporting.")]
    = 0.3,
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the scored table.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")]
    = False,
    benchmark: Annotated[str | None, typer.Option(
        help="What to beat: equal_weight (buy-and-hold of the universe), cash, a SYMBOL "
        "of the data or a FILE with one series (default: the policy's benchmark, else "
        "equal_weight).")] = None,
    kb_url: Annotated[str | None, typer.Option(
        "--kb", help="Knowledge base URL (default sqlite:///$ALPHALOOP_HOME/kb.sqlite).")]
    = None,
) -> None:
    """Score, deflate (DSR, PBO, SPA) and rank a sweep's candidates on the data before
    the holdout, each against its benchmark (beta, alpha, information ratio, excess
    DSR), then report the top ones on the untouched holdout."""
    _check_output(out_path)
    announce_compiles()
    import pandas as pd

    from alphaloop.data import load_bars
    from alphaloop.evaluation.robustness import evaluate_candidates, sweep_rows
    from alphaloop.evaluation.scoring import PolicyRegistry, load_policy
    from alphaloop.kb.store import inspect_before_use

    pol = load_policy(policy)
    registry = PolicyRegistry()
    registry.check(pol)  # a used version can never change content: refused before the work
    inspect_before_use(kb_url)  # where the evaluation is recorded: before the work too
    results = sweep_rows(_read_results(results_path, pd))  # its own --out file works too
    source = data or _single(results, "data_source")
    bars = load_bars(source)
    ev = evaluate_candidates(results, bars, pol, top=top, n_trials=n_trials, holdout=holdout,
                             benchmark=benchmark)
    policy_hash = registry.record(pol)  # recorded once the evaluation stands
    run_path = _record_run(ev, results_path, source, bars, policy_hash, holdout, top, kb_url)
    if out_path is not None:  # each row names the run, for `report --results OUT`
        _write_table(_scored_table(ev, holdout).assign(evaluated_by=run_path.name), out_path)
    if as_json:
        sys.stdout.write(json.dumps([json.loads(r.to_json()) for r in ev.reports]) + "\n")
        return
    _print_evaluation(ev, results_path, bars, holdout)
    out.print(f"run {run_path.name[:16]} recorded in {run_path} "
              f"(alphaloop report --run {run_path.name[:8]})", highlight=False)
    if holdout > 0 and "tpe" in set(results.get("sampler", [])):
        out.print("note: TPE proposed these candidates from results on the full data, "
                  "so the holdout was not untouched during generation.", highlight=False)


def _record_run(ev: Any, results_path: Path, source: str, bars: Any, policy_hash: str,
                holdout: float, top: int, kb_url: str | None) -> Path:
    """Store this evaluation as a run (idempotent: same inputs, same run_id), with the
    reports exactly as printed, so that `report` shows these numbers; and index it in
    the knowledge base."""
    import pandas as pd

    from alphaloop.kb import KnowledgeBase
    from alphaloop.kb.runs import (
        RunRecord,
        file_sha256,
        iteration_row,
        record_in_kb,
        run_id_for,
        save_run,
        stamp,
    )

    digest = file_sha256(results_path)
    run_id = run_id_for("evaluate", digest, policy_hash, bars.data_ref, f"{holdout!r}",
                        str(ev.n_trials), f"top={top}", f"benchmark={ev.extra['benchmark']}")
    bench = ev.extra.get("benchmark_metrics") or {}
    created_at, created_ns = stamp()
    record = RunRecord(
        run_id=run_id, kind="evaluate", created_at=created_at, created_ns=created_ns,
        policy_version=ev.policy_version, policy_hash=policy_hash, data_source=source,
        data_ref=bars.data_ref, n_candidates=len(ev.frame), n_trials=ev.n_trials,
        holdout=holdout, results_file=str(results_path.resolve()), results_sha256=digest,
        top=top, pbo=ev.pbo, spa_pvalue=ev.spa_pvalue,
        var_trial_sharpe=ev.extra["var_trial_sharpe"],
        expected_max_sharpe=ev.extra["sr0"] * ev.extra["periods_per_year"] ** 0.5,
        benchmark=ev.extra["benchmark"], benchmark_label=ev.extra["benchmark_label"],
        benchmark_sharpe=bench.get("sharpe"),
        spa_pvalue_benchmark=ev.extra["spa_pvalue_benchmark"],
        n_beat_benchmark=ev.extra["n_beat_benchmark"],
        data_warnings=ev.extra["data_warnings"], costs=_results_costs(ev.frame))
    candidates = ev.frame.assign(reasons=ev.frame["reasons"].map("; ".join),
                                 failed_gates=ev.frame["failed_gates"].map(",".join))
    reports = [json.loads(r.to_json()) for r in ev.reports]
    row = iteration_row(ev.frame, beat_benchmark=ev.extra["n_beat_benchmark"])
    path = save_run(record, pd.DataFrame([row]), candidates, reports=reports)
    with KnowledgeBase(kb_url) as kb:  # beside the loop's runs: `alphaloop kb runs`
        record_in_kb(kb, record, ev.frame, row)
    return path


def _results_costs(frame: Any) -> dict[str, float] | None:
    """The sweep's costs as its results file recorded them (``fees_bps``,
    ``slippage_bps`` per side), when one value each holds for every candidate."""
    cols = [c for c in ("fees_bps", "slippage_bps") if c in frame.columns]
    if len(cols) < 2 or any(frame[c].nunique(dropna=False) != 1 for c in cols):
        return None
    return {c: float(frame[c].iloc[0]) for c in cols}


# -------------------------------------------------------------------- factor
@_friendly
def factor(
    expression: Annotated[str, typer.Argument(
        help="A numeric expression of the strategy language, e.g. 'roc(close, 20)'.")],
    data: Annotated[str, typer.Option("--data", "-d", help="Data set name or file.")],
    horizon: Annotated[int, typer.Option(min=1, help="Forward return horizon in bars, "
                                         "from the open after the decision bar.")] = 1,
    quantiles: Annotated[int, typer.Option(min=2, max=20)] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the numbers as JSON.")]
    = False,
    out_path: Annotated[Path | None, typer.Option(
        "--out", help="Write the factor page (HTML) here.")] = None,
) -> None:
    """How well EXPRESSION ranks the symbols, before any backtest: IC and rank IC against
    the forward return (Newey-West t), ICIR, decay over horizons, quantile returns and
    the top-minus-bottom spread."""
    _check_output(out_path, suffixes=None)
    from alphaloop.data import load_bars
    from alphaloop.evaluation.factors import evaluate_factor

    rep = evaluate_factor(expression, load_bars(data), horizon=horizon, quantiles=quantiles)
    if out_path is not None:
        from alphaloop.evaluation.reports import write_factor_report

        write_factor_report(out_path, rep)
    if as_json:
        sys.stdout.write(rep.model_dump_json(exclude={"ic", "rank_ic"}) + "\n")
        return
    _print_factor(rep)
    if out_path is not None:
        out.print(f"factor page: {out_path}", highlight=False)


def _print_factor(rep: Any) -> None:
    def f(v: float | None, spec: str = ".4f") -> str:
        return "—" if v is None else format(v, spec)

    out.print(f"factor {rep.expression}: horizon {rep.horizon} bar(s), {rep.n_bars} bars "
              f"with an IC", highlight=False)
    out.print(f"  IC {f(rep.ic_mean)} (t {f(rep.ic_t, '.2f')}), rank IC "
              f"{f(rep.rank_ic_mean)} (t {f(rep.rank_ic_t, '.2f')}; Newey-West, "
              f"{rep.lags} lags), ICIR {f(rep.icir, '.3f')}", highlight=False)
    out.print("  rank IC by horizon: " + ", ".join(
        f"{h}: {f(v)}" for h, v in rep.decay.items()), highlight=False)
    out.print("  quantile mean returns (low -> high): " + ", ".join(
        f(v, ".5f") for v in rep.quantile_returns) + f"; spread {f(rep.spread, '.5f')}",
        highlight=False)


# -------------------------------------------------------------------- report
@_friendly
def report(
    strategy: Annotated[str | None, typer.Option(
        help="Strategy id (or a unique prefix): a per-strategy report.")] = None,
    run: Annotated[str | None, typer.Option(
        help="Run id (or a unique prefix): a per-run report; with --strategy, the run "
        "whose numbers to show.")] = None,
    results_path: Annotated[Path | None, typer.Option(
        "--results", help="Only runs that evaluated this results file as it is now.")]
    = None,
    policy: Annotated[str | None, typer.Option(
        help="Only runs scored with this policy (YAML or bundled name).")] = None,
    data: Annotated[str | None, typer.Option("--data", "-d",
                                             help="Only runs on this data set.")] = None,
    out_path: Annotated[Path | None, typer.Option(
        "--out", help="HTML file to write (default: ./reports/).")] = None,
    self_contained: Annotated[bool, typer.Option(
        "--self-contained", help="Inline plotly.js (~4.5 MB) for a page that travels "
        "alone; by default it is written once per folder as plotly.min.js.")] = False,
    out_dir: Annotated[str | None, typer.Option(
        "--out-dir", help="Where loop runs live (a run config's out_dir; default "
        "$ALPHALOOP_HOME/runs).")] = None,
) -> None:
    """Write an HTML report of one strategy or one run (in ./reports/ unless --out);
    print its path. The page opens offline next to the plotly.min.js it shares with
    the folder's other reports (--self-contained: one file).

    A strategy report shows the numbers the newest recorded `evaluate` of the strategy
    recorded (or the run given by --run, an `evaluate` or a research loop), with its
    holdout and trial count; a strategy no `evaluate` scored is shown as the newest
    research loop that tested it recorded it (the default knowledge base's runs)."""
    _check_output(out_path, suffixes=None)
    if strategy is None and run is None:
        raise AlphaloopError("report needs --strategy ID or --run ID", code="REPORT_TARGET")
    if strategy is None and run is not None:
        from alphaloop.evaluation.reports import write_run_report
        from alphaloop.kb.runs import load_run
        from alphaloop.orchestrator.reporting import LOOP_PASSED, find_loop_run, loop_iterations

        loop = find_loop_run(run, out_dir)
        if loop is not None:  # a research loop run: iteration by iteration
            frame, title, best = loop_iterations(loop)
            path = out_path or Path("reports") / f"run_{loop.name[:16]}.html"
            out.print(str(write_run_report(path, frame, title=title, survivors=best,
                                           passed_label=LOOP_PASSED,
                                           self_contained=self_contained)), highlight=False,
                      soft_wrap=True)  # a path whole, to copy
            return
        rec = load_run(_evaluate_run(run, out_dir))
        r = rec.record
        title = (f"run {r.run_id[:12]}: {r.kind} of {r.n_candidates} candidates on "
                 f"{r.data_source}, policy {r.policy_version}")
        path = out_path or Path("reports") / f"run_{r.run_id[:16]}.html"
        out.print(str(write_run_report(path, rec.iterations, title=title,
                                       self_contained=self_contained)), highlight=False,
                      soft_wrap=True)  # a path whole, to copy
        return
    assert strategy is not None
    _strategy_report(strategy, run, results_path, policy, data, out_path, self_contained,
                     out_dir)


def _loop_strategy_report(folder: Path, strategy: str, out_path: Path | None,
                          self_contained: bool) -> None:
    """The strategy as the loop run of ``folder`` recorded it."""
    from alphaloop.evaluation.reports import write_strategy_report
    from alphaloop.orchestrator.reporting import loop_strategy_page

    page = loop_strategy_page(folder, strategy)
    path = out_path or Path("reports") / f"strategy_{page.result.spec.strategy_id[:16]}.html"
    out.print(str(write_strategy_report(
        path, page.result, page.bars, robustness=page.robustness, recorded=page.recorded,
        self_contained=self_contained, benchmark=page.benchmark)), highlight=False,
        soft_wrap=True)  # a path whole, to copy


def _newest_loop_run(strategy: str) -> str | None:
    """The newest loop run in the default knowledge base that backtested ``strategy``
    (None without a knowledge base, or when no loop run tested it)."""
    from alphaloop.kb.store import KBError, KnowledgeBase, default_url

    url = default_url()
    if not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    with KnowledgeBase(url, create=False) as kb:
        try:
            record = kb.strategy(strategy)
        except KBError as exc:
            if exc.code == "KB_NOT_FOUND":
                return None
            raise
        runs = {b["run_id"] for b in record["backtests"]}
        loops = [r for r in (kb.get_run(run_id) for run_id in runs)
                 if r is not None and (r.config or {}).get("kind") != "evaluate"]
    return max(loops, key=lambda r: (r.created_ns, r.run_id)).run_id if loops else None


def _evaluate_run(prefix: str, out_dir: str | None) -> Path:
    """The recorded `evaluate` run ``prefix`` names, for ``report --run`` that found no
    loop run: not found, the message names both places it looked."""
    from alphaloop.kb.runs import RunError, find_run, runs_dir
    from alphaloop.orchestrator.folders import runs_root

    try:
        return find_run(prefix)
    except RunError as exc:
        if exc.code != "RUN_NOT_FOUND":
            raise
        raise RunError(f"no run matches {prefix!r}: no loop run under {runs_root(out_dir)} "
                       f"and no recorded evaluate under {runs_dir()}",
                       code="RUN_NOT_FOUND") from None


def _strategy_report(strategy: str, run_prefix: str | None, results_path: Path | None,
                     policy: str | None, data: str | None, out_path: Path | None,
                     self_contained: bool = False, out_dir: str | None = None) -> None:
    """Render the numbers the run recorded; only the drawn series are recomputed, with
    the run's data and costs. The run is --run's (a loop run, else a recorded
    `evaluate`), else the newest `evaluate` that evaluated the strategy, else (without
    the evaluate filters) the newest loop run the default knowledge base says tested it."""
    announce_compiles()
    from alphaloop.data import load_bars
    from alphaloop.engines import CostModel
    from alphaloop.engines import backtest as run_backtest
    from alphaloop.evaluation.benchmark import resolve_benchmark
    from alphaloop.evaluation.reports import write_strategy_report
    from alphaloop.kb.runs import RunError, check_results_file
    from alphaloop.orchestrator.reporting import find_loop_run
    from alphaloop.strategy.spec import StrategySpec

    filters = (results_path, policy, data) != (None, None, None)
    loop = find_loop_run(run_prefix, out_dir) if run_prefix and not filters else None
    if loop is not None:
        _loop_strategy_report(loop, strategy, out_path, self_contained)
        return
    try:
        run = _pick_run(strategy, run_prefix, results_path, policy, data)
    except RunError as exc:
        # no evaluate evaluated it (the one case of this code without --run or filters)
        newest = (_newest_loop_run(strategy) if exc.code == "RUN_NOT_FOUND"
                  and run_prefix is None and not filters else None)
        if newest is None:
            raise
        folder = find_loop_run(newest, out_dir)
        if folder is None:
            raise RunError(f"run {newest[:12]} tested strategy {strategy!r} but its folder is "
                           "not where the knowledge base recorded it; give --out-dir DIR",
                           code="RUN_NOT_FOUND") from None
        _loop_strategy_report(folder, strategy, out_path, self_contained)
        return
    from_file = check_results_file(run.record)  # refuses a results file changed since
    sid = _resolve_id(run.candidates, strategy)
    bars = load_bars(run.record.data_source)
    if bars.data_ref != run.record.data_ref:
        raise RunError(f"data {run.record.data_source!r} changed since run "
                       f"{run.record.run_id[:16]} used it ({run.record.data_ref} then, "
                       f"{bars.data_ref} now)", code="RUN_DATA_CHANGED")
    row = run.candidates[run.candidates["strategy_id"] == sid].iloc[0]
    spec = StrategySpec.model_validate_json(row["spec"])
    costs = CostModel(fees_bps=float(row["fees_bps"]), slippage_bps=float(row["slippage_bps"]))
    result = run_backtest(spec, bars, costs)
    robustness, recorded = _recorded_numbers(run, row, result, bars, from_file)
    path = out_path or Path("reports") / f"strategy_{sid[:16]}.html"
    # the run's benchmark, redrawn for the charts like the strategy's own series
    bench = resolve_benchmark(run.record.benchmark, bars, costs)
    written = write_strategy_report(path, result, bars, robustness=robustness,
                                    recorded=recorded, self_contained=self_contained,
                                    benchmark=bench)
    out.print(str(written), highlight=False, soft_wrap=True)  # a path whole, to copy


def _pick_run(strategy: str, run_prefix: str | None, results_path: Path | None,
              policy: str | None, data: str | None) -> Any:
    """The run given by --run, else the newest recorded run that evaluated the strategy
    and matches the filters (results content, policy content, data)."""
    from alphaloop.kb.runs import RunError, file_sha256, find_run, load_run, runs_with_strategy

    if run_prefix is not None:
        run = load_run(find_run(run_prefix))
        if not run.candidates["strategy_id"].str.startswith(strategy).any():
            raise RunError(f"run {run.record.run_id[:16]} did not evaluate a strategy "
                           f"{strategy!r}", code="RUN_NOT_FOUND")
        return run
    digest = policy_hash = data_ref = None
    if results_path is not None:
        if not results_path.is_file():
            raise AlphaloopError(f"results file not found: {results_path}",
                                 code="EVAL_NOT_FOUND")
        scored_by = _evaluated_by(results_path)
        if scored_by is not None and policy is None and data is None:
            return _pick_run(strategy, scored_by, None, None, None)
        digest = file_sha256(results_path)
    if policy is not None:
        from alphaloop.evaluation.scoring import load_policy

        policy_hash = load_policy(policy).content_hash
    if data is not None:
        from alphaloop.data import load_bars

        data_ref = load_bars(data).data_ref
    runs = runs_with_strategy(strategy, results_sha256=digest, policy_hash=policy_hash,
                              data_ref=data_ref)
    if not runs:
        what = "".join([f" of {results_path} as it is now" if results_path else "",
                        f" with policy {policy}" if policy else "",
                        f" on data {data}" if data else ""])
        raise RunError(f"no recorded run evaluated a strategy {strategy!r}{what}; run "
                       "`alphaloop evaluate RESULTS.parquet` first, or name a research "
                       "loop's run with --run RUN (and --out-dir DIR if it has its own)",
                       code="RUN_NOT_FOUND")
    return runs[0]


def _evaluated_by(path: Path) -> str | None:
    """The run that wrote ``path`` when it is an ``evaluate --out`` table (every row
    names it), else None (a sweep's results: the run is found by their content)."""
    import pandas as pd

    try:
        frame = (pd.read_csv(path, usecols=["evaluated_by"])
                 if path.suffix.lower() == ".csv" else
                 pd.read_parquet(path, columns=["evaluated_by"]))
    except Exception:  # no such column, or not a table at all: not a scored table
        return None
    names = set(frame["evaluated_by"].dropna().astype(str))
    return names.pop() if len(names) == 1 else None


def _recorded_numbers(run: Any, row: Any, result: Any, bars: Any,
                      from_file: bool) -> tuple[dict[str, Any], Any]:
    """The robustness panel and the metrics the run recorded for one candidate, and the
    Source rows that say where each comes from."""
    from alphaloop.engines.metrics import CORE_METRICS, return_metrics
    from alphaloop.evaluation.reports import MetricColumn, Recorded
    from alphaloop.evaluation.robustness import holdout_split

    r = run.record
    sid = str(row["strategy_id"])
    report = run.report_of(sid)
    split = holdout_split(bars.n_bars, r.holdout)
    held = report.get("holdout_metrics") if report is not None else None
    if r.holdout > 0 and held is None:  # not among the recorded top: computed here
        held = return_metrics(result.returns.to_numpy()[split:], bars.periods_per_year)
    robustness = report if report is not None else _row_report(run, row, held)
    selection = {k: row[k] for k in CORE_METRICS if k in row.index}
    sel_label = (f"selection: first {1 - r.holdout:.0%} (recorded)" if r.holdout > 0
                 else "all bars (recorded)")
    columns = [MetricColumn("selection", sel_label, selection)]
    if r.holdout > 0:
        how = "recorded" if report is not None else "computed for this page"
        columns.append(MetricColumn("holdout", f"holdout: last {r.holdout:.0%} ({how})",
                                    held or {}))
    source = _source_rows(run, sid, bars, split, report is not None, from_file)
    start = bars.index[split] if r.holdout > 0 else None
    return robustness, Recorded(source=source, metrics=columns, holdout_start=start)


def _row_report(run: Any, row: Any, held: dict[str, Any] | None) -> dict[str, Any]:
    """A candidate outside the recorded top: its recorded row, in a report's keys."""
    r = run.record
    keys = ("rank", "score_total", "passed", "reasons", "sharpe", "psr", "dsr", "n_trials",
            "beta", "alpha_ann", "alpha_t", "information_ratio", "tracking_error",
            "up_capture", "down_capture", "excess_psr", "excess_dsr")
    panel: dict[str, Any] = {"strategy_id": str(row["strategy_id"]),
                             "policy_version": r.policy_version, "data_ref": r.data_ref}
    # the row's sharpe is the selection window's: named as in the recorded reports
    panel |= {("sharpe_sel" if k == "sharpe" else k):
              (row[k].item() if hasattr(row[k], "item") else row[k])
              for k in keys if k in row.index}
    panel |= {"var_trial_sharpe": r.var_trial_sharpe,
              "expected_max_sharpe": r.expected_max_sharpe, "pbo": r.pbo,
              "spa_pvalue": r.spa_pvalue, "holdout_fraction": r.holdout,
              "sharpe_holdout": (held or {}).get("sharpe"), "holdout_metrics": held,
              "benchmark": r.benchmark, "benchmark_label": r.benchmark_label}
    return panel


def _source_rows(run: Any, sid: str, bars: Any, split: int, in_top: bool,
                 from_file: bool) -> list[tuple[str, str]]:
    r = run.record
    first, last = bars.index[0].date(), bars.index[-1].date()
    if r.holdout > 0:
        window = (f"first {1 - r.holdout:.0%}: {split} bars, {first} .. "
                  f"{bars.index[split - 1].date()}")
        holdout = (f"last {r.holdout:.0%}: {bars.n_bars - split} bars, "
                   f"{bars.index[split].date()} .. {last} (holdout {r.holdout!r})")
    else:
        window, holdout = f"all {bars.n_bars} bars, {first} .. {last}", "none (holdout 0.0)"
    top = f"top {r.top}" if r.top is not None else "its top candidates"
    detail = ("recorded (this candidate was in the run's " + top + ")" if in_top else
              f"not recorded: the run kept detailed checks for {top} only; "
              + ("holdout metrics computed for this page from the drawn backtest"
                 if r.holdout > 0 else "none shown"))
    results = (f"{r.results_file} (sha256 {r.results_sha256}, unchanged)" if from_file else
               f"{r.results_file}: not read (gone, or not hashed by this run); the "
               "run's stored candidates are used")
    return [
        ("run", f"{r.run_id} ({r.kind}, recorded {r.created_at})"),
        ("results", results),
        ("policy", f"{r.policy_version} (sha256 {r.policy_hash})"),
        ("data", f"{r.data_source} ({r.data_ref})"),
        ("selection window", window), ("holdout", holdout),
        ("trial count", f"{r.n_trials} (DSR deflates every Sharpe by this many trials)"),
        ("benchmark", f"{r.benchmark_label} ({r.n_beat_benchmark} of {r.n_candidates} "
                      "candidates beat it significantly)" if r.benchmark else
                      "none recorded (a run from before benchmarks); charts use "
                      "equal_weight"),
        ("candidates", f"{r.n_candidates} scored; PBO and SPA are of the whole set"),
        ("robustness detail", detail),
        ("charts", f"backtest of {sid[:16]} and its benchmark recomputed for this page on "
                   f"all {bars.n_bars} bars with the run's costs; the dashed line marks the "
                   "holdout start" if r.holdout > 0 else
                   f"backtest of {sid[:16]} and its benchmark recomputed for this page with "
                   "the run's costs"),
    ]


def _resolve_id(results: Any, prefix: str) -> str:
    if "strategy_id" not in results.columns:
        raise AlphaloopError("results lack a strategy_id column", code="EVAL_MISSING_COLUMN")
    hits = sorted({s for s in results["strategy_id"] if s.startswith(prefix)})
    if len(hits) != 1:
        what = "no strategy" if not hits else f"{len(hits)} strategies"
        raise AlphaloopError(f"{what} in the results match id {prefix!r}",
                             code="EVAL_UNKNOWN_ID")
    return str(hits[0])


def _read_results(path: Path, pd: Any) -> Any:
    if not path.is_file():
        raise AlphaloopError(f"results file not found: {path}", code="EVAL_NOT_FOUND")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise AlphaloopError(f"{path}: not a readable Parquet file: {exc}",
                             code="EVAL_READ_FAILED") from None


def _single(frame: Any, column: str) -> str:
    values = set(frame[column]) if column in frame.columns else set()
    if len(values) != 1:
        raise AlphaloopError(f"cannot tell which data set the results used ({column}: "
                             f"{sorted(values) or 'missing'}); pass --data",
                             code="EVAL_DATA_UNKNOWN")
    return str(values.pop())


def _late_column(holdout: float) -> str:
    # with a holdout: its Sharpe; without: the window's last 30 %, which the selection saw
    return "sharpe_holdout" if holdout > 0 else "sharpe_last30"


def _report_windows(r: Any) -> tuple[float | None, float | None]:
    """A report's Sharpe after the selection (holdout, else the last 30 % of the
    selection window) and its Sharpe at twice the costs."""
    if r.holdout_metrics is not None:
        late = r.holdout_metrics.get("sharpe")
    else:
        late = r.selection_split.oos_metrics.get("sharpe") if r.selection_split else None
    return late, (r.cost_stress.sharpe_at_survive if r.cost_stress else None)


def _scored_table(ev: Any, holdout: float) -> Any:
    """``evaluate --out``: every candidate's row (metrics of the selection window, also
    as ``sharpe_sel``) and, for the reported top, the columns of the printed table."""
    windows = {r.strategy_id: _report_windows(r) for r in ev.reports}
    ids = ev.frame["strategy_id"]
    return ev.frame.assign(
        reasons=ev.frame["reasons"].map("; ".join),
        failed_gates=ev.frame["failed_gates"].map(",".join),
        sharpe_sel=ev.frame["sharpe"],
        **{name: ids.map({sid: w[k] for sid, w in windows.items()}).astype(float)
           for k, name in enumerate((_late_column(holdout), "2x_cost"))})


def _print_evaluation(ev: Any, path: Path, bars: Any, holdout: float) -> None:
    pbo = "n/a" if ev.pbo is None else f"{ev.pbo:.2f}"
    spa = "n/a" if ev.spa_pvalue is None else f"{ev.spa_pvalue:.3f}"
    sr0 = ev.extra["sr0"] * (ev.extra["periods_per_year"] ** 0.5)
    out.print(f"{len(ev.frame)} candidates from {path} on {bars!r}; policy "
              f"{ev.policy_version}. "
              + (f"Selection on the first {1 - holdout:.0%} of the bars; the last "
                 f"{holdout:.0%} is held out.\n" if holdout > 0 else "No holdout.\n")
              + f"Trials counted: {ev.n_trials} (DSR deflates every Sharpe "
              f"by all of them); the best of that many pure-noise strategies would show an "
              f"annualized Sharpe of about {sr0:.2f}.\n"
              f"PBO of picking the in-sample best: {pbo}; SPA p-value (best vs cash, "
              f"data-snooping adjusted): {spa}.", highlight=False)
    _print_benchmark(ev)
    table = Table(title=f"top {len(ev.reports)} by score", box=box.SIMPLE_HEAD, pad_edge=False)
    late = _late_column(holdout)
    wide = out.width >= 100  # at 80 columns params move below the table
    heads = ["#", "id", *(["params"] if wide else []), "score", "gates", "sharpe_sel", "DSR",
             late, "2x_cost"]
    for h in heads:
        _add_column(table, h, numeric=h not in ("id", "params"))
    for r in ev.reports:
        oos, stress = _report_windows(r)
        table.add_row(str(r.rank), short_id(r.strategy_id),
                      *([_params_text(r.params)] if wide else []), f"{r.score_total:.1f}",
                      "passed" if r.passed else "failed", _fmt("sharpe", r.sharpe_sel),
                      _fmt("dsr", r.dsr), _fmt("sharpe", oos), _fmt("sharpe", stress))
    out.print(table)
    out.print("sharpe_sel: annualized Sharpe on the selection window; "
              + ("sharpe_holdout: on the untouched holdout" if holdout > 0 else
                 "sharpe_last30: on its last 30 % (seen by the selection)")
              + "; 2x_cost: sharpe_sel at twice the costs. `alphaloop spec ID` prints one "
              "as YAML.", highlight=False)
    _print_relative(ev)
    for r in ev.reports:
        why = f": {'; '.join(r.reasons)}" if r.reasons else ""
        if r.reasons or not wide:
            out.print(f"#{r.rank} {short_id(r.strategy_id)} {_params_text(r.params)}{why}",
                      highlight=False)


def _print_benchmark(ev: Any) -> None:
    """The benchmark line (its metrics as the evaluation recorded them) and the data
    warnings every evaluation carries."""
    for warning in ev.extra["data_warnings"]:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    m = ev.extra["benchmark_metrics"]
    p = ev.extra["spa_pvalue_benchmark"]
    out.print(f"Benchmark: {ev.extra['benchmark_label']}: Sharpe {_fmt('sharpe', m['sharpe'])}, "
              f"CAGR {_fmt('cagr', m['cagr'])}, max drawdown "
              f"{_fmt('max_drawdown', m['max_drawdown'])} on the selection window. "
              f"{ev.extra['n_beat_benchmark']} of {len(ev.frame)} candidates beat it "
              f"significantly (excess DSR >= {ev.extra['beat_threshold']:g}); SPA p-value "
              f"(best vs the benchmark): {'n/a' if p is None else f'{p:.3f}'}.",
              highlight=False)


def _print_relative(ev: Any) -> None:
    """Each top candidate beside its benchmark, on the selection window (the numbers of
    the reports, as recorded)."""
    table = Table(title=f"top {len(ev.reports)} against the benchmark", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    heads = ["#", "id", "sharpe", "bench", "beta", "alpha", "alpha_t", "IR", "xDSR"]
    for h in heads:
        _add_column(table, h, numeric=h != "id")
    for r in ev.reports:
        bench = (r.benchmark_metrics or {}).get("sharpe")
        alpha = "n/a" if r.alpha_ann is None else f"{100 * r.alpha_ann:.2f}%"
        table.add_row(str(r.rank), short_id(r.strategy_id), _fmt("sharpe", r.sharpe_sel),
                      _fmt("sharpe", bench), _fmt("beta", r.beta), alpha,
                      _fmt("t", r.alpha_t), _fmt("ir", r.information_ratio),
                      _fmt("dsr", r.excess_dsr))
    out.print(table)
    out.print("bench: the benchmark's Sharpe on the same window; beta and alpha (a year) "
              "by OLS on the benchmark, alpha_t its t-statistic; IR: information ratio; "
              "xDSR: DSR of the excess returns, deflated by all trials.", highlight=False)


# ------------------------------------------------------------------ families
def families() -> None:
    """List the template families: entry/exit templates and parameter ranges."""
    from alphaloop.strategy.templates import FAMILIES

    for fam in FAMILIES.values():
        rows, left = _templates(fam)
        out.print(f"[bold]{fam.name}[/] — {escape(fam.description)} ({fam.size()} grid "
                  "points)", highlight=False)
        rows += [(k, _range_text(v)) for k, v in fam.describe()["params"].items()]
        rows += [("rule", r) for r in fam.describe().get("rules", [])]
        if left:  # a parameter that enters the rules transformed (e.g. 1 - top)
            rows.append(("shown at", _params_text(left)))
        width = max(len(k) for k, _ in rows)
        for key, text in rows:
            out.print(f"  {key:<{width}}  {escape(text)}", highlight=False)
        out.print("")


def _range_text(d: dict[str, Any]) -> str:
    if d["type"] == "choice":
        return "one of " + ", ".join("none" if c is None else str(c) for c in d["choices"])
    step = f" step {d['step']:g}" if d.get("step") is not None else " (continuous)"
    return f"{d['low']:g} .. {d['high']:g}{step}"


def _templates(fam: Any) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """The family's entry and exit (a ranked book's score and book) with ``{param}``
    where a parameter goes: built at a grid point whose numbers are all different (and
    not 0 or 1, which rules use as constants), then each number replaced by its name.
    A parameter is placed only where the text at another of its values reads the same
    (one that also enters a derived number, as ``window - skip``, stays a number). Also
    the parameters that could not be placed, with the values the texts were built at."""
    points = list(fam.grid())
    point = next((p for p in points[len(points) // 2:] + points if _distinct(p)),
                 points[len(points) // 2])
    labels, texts = _family_texts(fam, point)
    template, left = _place(texts, point, set(point))
    unsound = set()
    for name in set(point) - set(left):
        # another value of this parameter alone, one that is no number of the texts
        other = next((v for v in fam.params[name].grid() if v != point[name]
                      and name in _place(texts, {name: v}, {name})[1]
                      and fam.is_valid({**point, name: v})), None)
        if other is not None and _place(_family_texts(fam, {**point, name: other})[1],
                                        {name: other}, {name})[0] != _place(
                                            texts, point, {name})[0]:
            unsound.add(name)
    if unsound:
        template, left = _place(texts, point, set(point) - unsound)
        left |= {name: point[name] for name in unsound}
    return list(zip(labels, template, strict=True)), left


def _family_texts(fam: Any, point: dict[str, Any]) -> tuple[list[str], list[str]]:
    spec = fam.build(point)
    pf = spec.portfolio
    if not pf.cross_sectional:
        return ["entry", "exit"], [spec.entry, spec.exit]
    books = ", ".join(f"{k} {v}" for k, v in (("long", pf.long), ("short", pf.short),
                                             ("buffer", pf.buffer)) if v is not None)
    return ["score", "book"], [str(pf.score), (
        f"{books}, {pf.weighting} weights, rebalance every {pf.rebalance_every} bars")]


def _place(texts: list[str], point: dict[str, Any],
           names: set[str]) -> tuple[list[str], dict[str, Any]]:
    """``texts`` with the numbers of ``point``'s parameters in ``names`` replaced by
    ``{name}``; and the numeric ones of them that appear nowhere."""
    import re

    from alphaloop.strategy.expression import format_number

    left: dict[str, Any] = {}
    for name, value in point.items():
        if name in names and isinstance(value, int | float) and not isinstance(value, bool):
            pattern = rf"(?<![\w.]){re.escape(format_number(float(value)))}(?![\w.])"
            placed = [re.sub(pattern, "{" + name + "}", t) for t in texts]
            if placed == texts:
                left[name] = value
            texts = placed
    return texts, left


def _distinct(point: dict[str, Any]) -> bool:
    numbers = [float(v) for v in point.values()
               if isinstance(v, int | float) and not isinstance(v, bool)]
    return len(set(numbers)) == len(numbers) and not set(numbers) & {0.0, 1.0}
