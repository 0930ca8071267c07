"""Seed 004 §6.2: when an iteration has nothing new to test, the loop widens the
families' ranges (branch A), then switches to another family (C), then forces a
baseline (D); each is logged as BRANCH_TAKEN. Branch B (disable the newest constraints)
works on the learner's constraints and is not taken here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import sma_family

from alphaloop.errors import AlphaloopError, ErrorClass
from alphaloop.orchestrator.config import RunConfig
from alphaloop.orchestrator.events import EventLog
from alphaloop.orchestrator.runner import Runner, runs_root
from alphaloop.strategy import templates as t

Make = Callable[..., RunConfig]


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A family of 2 × 2 grid points; widening may grow ``fast`` to 15 and ``slow`` to
    40 (their limits), once: 3 × 3 points. Registered for this test only."""
    yield sma_family(monkeypatch, "tiny_cross", t.IntParam(5, 10, 5, limit=15), t.IntParam(20, 30, 10, limit=40))


def _config(make_config: Make, path: Path, **over: Any) -> RunConfig:
    return make_config(path, generation={"families": ["tiny_cross"], "sampler": "grid",
                                         "candidates_per_iteration": 8},
                       budgets={"max_iterations": 5},
                       policies={"stops": {"low_generation_iters": 100,
                                           "empty_shortlist_iters": 100,
                                           "max_branch_repeats": 100}}, **over)


def _branches(cfg: RunConfig) -> list[dict[str, Any]]:
    events = EventLog(runs_root(cfg.out_dir) / cfg.run_id, cfg.run_id).read()
    return [e for e in events if e["event"] == "BRANCH_TAKEN" and e["stage_id"] == "S30"]


def _params(summary_cfg: RunConfig) -> list[list[dict[str, Any]]]:
    """The parameters tested in each iteration, from the KB."""
    from alphaloop.kb.store import KnowledgeBase

    kb = KnowledgeBase(summary_cfg.kb.url)
    tested = kb.backtests(summary_cfg.run_id)
    by_iter: dict[int, list[dict[str, Any]]] = {}
    for row in tested[tested["engine"] == "A"].to_dict("records"):
        spec = kb.strategy(str(row["strategy_id"]))
        by_iter.setdefault(int(row["iteration"]), []).append(spec.get("params") or {})
    return [by_iter.get(i, []) for i in range(1, 6)]


def test_S30_branch_A_widens_then_C_switches_family(make_config: Make, noise_path: Path,
                                                    tiny: str) -> None:
    cfg = _config(make_config, noise_path)
    summary = Runner(cfg).run()
    taken = _branches(cfg)
    # it 1: the 4 grid points; it 2: nothing new -> A; it 3: the 5 new points of the
    # widened grid (9 - 4); it 4: nothing new, the limits are reached -> C
    assert [(b["iteration_id"], b["branch"]) for b in taken] == [
        (2, "A_WIDEN_RANGES"), (4, "C_SWITCH_FAMILY")]
    assert taken[0]["ranges"] == {"tiny_cross": {
        "fast": {"type": "int", "low": 5, "high": 15, "step": 5},
        "slow": {"type": "int", "low": 20, "high": 40, "step": 10}}}
    assert taken[1]["family"] == next(f for f in t.FAMILIES if f != "tiny_cross")
    gen = [it.tested_A for it in summary.iterations]
    assert gen[:4] == [4, 0, 5, 0]
    per_iter = _params(cfg)
    assert {(p["fast"], p["slow"]) for p in per_iter[2]} == {
        (15, 20), (15, 30), (5, 40), (10, 40), (15, 40)}  # only the new points
    assert per_iter[4] and all(p.get("fast", 0) <= 50 for p in per_iter[4])  # the new family


def test_S30_branch_A_can_be_turned_off(make_config: Make, noise_path: Path,
                                        tiny: str) -> None:
    cfg = make_config(noise_path, generation={"families": ["tiny_cross"], "sampler": "grid",
                                              "candidates_per_iteration": 8,
                                              "max_widenings": 0},
                      budgets={"max_iterations": 2})
    Runner(cfg).run()
    assert [b["branch"] for b in _branches(cfg)] == ["C_SWITCH_FAMILY"]


def test_a_widened_run_resumed_after_a_pause_ends_as_an_uninterrupted_one(
        make_config: Make, noise_path: Path, tiny: str, tmp_path: Path) -> None:
    """The widening is state of the run: a resumed run must widen at the same point
    and not propose again what it proposed before the pause."""
    clean_cfg = _config(make_config, noise_path, run_id="clean",
                        kb={"url": f"sqlite:///{tmp_path / 'clean.sqlite'}"})
    clean = Runner(clean_cfg).run()
    cfg = _config(make_config, noise_path, run_id="paused")
    fired: list[int] = []

    def fault(i: int, stage: str, attempt: int) -> None:
        if i == 3 and stage == "S50" and not fired:  # after branch A, before its effect
            raise AlphaloopError("disk gone", code="DATA_LOAD_FAIL",
                                 error_class=ErrorClass.TRANSIENT)

    def once(i: int, stage: str, attempt: int) -> None:
        try:
            fault(i, stage, attempt)
        except AlphaloopError:
            if attempt >= 2:
                fired.append(i)
            raise

    paused = Runner(cfg, fault=once, sleep=lambda s: None).run()
    assert paused.status == "PAUSED"
    resumed = Runner.resume("paused", out_dir=cfg.out_dir)
    assert resumed.status == clean.status
    assert [it.tested_A for it in resumed.iterations] == \
        [it.tested_A for it in clean.iterations]
    assert [(b["iteration_id"], b["branch"]) for b in _branches(cfg)
            if not b.get("reused")] == \
        [(b["iteration_id"], b["branch"]) for b in _branches(clean_cfg)]
    assert sorted(map(str, _params(cfg))) == sorted(map(str, _params(clean_cfg)))
