"""Execution model configs: defaults, presets, kernel parameters, clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from alphaloop.engines import kernel_b as kb
from alphaloop.engines.costs import CostModel
from alphaloop.engines.execution import ExecutionModel
from alphaloop.engines.verification import VerificationPolicy
from alphaloop.errors import ExecutionConfigError


def test_defaults_are_realistic_and_stated() -> None:
    m = ExecutionModel()
    assert m.commission.bps == 10 and m.spread.bps == 10 and m.impact.k == 1.0
    assert m.volume.max_participation == 0.1 and m.lot_size == 1 and m.borrow_bps == 50
    assert m.max_leverage == 2.0 and m.rebalance.every_bars == 0
    p = m.kernel_params()
    assert p[kb.P_COMM] == pytest.approx(0.001)
    assert p[kb.P_SPREAD] == pytest.approx(0.0005)  # half of the 10 bps spread
    assert p[kb.P_BORROW] == pytest.approx(0.005)


def test_frictionless_turns_everything_off() -> None:
    p = ExecutionModel.frictionless().kernel_params()
    assert p[kb.P_COMM] == p[kb.P_SPREAD] == p[kb.P_IMPACT_K] == p[kb.P_BORROW] == 0
    assert p[kb.P_LOT] == 0 and math.isinf(p[kb.P_MAX_PART]) and math.isinf(p[kb.P_MAX_LEV])


def test_from_cost_model_maps_slippage_to_half_spread() -> None:
    p = ExecutionModel.from_cost_model(CostModel(fees_bps=7, slippage_bps=3)).kernel_params()
    assert p[kb.P_COMM] == 7e-4 and p[kb.P_SPREAD] == 3e-4 and p[kb.P_IMPACT_K] == 0


def test_range_spread_params() -> None:
    m = ExecutionModel.from_dict({"spread": {"model": "range", "range_fraction": 0.2}})
    p = m.kernel_params()
    assert p[kb.P_SPREAD_MODEL] == 1 and p[kb.P_SPREAD] == 0.2


def test_version_changes_with_any_setting() -> None:
    a = ExecutionModel()
    b = ExecutionModel.from_dict({"borrow_bps": 51})
    assert a.version != b.version and a.version == ExecutionModel().version


@pytest.mark.parametrize(("data", "needle"), [
    ({"initial_capital": 0}, "initial_capital"),
    ({"initial_capital": "1e6"}, "initial_capital"),
    ({"commission": {"bps": -1}}, "commission.bps"),
    ({"commission": {"minimum": -0.5}}, "commission.minimum"),
    ({"commission": {"per_share": True}}, "commission.per_share"),
    ({"spread": {"model": "range"}}, "spread.range_fraction is required"),
    ({"spread": {"range_fraction": 0.1}}, "range_fraction is only used"),
    ({"spread": {"model": "mid"}}, "spread.model"),
    ({"impact": {"k": float("nan")}}, "impact.k"),
    ({"impact": {"vol_window": 1}}, "impact.vol_window"),
    ({"volume": {"max_participation": 0}}, "volume.max_participation"),
    ({"volume": {"order_ttl_bars": 0}}, "volume.order_ttl_bars"),
    ({"lot_size": -1}, "lot_size"),
    ({"borrow_bps": float("inf")}, "borrow_bps"),
    ({"max_leverage": 0}, "max_leverage"),
    ({"rebalance": {"every_bars": -1}}, "rebalance.every_bars"),
    ({"slippage": 5}, "slippage: Extra inputs"),
    ([1, 2], "must be a mapping"),
])
def test_bad_config_names_the_field(data: object, needle: str) -> None:
    with pytest.raises(ExecutionConfigError, match=None) as exc:
        ExecutionModel.from_dict(data, source="costs.yaml")
    assert needle in exc.value.message and exc.value.message.startswith("costs.yaml")
    assert exc.value.code == "EXEC_CONFIG_INVALID"


def test_yaml_files(tmp_path: Path) -> None:
    good = tmp_path / "c.yaml"
    good.write_text("initial_capital: 50000\nvolume: {max_participation: null}\n")
    m = ExecutionModel.from_yaml(good)
    assert m.initial_capital == 50000 and m.volume.max_participation is None
    empty = tmp_path / "e.yaml"
    empty.write_text("")
    assert ExecutionModel.from_yaml(empty) == ExecutionModel()
    dup = tmp_path / "d.yaml"
    dup.write_text("borrow_bps: 1\nborrow_bps: 2\n")
    with pytest.raises(ExecutionConfigError, match="duplicate"):
        ExecutionModel.from_yaml(dup)
    with pytest.raises(ExecutionConfigError) as exc:
        ExecutionModel.from_yaml(tmp_path / "missing.yaml")
    assert exc.value.code == "EXEC_CONFIG_NOT_FOUND"


@pytest.mark.parametrize(("data", "needle"), [
    ({"min_fill_rate": 1.5}, "min_fill_rate"),
    ({"max_participation_p95": 0}, "max_participation_p95"),
    ({"policy_version": ""}, "policy_version"),
    ({"check_determinism": "yes"}, "check_determinism"),
    ({"min_fillrate": 0.9}, "min_fillrate: Extra inputs"),
])
def test_bad_verification_policy_names_the_key(data: dict, needle: str) -> None:
    with pytest.raises(ExecutionConfigError) as exc:
        VerificationPolicy.from_dict(data, source="p.yaml")
    assert needle in exc.value.message and exc.value.code == "VERIFY_POLICY_INVALID"
