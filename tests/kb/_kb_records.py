"""Small hand-made records for the knowledge base tests, and a raw dump of a database."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from alphaloop.kb import (
    BacktestRecord,
    ConstraintRecord,
    ConstraintSetRecord,
    FailureRecord,
    IterationBatch,
    IterationRecord,
    KnowledgeBase,
    RunRecord,
    ScoreRecord,
    StrategyRecord,
)

TABLES = ("runs", "iterations", "transitions", "stage_runs", "strategies", "backtests",
          "scores", "failures", "constraint_sets", "constraints")


def open_kb(path: Path, timeout: float = 5.0) -> KnowledgeBase:
    return KnowledgeBase(f"sqlite:///{path}", busy_timeout_s=timeout)


def run(run_id: str = "run-a", created_ns: int = 1_000, data_ref: str = "data-1",
        status: str = "RUNNING") -> RunRecord:
    return RunRecord(run_id=run_id, status=status, seed=7, data_ref=data_ref,
                     config={"mode": "mixed"}, created_ns=created_ns, updated_ns=created_ns)


def strategy(sid: str, family: str = "sma_cross", fast: int = 10) -> StrategyRecord:
    return StrategyRecord(strategy_id=sid, family=family, params={"fast": fast},
                          spec={"family": family, "entry": f"sma(close, {fast}) > close"})


def backtest(run_id: str, iteration: int, sid: str, sharpe_pp: float | None, *,
             engine: str = "A", window: str = "search", data_ref: str = "data-1"
             ) -> BacktestRecord:
    return BacktestRecord(run_id=run_id, iteration=iteration, strategy_id=sid, engine=engine,
                          window=window, data_ref=data_ref, sharpe_per_period=sharpe_pp,
                          sharpe=None if sharpe_pp is None else sharpe_pp * 10,
                          n_trades=12, metrics={"turnover": 1.5})


def score(run_id: str, iteration: int, sid: str, total: float,
          passed: bool = True) -> ScoreRecord:
    return ScoreRecord(run_id=run_id, iteration=iteration, strategy_id=sid,
                       policy_version="v1", score_total=total, passed=passed,
                       reasons=[] if passed else ["min_trades"])


def batch(run_id: str = "run-a", iteration: int = 0) -> IterationBatch:
    """One iteration: two strategies, their A backtests and scores, one failure, one
    constraint set with one constraint."""
    return IterationBatch(
        iteration=IterationRecord(run_id=run_id, iteration=iteration, state="ITER_DONE",
                                  summary={"tested_A": 2}),
        strategies=[strategy(f"s{iteration}a", fast=5), strategy(f"s{iteration}b", fast=20)],
        backtests=[backtest(run_id, iteration, f"s{iteration}a", 0.05),
                   backtest(run_id, iteration, f"s{iteration}b", -0.01)],
        scores=[score(run_id, iteration, f"s{iteration}a", 61.0),
                score(run_id, iteration, f"s{iteration}b", 12.5, passed=False)],
        failures=[FailureRecord(run_id=run_id, iteration=iteration,
                                strategy_id=f"s{iteration}b", stage_id="S60",
                                code="TOO_FEW_TRADES", evidence={"n_trades": 3})],
        constraint_sets=[ConstraintSetRecord(constraint_set_id=f"cs{iteration}",
                                             parent_id="cs_base", run_id=run_id,
                                             iteration=iteration, note="learned")],
        constraints=[ConstraintRecord(constraint_id=f"c{iteration}",
                                      constraint_set_id=f"cs{iteration}", family="sma_cross",
                                      kind="soft", rule={"fast": {"lt": 8}}, support=4,
                                      confidence=0.75)],
    )


def dump(where: Path | KnowledgeBase, *, stamps: bool = True
         ) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted, read with plain sqlite3 or psycopg (not the code
    under test); the transitions' surrogate ``id`` is left out (insertion order only),
    and with ``stamps=False`` the iterations' ``stored_ns`` too (the wall-clock time of
    the first store: two databases written at different times differ there only)."""
    left_out = {"id"} if stamps else {"id", "stored_ns"}
    if isinstance(where, KnowledgeBase):
        if where.path is None:
            return _dump_postgres(where.url, left_out)
        where = where.path
    return _dump_sqlite(where, left_out)


def _dump_postgres(url: str, left_out: set[str]) -> dict[str, list[tuple[Any, ...]]]:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo) as con:
        out = {}
        for table in TABLES:
            cols = [r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position", (table,)) if r[0] not in left_out]
            quoted = ', '.join(f'"{c}"' for c in cols)
            rows = con.execute(f"SELECT {quoted} FROM {table}").fetchall()
            out[table] = sorted(rows, key=repr)
        return out


def _dump_sqlite(path: Path, left_out: set[str]) -> dict[str, list[tuple[Any, ...]]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = {}
        for table in TABLES:
            cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})")
                    if r[1] not in left_out]
            quoted = ', '.join(f'"{c}"' for c in cols)
            rows = con.execute(f"SELECT {quoted} FROM {table}").fetchall()
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        con.close()
