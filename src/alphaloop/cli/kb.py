"""``alphaloop kb stats | runs | strategies | show | import-runs | failures | constraints |
similar | prune-claims``: the knowledge base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from alphaloop.cli._common import _compact, _friendly, _params_text, err, out, short_id

kb_app = typer.Typer(no_args_is_help=True, help="Read the knowledge base.")
UrlOpt = Annotated[str | None, typer.Option(
    "--url", help="SQLAlchemy URL (default sqlite:///$ALPHALOOP_HOME/kb.sqlite).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _kb(url: str | None, *, create: bool = False) -> Any:
    """The knowledge base the command reads (one that does not exist is an error:
    a mistyped --url must not leave an empty database behind)."""
    from alphaloop.kb.store import KnowledgeBase

    return KnowledgeBase(url, create=create)


@kb_app.command("stats")
@_friendly
def kb_stats(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Row counts, runs by status, schema revision."""
    stats = _kb(url).stats()
    if as_json:
        out.print_json(json.dumps(stats, default=str))
        return
    for key, value in stats.items():
        out.print(f"{key}: {value}")


@kb_app.command("runs")
@_friendly
def kb_runs(url: UrlOpt = None,
            limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 50,
            as_json: JsonOpt = False) -> None:
    """The latest runs (--json: every field, config and summary included)."""
    frame = _kb(url).list_runs(limit=limit)
    if as_json:
        _frame(frame, True)
        return
    from rich import box

    rows = _run_rows(frame)  # no vertical rules: the ids and states fit 80 columns whole
    _frame(rows, False, _table(*rows.columns, no_wrap=("status", "iters", "backtests",
                                                       "survivors"),
                               box=box.SIMPLE_HEAD))


@kb_app.command("strategies")
@_friendly
def kb_strategies(url: UrlOpt = None,
                  top: Annotated[int, typer.Option(min=1, help="How many.")] = 20,
                  data_ref: Annotated[str | None, typer.Option(
                      "--data-ref", help="Only runs on this data (a data_ref or a unique "
                                         "prefix; `kb runs --json` lists them).")] = None,
                  as_json: JsonOpt = False) -> None:
    """The best-scored strategies of every run, each by its best score on any data
    unless --data-ref picks one (--json: every field, psr, the policy version and the
    data_ref included)."""
    kb = _kb(url)
    ref = None if data_ref is None else kb.data_ref(data_ref)
    frame = kb.top_strategies(top, data_ref=ref)
    if as_json:
        _frame(frame, True)
        return
    from rich import box

    rows = _strategy_rows(frame)
    _frame(rows, False, _table(*rows.columns, no_wrap=("id", "score", "passed", "dsr"),
                               box=box.SIMPLE_HEAD))
    refs = frame["data_ref"].nunique()
    if ref is not None:
        err.print(f"runs on data {ref[:16]} only")
    elif refs > 1:  # a best score on one data set is not comparable with another's
        err.print(f"best scores across {refs} data sets; --data-ref picks one")


@kb_app.command("show")
@_friendly
def kb_show(strategy_id: Annotated[str, typer.Argument(help="An id or a unique prefix.")],
            url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """One strategy: its canonical spec, backtests (with the costs their run recorded),
    scores, failures, the runs it survived and those that left it unverified (--json:
    every field of every record, as stored)."""
    kb = _kb(url)
    record = kb.strategy(strategy_id)
    configs: dict[str, dict[str, Any]] = {}
    for row in [*record["backtests"], *record["scores"]]:
        if row["run_id"] not in configs:
            run = kb.get_run(row["run_id"])
            configs[row["run_id"]] = (run.config if run is not None else None) or {}
    for bt in record["backtests"]:
        costs = _loop_costs(configs[bt["run_id"]], bt["engine"])
        if costs is not None:
            bt["costs"] = costs
    modes = {run_id: config.get("mode") for run_id, config in configs.items()
             if config.get("kind") != "evaluate"}  # the research loop's runs
    record["not_verified"] = _not_verified(record, modes)
    if as_json:
        out.print_json(json.dumps(record, default=str))
        return
    _print_strategy(record)


def _print_strategy(record: dict[str, Any]) -> None:
    """A strategy's record for a terminal: what it is, then one table per kind of
    record, oldest first (the numbers rounded for reading; --json has every digit)."""
    from alphaloop.orchestrator.config import run_label

    spec = record.get("spec") or {}
    head = [("strategy", record["strategy_id"]),
            ("family", _strategy_text(record.get("family"), record.get("params")
                                      ).replace("\n", "  ")),
            ("entry", spec.get("entry")), ("exit", spec.get("exit")),
            ("direction", spec.get("direction")),
            ("risk", _params_text({k: v for k, v in (spec.get("risk") or {}).items()
                                   if v is not None}) or None)]
    for key, value in head:
        if value:
            out.print(f"{key:<9} {value}", highlight=False, soft_wrap=True)

    def where(row: dict[str, Any]) -> str:
        return f"{run_label(str(row['run_id']))}/{row['iteration']}"

    tables: dict[str, tuple[tuple[str, ...], list[tuple[str, ...]]]] = {
        "backtests": (("run/it", "engine", "sharpe", "return", "max dd", "trades", "costs"),
                      [(where(b), f"{b['engine']} {b['window']}", _num(b["sharpe"]),
                        _num(b["total_return"]), _num(b["max_drawdown"]),
                        _count(b["n_trades"]), _costs_text(b.get("costs")))
                       for b in record["backtests"]]),
        "scores": (("run/it", "policy", "score", "passed", "dsr", "psr"),
                   [(where(c), str(c["policy_version"]), _num(c["score_total"], ".2f"),
                     "yes" if c["passed"] else "no", _num(c["dsr"]), _num(c["psr"]))
                    for c in record["scores"]]),
        "failures": (("run/it", "stage", "code, evidence", "secondary"),
                     [(where(f), str(f["stage_id"]),
                       f"{f['code']}\n{_evidence_line(str(f['code']), f['evidence'] or {})}",
                       " ".join(f.get("secondary") or ()) or "-")
                      for f in record["failures"]]),
        "survived": (("run/it", "score", "search", "validation", "holdout", "engine B"),
                     [(where(v), _num(v["score_total"], ".2f"), _num(v["sharpe_search"]),
                       _num(v["sharpe_validation"]), _num(v["sharpe_holdout"]),
                       _num(v["engine_b_sharpe"])) for v in record["survived"]]),
        "not verified": (("run/it", "why"),
                         [(where(n), str(n["why"])) for n in record["not_verified"]]),
    }
    from rich import box

    words = ("run/it", "costs", "code, evidence", "secondary", "why", "policy", "engine")
    for title, (columns, rows) in tables.items():
        what = " (Sharpe by window)" if title == "survived" and rows else ""
        out.print(f"{title}: {len(rows) or 'none'}{what}", highlight=False)
        if rows:  # numbers are never cut; run names and words fold
            table = _table(*columns, no_wrap=tuple(c for c in columns if c not in words),
                           box=box.SIMPLE_HEAD)
            for row in rows:
                table.add_row(*row)
            out.print(table)


def _not_verified(record: dict[str, Any], modes: dict[str, Any]) -> list[dict[str, Any]]:
    """The loop runs (``modes``: run id -> the config's mode) where the strategy passed
    every score gate and was neither rejected, verified by engine B nor a survivor: an
    exploration run verifies nothing, in the others the shortlist's top K left it out.
    Not a failure (nothing about the strategy failed), so no failure record says it."""
    done = ({f["run_id"] for f in record["failures"]}
            | {b["run_id"] for b in record["backtests"] if b["engine"] == "B"}
            | {b["run_id"] for b in record["survived"]})
    later = "mode: verification takes the best earlier candidates through engine B"
    return [{"run_id": s["run_id"], "iteration": s["iteration"],
             "why": (f"passed every score gate of an exploration run, which verifies "
                     f"nothing ({later})" if modes[s["run_id"]] == "exploration" else
                     f"passed every score gate; below the shortlist's top_k_to_verify, so "
                     f"not verified ({later})")}
            for s in record["scores"]
            if s["passed"] and s["run_id"] in modes and s["run_id"] not in done]


def _loop_costs(config: dict[str, Any], engine: str) -> dict[str, Any] | None:
    """The costs a run recorded for ``engine``: a research loop's config (A: fees and
    slippage in bps per side; B: its execution model), an `evaluate`'s the costs of the
    sweep it scored (as its results file recorded them); None where none was recorded."""
    if config.get("kind") == "evaluate":
        costs = config.get("costs")
        return dict(costs) if isinstance(costs, dict) else None
    engines = config.get("engines")
    if not isinstance(engines, dict):
        return None
    if engine == "A":
        return {"fees_bps": engines.get("fees_bps"), "slippage_bps": engines.get("slippage_bps")}
    return {"execution": engines.get("execution") or "the realistic defaults"}


@kb_app.command("import-runs")
@_friendly
def kb_import_runs(url: UrlOpt = None) -> None:
    """Index the `evaluate` runs recorded under $ALPHALOOP_HOME/runs before evaluate
    wrote to the knowledge base (idempotent: an indexed run is left as it is)."""
    from alphaloop.kb.runs import import_runs, runs_dir

    with _kb(url, create=True) as kb:
        n = import_runs(kb)
    out.print(f"{n} run folder(s) under {runs_dir()} indexed in the knowledge base",
              highlight=False)


@kb_app.command("prune-claims")
@_friendly
def kb_prune_claims(
        url: UrlOpt = None,
        older_than: Annotated[float, typer.Option(
            "--older-than", min=0.0, max=1e6, help="Hours since the claim's lease ended.")] = 24.0,
) -> None:
    """Delete the shared-work claims (and the results they store) whose lease ended
    more than --older-than hours ago. Safe while runs are going: a run that misses a
    claim computes the result again (the same numbers)."""
    n = _kb(url).prune_claims(older_than * 3600.0)
    out.print(f"{n} claim(s) deleted (lease ended more than {older_than:g} h ago)",
              highlight=False)


@kb_app.command("failures")
@_friendly
def kb_failures(url: UrlOpt = None,
                run: Annotated[str | None, typer.Option(
                    "--run", help="One run (an id or a unique prefix); default: all.")] = None,
                by: Annotated[str | None, typer.Option(
                    "--by", help="Only the counts, per primary code or per family.")] = None,
                limit: Annotated[int, typer.Option(
                    "--limit", min=0, help="Latest records shown without --by.")] = 20,
                as_json: JsonOpt = False) -> None:
    """Why candidates were rejected: counts per failure code (or --by family), and the
    latest records with their stage, family, parameters and evidence."""
    from alphaloop.kb.store import KBError

    if by is not None and by not in ("code", "family"):
        raise KBError(f"--by takes code or family, not {by!r}", code="KB_BAD_QUERY")
    kb = _kb(url)
    run_id = None if run is None else kb.find_run(run).run_id
    counts = kb.failure_counts("code" if by is None else by, run_id)
    if by is not None:
        _frame(counts, as_json)
        return
    records = kb.failure_records(run_id, limit=limit)
    if as_json:
        out.print_json(json.dumps({"counts": counts.to_dict("records"),
                                   "records": [_failure_json(r) for r in
                                               records.to_dict("records")]}, default=str))
        return
    where = f"run {run_id}" if run_id else "all runs"
    out.print(f"failures of {where}: {int(counts['failures'].sum())}", highlight=False)
    if counts.empty:
        return
    _frame(counts, False)
    from alphaloop.orchestrator.config import run_label

    # the code over its evidence, the id and family over the parameters: 80 columns
    # hold them without cutting a word
    table = _table("run/it", "stage", "code, evidence", "strategy", no_wrap=("stage",))
    for r in records.to_dict("records"):
        table.add_row(f"{run_label(str(r['run_id']))}/{r['iteration']}", str(r["stage_id"]),
                      f"{r['code']}\n{_evidence_line(str(r['code']), r['evidence'] or {})}",
                      f"{short_id(r['strategy_id'])} "
                      f"{_strategy_text(r['family'], r['params'])}")
    out.print(f"latest {len(records)} record(s):", highlight=False)
    out.print(table)


@kb_app.command("constraints")
@_friendly
def kb_constraints(url: UrlOpt = None,
                   set_id: Annotated[str | None, typer.Option(
                       "--set", help="A constraint set id; default: the newest set of the "
                                     "newest run that has one.")] = None,
                   run: Annotated[str | None, typer.Option(
                       "--run", help="The newest set of this run (id or prefix).")] = None,
                   as_json: JsonOpt = False) -> None:
    """The rules of a constraint set: each in words, hard or soft, support, confidence
    (with its Wilson lower bound), the iteration that created it, active or expired."""
    from alphaloop.kb.store import KBError
    from alphaloop.orchestrator.config import BASE_SET

    kb = _kb(url)
    used: tuple[str, int] | None = None  # (run, iteration) that had the set in force
    if set_id is None:
        run_id = None if run is None else kb.find_run(run).run_id
        in_force = None if run_id is None else kb.run_constraint_set(run_id)
        if in_force is not None and run_id is not None:
            set_id, used = in_force[0], (run_id, in_force[1])
        else:
            set_id = kb.latest_constraint_set(run_id)
        if set_id is None:
            if as_json:
                out.print_json(json.dumps({"constraint_set": None, "rules": []}))
            else:
                where = f"run {run_id}" if run_id else "the knowledge base"
                out.print(f"no constraint set in {where}", highlight=False)
            return
    header = kb.constraint_set(set_id)
    if header is None and set_id == BASE_SET:  # the default base set: no rule, never stored
        if as_json:
            out.print_json(json.dumps({"constraint_set": {"constraint_set_id": BASE_SET},
                                       "rules": []}))
        else:
            out.print(f"constraint set {BASE_SET}: the default base set, no rule",
                      highlight=False)
        return
    if header is None:
        raise KBError(f"no constraint set {set_id!r} in the knowledge base",
                      code="KB_NOT_FOUND")
    rules = [_rule_json(r) for r in kb.constraints(set_id)]
    if as_json:
        extra = {} if used is None else {"in_force": {"run_id": used[0],
                                                      "iteration": used[1]}}
        out.print_json(json.dumps({"constraint_set": header, "rules": rules, **extra},
                                  default=str))
        return
    out.print(f"constraint set {header['constraint_set_id']} (run {header['run_id']}, "
              f"iteration {header['iteration']}, parent {header['parent_id']}): "
              f"{len(rules)} rule(s)", highlight=False)
    if used is not None and used[0] != header["run_id"]:
        out.print(f"in force in run {used[0]} at iteration {used[1]} (the same rules "
                  f"were first stored by run {header['run_id']})", highlight=False)
    if header["note"]:
        out.print(f"changes: {header['note']}", highlight=False)
    table = _table("rule", "kind", "support", "confidence", "created", "status")
    for r in rules:
        conf = "n/a" if r["confidence"] is None else f"{r['confidence']:.2f}"
        if r["confidence_lower"] is not None:
            conf += f" (≥{r['confidence_lower']:.2f})"
        status = str(r["status"])
        if status == "expired":
            at = r["expired_at_iteration"]
            status += (f" at it {at}" if at is not None else "") + (
                f": {r['expiry_reason']}" if r["expiry_reason"] else "")
        created = r["created_at_iteration"]
        table.add_row(r["text"], str(r["kind"]), str(r["support"]), conf,
                      "-" if created is None else f"it {created}", status)
    out.print(table)


@kb_app.command("similar")
@_friendly
def kb_similar(strategy_id: Annotated[str, typer.Argument(help="An id or a unique prefix.")],
               url: UrlOpt = None,
               n: Annotated[int, typer.Option("--n", min=1, help="How many.")] = 10,
               by: Annotated[str, typer.Option(
                   "--by", help="Rank by spec (parameters, structure) or profile "
                                "(backtest metrics).")] = "spec",
               data_ref: Annotated[str | None, typer.Option(
                   "--data-ref", help="Data of the metric profile; default: that of "
                                      "the strategy's latest backtest.")] = None,
               as_json: JsonOpt = False) -> None:
    """Strategies like this one, across runs: by spec (same family: scaled parameter
    distance; other families: expression structure) and by backtest metric profile."""
    from alphaloop.kb.retriever import similar
    from alphaloop.kb.store import KBError

    if by not in ("spec", "profile"):
        raise KBError(f"--by takes spec or profile, not {by!r}", code="KB_BAD_QUERY")
    frame = similar(_kb(url), strategy_id, n=n, data_ref=data_ref,
                    by=by)  # type: ignore[arg-type]
    if as_json:
        out.print_json(frame.to_json(orient="records", default_handler=str,
                                     double_precision=15))
        return
    from alphaloop.orchestrator.config import run_label

    table = _table("strategy", "family params", "spec d", "profile d", "best", "runs",
                   no_wrap=("strategy", "spec d", "profile d", "best"))
    for r in frame.to_dict("records"):
        table.add_row(short_id(r["strategy_id"]), _strategy_text(r["family"], r["params"]),
                      _num(r["spec_distance"]), _num(r["profile_distance"]),
                      _num(r["best_score"], ".1f"),
                      ", ".join(map(run_label, r["runs"])) or "-")
    out.print(table)


def _table(*columns: str, no_wrap: tuple[str, ...] = (), box: Any = None) -> Any:
    """A table whose ``no_wrap`` columns (numbers, codes, ids) are never cut: when 80
    columns are too few, the others (names, free text) fold."""
    from rich.table import Table

    table = Table() if box is None else Table(box=box, pad_edge=False, collapse_padding=True)
    for col in columns:
        table.add_column(col, overflow="fold", no_wrap=col in no_wrap)
    return table


def _num(value: Any, fmt: str = ".3f") -> str:
    return "n/a" if value is None or value != value else format(float(value), fmt)


def _evidence_line(code: str, evidence: dict[str, Any]) -> str:
    """One line of a failure's evidence: the primary code's numbers, else the reasons."""
    mine = evidence.get(code)
    if isinstance(mine, dict):  # a strategy id by its 12 first characters, as tables do
        shown = [f"{k}={_compact(v)[:12] if _is_id(v) else _compact(v)}"
                 for k, v in mine.items()
                 if k != "stage" and v is not None and not isinstance(v, dict | list)]
        if shown:
            return " ".join(shown)
    reasons = evidence.get("reasons")
    if isinstance(reasons, list) and reasons:
        return "; ".join(map(str, reasons))
    return " ".join(f"{k}={_compact(v)}" for k, v in evidence.items()
                    if not isinstance(v, dict | list)) or "-"


def _is_id(value: Any) -> bool:
    """A strategy id: 64 hex digits."""
    return isinstance(value, str) and len(value) == 64 and \
        all(c in "0123456789abcdef" for c in value)


def _failure_json(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("run_id", "iteration", "strategy_id", "stage_id", "code", "secondary", "family",
            "params", "evidence")
    return {k: row[k] for k in keep}


def _rule_json(row: dict[str, Any]) -> dict[str, Any]:
    """A stored rule with its words (str(Constraint)); a rule that is not a Constraint's
    JSON (written by hand, or by another version) is shown as its JSON."""
    from pydantic import ValidationError

    from alphaloop.strategy.constraints import Constraint

    raw = row["rule"] or {}
    try:
        rule: Constraint | None = Constraint.model_validate(raw)
    except ValidationError:
        rule = None
    out_: dict[str, Any] = {
        "constraint_id": row["constraint_id"], "family": row["family"], "kind": row["kind"],
        "support": row["support"], "confidence": _finite(row["confidence"]),
        "text": str(rule) if rule is not None else json.dumps(raw, sort_keys=True),
        "rule_id": None, "code": None, "hits": None, "confidence_lower": None,
        "created_at_iteration": None, "status": "active", "expired_at_iteration": None,
        "expiry_reason": ""}
    if rule is not None:
        out_.update(rule_id=rule.rule_id, code=rule.code, hits=rule.hits,
                    confidence_lower=rule.confidence_lower,
                    created_at_iteration=rule.created_at_iteration, status=rule.status,
                    expired_at_iteration=rule.expired_at_iteration,
                    expiry_reason=rule.expiry_reason)
    return out_


def _finite(value: Any) -> float | None:
    return None if value is None or value != value else float(value)


def _run_rows(frame: Any) -> Any:
    """One row per run for a terminal, in 80 columns: its id (12 characters: `status`,
    `resume` and `report --run` take a unique prefix), status, data file, counts and
    survivors; --json has every field (config, summary, data_ref, times)."""
    import pandas as pd

    from alphaloop.orchestrator.config import run_label

    def row(config: Any, summary: Any) -> tuple[str, str, str, int]:
        c, s = config or {}, summary or {}
        if c.get("kind") == "evaluate":  # a recorded `evaluate`: one scoring, no loop
            return str(c.get("data_source", "-")), "eval", "-", int(s.get("passed", 0))
        stats = s.get("stats", {})
        return (str(c.get("data", {}).get("source", "-")), _count(stats.get("iterations")),
                _count(stats.get("backtests")), len(s.get("best_strategies", ())))

    rows = [row(c, s) for c, s in zip(frame["config"], frame["summary"], strict=True)]
    return pd.DataFrame({
        "run": [run_label(str(r)) for r in frame["run_id"]], "status": frame["status"],
        "data": [Path(r[0]).name[:16] for r in rows],
        "iters": [r[1] for r in rows], "backtests": [r[2] for r in rows],
        "survivors": [r[3] for r in rows],
    })


def _costs_text(costs: dict[str, Any] | None) -> str:
    """Engine A's costs as "fees+slippage bps" (per side), others as name=value."""
    if not costs:
        return "-"
    if set(costs) == {"fees_bps", "slippage_bps"}:
        return f"{_compact(costs['fees_bps'])}+{_compact(costs['slippage_bps'])} bps"
    if set(costs) == {"execution"}:  # engine B: the model file, or its defaults
        return str(costs["execution"]).removeprefix("the realistic ")
    return _params_text(costs)


def _strategy_text(family: Any, params: Any) -> str:
    """A strategy in a table cell: its family, then its parameters on the next line."""
    text = _params_text(params or {})
    return f"{family or '-'}\n{text}" if text else str(family or "-")


def _count(value: Any) -> str:
    return "-" if value is None else str(int(value))


def _strategy_rows(frame: Any) -> Any:
    """One row per strategy for a terminal, in 80 columns: its id (12 characters, any
    unique prefix works for `kb show`), family and, below it, the parameters as
    name=value (no word is cut: they wrap between parameters), score, the verdict and
    DSR, and the run (:func:`run_label`) and iteration that scored it."""
    import pandas as pd

    from alphaloop.orchestrator.config import run_label

    return pd.DataFrame({
        "id": [str(r)[:12] for r in frame["strategy_id"]],
        "strategy": [_strategy_text(f, p) for f, p in zip(frame["family"], frame["params"],
                                                          strict=True)],
        "score": [_num(v, ".2f") for v in frame["score_total"]],
        "passed": ["yes" if bool(v) else "no" for v in frame["passed"]],
        "dsr": [_num(v) for v in frame["dsr"]],
        "run/it": [f"{run_label(str(r))}/{i}" for r, i in zip(frame["run_id"],
                                                                frame["iteration"],
                                                                strict=True)],
    })


def _frame(frame: Any, as_json: bool, table: Any = None) -> None:
    """The frame as JSON records, or its rows in ``table`` (default: one folding
    column per frame column)."""
    if as_json:  # the numbers as stored, every digit (pandas' to_json rounds them)
        from alphaloop.engines.metrics import to_jsonable

        records = [to_jsonable(row) for row in frame.to_dict(orient="records")]
        out.print_json(json.dumps(records, default=str, allow_nan=False))
        return
    if table is None:
        table = _table(*map(str, frame.columns))
    for row in frame.itertuples(index=False):
        table.add_row(*[_cell(v) for v in row])
    out.print(table)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    text = str(v)
    return text[:12] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def register(app: typer.Typer) -> None:
    app.add_typer(kb_app, name="kb")
