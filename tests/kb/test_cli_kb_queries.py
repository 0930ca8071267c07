"""``alphaloop kb failures | constraints | similar`` through the real CLI app, on a
knowledge base filled by hand: four failure records in two runs, and three constraint
set versions whose newest holds an expired soft rule, an active soft rule and a hard
rule. Expected counts and words are written out below, not recomputed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _kb_records import backtest, batch, open_kb, run
from typer.testing import CliRunner

from alphaloop.cli import app
from alphaloop.cli._common import out
from alphaloop.kb import (
    ConstraintRecord,
    ConstraintSetRecord,
    FailureRecord,
    IterationBatch,
    IterationRecord,
    KnowledgeBase,
    StrategyRecord,
)
from alphaloop.strategy.constraints import Clause, Constraint

runner = CliRunner()

EXPIRED = Constraint(
    rule_id="c-1", family="sma_cross", clauses=[Clause(param="fast", op="<=", value=10)],
    hard=False, code="TOO_FEW_TRADES", support=12, hits=10, confidence=10 / 12,
    confidence_lower=0.55, created_at_iteration=2, status="expired", retests=5,
    retest_hits=0, expired_at_iteration=4, expiry_reason="0 of 5 re-tests failed")
SOFT = Constraint(
    rule_id="c-2", family="rsi_revert",
    clauses=[Clause(param="window", op=">=", value=30), Clause(param="low", op="<", value=20)],
    hard=False, code="NO_TRADES", support=8, hits=7, confidence=0.875,
    confidence_lower=0.53, created_at_iteration=4)
HARD = Constraint(rule_id="h-1", family="sma_cross",
                  clauses=[Clause(param="fast", op=">", value=50)], reason="fast >= slow")

# strategy id -> (family, params); ids share prefixes on purpose ("abc" is ambiguous)
STRATEGIES = {"abc1": ("sma_cross", {"fast": 5, "slow": 50}),
              "abc2": ("sma_cross", {"fast": 8, "slow": 50}),
              "def3": ("rsi_revert", {"window": 14, "low": 30}),
              "def4": ("sma_cross", {"fast": 40, "slow": 200})}


def _strategy(sid: str) -> StrategyRecord:
    family, params = STRATEGIES[sid]
    entry = ("sma(close, {fast}) > sma(close, {slow})" if family == "sma_cross"
             else "rsi(close, {window}) < {low}").format(**params)
    exit_ = ("sma(close, {fast}) < sma(close, {slow})" if family == "sma_cross"
             else "rsi(close, {window}) > 70").format(**params)
    return StrategyRecord(strategy_id=sid, family=family, params=params,
                          spec={"family": family, "entry": entry, "exit": exit_})


def _failure(run_id: str, iteration: int, sid: str, code: str, stage: str,
             detail: dict[str, Any]) -> FailureRecord:
    family, params = STRATEGIES[sid]
    return FailureRecord(run_id=run_id, iteration=iteration, strategy_id=sid, stage_id=stage,
                         code=code, evidence={"metrics": {"n_trades": 3},
                                              code: {**detail, "stage": stage},
                                              "family": family, "params": params,
                                              "reasons": ["a reason"]})


def _rules(set_id: str, rules: list[Constraint]) -> list[ConstraintRecord]:
    return [ConstraintRecord(constraint_id=f"{set_id}:{r.rule_id}", constraint_set_id=set_id,
                             family=r.family, kind=r.kind, rule=r.model_dump(mode="json"),
                             support=r.support, confidence=r.confidence) for r in rules]


def _iteration(run_id: str, i: int, **parts: Any) -> IterationBatch:
    return IterationBatch(iteration=IterationRecord(run_id=run_id, iteration=i,
                                                    state="ITER_DONE", summary={}), **parts)


@pytest.fixture
def url(tmp_path: Path) -> str:
    kb = open_kb(tmp_path / "kb.sqlite")
    kb.save_run(run("run-old", created_ns=1_000))
    kb.save_run(run("run-new", created_ns=2_000))
    few = {"gate": "min_trades", "threshold": 10, "value": 3}
    kb.persist_iteration(_iteration(
        "run-old", 1, strategies=[_strategy("abc1"), _strategy("abc2")],
        failures=[_failure("run-old", 1, "abc1", "TOO_FEW_TRADES", "S60", few),
                  _failure("run-old", 1, "abc2", "COST_DOMINATED", "S60",
                           {"net_sharpe": -0.2, "gross_sharpe": 0.4})],
        constraint_sets=[ConstraintSetRecord(constraint_set_id="cs-a", parent_id="cs_base",
                                             run_id="run-old", iteration=1, note="add c-0")]))
    kb.persist_iteration(_iteration(
        "run-new", 2, strategies=[_strategy("def3")],
        failures=[_failure("run-new", 2, "def3", "TOO_FEW_TRADES", "S60", few)],
        constraint_sets=[ConstraintSetRecord(constraint_set_id="cs-b", parent_id="cs-a",
                                             run_id="run-new", iteration=2,
                                             note="add c-1: TOO_FEW_TRADES in 10 of 12")],
        constraints=_rules("cs-b", [EXPIRED.model_copy(update={"status": "active",
                                                               "expired_at_iteration": None,
                                                               "expiry_reason": ""})])))
    kb.persist_iteration(_iteration(
        "run-new", 4, strategies=[_strategy("def4")],
        failures=[_failure("run-new", 4, "def4", "TOO_FEW_TRADES", "S60", few)],
        constraint_sets=[ConstraintSetRecord(constraint_set_id="cs-c", parent_id="cs-b",
                                             run_id="run-new", iteration=4,
                                             note="expire c-1: 0 of 5 re-tests failed")],
        constraints=_rules("cs-c", [EXPIRED, SOFT, HARD])))
    return f"sqlite:///{tmp_path / 'kb.sqlite'}"


@pytest.fixture(autouse=True)
def _eighty_columns() -> Iterator[None]:
    """Print as a terminal 80 columns wide would show it."""
    before = out._width
    out.width = 80
    try:
        yield
    finally:
        out._width = before


def _run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def _json(*args: str) -> Any:
    code, stdout, stderr = _run(*args, "--json")
    assert code == 0, stderr
    return json.loads(stdout)


def _fits(text: str) -> None:
    assert max(len(line) for line in text.splitlines()) <= 80


def _rows(text: str, key: int = 0) -> list[list[str]]:
    """The body rows of the printed tables, each cell's wrapped lines joined by spaces
    (a row starts where its cell ``key``, one that never wraps, has text)."""
    rows: list[list[list[str]]] = []
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[key] or not rows:
            rows.append([[c] if c else [] for c in cells])
        else:
            for parts, c in zip(rows[-1], cells, strict=True):
                if c:
                    parts.append(c)
    return [[" ".join(parts) for parts in row] for row in rows]


# ------------------------------------------------------------------ kb failures
def test_failures_by_code_and_by_family_count_every_run(url: str) -> None:
    assert _json("kb", "failures", "--url", url, "--by", "code") == [
        {"code": "TOO_FEW_TRADES", "failures": 3, "strategies": 3, "runs": 2},
        {"code": "COST_DOMINATED", "failures": 1, "strategies": 1, "runs": 1}]
    assert _json("kb", "failures", "--url", url, "--by", "family") == [
        {"family": "sma_cross", "failures": 3, "strategies": 3, "runs": 2},
        {"family": "rsi_revert", "failures": 1, "strategies": 1, "runs": 1}]
    # one run, by a prefix of its id
    assert _json("kb", "failures", "--url", url, "--by", "code", "--run", "run-n") == [
        {"code": "TOO_FEW_TRADES", "failures": 2, "strategies": 2, "runs": 1}]


def test_failures_lists_the_latest_records_with_one_line_of_evidence(url: str) -> None:
    data = _json("kb", "failures", "--url", url)
    assert data["counts"][0] == {"code": "TOO_FEW_TRADES", "failures": 3, "strategies": 3,
                                 "runs": 2}
    # newest run first, then newest iteration
    assert [(r["run_id"], r["iteration"], r["strategy_id"], r["code"])
            for r in data["records"]] == [
        ("run-new", 4, "def4", "TOO_FEW_TRADES"), ("run-new", 2, "def3", "TOO_FEW_TRADES"),
        ("run-old", 1, "abc1", "TOO_FEW_TRADES"), ("run-old", 1, "abc2", "COST_DOMINATED")]
    assert data["records"][0]["family"] == "sma_cross"
    assert data["records"][0]["params"] == {"fast": 40, "slow": 200}
    code, text, _ = _run("kb", "failures", "--url", url)
    assert code == 0
    _fits(text)
    assert "failures of all runs: 4" in text
    rows = _rows(text)
    assert rows[:2] == [["TOO_FEW_TRADES", "3", "3", "2"], ["COST_DOMINATED", "1", "1", "1"]]
    # the records: the primary code over its evidence (without its stage)
    assert rows[2] == ["run-new/4", "S60", "TOO_FEW_TRADES gate=min_trades threshold=10 value=3",
                       "def4 sma_cross fast=40 slow=200"]
    assert rows[5] == ["run-old/1", "S60", "COST_DOMINATED net_sharpe=-0.2 gross_sharpe=0.4",
                       "abc2 sma_cross fast=8 slow=50"]


def test_failures_refuses_an_unknown_grouping_and_an_unknown_run(url: str) -> None:
    code, stdout, stderr = _run("kb", "failures", "--url", url, "--by", "stage")
    assert code == 2 and stdout == ""
    assert "--by takes code or family, not 'stage'" in stderr
    assert len(stderr.strip().splitlines()) == 1
    code, _, stderr = _run("kb", "failures", "--url", url, "--run", "nope")
    assert code == 2 and "no run id starts with 'nope'" in stderr
    assert "RUN_NOT_FOUND" in stderr  # as `status nope` says it


# ------------------------------------------------------------------ kb constraints
def test_constraints_default_to_the_newest_set_of_the_newest_run(url: str) -> None:
    data = _json("kb", "constraints", "--url", url)
    assert data["constraint_set"] == {"constraint_set_id": "cs-c", "parent_id": "cs-b",
                                      "run_id": "run-new", "iteration": 4,
                                      "note": "expire c-1: 0 of 5 re-tests failed"}
    rules = {r["rule_id"]: r for r in data["rules"]}
    assert rules["c-1"]["text"] == "c-1: sma_cross: fast <= 10"
    assert (rules["c-1"]["kind"], rules["c-1"]["status"], rules["c-1"]["support"],
            rules["c-1"]["confidence_lower"], rules["c-1"]["created_at_iteration"],
            rules["c-1"]["expired_at_iteration"], rules["c-1"]["expiry_reason"]) == (
        "soft", "expired", 12, 0.55, 2, 4, "0 of 5 re-tests failed")
    assert rules["c-1"]["confidence"] == pytest.approx(10 / 12)
    assert rules["c-2"]["text"] == "c-2: rsi_revert: window >= 30 and low < 20"
    assert (rules["c-2"]["kind"], rules["c-2"]["status"], rules["c-2"]["confidence"]) == (
        "soft", "active", 0.875)
    assert (rules["h-1"]["kind"], rules["h-1"]["text"]) == ("hard", "h-1: sma_cross: fast > 50")


def test_constraints_printed_in_words(url: str) -> None:
    code, text, _ = _run("kb", "constraints", "--url", url)
    assert code == 0
    _fits(text)
    flat = " ".join(text.split())
    assert "constraint set cs-c (run run-new, iteration 4, parent cs-b): 3 rule(s)" in flat
    assert "changes: expire c-1: 0 of 5 re-tests failed" in flat
    # rule in words, kind, support, confidence (Wilson lower bound), created at, status
    assert _rows(text, key=1) == [
        ["c-1: sma_cross: fast <= 10", "soft", "12", "0.83 (≥0.55)", "it 2",
         "expired at it 4: 0 of 5 re-tests failed"],
        ["c-2: rsi_revert: window >= 30 and low < 20", "soft", "8", "0.88 (≥0.53)", "it 4",
         "active"],
        ["h-1: sma_cross: fast > 50", "hard", "0", "n/a", "-", "active"]]


def test_constraints_of_a_chosen_set_and_of_a_run(url: str) -> None:
    data = _json("kb", "constraints", "--url", url, "--set", "cs-b")
    assert [(r["rule_id"], r["status"]) for r in data["rules"]] == [("c-1", "active")]
    data = _json("kb", "constraints", "--url", url, "--run", "run-old")
    assert data["constraint_set"]["constraint_set_id"] == "cs-a" and data["rules"] == []
    code, _, stderr = _run("kb", "constraints", "--url", url, "--set", "cs-zz")
    assert code == 2 and "no constraint set 'cs-zz'" in stderr
    # a run whose learning reached rules another run had stored first: the set it
    # used, not the newest set it stored (it stored none)
    kb = KnowledgeBase(url)
    kb.save_run(run("run-late", created_ns=3_000))
    kb.persist_iteration(IterationBatch(iteration=IterationRecord(
        run_id="run-late", iteration=1, state="ITER_DONE",
        summary={"constraint_set_id": "cs-b"})))
    kb.persist_iteration(_iteration("run-late", 2))  # no rule in force (learning off)
    data = _json("kb", "constraints", "--url", url, "--run", "run-late")
    assert data["constraint_set"]["constraint_set_id"] == "cs-b"
    assert data["constraint_set"]["run_id"] == "run-new"  # where it was stored first
    assert data["in_force"] == {"run_id": "run-late", "iteration": 1}
    code, text, _ = _run("kb", "constraints", "--url", url, "--run", "run-late")
    assert code == 0 and "in force in run run-late at iteration 1" in " ".join(text.split())
    # the README's default base set: no rule, and never stored
    data = _json("kb", "constraints", "--url", url, "--set", "cs_base")
    assert data == {"constraint_set": {"constraint_set_id": "cs_base"}, "rules": []}
    code, text, _ = _run("kb", "constraints", "--url", url, "--set", "cs_base")
    assert code == 0 and "cs_base: the default base set, no rule" in text


def test_constraints_on_an_empty_kb(tmp_path: Path) -> None:
    open_kb(tmp_path / "empty.sqlite")
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    assert _json("kb", "constraints", "--url", url) == {"constraint_set": None, "rules": []}
    code, text, _ = _run("kb", "constraints", "--url", url)
    assert code == 0 and "no constraint set in the knowledge base" in text


@pytest.mark.parametrize("command", [["stats"], ["runs"], ["strategies"], ["failures"],
                                     ["constraints"], ["show", "abc"], ["similar", "abc"],
                                     ["prune-claims"]])
def test_reading_a_knowledge_base_that_does_not_exist_creates_none(
        tmp_path: Path, command: list[str]) -> None:
    """A mistyped --url is one line (KB_NOT_FOUND, exit 2), not an empty history, and
    leaves no database or folder behind (a black-box report found both)."""
    where = tmp_path / "typo" / "kb.sqlite"
    code, _, err = _run("kb", *command, "--url", f"sqlite:///{where}")
    assert code == 2 and "KB_NOT_FOUND" in err and str(where) in err
    assert len(err.strip().splitlines()) == 1
    assert not where.parent.exists()


# ------------------------------------------------------------------ kb similar
def test_similar_prints_the_neighbours(url: str) -> None:
    # sma_cross ranges: fast 5..40 (35), slow 50..200 (150). To abc1 (5, 50):
    # abc2 sqrt(((3/35)**2 + 0) / 2) = 0.060609; def4 sqrt((1 + 1) / 2) = 1.
    # def3 (rsi_revert): 4 of 8 tokens shared → 0.5
    data = _json("kb", "similar", "abc1", "--url", url)
    assert [r["strategy_id"] for r in data] == ["abc2", "def3", "def4"]
    assert [r["spec_distance"] for r in data] == pytest.approx(
        [((3 / 35) ** 2 / 2) ** 0.5, 0.5, 1.0], abs=1e-12)
    assert [r["runs"] for r in data] == [[], [], []]  # failures only: no backtests
    assert _json("kb", "similar", "abc1", "--url", url, "--n", "1")[0]["strategy_id"] == "abc2"
    code, text, _ = _run("kb", "similar", "abc1", "--url", url)
    assert code == 0
    _fits(text)
    assert _rows(text)[0] == ["abc2", "sma_cross fast=8 slow=50", "0.061", "n/a", "n/a", "-"]


def test_similar_refuses_unknown_and_ambiguous_ids(url: str) -> None:
    code, stdout, stderr = _run("kb", "similar", "abc", "--url", url)
    assert code == 2 and stdout == ""
    assert "strategy id prefix 'abc' is ambiguous" in stderr
    code, _, stderr = _run("kb", "similar", "zzz", "--url", url)
    assert code == 2 and "no strategy id starts with 'zzz'" in stderr
    code, _, stderr = _run("kb", "similar", "abc1", "--url", url, "--by", "colour")
    assert code == 2 and "--by takes spec or profile" in stderr


# ----------------------------------------------------------------- kb prune-claims
def test_prune_claims_deletes_what_ended_long_enough_ago(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'claims.sqlite'}"
    kb = open_kb(tmp_path / "claims.sqlite")
    hour = 3600 * 10**9
    now = time.time_ns()  # the command prunes against the clock
    kb.claim("k", ["old"], "run-a", lease_until_ns=now - 30 * hour, now_ns=0)
    kb.finish_claims("k", "run-a", {"old": ("{}", b"r" * 6_000)})
    kb.claim("k", ["recent"], "run-a", lease_until_ns=now - 2 * hour, now_ns=0)
    kb.finish_claims("k", "run-a", {"recent": ("{}", None)})
    code, stdout, _ = _run("kb", "prune-claims", "--url", url, "--older-than", "24")
    assert code == 0 and "1 claim(s) deleted" in stdout  # 30 h ago: gone; 2 h ago: kept
    assert sorted(kb.claims("k", ["old", "recent"])) == ["recent"]
    code, _, stderr = _run("kb", "prune-claims", "--url", url, "--older-than", "-1")
    assert code == 2 and "older-than" in stderr


def test_show_names_the_loop_runs_where_a_strategy_passed_but_was_not_verified(
        kb_url: str) -> None:
    """s0a passed the score gates of run-a's iteration 0 and got no failure, no engine B
    backtest and no survival there: the shortlist's top K left it out, which `kb show`
    says (a black-box report found such strategies silent). Once engine B has run it in
    that run, it is no longer listed; s0b, rejected, never is."""
    kb = KnowledgeBase(kb_url)

    def left(sid: str) -> list[dict[str, Any]]:
        code, stdout, stderr = _run("kb", "show", sid, "--url", kb_url, "--json")
        assert code == 0, stderr
        return list(json.loads(stdout)["not_verified"])

    kb.save_run(run())
    kb.persist_iteration(batch(iteration=0))
    shown = left("s0a")
    assert [(x["run_id"], x["iteration"]) for x in shown] == [("run-a", 0)]
    assert "top_k_to_verify" in shown[0]["why"]
    assert left("s0b") == []
    verified = IterationBatch(
        iteration=IterationRecord(run_id="run-a", iteration=0, state="ITER_DONE", summary={}),
        backtests=[backtest("run-a", 0, "s0a", 0.04, engine="B")])
    kb.persist_iteration(verified)
    assert left("s0a") == []
    # an exploration run verifies nothing: that is the reason given, not the top K
    kb.save_run(run("run-x", created_ns=2_000).model_copy(
        update={"config": {"mode": "exploration"}}))
    kb.persist_iteration(batch("run-x", iteration=0))
    shown = left("s0a")
    assert [x["run_id"] for x in shown] == ["run-x"] and "exploration" in shown[0]["why"]
    assert "top_k" not in shown[0]["why"]
    # an `evaluate` run's passing score is no loop's shortlist: never listed
    kb.save_run(run("eval-1", created_ns=3_000).model_copy(
        update={"config": {"kind": "evaluate"}}))
    kb.persist_iteration(batch("eval-1", iteration=0))
    assert [x["run_id"] for x in left("s0a")] == ["run-x"]
