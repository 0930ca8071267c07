"""A resumed run keeps the scoring policy and the execution model it started with.

The config names them by path (or by a bundled policy's name); their *content* is
what the run's numbers rest on. A file changed while the run was stopped is refused on
resume, as changed data is (``INPUT_CHANGED``, exit 2 on the CLI), and nothing stored
changes; put back, the resume ends as the uninterrupted run of the same config.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alphaloop.kb import KnowledgeBase
from alphaloop.orchestrator.config import ConfigError, RunConfig, RunSummary
from alphaloop.orchestrator.runner import Runner

Make = Callable[..., RunConfig]
POLICY = ("policy_version: resume-inputs-{v}\n"
          "components: {{sharpe: {{weight: 1.0, lo: 0.0, hi: 2.0}}}}\n"
          "gates: {{min_trades: 5, min_sharpe: {s}}}\n")


def _paused(cfg: RunConfig) -> RunSummary:
    """The run, interrupted (Ctrl-C) in iteration 2's engine A stage: PAUSED."""
    def fault(i: int, stage: str, attempt: int) -> None:
        if (i, stage) == (2, "S50"):
            raise KeyboardInterrupt

    return Runner(cfg, fault=fault).run()


def _stored(cfg: RunConfig) -> tuple[bytes, Any]:
    summary = (Path(cfg.out_dir) / cfg.run_id / "summary.json").read_bytes()
    kb = KnowledgeBase(cfg.kb.url)
    return summary, kb.backtests(cfg.run_id).to_json(), kb.scores(cfg.run_id).to_json()


@pytest.mark.parametrize(("which", "key"), [("policy", "policies.scoring"),
                                            ("costs", "engines.execution")])
def test_a_policy_or_cost_file_changed_while_stopped_is_refused_on_resume(
        which: str, key: str, make_config: Make, planted_path: Path, tmp_path: Path) -> None:
    files = {"policy": tmp_path / "policy.yaml", "costs": tmp_path / "costs.yaml"}
    files["policy"].write_text(POLICY.format(v="a", s=0.2))
    files["costs"].write_text("commission: {bps: 10}\n")
    over = {"policies": {"scoring": str(files["policy"])},
            "engines": {"execution": str(files["costs"])}}
    reference = Runner(make_config(planted_path, run_id="reference", **over, kb={
        "url": f"sqlite:///{tmp_path / 'reference.sqlite'}"})).run()
    cfg = make_config(planted_path, run_id="stopped", **over)
    assert _paused(cfg).status == "PAUSED"
    original = files[which].read_text()
    files[which].write_text(POLICY.format(v="b", s=3.0) if which == "policy"
                            else "commission: {bps: 80}\n")
    before = _stored(cfg)
    with pytest.raises(ConfigError) as err:
        Runner.resume(cfg.run_id, out_dir=cfg.out_dir)
    assert err.value.code == "INPUT_CHANGED"
    assert key in err.value.message and str(files[which]) in err.value.message
    assert _stored(cfg) == before
    files[which].write_text(original)
    done = Runner.resume(cfg.run_id, out_dir=cfg.out_dir)
    assert done.comparable() == reference.comparable()
