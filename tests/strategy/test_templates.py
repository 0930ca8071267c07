"""Template families and their parameter spaces."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphaloop.errors import SpecError
from alphaloop.strategy.expression import parse
from alphaloop.strategy.templates import (
    FAMILIES,
    ChoiceParam,
    Family,
    FloatParam,
    IntParam,
    Rule,
    get_family,
)

REQUIRED = {"sma_cross", "ema_cross", "rsi_reversion", "donchian_breakout",
            "bollinger_reversion", "momentum", "volatility_breakout", "zscore_reversion",
            "rank_momentum"}
NAMES = sorted(FAMILIES)


# ------------------------------------------------------------------ params
def test_int_param_grid_unit_map_and_check() -> None:
    p = IntParam(5, 50, 5)
    assert p.grid() == list(range(5, 55, 5))
    assert p.from_unit(0.0) == 5 and p.from_unit(0.999999) == 50
    assert [p.from_unit(u) for u in np.linspace(0, 0.99, 10)] == p.grid()
    assert p.check(10.0) == 10 and isinstance(p.check(np.int64(10)), int)
    assert p.clip(7) == 5 and p.clip(8) == 10 and p.clip(-100) == 5 and p.clip(999) == 50
    for bad, why in [(7, "off the step"), (55, "out of range"), (5.5, "integer"),
                     ("5", "number"), (True, "number"), (None, "number")]:
        with pytest.raises(ValueError, match=why):
            p.check(bad)


def test_float_param_grid_is_clean() -> None:
    p = FloatParam(0.0, 0.1, 0.01)
    assert p.grid() == [0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1]
    assert p.check(0.1 + 0.2 - 0.27) == 0.03  # float noise snaps to the grid
    assert p.clip(0.034) == 0.03
    with pytest.raises(ValueError, match="off the step"):
        p.check(0.035)
    with pytest.raises(ValueError, match="out of range"):
        p.check(0.2)


def test_continuous_float_param_has_no_grid() -> None:
    p = FloatParam(1.0, 2.0)
    assert p.n_points is None
    assert p.from_unit(0.5) == 1.5 and p.check(1.2345) == 1.2345
    with pytest.raises(SpecError) as info:
        p.grid()
    assert info.value.code == "SPEC_NO_GRID"


def test_choice_param() -> None:
    p = ChoiceParam(("none", 0.02, 0.05))
    assert p.grid() == ["none", 0.02, 0.05]
    assert p.from_unit(0.0) == "none" and p.from_unit(0.99) == 0.05
    assert p.check(0.05) == 0.05 and p.check("none") == "none"
    with pytest.raises(ValueError, match="not one of"):
        p.check(0.03)


@pytest.mark.parametrize("make", [lambda: IntParam(5, 52, 5), lambda: IntParam(10, 5),
                                  lambda: IntParam(1, 5, 0), lambda: FloatParam(0, 1, 0.3),
                                  lambda: FloatParam(1, 0), lambda: ChoiceParam(()),
                                  lambda: ChoiceParam((1, 1))])
def test_bad_parameter_spaces_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


@given(u=st.floats(0, 1, exclude_max=True))
def test_unit_map_lands_on_the_grid(u: float) -> None:
    for family in FAMILIES.values():
        for space in family.params.values():
            assert space.from_unit(u) in space.grid()


# ----------------------------------------------------------------- families
def test_required_families_exist() -> None:
    assert set(FAMILIES) >= REQUIRED


def test_sma_cross_grid_is_the_benchmark_grid() -> None:
    family = get_family("sma_cross")
    grid = list(family.grid())
    assert family.size() == len(grid) == 174
    assert grid[0] == {"fast": 5, "slow": 20} and grid[-1] == {"fast": 50, "slow": 200}
    assert {p["fast"] for p in grid} == set(range(5, 55, 5))
    assert {p["slow"] for p in grid} == set(range(20, 210, 10))
    assert all(p["fast"] < p["slow"] for p in grid)


@pytest.mark.parametrize("name", NAMES)
def test_family_builds_valid_specs_at_grid_ends_and_random_points(name: str) -> None:
    family = FAMILIES[name]
    grid = list(family.grid())
    assert len(grid) == family.size() > 0
    rng = np.random.default_rng(0)
    picks = [grid[0], grid[-1], *(grid[i] for i in rng.integers(0, len(grid), 5))]
    for params in picks:
        spec = family.build(params)
        assert spec.family == name and spec.params == params
        parse(spec.entry, expect="bool")
        parse(spec.exit, expect="bool")
        assert spec.entry != spec.exit
    ids = {family.build(p).strategy_id for p in grid}
    assert len(ids) == len(grid), "different parameters must give different strategies"


@pytest.mark.parametrize("name", NAMES)
def test_every_grid_point_validates_and_rules_hold(name: str) -> None:
    family = FAMILIES[name]
    for params in family.grid():
        assert family.validate(params) == params
        assert not family.broken_rules(params)


def test_expected_expressions() -> None:
    def built(name: str, **params: object) -> tuple[str, str]:
        spec = get_family(name).build(params)
        return spec.entry, spec.exit

    assert built("sma_cross", fast=10, slow=50) == ("sma(close, 10) > sma(close, 50)",
                                                    "sma(close, 10) < sma(close, 50)")
    assert built("rsi_reversion", window=14, lower=30, upper=70) == (
        "rsi(close, 14) < 30", "rsi(close, 14) > 70")
    assert built("donchian_breakout", entry_window=20, exit_window=10, stop_loss="none") == (
        "close > highest(high, 20)", "close < lowest(low, 10)")
    assert built("bollinger_reversion", window=20, k=2.0) == (
        "close < sma(close, 20) - 2 * std(close, 20)", "close > sma(close, 20)")
    assert built("momentum", window=20, threshold=0.05) == (
        "roc(close, 20) > 0.05", "roc(close, 20) < 0")
    assert built("volatility_breakout", window=15, k=1.5) == (
        "close > lag(close, 1) + 1.5 * atr(15)", "close < sma(close, 15)")
    assert built("zscore_reversion", window=20, entry_z=2.0, exit_z=0.5) == (
        "zscore(close, 20) < -2", "zscore(close, 20) > -0.5")
    assert built("rank_momentum", window=60, top=0.2) == (
        "rank(roc(close, 60)) >= 0.8", "rank(roc(close, 60)) < 0.8")


def test_donchian_stop_loss_goes_into_risk() -> None:
    family = get_family("donchian_breakout")
    with_stop = family.build({"entry_window": 20, "exit_window": 10, "stop_loss": 0.05})
    without = family.build({"entry_window": 20, "exit_window": 10, "stop_loss": "none"})
    assert with_stop.risk.stop_loss == 0.05 and without.risk.stop_loss is None
    assert with_stop.strategy_id != without.strategy_id


@pytest.mark.parametrize(("params", "fragments"), [
    ({"fast": 10}, ["sma_cross", "missing", "'slow'"]),
    ({"fast": 10, "slow": 50, "mid": 20}, ["unknown", "'mid'", "fast, slow"]),
    ({"fast": 12, "slow": 50}, ["'fast'", "12", "off the step"]),
    ({"fast": 10, "slow": 500}, ["'slow'", "500", "out of range 20..200"]),
    ({"fast": "ten", "slow": 50}, ["'fast'", "must be a number"]),
    ({"fast": 50, "slow": 40}, ["rule violated", "fast < slow", "fast=50", "slow=40"]),
])
def test_validate_names_the_parameter_and_the_reason(params: dict[str, object],
                                                     fragments: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        get_family("sma_cross").validate(params)
    assert info.value.code == "SPEC_BAD_PARAMS"
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message


def test_validate_normalizes_numbers() -> None:
    clean = get_family("bollinger_reversion").validate({"window": np.int64(20), "k": 2})
    assert clean == {"window": 20, "k": 2.0}
    assert type(clean["window"]) is int and type(clean["k"]) is float


def test_build_rejects_bad_params() -> None:
    with pytest.raises(SpecError, match="rule violated"):
        get_family("ema_cross").build({"fast": 50, "slow": 20})


def test_unknown_family_lists_the_known_ones() -> None:
    with pytest.raises(SpecError) as info:
        get_family("sma_crossover")
    assert info.value.code == "SPEC_UNKNOWN_FAMILY"
    assert "'sma_crossover'" in info.value.message
    assert all(name in info.value.message for name in REQUIRED)


def test_custom_family() -> None:
    from alphaloop.strategy.spec import StrategySpec

    family = Family(
        "lag_cross", "close above its own lag",
        {"n": IntParam(1, 5), "mode": ChoiceParam(("strict", "loose"))},
        (Rule("strict needs n > 1", lambda p: p["mode"] == "loose" or p["n"] > 1),),
        lambda p: StrategySpec(entry=f"close > lag(close, {p['n']})",
                               exit=f"close < lag(close, {p['n']})"))
    assert family.size() == 9
    assert family.build({"n": 3, "mode": "strict"}).params == {"n": 3, "mode": "strict"}
    with pytest.raises(SpecError, match="strict needs n > 1"):
        family.validate({"n": 1, "mode": "strict"})
    assert family.describe()["params"]["n"] == {"type": "int", "low": 1, "high": 5, "step": 1}


def test_registered_families_pickle_by_name() -> None:
    family = get_family("rsi_reversion")
    assert pickle.loads(pickle.dumps(family)) is family


def test_from_unit_checks_dimension() -> None:
    with pytest.raises(ValueError, match="expected 2 coordinates"):
        get_family("sma_cross").from_unit([0.5])


@settings(max_examples=50, deadline=None)
@given(name=st.sampled_from(NAMES), data=st.data())
def test_random_unit_points_build_when_valid(name: str, data: st.DataObject) -> None:
    family = FAMILIES[name]
    point = data.draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=len(family.params),
                               max_size=len(family.params)))
    params = family.from_unit(point)
    if family.is_valid(params):
        assert family.build(params).params == params
    else:
        assert family.broken_rules(params)


# ------------------------------------------------------------- column rules
NUMBERS = st.one_of(st.integers(-10**6, 10**6),
                    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))


@given(a=st.lists(NUMBERS, min_size=1, max_size=30), data=st.data())
def test_column_form_of_the_ready_made_rules_agrees_with_check(a: list[float],
                                                               data: st.DataObject) -> None:
    """``Rule.less`` / ``Rule.at_most`` asked about columns give, point by point, what
    ``check`` gives about each parameter set (ints, floats and their mix)."""
    b = data.draw(st.lists(NUMBERS, min_size=len(a), max_size=len(a)))
    for rule in (Rule.less("x", "y"), Rule.at_most("x", "y")):
        assert rule.columns is not None
        got = rule.columns({"x": np.asarray(a), "y": np.asarray(b)})
        assert got.tolist() == [rule.check({"x": x, "y": y}) for x, y in zip(a, b, strict=True)]


def test_a_plain_rule_has_no_column_form() -> None:
    rule = Rule("fast < slow", lambda p: p["fast"] < p["slow"])
    assert rule.columns is None and rule.check({"fast": 5, "slow": 10})
