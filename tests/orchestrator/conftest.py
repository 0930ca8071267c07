"""Panels and configs for the loop tests: small enough for CI, real components only
(a real SQLite knowledge base file, real engines, real files)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alphaloop.data.synthetic import PlantedEffect, generate
from alphaloop.orchestrator.config import RunConfig
from alphaloop.strategy import templates as t
from alphaloop.strategy.spec import StrategySpec

N_BARS = 2520


def write_panel(path: Path, *, seed: int, planted: bool, n_symbols: int = 4) -> Path:
    """A synthetic daily panel as long Parquet. Planted: every symbol carries a strong
    causal trend effect (next-bar drift 0.3 × daily sigma × sign(close − SMA20))."""
    effect = PlantedEffect(symbols=tuple(range(n_symbols)), strength=0.3, lookback=20) \
        if planted else None
    bars = generate(n_symbols, N_BARS, seed=seed, mu=0.0, planted=effect)
    bars.to_long().to_parquet(path)
    return path


@pytest.fixture(scope="session")
def noise_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_panel(tmp_path_factory.mktemp("panels") / "noise.parquet", seed=11,
                       planted=False)


@pytest.fixture(scope="session")
def planted_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_panel(tmp_path_factory.mktemp("panels") / "planted.parquet", seed=12,
                       planted=True)


def config(tmp: Path, source: Path, **over: Any) -> RunConfig:
    """A short loop on ``source`` with its KB and runs inside ``tmp``."""
    base: dict[str, Any] = {
        "run_id": over.pop("run_id", "r1"), "seed": 7,
        "data": {"source": str(source)},
        "budgets": {"max_iterations": 3, "max_backtests": 2000},
        "generation": {"families": ["sma_cross", "momentum"], "sampler": "sobol",
                       "candidates_per_iteration": 24},
        "policies": {"promotion": {"top_k_to_verify": 3, "score_threshold": 20}},
        "kb": {"url": f"sqlite:///{tmp / 'kb.sqlite'}"},
        "out_dir": str(tmp / "runs"),
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return RunConfig.from_dict(base)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., RunConfig]:
    def make(source: Path, **over: Any) -> RunConfig:
        return config(tmp_path, source, **over)

    return make


def sma_family(monkeypatch: pytest.MonkeyPatch, name: str, fast: t.IntParam,
               slow: t.IntParam) -> str:
    """Register, for one test, an SMA cross family over the given (small) grids."""
    def build(p: dict[str, Any]) -> StrategySpec:
        f, s = f"sma(close, {p['fast']})", f"sma(close, {p['slow']})"
        return StrategySpec(entry=f"{f} > {s}", exit=f"{f} < {s}")

    monkeypatch.setitem(t.FAMILIES, name, t.Family(
        name, "an SMA cross on a small grid (test only)", {"fast": fast, "slow": slow},
        (), build))
    return name
