"""Samplers: deterministic, never invalid, never forbidden, never repeated."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from alphaloop.errors import SpecError
from alphaloop.strategy.constraints import Clause, Constraint, ConstraintLike, forbidden_by
from alphaloop.strategy.samplers import (
    SAMPLER_KINDS,
    Sampler,
    TPESampler,
    make_sampler,
    params_key,
)
from alphaloop.strategy.spec import StrategySpec
from alphaloop.strategy.templates import FAMILIES, Family, FloatParam, IntParam, Rule, get_family

SMA = get_family("sma_cross")
CHEAP_KINDS = ("grid", "random", "sobol")
SHORT_FAST = Constraint(rule_id="short-fast", family="sma_cross",
                        clauses=[Clause(param="fast", op="<=", value=10),
                                 Clause(param="slow", op="<", value=50)])


def toy_objective(p: Mapping[str, Any]) -> float:
    """A smooth hill with its top at fast=35, slow=150."""
    return -((p["fast"] - 35) / 45) ** 2 - ((p["slow"] - 150) / 180) ** 2


def assert_clean(sampler: Sampler, batch: list[dict[str, Any]],
                 constraints: list[ConstraintLike]) -> None:
    family = sampler.family
    for params in batch:
        assert family.validate(params) == params
        assert forbidden_by(constraints, family.name, params) == []
    assert len({params_key(p) for p in batch}) == len(batch)


# ------------------------------------------------------------------ basics
def test_unknown_sampler_lists_the_known_ones() -> None:
    with pytest.raises(SpecError) as info:
        make_sampler("annealing", SMA, seed=0)
    assert info.value.code == "SPEC_UNKNOWN_SAMPLER"
    assert all(kind in info.value.message for kind in SAMPLER_KINDS)


def test_family_may_be_given_by_name() -> None:
    assert make_sampler("grid", "sma_cross", seed=0).family is SMA
    with pytest.raises(SpecError, match="unknown family"):
        make_sampler("grid", "nope", seed=0)


def test_grid_is_the_plain_grid_in_order() -> None:
    sampler = make_sampler("grid", SMA, seed=123)
    assert sampler.ask(10) == list(SMA.grid())[:10]
    assert sampler.ask(1000) == list(SMA.grid())[10:]
    assert sampler.ask(5) == [] and sampler.exhausted


@pytest.mark.parametrize("kind", CHEAP_KINDS)
def test_exhaustion_returns_every_allowed_point_once(kind: str) -> None:
    sampler = make_sampler(kind, SMA, seed=7, constraints=[SHORT_FAST])
    first = sampler.ask(1000)
    allowed = [p for p in SMA.grid() if not SHORT_FAST.forbids("sma_cross", p)]
    assert len(first) == len(allowed) == 174 - 6
    assert sorted(map(params_key, first)) == sorted(map(params_key, allowed))
    assert sampler.ask(10) == [] and sampler.exhausted


def test_grid_counts_rejections_per_rule() -> None:
    sampler = make_sampler("grid", SMA, seed=0, constraints=[SHORT_FAST])
    sampler.ask(1000)
    assert sampler.rejected_by_constraint == {"short-fast": 6}  # fast ∈ {5,10}, slow ∈ {20,30,40}


@pytest.mark.parametrize("kind", ["random", "sobol"])
def test_unit_cube_samplers_count_invalid_draws(kind: str) -> None:
    sampler = make_sampler(kind, SMA, seed=1)
    batch = sampler.ask(100)
    assert len(batch) == 100
    assert sampler.rejected_invalid > 0  # some draws have fast >= slow
    assert_clean(sampler, batch, [])


def test_rejection_is_bounded_on_a_continuous_space() -> None:
    family = Family("cont", "continuous", {"x": FloatParam(0.0, 1.0)}, (),
                    lambda p: StrategySpec(entry=f"close > {p['x']}", exit="close < 0"))

    def everything(family: str, params: Mapping[str, Any]) -> bool:
        return True

    sampler = make_sampler("random", family, seed=0, constraints=[everything])
    assert sampler.ask(10) == []
    assert 0 < sampler.rejected_by_constraint["everything"] <= 1000
    assert not sampler.exhausted  # it cannot know; it just gave up for now


def test_everything_forbidden_on_a_grid_is_exhausted_at_once() -> None:
    ban = Constraint(rule_id="ban", family="sma_cross")
    for kind in SAMPLER_KINDS:
        sampler = make_sampler(kind, SMA, seed=0, constraints=[ban])
        assert sampler.ask(5) == [], kind


def test_other_samplers_ignore_tell() -> None:
    sampler = make_sampler("random", SMA, seed=0)
    batch = sampler.ask(3)
    sampler.tell(batch[0], 1.0)
    assert len(sampler.ask(3)) == 3


# ------------------------------------------------------------- determinism
def run(kind: str, seed: int, rounds: int = 3, n: int = 6,
        constraints: tuple[ConstraintLike, ...] = ()) -> list[dict[str, Any]]:
    sampler = make_sampler(kind, SMA, seed=seed, constraints=constraints)
    out: list[dict[str, Any]] = []
    for _ in range(rounds):
        batch = sampler.ask(n)
        for params in batch:
            sampler.tell(params, toy_objective(params))
        out += batch
    return out


@pytest.mark.parametrize("kind", SAMPLER_KINDS)
def test_same_seed_same_proposals(kind: str) -> None:
    assert run(kind, 5, constraints=(SHORT_FAST,)) == run(kind, 5, constraints=(SHORT_FAST,))


@pytest.mark.parametrize("kind", ["random", "sobol", "tpe"])
def test_different_seeds_differ(kind: str) -> None:
    assert run(kind, 1) != run(kind, 2)


# ------------------------------------------------- never invalid / forbidden
@st.composite
def constraint_sets(draw: st.DrawFn, family: Family) -> list[ConstraintLike]:
    """1-3 random rules over ``family``'s parameters, values taken from its grids."""
    rules: list[ConstraintLike] = []
    for i in range(draw(st.integers(1, 3))):
        clauses = []
        for _ in range(draw(st.integers(1, 2))):
            name = draw(st.sampled_from(sorted(family.params)))
            value = draw(st.sampled_from(family.params[name].grid()))
            ops = ["==", "!="] if isinstance(value, str) else ["<", "<=", ">", ">=", "==", "!="]
            clauses.append(Clause(param=name, op=draw(st.sampled_from(ops)), value=value))
        scope = draw(st.sampled_from([family.name, None, "other_family"]))
        rules.append(Constraint(rule_id=f"r{i}", family=scope, clauses=clauses))
    return rules


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(CHEAP_KINDS), seed=st.integers(0, 2**31),
       name=st.sampled_from(sorted(FAMILIES)))
def test_cheap_samplers_never_return_invalid_or_forbidden(data: st.DataObject, kind: str,
                                                          seed: int, name: str) -> None:
    family = FAMILIES[name]
    rules = data.draw(constraint_sets(family))
    sampler = make_sampler(kind, family, seed=seed, constraints=rules)
    batch = sampler.ask(40) + sampler.ask(40)
    assert_clean(sampler, batch, rules)
    allowed = sum(1 for p in family.grid() if not forbidden_by(rules, name, p))
    if kind == "grid":
        assert len(batch) == min(80, allowed)
    assert len(batch) <= min(80, allowed)
    if allowed == 0:
        assert batch == [] and sampler.exhausted


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.integers(0, 2**31))
def test_tpe_never_returns_invalid_or_forbidden(data: st.DataObject, seed: int) -> None:
    rules = data.draw(constraint_sets(SMA))
    sampler = make_sampler("tpe", SMA, seed=seed, constraints=rules)
    batch: list[dict[str, Any]] = []
    for _ in range(3):
        new = sampler.ask(5)
        for params in new:
            sampler.tell(params, toy_objective(params))
        batch += new
    assert_clean(sampler, batch, rules)


# ------------------------------------------------------------------- TPE
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tpe_improves_on_a_toy_objective(seed: int) -> None:
    values = [toy_objective(p) for p in run("tpe", seed, rounds=8, n=5)]
    assert len(values) == 40
    first, last = values[:10], values[-10:]
    assert sum(last) / 10 > sum(first) / 10
    assert max(values) > max(first) - 1e-12


def test_tpe_steers_around_a_forbidden_optimum() -> None:
    top = Constraint(rule_id="top", family="sma_cross",
                     clauses=[Clause(param="fast", op=">=", value=30),
                              Clause(param="slow", op=">=", value=120)])
    sampler = make_sampler("tpe", SMA, seed=3, constraints=[top])
    assert isinstance(sampler, TPESampler)
    seen: list[dict[str, Any]] = []
    for _ in range(6):
        batch = sampler.ask(5)
        for params in batch:
            sampler.tell(params, toy_objective(params))
        seen += batch
    assert seen and all(not top.forbids("sma_cross", p) for p in seen)
    assert sampler.rejected_by_constraint["top"] > 0
    pruned = sampler.study.get_trials(states=(TrialState.PRUNED,))
    assert len(pruned) >= sampler.rejected_by_constraint["top"]


def test_tpe_warm_start_and_failed_values() -> None:
    sampler = make_sampler("tpe", SMA, seed=0)
    assert isinstance(sampler, TPESampler)
    known = {"fast": 35, "slow": 150}
    sampler.tell(known, 0.0)  # never proposed: added to the study as a finished trial
    assert len(sampler.study.get_trials(states=(TrialState.COMPLETE,))) == 1
    batch = sampler.ask(20)
    assert known not in batch
    sampler.tell(batch[0], float("nan"))  # a failed evaluation
    assert len(sampler.study.get_trials(states=(TrialState.FAIL,))) >= 1


def test_tpe_on_a_tiny_space_stops_without_repeating() -> None:
    tiny = Family("tiny", "three points", {"n": IntParam(1, 3)}, (),
                  lambda p: StrategySpec(entry=f"close > lag(close, {p['n']})",
                                         exit=f"close < lag(close, {p['n']})"))
    sampler = make_sampler("tpe", tiny, seed=0)
    proposed: list[dict[str, Any]] = []
    for _ in range(4):
        batch = sampler.ask(2)
        for params in batch:
            sampler.tell(params, float(params["n"]))
        proposed += batch
    assert len(proposed) == len({params_key(p) for p in proposed}) <= 3


# ----------------------------------------------------------- grid table rules
def _three_param_family(rules: tuple[Rule, ...]) -> Family:
    return Family("cols", "three parameters, rules by column or by point",
                  {"fast": IntParam(5, 60, 5), "slow": IntParam(10, 120, 10),
                   "band": FloatParam(0.0, 0.02, 0.005)}, rules, SMA.builder)


@pytest.mark.parametrize("kind", CHEAP_KINDS)
def test_column_rules_give_the_grid_the_point_rules_give(kind: str) -> None:
    """A family whose rules have a column form proposes exactly what the same family
    with point-only rules proposes (same table, same order), also when column and
    point rules are mixed: the column form is only a faster way to ask."""
    by_point = _three_param_family((
        Rule("fast < slow", lambda p: p["fast"] < p["slow"]),
        Rule("band only for slow >= 50", lambda p: p["band"] == 0 or p["slow"] >= 50)))
    mixed = _three_param_family((
        Rule.less("fast", "slow"),
        Rule("band only for slow >= 50", lambda p: p["band"] == 0 or p["slow"] >= 50)))
    every = list(by_point.grid())
    assert len(every) == by_point.size()
    for family in (by_point, mixed):
        smp = make_sampler(kind, family, seed=3, constraints=[])
        got = smp.ask(10_000)
        assert smp.exhausted or len(got) == len(every)
        assert sorted(map(params_key, got)) == sorted(map(params_key, every))
    a = make_sampler(kind, by_point, seed=3).ask(40)
    b = make_sampler(kind, mixed, seed=3).ask(40)
    assert a == b
