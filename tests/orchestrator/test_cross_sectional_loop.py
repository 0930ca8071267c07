"""The research loop runs ranked books like any family (issue 16 item 3): on a panel
with a planted cross-sectional effect an ``xs_momentum`` loop finds a survivor that
holds on the holdout and in engine B; on the same generator without the effect it
finds nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from alphaloop.data.synthetic import CrossSectionalEffect, generate
from alphaloop.evaluation.scoring import load_policy
from alphaloop.orchestrator.config import RunConfig
from alphaloop.orchestrator.runner import Runner

Make = Callable[..., RunConfig]
LOOP = {"budgets": {"max_iterations": 2},
        "generation": {"families": ["xs_momentum"], "sampler": "sobol",
                       "candidates_per_iteration": 12}}


def _panel(path: Path, strength: float) -> Path:
    # 50 names, a rank IC of about ``strength`` for the 60-bar past return
    bars = generate(50, 2520, seed=1, cross_sectional=CrossSectionalEffect(
        strength=strength, lookback=60))
    bars.to_long().to_parquet(path)
    return path


@pytest.fixture(scope="module")
def panels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("xs")
    return {"planted": _panel(folder / "planted.parquet", 0.04),
            "noise": _panel(folder / "noise.parquet", 0.0)}


def test_a_planted_ranking_effect_survives_the_loop(make_config: Make,
                                                    panels: dict[str, Path]) -> None:
    summary = Runner(make_config(panels["planted"], **LOOP)).run()
    assert summary.best_strategies, summary.iterations
    for best in summary.best_strategies:
        assert best.family == "xs_momentum"
        assert best.dsr >= 0.95 and best.sharpe_holdout > 0 and best.engine_b_sharpe > 0


def test_noise_gives_the_ranked_books_no_survivor(make_config: Make,
                                                  panels: dict[str, Path]) -> None:
    summary = Runner(make_config(panels["noise"], **LOOP)).run()
    assert summary.stats.backtests > 0
    assert summary.best_strategies == ()


def test_a_factor_gate_in_the_policy_reads_the_books_rank_ic(
        make_config: Make, panels: dict[str, Path], tmp_path: Path) -> None:
    """The same loop under a policy whose factor gate no real factor meets
    (min_rank_ic_t 1e6) keeps nothing: the loop measured the books' rank IC and the
    gate judged it (the planted one has t ≈ 13)."""
    strict = load_policy("default").model_dump(mode="json")
    strict["policy_version"] = "test-factor-gate"
    strict["gates"]["min_rank_ic_t"] = 1e6
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(strict))
    cfg = make_config(panels["planted"], **LOOP, policies={
        "promotion": {"top_k_to_verify": 3, "score_threshold": 20},
        "scoring": str(path)}, run_id="gate")
    summary = Runner(cfg).run()
    assert summary.best_strategies == ()
