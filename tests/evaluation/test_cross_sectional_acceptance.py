"""Issue 16, acceptance: a planted cross-sectional effect is found, pure noise is not.

Two seeded 50-name × 2,520-bar panels from the same generator
(:class:`alphaloop.data.synthetic.CrossSectionalEffect`): one where each name's next
return leans towards its cross-sectional rank of 60-bar past return with strength 0.04
(so the rank IC of ``roc(close, 60)`` is about 0.04 by construction, the size of a
modest, real momentum factor), one with strength 0 (GBM, nothing to find). A user's
commands, through the CLI:

- ``alphaloop factor "roc(close, 60)"`` reports the planted factor as significant
  (rank IC near 0.04, Newey-West t far above 3) and the noise factor as not;
- ``alphaloop sweep xs_momentum`` (15 bps per side: 10 fees + 5 slippage) followed by
  ``alphaloop evaluate`` under the default scoring policy (score-v2: DSR deflated by
  all trials, PBO, excess-over-benchmark gates) keeps at least one survivor on the
  planted panel and none on noise.

The benchmark: the default equal-weight buy-and-hold of the universe, held at each
book's stated net exposure (``evaluation.robustness.benchmark_exposure``): these books
are dollar-neutral (net 0), so their excess over it is their own return, what a
market-neutral book is meant to earn. Measured against the whole index instead (book
minus index), the planted books fail the excess-DSR gate: 50 independent GBM names with
a 5 % drift make an index with Sharpe ≈ 1.4, and a beta-≈-0 book minus that index keeps
an excess Sharpe of about 1.75 (excess DSR 0.79 and 0.81 with 24 trials, DSR 1.00), a
yardstick the book never claimed. The last test checks that the labels say which
yardstick each row was judged against.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from alphaloop.cli import app
from alphaloop.data.synthetic import CrossSectionalEffect, generate

runner = CliRunner()
N_NAMES, N_BARS, LOOKBACK, STRENGTH = 50, 2520, 60, 0.04
SWEEP = ("--n", "24", "--sampler", "sobol", "--seed", "0", "--fees-bps", "10",
         "--slippage-bps", "5")


def _run(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout + res.stderr


@pytest.fixture(scope="module")
def panels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("xs_panels")
    out = {}
    for name, strength in (("planted", STRENGTH), ("noise", 0.0)):
        bars = generate(N_NAMES, N_BARS, seed=1, cross_sectional=CrossSectionalEffect(
            strength=strength, lookback=LOOKBACK))
        path = folder / f"{name}.parquet"
        bars.to_long().to_parquet(path, index=False)
        out[name] = path
    return out


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHALOOP_HOME", str(tmp_path / "home"))


def _scored(panel: Path, tmp_path: Path, *benchmark: str) -> pd.DataFrame:
    """Sweep (once) and evaluate under the default policy; the scored candidates."""
    results, scored = tmp_path / "sweep.parquet", tmp_path / "scored.parquet"
    if not results.exists():
        code, text = _run("sweep", "xs_momentum", "--data", str(panel), *SWEEP,
                          "--out", str(results))
        assert code == 0, text
    code, text = _run("evaluate", str(results), "--top", "1", *benchmark,
                      "--out", str(scored))
    assert code == 0, text
    assert "policy score-v2" in re.sub(r"\s+", " ", text)  # the default policy
    frame = pd.read_parquet(scored)
    assert len(frame) == 24 and (frame["n_trials"] == 24).all()
    # 24 different books, not one strategy 24 times (a ranked book run as sleeves of
    # "close > 0" would be the same buy-and-hold for every candidate)
    assert frame["sharpe"].round(6).nunique() == 24
    return frame


def test_factor_reports_the_planted_effect_and_not_the_noise(panels: dict[str, Path]) -> None:
    stats = {}
    for name, path in panels.items():
        code, text = _run("factor", f"roc(close, {LOOKBACK})", "--data", str(path), "--json")
        assert code == 0, text
        stats[name] = json.loads(text)
    planted, noise = stats["planted"], stats["noise"]
    # planted at 0.04 (the 1-bar forward return is open to open, the effect close to
    # close: most of it, not all); rank IC se ≈ 0.14 / sqrt(2,460 bars) ≈ 0.003
    assert 0.025 < planted["rank_ic_mean"] < 0.05
    assert planted["rank_ic_t"] > 8
    assert planted["spread"] > 0  # top quintile beats the bottom one
    assert abs(noise["rank_ic_mean"]) < 0.01
    assert abs(noise["rank_ic_t"]) < 3


def test_sweep_and_evaluate_find_a_survivor_on_the_planted_panel(
        panels: dict[str, Path], tmp_path: Path) -> None:
    frame = _scored(panels["planted"], tmp_path)
    survivors = frame[frame["passed"]]
    assert len(survivors) >= 1, frame[["params", "sharpe", "dsr", "failed_gates"]]
    best = survivors.iloc[0]
    assert best["dsr"] >= 0.95 and best["excess_dsr"] >= 0.95 and best["sharpe"] > 1


def test_sweep_and_evaluate_find_nothing_on_noise(panels: dict[str, Path],
                                                   tmp_path: Path) -> None:
    frame = _scored(panels["noise"], tmp_path)
    assert not frame["passed"].any(), frame[frame["passed"]][["params", "sharpe", "dsr"]]
    assert (frame["dsr"] < 0.95).all()


def test_a_neutral_book_is_judged_against_the_benchmark_at_its_net_exposure(
        panels: dict[str, Path], tmp_path: Path) -> None:
    """The default benchmark at net 0 is cash: the excess DSR of every book equals its
    own DSR (both deflated by the same 24 trials), the information ratio its Sharpe."""
    frame = _scored(panels["planted"], tmp_path)
    assert frame["benchmark"].str.endswith("x 0 (net exposure)").all()
    assert (frame["excess_dsr"] - frame["dsr"]).abs().max() < 1e-9
    assert (frame["information_ratio"] - frame["sharpe"]).abs().max() < 1e-9
