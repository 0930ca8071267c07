"""The research loop hands its survivors to a world (seed 000 via the SDK): a real
loop, a real uvicorn WorldService on loopback, a real SQLite file for each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, free_port

from alphaloop.data.synthetic import PlantedEffect, generate
from alphaloop.kb import KnowledgeBase
from alphaloop.orchestrator.config import RunConfig
from alphaloop.orchestrator.runner import WORLD_FILE, Runner, runs_root
from alphaloop.strategy.spec import StrategySpec
from alphaloop.strategy.templates import get_family
from alphaloop.world.client import WorldClient, submit_many


def _panel(path: Path) -> Path:
    """Four symbols with a strong causal trend (as the loop's planted-effect tests)."""
    effect = PlantedEffect(symbols=(0, 1, 2, 3), strength=0.3, lookback=20)
    generate(4, 2520, seed=12, mu=0.0, planted=effect).to_long().to_parquet(path)
    return path


def _config(tmp: Path, data: Path, world: dict[str, Any] | None, run_id: str) -> RunConfig:
    return RunConfig.from_dict({
        "run_id": run_id, "seed": 7, "data": {"source": str(data)},
        "budgets": {"max_iterations": 4, "max_backtests": 2000},
        "generation": {"families": ["sma_cross", "momentum"], "sampler": "sobol",
                       "candidates_per_iteration": 24},
        "policies": {"promotion": {"top_k_to_verify": 3, "score_threshold": 20}},
        "kb": {"url": f"sqlite:///{tmp / 'research.sqlite'}"}, "out_dir": str(tmp / "runs"),
        "world": world})


def _lines(cfg: RunConfig) -> list[dict[str, Any]]:
    path = runs_root(cfg.out_dir) / cfg.run_id / WORLD_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_survivors_reach_the_world_once_and_the_world_decides(
        world_server: tuple[Server, dict[str, str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    srv, toks = world_server
    data = _panel(srv.refs_root / "planted.parquet")
    with WorldClient(srv.url, toks["operator"]) as c:
        c.create_world("research", name="research", data=data.name)
    monkeypatch.setenv("ALPHALOOP_WORLD_TOKEN", toks["submitter"])
    cfg = _config(tmp_path, data, {"url": srv.url, "id": "research"}, "handoff")
    summary = Runner(cfg).run()
    assert summary.best_strategies, "the planted panel gave no survivor to hand off"

    lines = _lines(cfg)
    ids = [b.strategy_id for b in summary.best_strategies]
    assert sorted(line["strategy_id"] for line in lines) == sorted(ids)
    for line in lines:
        assert line["evaluation_run"] == f"handoff:{line['strategy_id'][:16]}"
        assert line["stage"] in ("backtest", "paper", "live") and line["reasons"] is not None
    with KnowledgeBase(cfg.kb.url) as kb:  # the survivors' specs as the loop built them
        stored = [kb.strategy(sid) for sid in ids]
    specs = [get_family(s["family"]).build(s["params"]) for s in stored]
    assert [s.strategy_id for s in specs] == ids
    with WorldClient(srv.url, toks["viewer"]) as c:
        first = {line["evaluation_run"]: c.get_run("research", line["evaluation_run"])
                 for line in lines}
    assert all(len(run.revisions) == 1 for run in first.values())
    # handing the same survivors off again (a resumed run walks its iterations again)
    # opens no new evaluation run: each survivor keeps the one keyed by this research
    # run, whose history keeps the first judgement (the world may add a revision: its
    # metrics are now sourced from that first evaluation, seed 000 §3)
    again = submit_many(srv.url, "research", toks["submitter"], specs, "handoff")
    assert sorted(r.evaluation.run_id for r in again) == sorted(first)
    with WorldClient(srv.url, toks["viewer"]) as c:
        for run_id, run in first.items():
            now = c.get_run("research", run_id)
            assert now.strategy_id == run.strategy_id
            assert now.revisions[0].content_hash == run.revisions[0].content_hash


def test_a_world_without_data_gets_the_numbers_the_loop_recorded(
        world_server: tuple[Server, dict[str, str]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A black-box report: survivors reached a world without data with no metrics at
    all, and its policy failed every one (METRIC_MISSING). Now the loop sends what it
    recorded: engine B's Sharpe and the scoring's DSR, the summary's own numbers."""
    srv, toks = world_server
    with WorldClient(srv.url, toks["operator"]) as c:
        c.create_world("bare", name="bare", data=None)
    monkeypatch.setenv("ALPHALOOP_WORLD_TOKEN", toks["submitter"])
    cfg = _config(tmp_path, _panel(tmp_path / "planted.parquet"),
                  {"url": srv.url, "id": "bare"}, "bare-run")
    summary = Runner(cfg).run()
    assert summary.best_strategies, "the planted panel gave no survivor to hand off"
    with WorldClient(srv.url, toks["viewer"]) as c:
        for best in summary.best_strategies:
            (rev,) = c.get_run("bare", f"bare-run:{best.strategy_id[:16]}").revisions
            assert rev.metrics["sharpe"] == best.engine_b_sharpe
            assert rev.metrics["dsr"] == best.dsr and rev.metrics["pbo"] == best.pbo
            assert not any("unavailable" in source for source in rev.metric_sources)


def test_an_unreachable_world_does_not_stop_the_research(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    data = _panel(tmp_path / "planted.parquet")
    monkeypatch.delenv("ALPHALOOP_WORLD_TOKEN", raising=False)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = _config(tmp_path, data, {"url": url, "id": "research"}, "nowhere")
    summary = Runner(cfg).run()
    assert summary.status == "DONE_BUDGET_EXHAUSTED" and summary.best_strategies
    lines = _lines(cfg)
    assert lines and all(line["error_code"] == "WORLD_UNREACHABLE" for line in lines)
    # the survivors stayed pending: every iteration after the first survivor tried again
    first = min(b.iteration for b in summary.best_strategies)
    assert [line["iteration"] for line in lines] == list(range(first, 5))


def test_runner_submit_is_the_sdk(world_server: tuple[Server, dict[str, str]],
                                  tmp_path: Path) -> None:
    srv, toks = world_server
    data = srv.refs_root / "submit.parquet"
    if not data.exists():
        shutil.copy(_panel(tmp_path / "p.parquet"), data)
    with WorldClient(srv.url, toks["operator"]) as c:
        c.create_world("submit-w", name="submit", data=data.name)
    spec = {"entry": "sma(close, 10) > sma(close, 50)", "exit": "sma(close, 10) < sma(close, 50)"}
    result = Runner.submit(StrategySpec.model_validate(spec), "submit-w", url=srv.url,
                           token=toks["submitter"])
    # the world's policy decides the stage; allow_live is off by default: never live
    assert result.world_id == "submit-w" and result.stage in ("backtest", "paper")
    assert result.decision is not None and result.decision.stage == result.stage
    assert result.evaluation.strategy_id == StrategySpec.model_validate(spec).strategy_id
    # a submitted strategy enters the world's campaign in its backtest phase
    with WorldClient(srv.url, toks["viewer"]) as c:
        (entry,) = c.campaign("submit-w").strategies
    assert (entry.strategy_id, entry.phase, entry.run_id) == (
        result.evaluation.strategy_id, "backtest_campaign", result.evaluation.run_id)
