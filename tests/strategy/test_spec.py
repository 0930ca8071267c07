"""StrategySpec: YAML in and out, and errors that name the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphaloop.errors import SpecError
from alphaloop.strategy.spec import StrategySpec

FULL = StrategySpec.model_validate({
    "family": "sma_cross", "params": {"fast": 10, "slow": 50}, "name": "demo",
    "entry": "sma(close, 10) > sma(close, 50)", "exit": "sma(close, 10) < sma(close, 50)",
    "direction": "both", "risk": {"stop_loss": 0.05, "take_profit": 0.2, "max_bars": 30},
    "sizing": {"method": "vol_target", "target_vol": 0.15, "vol_window": 60,
               "max_leverage": 2.0}})


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        StrategySpec.from_yaml(write(tmp_path, text))
    return info.value


@pytest.mark.parametrize("spec", [FULL, StrategySpec(entry="close > open", exit="close < open")])
def test_yaml_round_trip(tmp_path: Path, spec: StrategySpec) -> None:
    loaded = StrategySpec.from_yaml(write(tmp_path, spec.to_yaml()))
    assert loaded == spec
    assert loaded.strategy_id == spec.strategy_id


def test_to_yaml_leaves_out_defaults() -> None:
    text = StrategySpec(entry="close > open", exit="close < open").to_yaml()
    assert text.splitlines() == ["entry: close > open", "exit: close < open"]


def test_yaml_example_from_the_design(tmp_path: Path) -> None:
    spec = StrategySpec.from_yaml(write(tmp_path, """
family: sma_cross
entry: "sma(close, 10) > sma(close, 50)"
exit:  "sma(close, 10) < sma(close, 50)"
direction: long
risk: {stop_loss: 0.05, trailing_stop: null, take_profit: null, max_bars: null}
sizing: {method: equal_weight}
"""))
    assert spec.risk.stop_loss == 0.05
    assert spec.family == "sma_cross"


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, "entry: close > open\nexit: [close < open\nrisk: {}\n")
    assert err.code == "SPEC_MALFORMED_YAML"
    assert "line 3" in err.message
    assert "spec.yaml" in err.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        StrategySpec.from_yaml(tmp_path / "nope.yaml")
    assert info.value.code == "SPEC_NOT_FOUND"
    assert "nope.yaml" in info.value.message


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    err = load_error(tmp_path, "- entry\n- exit\n")
    assert "must be a mapping, got list" in err.message


def test_unknown_field_is_named(tmp_path: Path) -> None:
    err = load_error(tmp_path, "entry: close > open\nexit: close < open\nstop_loss: 0.05\n")
    assert err.code == "SPEC_INVALID"
    assert "stop_loss: Extra inputs are not permitted" in err.message


def test_unknown_nested_field_is_named() -> None:
    with pytest.raises(SpecError, match=r"risk\.stoploss: Extra inputs"):
        StrategySpec.from_dict({"entry": "close > open", "exit": "close < open",
                                "risk": {"stoploss": 0.05}})


def test_missing_exit_is_named() -> None:
    with pytest.raises(SpecError, match="exit: Field required"):
        StrategySpec.from_dict({"entry": "close > open"})


def test_vol_target_needs_target_vol() -> None:
    with pytest.raises(SpecError, match=r"sizing\.target_vol is required when method is vol_target"):
        StrategySpec.from_dict({"entry": "close > open", "exit": "close < open",
                                "sizing": {"method": "vol_target"}})


@pytest.mark.parametrize(("risk", "fragment"), [
    ({"stop_loss": 1.5}, "risk.stop_loss: Input should be less than 1"),
    ({"stop_loss": 0}, "risk.stop_loss: Input should be greater than 0"),
    ({"trailing_stop": -0.1}, "risk.trailing_stop: Input should be greater than 0"),
    ({"take_profit": "lots"}, "risk.take_profit: Input should be a valid number"),
    ({"max_bars": 0}, "risk.max_bars: Input should be greater than or equal to 1"),
    ({"max_bars": 2.5}, "risk.max_bars: Input should be a valid integer"),
])
def test_bad_risk_values_name_the_field(risk: dict[str, object], fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        StrategySpec.from_dict({"entry": "close > open", "exit": "close < open", "risk": risk})
    assert fragment in info.value.message


def test_bad_direction_is_named() -> None:
    with pytest.raises(SpecError, match="direction: Input should be 'long', 'short' or 'both'"):
        StrategySpec.from_dict({"entry": "close > open", "exit": "close < open",
                                "direction": "sideways"})


def test_bad_expression_names_the_field_and_operator() -> None:
    with pytest.raises(SpecError) as info:
        StrategySpec.from_dict({"entry": "close > open", "exit": "smaa(close, 5) < 1"})
    assert "exit" in info.value.message
    assert "unknown operator 'smaa'" in info.value.message


def test_numeric_entry_is_rejected() -> None:
    with pytest.raises(SpecError, match=r"entry: .*must be a boolean expression"):
        StrategySpec.from_dict({"entry": "sma(close, 10)", "exit": "close < open"})


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as info:
        StrategySpec.from_dict({"entry": "close >", "exit": "close < open",
                                "risk": {"stop_loss": 2}, "colour": "red"})
    message = info.value.message
    assert "entry" in message and "risk.stop_loss" in message and "colour" in message


def test_model_copy_does_not_keep_a_stale_id() -> None:
    spec = StrategySpec(entry="close > open", exit="close < open")
    before = spec.strategy_id
    changed = spec.model_copy(update={"entry": "close > high"})
    assert changed.strategy_id != before
    assert changed.strategy_id == StrategySpec(entry="close > high",
                                               exit="close < open").strategy_id
    assert spec.model_copy().strategy_id == before


def test_spec_is_frozen() -> None:
    spec = StrategySpec(entry="close > open", exit="close < open")
    with pytest.raises(ValueError, match="frozen"):
        spec.entry = "close > high"
