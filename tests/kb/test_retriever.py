"""The retriever (MOD-462) on a knowledge base filled by hand, with distances worked out
by hand below.

Strategies (real specs, so their ids are the normalizer hashes):

====  ==========  ======================  ===============================
name  family      params                  backtests (data, run)
====  ==========  ======================  ===============================
A     sma_cross   fast 10, slow 50        data-1 r1
B     sma_cross   fast 12, slow 50        data-1 r1, data-1 r2
C     sma_cross   fast 20, slow 100       data-1 r1
D     sma_cross   fast 10, slow 75        data-1 r2
E     rsi_revert  window 14, low 30       data-2 r2
====  ==========  ======================  ===============================

spec_distance to A. sma_cross ranges in the KB: fast 10..20 (10), slow 50..100 (50).
B: sqrt(((12-10)/10)**2 + 0) / 2) = sqrt(0.02) = 0.141421;
C: sqrt((1 + 1) / 2) = 1; D: sqrt((0 + (25/50)**2) / 2) = sqrt(0.125) = 0.353553.
E (another family): tokens of A {entry:gt, entry:sma, entry:close, exit:gt, exit:sma,
exit:close}, of E {entry:gt, entry:rsi, entry:close, exit:gt, exit:rsi, exit:close}:
4 shared of 8 → 1 - 4/8 = 0.5.

profile_distance to A on data-1 (sharpe, turnover, exposure, n_trades, max_drawdown):
A (1, 2, 0.5, 20, -0.1), B (0, 2, 0.5, 20, -0.1), C (2, 4, 1, 40, -0.3), D = A.
Ranges: 2, 2, 0.5, 20, 0.2. B: sqrt(0.5**2 / 5) = sqrt(0.05) = 0.223607;
C: sqrt((0.25 + 1 + 1 + 1 + 1) / 5) = sqrt(0.85) = 0.921954; D: 0; E: no data-1 → NaN.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from _kb_records import open_kb, run
from sqlalchemy import Engine, event

from alphaloop.kb import (
    BacktestRecord,
    IterationBatch,
    IterationRecord,
    KBError,
    KnowledgeBase,
    ScoreRecord,
    StrategyRecord,
)
from alphaloop.kb.retriever import SIMILAR_COLUMNS, expression_tokens, similar, tried_before
from alphaloop.strategy.spec import StrategySpec


def sma(fast: int, slow: int) -> StrategySpec:
    return StrategySpec(family="sma_cross", params={"fast": fast, "slow": slow},
                        entry=f"sma(close, {fast}) > sma(close, {slow})",
                        exit=f"sma(close, {fast}) < sma(close, {slow})")


def rsi(window: int, low: int) -> StrategySpec:
    return StrategySpec(family="rsi_revert", params={"window": window, "low": low},
                        entry=f"rsi(close, {window}) < {low}",
                        exit=f"rsi(close, {window}) > {100 - low}")


SPECS = {"A": sma(10, 50), "B": sma(12, 50), "C": sma(20, 100), "D": sma(10, 75),
         "E": rsi(14, 30)}
ID = {k: s.strategy_id for k, s in SPECS.items()}
#                sharpe turnover exposure n_trades max_drawdown
PROFILE = {"A": (1.0, 2.0, 0.5, 20, -0.1), "B": (0.0, 2.0, 0.5, 20, -0.1),
           "C": (2.0, 4.0, 1.0, 40, -0.3), "D": (1.0, 2.0, 0.5, 20, -0.1),
           "E": (3.0, 9.0, 0.9, 90, -0.5)}


def _strategy(name: str) -> StrategyRecord:
    s = SPECS[name]
    return StrategyRecord(strategy_id=ID[name], spec=s.model_dump(mode="json"),
                          family=s.family, params=s.params)


def _backtest(run_id: str, name: str, data_ref: str) -> BacktestRecord:
    sharpe, turnover, exposure, n_trades, mdd = PROFILE[name]
    return BacktestRecord(run_id=run_id, iteration=0, strategy_id=ID[name], engine="A",
                          window="search", data_ref=data_ref, sharpe=sharpe,
                          sharpe_per_period=sharpe / 16, max_drawdown=mdd, n_trades=n_trades,
                          metrics={"turnover": turnover, "exposure": exposure})


def _score(run_id: str, name: str, total: float) -> ScoreRecord:
    return ScoreRecord(run_id=run_id, iteration=0, strategy_id=ID[name],
                       policy_version="v1", score_total=total, passed=False)


def _fill(kb: KnowledgeBase, extra: int = 0) -> None:
    """The table of the module docstring; ``extra`` adds that many sma_cross strategies
    in a third run, on data-3 with fast 10..20 and slow 50..100 (ranges unchanged)."""
    kb.save_run(run("r1", created_ns=1_000))
    kb.save_run(run("r2", created_ns=2_000))
    kb.persist_iteration(IterationBatch(
        iteration=IterationRecord(run_id="r1", iteration=0, state="ITER_DONE", summary={}),
        strategies=[_strategy(k) for k in "ABC"],
        backtests=[_backtest("r1", k, "data-1") for k in "ABC"],
        scores=[_score("r1", "A", 50.0), _score("r1", "B", 40.0)]))
    kb.persist_iteration(IterationBatch(
        iteration=IterationRecord(run_id="r2", iteration=0, state="ITER_DONE", summary={}),
        strategies=[_strategy(k) for k in "BDE"],
        backtests=[_backtest("r2", "B", "data-1"), _backtest("r2", "D", "data-1"),
                   _backtest("r2", "E", "data-2")],
        scores=[_score("r2", "B", 70.0)]))
    if extra:
        specs = [sma(11 + i % 9, 51 + i % 49) for i in range(extra)]
        kb.save_run(run("r3", created_ns=3_000))
        kb.persist_iteration(IterationBatch(
            iteration=IterationRecord(run_id="r3", iteration=0, state="ITER_DONE",
                                      summary={}),
            strategies=[StrategyRecord(strategy_id=s.strategy_id,
                                       spec=s.model_dump(mode="json"), family=s.family,
                                       params=s.params) for s in specs],
            backtests=[BacktestRecord(run_id="r3", iteration=0, strategy_id=s.strategy_id,
                                      engine="A", window="search", data_ref="data-3")
                       for s in specs]))


@pytest.fixture
def kb(tmp_path: Path) -> KnowledgeBase:
    kb = open_kb(tmp_path / "kb.sqlite")
    _fill(kb)
    return kb


def _by_name(frame: Any) -> dict[str, dict[str, Any]]:
    name = {v: k for k, v in ID.items()}
    return {name[r["strategy_id"]]: r for r in frame.to_dict("records")}


def test_similar_ranks_by_hand_computed_spec_distance(kb: KnowledgeBase) -> None:
    frame = similar(kb, ID["A"][:12])  # a unique prefix
    assert list(frame.columns) == list(SIMILAR_COLUMNS)
    rows = _by_name(frame)
    assert [r for r in rows] == ["B", "D", "E", "C"]  # A itself is left out
    assert rows["B"]["spec_distance"] == pytest.approx(math.sqrt(0.02), abs=1e-12)
    assert rows["D"]["spec_distance"] == pytest.approx(math.sqrt(0.125), abs=1e-12)
    assert rows["E"]["spec_distance"] == pytest.approx(0.5, abs=1e-12)
    assert rows["C"]["spec_distance"] == pytest.approx(1.0, abs=1e-12)
    assert rows["B"]["family"] == "sma_cross" and rows["B"]["params"] == {"fast": 12, "slow": 50}


def test_similar_profile_distance_and_the_runs_and_best_score(kb: KnowledgeBase) -> None:
    rows = _by_name(similar(kb, ID["A"]))
    assert rows["B"]["profile_distance"] == pytest.approx(math.sqrt(0.05), abs=1e-12)
    assert rows["C"]["profile_distance"] == pytest.approx(math.sqrt(0.85), abs=1e-12)
    assert rows["D"]["profile_distance"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(rows["E"]["profile_distance"])  # never tested on data-1
    assert rows["B"]["runs"] == ["r1", "r2"] and rows["D"]["runs"] == ["r2"]
    assert rows["B"]["best_score"] == 70.0  # the best of 40 (r1) and 70 (r2)
    assert math.isnan(rows["C"]["best_score"])  # never scored


def test_similar_by_profile_puts_the_same_behaviour_first(kb: KnowledgeBase) -> None:
    frame = similar(kb, ID["A"], by="profile", n=3)
    assert list(_by_name(frame)) == ["D", "B", "C"]  # E (NaN) would come last: cut by n
    assert len(similar(kb, ID["A"], n=2)) == 2


def test_similar_of_another_family_uses_the_structure(kb: KnowledgeBase) -> None:
    rows = _by_name(similar(kb, ID["E"]))
    # every sma_cross strategy shares 4 of 8 tokens with E; E's data is data-2, where
    # only E itself was tested: no profile to compare
    assert {k: r["spec_distance"] for k, r in rows.items()} == pytest.approx(
        {"A": 0.5, "B": 0.5, "C": 0.5, "D": 0.5})
    assert all(math.isnan(r["profile_distance"]) for r in rows.values())


def test_expression_tokens_are_operators_and_fields_per_side() -> None:
    assert expression_tokens("sma(close, 10) > sma(close, 50)", "rsi(close, 14) > 70") == {
        "entry:gt", "entry:sma", "entry:close", "exit:gt", "exit:rsi", "exit:close"}
    assert expression_tokens("no such thing(", None) == frozenset()


def test_similar_refuses_unknown_and_ambiguous_ids(kb: KnowledgeBase) -> None:
    with pytest.raises(KBError) as info:
        similar(kb, "zz")
    assert info.value.code == "KB_NOT_FOUND"
    with pytest.raises(KBError) as info:
        similar(kb, "")
    assert info.value.code == "KB_AMBIGUOUS"


def test_similar_refuses_data_the_knowledge_base_never_tested_on(kb: KnowledgeBase) -> None:
    """A mistyped --data-ref would otherwise read as "no profile" on every row."""
    with pytest.raises(KBError) as info:
        similar(kb, ID["A"], data_ref="data-9")
    assert info.value.code == "KB_NOT_FOUND" and "data-9" in info.value.message
    assert len(similar(kb, ID["A"], data_ref="data-2")) == 4  # E was tested there


def test_tried_before_exact_strategy_on_the_same_data(kb: KnowledgeBase) -> None:
    answer = tried_before(kb, sma(10, 50), "data-1", threshold=0.2)
    assert answer and answer.exact and answer.strategy_id == ID["A"]
    # within 0.2 of A: B (0.141421); D (0.353553) is not
    assert list(_by_name(answer.neighbours)) == ["B"]
    assert not tried_before(kb, sma(10, 50), "data-2").exact  # A never ran on data-2


def test_tried_before_near_neighbours_of_a_new_spec(kb: KnowledgeBase) -> None:
    # fast 13, slow 50 is not in the KB. Ranges on data-1 (A..D and the query): fast
    # 10..20, slow 50..100. B: sqrt((0.1**2 + 0) / 2) = 0.070711; A: sqrt(0.3**2 / 2)
    # = 0.212132; D: sqrt((0.09 + 0.25) / 2) = 0.412311; C: sqrt((0.49 + 1) / 2) = 0.863134
    answer = tried_before(kb, sma(13, 50).model_dump(mode="json"), "data-1", threshold=0.25)
    assert answer and not answer.exact
    rows = _by_name(answer.neighbours)
    assert list(rows) == ["B", "A"]
    assert rows["B"]["spec_distance"] == pytest.approx(math.sqrt(0.005), abs=1e-12)
    assert rows["A"]["spec_distance"] == pytest.approx(math.sqrt(0.045), abs=1e-12)
    # only what was tried on that data counts: on data-2 only E (0.5 away) was tried
    assert not tried_before(kb, sma(13, 50), "data-2", threshold=0.25)
    # another family is 0.5 away from every sma_cross: nothing near on data-1
    assert not tried_before(kb, rsi(10, 25), "data-1", threshold=0.25)


def test_the_number_of_queries_does_not_grow_with_the_kb(tmp_path: Path) -> None:
    counts = []
    for extra in (0, 40):
        kb = open_kb(tmp_path / f"kb{extra}.sqlite")
        _fill(kb, extra)
        statements: list[str] = []

        def count(*args: Any, statements: list[str] = statements) -> None:
            statements.append(str(args[2]))

        event.listen(Engine, "before_cursor_execute", count)
        try:
            frame = similar(kb, ID["A"], n=100)
            tried_before(kb, sma(13, 50), "data-1")
        finally:
            event.remove(Engine, "before_cursor_execute", count)
        assert len(frame) == 4 + extra
        counts.append(len(statements))
    assert counts[0] == counts[1] > 0


def test_profile_uses_only_the_metrics_both_sides_recorded(tmp_path: Path) -> None:
    # only sharpe recorded: A 1.0, B 0.5 (range 0.5) → |1.0 - 0.5| / 0.5 = 1, the other
    # four metrics are left out (not counted as 0). Params: fast 10 vs 12 with range 2,
    # slow equal → sqrt((1 + 0) / 2).
    kb = open_kb(tmp_path / "kb.sqlite")
    kb.save_run(run("r1"))
    kb.persist_iteration(IterationBatch(
        iteration=IterationRecord(run_id="r1", iteration=0, state="ITER_DONE", summary={}),
        strategies=[_strategy("A"), _strategy("B")],
        backtests=[BacktestRecord(run_id="r1", iteration=0, strategy_id=ID[k], engine="A",
                                  window="search", data_ref="d", sharpe=s)
                   for k, s in (("A", 1.0), ("B", 0.5))]))
    row = similar(kb, ID["A"]).iloc[0]
    assert row["strategy_id"] == ID["B"]
    assert row["profile_distance"] == pytest.approx(1.0, abs=1e-12)
    assert row["spec_distance"] == pytest.approx(math.sqrt(0.5), abs=1e-12)
