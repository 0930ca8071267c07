"""The claim book on a real SQLite knowledge base: what a stage gets is the same
whoever computed it, a result is stored exactly, and a database that refuses a claim
costs duplicate work, never a result."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from alphaloop.errors import ErrorClass
from alphaloop.kb import KBError, KnowledgeBase
from alphaloop.orchestrator.claims import (
    A_CODEC,
    JSON_CODEC,
    METRICS,
    ClaimBook,
    assemble_a,
)


def _result(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=len(METRICS))
    values[METRICS.index("n_trades")] = 17
    values[METRICS.index("n_obs")] = 5
    values[METRICS.index("profit_factor")] = math.inf
    values[METRICS.index("win_rate")] = math.nan
    values[METRICS.index("calmar")] = -0.0
    return values, rng.normal(size=5).astype(np.float32)


def test_engine_a_results_come_back_bit_for_bit() -> None:
    values, returns = _result(1)
    back_values, back_returns = A_CODEC.decode(*A_CODEC.encode((values, returns)))
    assert back_values.tobytes() == values.tobytes()  # NaN, inf and -0.0 included
    assert back_returns.tobytes() == returns.tobytes()
    row = {"sharpe": math.nan, "codes": ["LOW_SHARPE"], "n": 3, "x": 0.1 + 0.2}
    back = JSON_CODEC.decode(*JSON_CODEC.encode(row))
    assert math.isnan(back["sharpe"]) and back["x"] == 0.1 + 0.2
    assert {k: v for k, v in back.items() if k != "sharpe"} == {
        k: v for k, v in row.items() if k != "sharpe"}


def test_assembled_frames_have_one_dtype_per_column() -> None:
    frame, returns = assemble_a(["a", "b"], [_result(1), _result(2)], 5)
    assert list(frame.columns) == ["strategy_id", *METRICS]
    assert list(frame["strategy_id"]) == ["a", "b"]
    assert frame["n_trades"].dtype == np.int64 and frame["sharpe"].dtype == np.float64
    assert returns.shape == (2, 5) and returns.dtype == np.float32
    empty, none = assemble_a([], [], 5)
    assert list(empty.columns) == ["strategy_id", *METRICS] and len(empty) == 0
    assert none.shape == (0, 5)


def _book(url: str, run_id: str, **kw: Any) -> ClaimBook:
    return ClaimBook(KnowledgeBase(url), run_id, sleep=lambda s: None, **kw)


def test_a_second_run_reads_what_the_first_computed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kb.sqlite'}"
    computed: dict[str, list[str]] = {"a": [], "b": []}

    def compute(run: str) -> Any:
        def run_it(ids: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
            computed[run] += ids
            return {s: _result(int(s[1:])) for s in ids}
        return run_it

    ids = [f"s{k}" for k in range(10)]
    _, how_a = _book(url, "a").run("key", ids[:6], compute("a"), A_CODEC, batch=4)
    second, how_b = _book(url, "b").run("key", ids, compute("b"), A_CODEC, batch=4)
    assert computed == {"a": ids[:6], "b": ids[6:]}
    assert (len(how_a.computed), len(how_b.computed), len(how_b.taken)) == (6, 4, 6)
    for s in ids:
        values, returns = _result(int(s[1:]))
        assert second[s][0].tobytes() == values.tobytes()
        assert second[s][1].tobytes() == returns.tobytes()
    assert list(second) == ids


def test_after_pruning_a_run_computes_again_and_gets_the_same_numbers(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kb.sqlite'}"
    ids = [f"s{k}" for k in range(4)]
    computed: list[str] = []

    def compute(some: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        computed.extend(some)
        return {s: _result(int(s[1:])) for s in some}

    first, _ = _book(url, "a").run("key", ids, compute, A_CODEC)
    assert KnowledgeBase(url).prune_claims(0, now_ns=2**62) == 4  # far past every lease
    again, how = _book(url, "b").run("key", ids, compute, A_CODEC)
    assert computed == ids + ids and len(how.computed) == 4 and not how.taken
    for s in ids:
        assert again[s][0].tobytes() == first[s][0].tobytes()
        assert again[s][1].tobytes() == first[s][1].tobytes()


def test_a_wait_for_another_runs_claims_is_told_once(tmp_path: Path) -> None:
    """A run killed while it held claims holds the next run up until the lease passes:
    the caller is told once, with how many results it waits for."""
    url = f"sqlite:///{tmp_path / 'kb.sqlite'}"
    kb = KnowledgeBase(url)
    kb.claim("key", ["s1", "s2"], "ghost", lease_until_ns=10**6, now_ns=0)
    clock = iter(range(0, 10**9, 4 * 10**5))  # the ghost's lease ends at the third look
    told: list[int] = []
    book = ClaimBook(kb, "b", clock=lambda: next(clock), sleep=lambda s: None)
    book.on_wait = told.append
    got, how = book.run("key", ["s0", "s1", "s2"], lambda ids: {s: s.upper() for s in ids},
                        JSON_CODEC)
    assert got == {"s0": "S0", "s1": "S1", "s2": "S2"}
    assert told == [2] and how.waits >= 1


class _Flaky(KnowledgeBase):
    """A knowledge base whose claims fail ``failures`` times with a TRANSIENT error."""

    failures = 0

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise KBError("locked", code="DB_LOCKED", error_class=ErrorClass.TRANSIENT)
        return super().claim(*args, **kwargs)


def test_a_refused_claim_is_tried_once_more_then_the_run_computes_alone(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kb.sqlite'}"
    kb = _Flaky(url)
    kb.failures = 1
    book = ClaimBook(kb, "a", sleep=lambda s: None)
    got, how = book.run("key", ["s1", "s2"], lambda ids: {s: {"v": s} for s in ids},
                        JSON_CODEC)
    assert got == {"s1": {"v": "s1"}, "s2": {"v": "s2"}}
    assert (how.computed, how.unclaimed, book.down) == (["s1", "s2"], [], False)
    kb.failures = 2
    got, how = book.run("key", ["s3"], lambda ids: {s: {"v": s} for s in ids}, JSON_CODEC)
    assert got == {"s3": {"v": "s3"}}
    assert (how.computed, how.unclaimed, book.down) == ([], ["s3"], True)
    assert set(KnowledgeBase(url).claims("key", ["s1", "s2", "s3"])) == {"s1", "s2"}
