"""Constraint injection (MOD-451): hard rules are never broken, soft rules steer, and an
exploration share of the space keeps soft rules under re-test."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphaloop.strategy.constraints import Clause, Constraint, forbidden_by
from alphaloop.strategy.samplers import TPESampler, make_sampler, params_key
from alphaloop.strategy.templates import get_family

SMA = get_family("sma_cross")
CHEAP_KINDS = ("grid", "random", "sobol")
# soft: "slow >= 100 is TOO_FEW_TRADES-prone" covers 10 fast x 11 slow = 110 of 174
SLOW = Constraint(rule_id="soft-slow", family="sma_cross", hard=False, code="TOO_FEW_TRADES",
                  clauses=[Clause(param="slow", op=">=", value=100)])
FAST = Constraint(rule_id="hard-fast", family="sma_cross",
                  clauses=[Clause(param="fast", op="<=", value=15)])
N_SOFT_REGION = 110


def drain(kind: str, seed: int, rules: list[Constraint], explore: float = 0.1) -> Any:
    sampler = make_sampler(kind, SMA, seed=seed, constraints=rules, explore=explore)
    got: list[dict[str, Any]] = []
    while not sampler.exhausted:
        batch = sampler.ask(64)
        if not batch:
            break
        got += batch
    return sampler, got


def test_the_soft_region_is_what_the_constant_says() -> None:
    assert sum(SLOW.forbids("sma_cross", p) for p in SMA.grid()) == N_SOFT_REGION


@pytest.mark.parametrize("kind", CHEAP_KINDS)
def test_without_exploration_soft_rules_are_enforced(kind: str) -> None:
    _, got = drain(kind, 3, [SLOW], explore=0.0)
    assert got and not any(SLOW.forbids("sma_cross", p) for p in got)
    assert len(got) == 174 - N_SOFT_REGION


@pytest.mark.parametrize("kind", CHEAP_KINDS)
def test_exploration_retests_a_share_of_the_soft_region(kind: str) -> None:
    sampler, got = drain(kind, 3, [SLOW, FAST])
    broke = [p for p in got if SLOW.forbids("sma_cross", p)]
    # each soft-region point explores with probability 0.1, independently: over 110
    # points the count is Binomial(110, 0.1), mean 11, sd 3.15; 0 or > 30 is beyond 6 sd
    assert 0 < len(broke) <= 30
    assert not any(FAST.forbids("sma_cross", p) for p in got)  # hard: never
    assert {params_key(p) for p in broke} == set(sampler.soft_breaks)
    assert all(v == ("soft-slow",) for v in sampler.soft_breaks.values())
    assert all(sampler.broken_soft_rules(p) == ("soft-slow",) for p in broke)
    assert sampler.rejected_by_constraint["soft-slow"] > 0


def test_exploration_points_do_not_depend_on_the_kind_or_order() -> None:
    found = {kind: {params_key(p) for p in drain(kind, 11, [SLOW])[1]
                    if SLOW.forbids("sma_cross", p)} for kind in CHEAP_KINDS}
    assert found["grid"] == found["random"] == found["sobol"]
    other = {params_key(p) for p in drain("grid", 12, [SLOW])[1]
             if SLOW.forbids("sma_cross", p)}
    assert other != found["grid"]  # another seed, another share of the region


def test_the_exploration_share_is_about_the_configured_share() -> None:
    """Over many seeds the share of the soft region that explores is ``explore``:
    30 seeds x 110 points, expected 330 at 0.1 (sd 17.2); 4 sd either side."""
    total = sum(make_sampler("grid", SMA, seed=s, constraints=[SLOW]).explores(p)
                for s in range(30) for p in SMA.grid() if SLOW.forbids("sma_cross", p))
    assert abs(total - 330) < 4 * math.sqrt(3300 * 0.1 * 0.9)


def test_expired_soft_rules_are_not_enforced() -> None:
    gone = SLOW.model_copy(update={"status": "expired"})
    _, got = drain("grid", 0, [gone], explore=0.0)
    assert len(got) == 174


def test_set_constraints_changes_what_comes_next() -> None:
    sampler = make_sampler("random", SMA, seed=5, explore=0.0)
    first = sampler.ask(20)
    sampler.set_constraints([SLOW])
    rest: list[dict[str, Any]] = []
    while batch := sampler.ask(50):
        rest += batch
    assert not any(SLOW.forbids("sma_cross", p) for p in rest)
    assert not {params_key(p) for p in rest} & {params_key(p) for p in first}
    assert sampler.exhausted


def test_features_let_rules_talk_about_derived_quantities() -> None:
    slow_hold = Constraint(rule_id="long-hold", family="sma_cross",
                           clauses=[Clause(param="holding", op=">=", value=40)])

    def features(family: str, p: Any) -> dict[str, float]:
        return {"holding": p["fast"] * p["slow"] / 100}

    sampler = make_sampler("grid", SMA, seed=0, constraints=[slow_hold], features=features)
    got = sampler.ask(500)
    assert got and all(p["fast"] * p["slow"] / 100 < 40 for p in got)
    assert len(got) == sum(p["fast"] * p["slow"] / 100 < 40 for p in SMA.grid())


def test_bad_exploration_share_is_refused() -> None:
    with pytest.raises(ValueError, match="explore"):
        make_sampler("grid", SMA, seed=0, explore=1.5)


# ------------------------------------------------------------------ hypothesis
rule_clauses = st.lists(st.tuples(st.sampled_from(["fast", "slow"]),
                                  st.sampled_from(["<", "<=", ">", ">="]),
                                  st.integers(0, 210)), min_size=1, max_size=2)


def build(clauses: list[tuple[str, Any, int]], rid: str, hard: bool) -> Constraint:
    return Constraint(rule_id=rid, family="sma_cross", hard=hard,
                      clauses=[Clause(param=p, op=op, value=v) for p, op, v in clauses])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hard=rule_clauses, soft=rule_clauses, kind=st.sampled_from(CHEAP_KINDS),
       seed=st.integers(0, 2**16), explore=st.sampled_from([0.0, 0.1, 1.0]))
def test_samplers_never_break_a_hard_rule(hard: list[tuple[str, Any, int]],
                                          soft: list[tuple[str, Any, int]], kind: str,
                                          seed: int, explore: float) -> None:
    h, s = build(hard, "h", True), build(soft, "s", False)
    sampler = make_sampler(kind, SMA, seed=seed, constraints=[h, s], explore=explore)
    got = sampler.ask(200)
    assert not any(h.forbids("sma_cross", p) for p in got)
    for p in got:  # a soft rule is broken only at exploration points, and recorded
        if s.forbids("sma_cross", p):
            assert explore > 0 and sampler.broken_soft_rules(p) == ("s",)
    if explore == 0.0:
        assert not any(s.forbids("sma_cross", p) for p in got)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hard=rule_clauses, seed=st.integers(0, 2**16))
def test_tpe_never_breaks_a_hard_rule(hard: list[tuple[str, Any, int]], seed: int) -> None:
    h = build(hard, "h", True)
    sampler = make_sampler("tpe", SMA, seed=seed, constraints=[h, SLOW])
    for _ in range(3):
        got = sampler.ask(8)
        assert not any(h.forbids("sma_cross", p) for p in got)
        for p in got:
            sampler.tell(p, -p["slow"] / 200)


# ------------------------------------------------------------------ TPE
def test_tpe_marks_soft_rule_breaks_as_optuna_constraints() -> None:
    sampler = make_sampler("tpe", SMA, seed=1, constraints=[SLOW], explore=0.5)
    assert isinstance(sampler, TPESampler)
    for _ in range(4):
        for p in sampler.ask(10):
            sampler.tell(p, float(p["slow"]))  # the objective pulls towards the rule
    marked = [t for t in sampler.study.trials if SMA.is_valid(t.params)]  # invalid: pruned
    if not hasattr(marked[0], "constraints"):  # optuna < 5: steering by rejection only
        pytest.skip("this optuna has no trial constraints")
    assert marked
    for t in marked:
        expect = 1.0 if SLOW.forbids("sma_cross", t.params) else 0.0
        assert t.constraints == {"soft-slow": expect}


def test_tpe_without_soft_rules_sets_no_constraints() -> None:
    sampler = make_sampler("tpe", SMA, seed=1, constraints=[FAST])
    for p in sampler.ask(10):
        sampler.tell(p, 1.0)
    assert all(not getattr(t, "constraints", {}) for t in sampler.study.trials)


def test_tpe_is_steered_away_from_a_soft_rule() -> None:
    """The objective rises with slow, into the soft region. With the rule, TPE proposes
    the region only at exploration points (about 10 % of it), far less than without.
    With ``explore=1`` nothing is rejected, so what remains is optuna's own steering by
    the trials' constraints: still clearly fewer proposals in the region."""
    def run(rules: list[Constraint], explore: float = 0.1) -> int:
        sampler = make_sampler("tpe", SMA, seed=7, constraints=rules, explore=explore)
        inside = 0
        for _ in range(6):
            for p in sampler.ask(8):
                inside += SLOW.forbids("sma_cross", p)
                sampler.tell(p, float(p["slow"]))
        return inside

    free, steered = run([]), run([SLOW])
    assert free > 24  # most of 48 proposals chase the objective into the region
    assert steered <= free // 3
    if hasattr(optuna.trial.Trial, "set_constraint"):  # optuna >= 5
        assert run([SLOW], explore=1.0) < 0.75 * free


def test_a_widened_sampler_keeps_the_exploration_points() -> None:
    """Branch A replaces a sampler by one over wider ranges, with another seed; after
    carry_over it explores the same points of the old space as the old sampler."""
    old = make_sampler("grid", SMA, seed=21, constraints=[SLOW])
    wider = SMA.widened()
    assert wider is not None
    new = make_sampler("random", wider, seed=99, constraints=[SLOW])
    new.carry_over(old)
    region = [p for p in SMA.grid() if SLOW.forbids("sma_cross", p)]
    assert [new.explores(p) for p in region] == [old.explores(p) for p in region]
    assert any(old.explores(p) for p in region)


RSI = get_family("rsi_reversion")


def _rule_strategy(family: Any) -> Any:
    params = list(family.params)
    clause = st.builds(lambda p, op, q: Clause(param=p, op=op, value=q),
                       st.sampled_from([*params, "hold_bars"]),
                       st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
                       st.integers(0, 90))
    return st.builds(lambda i, hard, cs: Constraint(rule_id=f"r{i}", family=family.name,
                                                    hard=hard, clauses=cs),
                     st.integers(0, 10**6), st.booleans(), st.lists(clause, max_size=3))


def _features(family: str, params: Any) -> dict[str, float]:
    return {"hold_bars": 2.0 * params["window"]}  # a derived quantity rules may name


@settings(max_examples=40, deadline=None)
@given(rules=st.lists(_rule_strategy(RSI), max_size=4), seed=st.integers(0, 2**16),
       explore=st.sampled_from([0.0, 0.1, 0.5]), with_features=st.booleans(),
       with_callable=st.booleans())
def test_the_allowed_count_is_the_count_of_proposable_points(
        rules: list[Constraint], seed: int, explore: float, with_features: bool,
        with_callable: bool) -> None:
    """The capacity a sampler counts with every rule at once over the grid's columns
    equals asking :meth:`proposable` point by point (hard rules, soft rules lifted at
    exploration points, derived features, a callable rule)."""
    extra = [lambda f, p: p["lower"] + 5 >= p["upper"] - 50] if with_callable else []
    features = _features if with_features else None
    smp = make_sampler("sobol", RSI, seed=seed, constraints=[*rules, *extra],
                       explore=explore, features=features)
    hard = [r for r in [*rules, *extra] if not isinstance(r, Constraint) or r.hard]
    soft = [r for r in rules if not r.hard]
    allowed = 0
    for p in RSI.grid():  # the rules asked one point at a time, by the scalar path
        view = p if features is None else {**features(RSI.name, p), **p}
        expected = (forbidden_by(hard, RSI.name, view), forbidden_by(soft, RSI.name, view))
        assert smp.rules_against(p) == expected  # read off the count's masks
        allowed += not expected[0] and (not expected[1] or smp.explores(p))
    assert smp._capacity == allowed


def _state(smp: Any) -> tuple[Any, ...]:
    return (dict(smp.rejected_by_constraint), smp.rejected_invalid, smp.duplicates,
            smp.soft_breaks, smp.exhausted, smp.proposed)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=st.lists(_rule_strategy(RSI), max_size=4),
       later=st.lists(_rule_strategy(RSI), max_size=3), seed=st.integers(0, 2**16),
       kind=st.sampled_from(["sobol", "random"]), explore=st.sampled_from([0.0, 0.1, 0.5]),
       asks=st.lists(st.integers(0, 120), min_size=1, max_size=6),
       with_features=st.booleans())
def test_the_block_screen_proposes_what_the_one_by_one_screen_proposes(
        rules: list[Constraint], later: list[Constraint], seed: int, kind: str,
        explore: float, asks: list[int], with_features: bool) -> None:
    """Random and Sobol samplers over a counted grid screen a block of draws at once;
    the base class's loop screens one draw at a time (``Sampler.ask``). The same seed,
    rules and asks give the same proposals, in order, and the same rejection counters
    and exhaustion either way — also across a rule change, and up to the end of the
    space (the RSI grid has about 900 points; the asks total up to 720)."""
    from alphaloop.strategy.samplers import Sampler

    features = _features if with_features else None
    block, single = (make_sampler(kind, RSI, seed=seed, constraints=rules, explore=explore,
                                  features=features) for _ in range(2))
    for k, n in enumerate(asks):
        if k == len(asks) // 2:  # a constraint update in the middle of the run
            for smp in (block, single):
                smp.set_constraints([*rules, *later])
        assert block.ask(n) == Sampler.ask(single, n)
        assert _state(block) == _state(single)


def test_the_block_screen_runs_where_a_grid_is_counted() -> None:
    """The fast path is the one taken (a counted grid) and it ends the space as the
    one-by-one screen does: every allowed point once, then an empty list."""
    from alphaloop.strategy.samplers import Sampler

    smp = make_sampler("sobol", SMA, seed=5, constraints=[FAST, SLOW], explore=0.1)
    twin = make_sampler("sobol", SMA, seed=5, constraints=[FAST, SLOW], explore=0.1)
    assert smp._blocked is not None and smp._capacity is not None
    got = smp.ask(smp._capacity)  # exactly what is left: not yet known to be exhausted
    assert got == Sampler.ask(twin, smp._capacity)
    assert _state(smp) == _state(twin) and not smp.exhausted
    assert len(got) == smp._capacity and len({params_key(p) for p in got}) == len(got)
    assert all(not FAST.forbids("sma_cross", p) for p in got)
    assert smp.ask(5) == [] == Sampler.ask(twin, 5) and smp.exhausted and twin.exhausted
