"""The cross-sectional families (issue 16 item 3): ranked long-short books.

The expected specs here are written by hand from the documented semantics of
``portfolio: {method: cross_sectional}`` (StrategySpec, Portfolio), not read back
from the builders.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import yaml

from alphaloop.errors import SpecError
from alphaloop.kb.retriever import expression_tokens
from alphaloop.orchestrator.config import Generation
from alphaloop.research.features import FEATURES, spec_features
from alphaloop.strategy.constraints import Clause, Constraint
from alphaloop.strategy.expression import parse
from alphaloop.strategy.samplers import SAMPLER_KINDS, make_sampler
from alphaloop.strategy.spec import StrategySpec
from alphaloop.strategy.templates import FAMILIES, ChoiceParam, Family, get_family

XS = ("xs_momentum", "xs_reversal", "xs_low_volatility", "xs_factor")


def book(score: str, fraction: float, buffer: float | int, every: int,
         weighting: str = "equal") -> StrategySpec:
    """A dollar-neutral long-short book, spelled out as a user would write it."""
    return StrategySpec.from_dict({"portfolio": {
        "method": "cross_sectional", "score": score, "long": fraction, "short": fraction,
        "buffer": buffer, "rebalance_every": every, "weighting": weighting}})


def in_space(family: Family, params: dict[str, Any]) -> bool:
    for key, space in family.params.items():
        value = params[key]
        if isinstance(space, ChoiceParam):
            if value not in space.choices:
                return False
        elif not space.low <= value <= space.high:
            return False
    return True


@pytest.mark.parametrize(("name", "params", "expected"), [
    ("xs_momentum", {"window": 120, "skip": 0, "fraction": 0.1, "buffer": 0.1,
                     "rebalance": 5, "weighting": "equal"},
     book("roc(close, 120)", 0.1, 0.1, 5)),
    # 12-1 style: the return from 120 bars ago to 21 bars ago
    ("xs_momentum", {"window": 120, "skip": 21, "fraction": 0.2, "buffer": 0.0,
                     "rebalance": 21, "weighting": "rank"},
     book("roc(lag(close,21),99)", 0.2, 0, 21, "rank")),
    ("xs_reversal", {"window": 5, "fraction": 0.3, "buffer": 0.2, "rebalance": 1,
                     "weighting": "equal"},
     book("-roc(close,5)", 0.3, 0.2, 1)),
    ("xs_low_volatility", {"window": 60, "fraction": 0.1, "buffer": 0.0, "rebalance": 21,
                           "weighting": "rank"},
     book("-std(roc(close,1),60)", 0.1, 0, 21, "rank")),
    ("xs_factor", {"kind": "sma_gap", "sign": -1, "window": 50, "fraction": 0.1,
                   "buffer": 0.1, "rebalance": 5},
     book("-(close/sma(close,50))", 0.1, 0.1, 5)),
    ("xs_factor", {"kind": "volatility", "sign": 1, "window": 30, "fraction": 0.2,
                   "buffer": 0.0, "rebalance": 1},
     book("std(roc(close, 1), 30)", 0.2, 0, 1)),
])
def test_families_build_the_documented_book(name: str, params: dict[str, Any],
                                            expected: StrategySpec) -> None:
    spec = get_family(name).build(params)
    assert spec.portfolio.cross_sectional and spec.family == name and spec.params == params
    assert spec.portfolio.net_exposure == 0.0  # dollar-neutral
    # the same strategy as the hand-written book (spacing and parentheses do not matter)
    assert spec.strategy_id == expected.strategy_id


def test_another_window_skip_or_weighting_is_another_strategy() -> None:
    # guards the comparison above: the id sees the windows and the weighting
    fam = get_family("xs_momentum")
    a = fam.build({"window": 120, "skip": 21, "fraction": 0.2, "buffer": 0.0,
                   "rebalance": 21, "weighting": "rank"})
    assert a.strategy_id == book("roc(lag(close, 21), 99)", 0.2, 0, 21, "rank").strategy_id
    for other in ("roc(lag(close, 21), 120)", "roc(lag(close, 20), 100)", "roc(close, 99)"):
        assert a.strategy_id != book(other, 0.2, 0, 21, "rank").strategy_id
    assert a.strategy_id != book("roc(lag(close, 21), 99)", 0.2, 0, 21).strategy_id


@pytest.mark.parametrize("name", XS)
def test_every_grid_point_is_a_valid_cross_sectional_book(name: str) -> None:
    family = get_family(name)
    grid = list(family.grid())
    assert len(grid) == family.size() > 0
    ids = set()
    for params in grid:
        spec = family.build(params)
        p = spec.portfolio
        assert p.cross_sectional and p.long == p.short == params["fraction"]
        assert p.rebalance_every == params["rebalance"]
        assert (p.buffer == 0 and isinstance(p.buffer, int)) if params["buffer"] == 0 \
            else p.buffer == params["buffer"]
        assert p.long is not None and p.short is not None and p.long + p.short <= 1
        parse(p.score or "", expect="num")
        ids.add(spec.strategy_id)
    assert len(ids) == len(grid), "different parameters must give different strategies"


@pytest.mark.parametrize("name", XS)
def test_ids_are_stable_through_yaml_and_json(name: str) -> None:
    family = get_family(name)
    rng = np.random.default_rng(3)
    grid = list(family.grid())
    for i in rng.integers(0, len(grid), 20):
        spec = family.build(grid[i])
        assert family.build(dict(grid[i])).strategy_id == spec.strategy_id
        again = StrategySpec.from_dict(yaml.safe_load(spec.to_yaml()))
        assert again.strategy_id == spec.strategy_id
        assert StrategySpec.model_validate_json(spec.model_dump_json()).strategy_id \
            == spec.strategy_id


@pytest.mark.parametrize("name", XS)
def test_widened_spaces_still_build_valid_books(name: str) -> None:
    # seed 004 §6.2 branch A grows the ranges: the fraction may reach 0.5 (both books
    # then hold every name), never beyond
    family: Family | None = get_family(name)
    for _ in range(3):
        assert family is not None
        family = family.widened() or family
    assert family is not None
    assert family.params["fraction"].high == 0.5  # type: ignore[union-attr]
    for params in (family.from_unit(u) for u in np.random.default_rng(0).random(
            (200, len(family.params)))):
        if family.is_valid(params):
            assert family.build(params).portfolio.cross_sectional


def test_skip_must_be_shorter_than_the_window() -> None:
    with pytest.raises(SpecError, match="skip < window"):
        get_family("xs_momentum").validate({"window": 20, "skip": 21, "fraction": 0.1,
                                            "buffer": 0.0, "rebalance": 1,
                                            "weighting": "equal"})


@pytest.mark.parametrize("kind", SAMPLER_KINDS)
@pytest.mark.parametrize("name", XS)
def test_every_sampler_proposes_valid_books_within_bounds(name: str, kind: str) -> None:
    family = get_family(name)
    smp = make_sampler(kind, family, seed=7)
    got: list[dict[str, Any]] = []
    for _ in range(3):
        batch = smp.ask(8)
        for params in batch:
            spec = family.build(params)
            smp.tell(params, float(spec.portfolio.rebalance_every))  # any objective
        got += batch
    assert len(got) == 24
    assert len({tuple(sorted(p.items())) for p in got}) == 24
    for params in got:
        assert family.validate(params) == params and in_space(family, params)
        assert family.build(params).portfolio.cross_sectional


@pytest.mark.parametrize("kind", SAMPLER_KINDS)
def test_samplers_respect_a_rule_over_the_book(kind: str) -> None:
    family = get_family("xs_momentum")
    rule = Constraint(rule_id="no-daily", family="xs_momentum",
                      clauses=[Clause(param="rebalance", op="<=", value=1)])
    smp = make_sampler(kind, family, seed=1, constraints=[rule])
    batch = smp.ask(30)
    assert batch and all(p["rebalance"] > 1 for p in batch)


def test_the_loop_config_accepts_the_families() -> None:
    assert Generation(families=XS).families == XS
    assert set(XS) <= set(FAMILIES)


def test_features_see_the_score_and_the_rebalance_period() -> None:
    p = {"window": 120, "skip": 21, "fraction": 0.1, "buffer": 0.1, "rebalance": 5,
         "weighting": "rank"}
    f = spec_features("xs_momentum", p)
    assert set(f) == set(FEATURES)
    # lag(close, 21) then a 99-bar rate of change: 120 bars before the first score
    assert f["warmup"] == 120.0 and f["rebalance_every"] == 5.0
    low_vol = spec_features("xs_low_volatility", {"window": 60, "fraction": 0.1,
                                                  "buffer": 0.0, "rebalance": 21,
                                                  "weighting": "equal"})
    # std over 60 one-bar returns: 59 + 1 bars
    assert low_vol["warmup"] == 60.0 and low_vol["rebalance_every"] == 21.0
    assert spec_features("sma_cross", {"fast": 10, "slow": 50})["rebalance_every"] == 0.0


def test_retriever_tokens_include_the_score() -> None:
    spec = get_family("xs_low_volatility").build({"window": 60, "fraction": 0.1,
                                                  "buffer": 0.0, "rebalance": 21,
                                                  "weighting": "equal"})
    tokens = expression_tokens(spec.entry, spec.exit, spec.portfolio.score)
    assert {"score:neg", "score:std", "score:roc", "score:close"} <= tokens
    assert not {t for t in expression_tokens(spec.entry, spec.exit) if t.startswith("score")}


@pytest.mark.parametrize(("name", "kind"), [("xs_momentum", "tpe"), ("xs_reversal", "random"),
                                            ("xs_low_volatility", "grid"),
                                            ("xs_factor", "sobol")])
def test_a_sweep_backtests_each_family_as_ranked_books(name: str, kind: str) -> None:
    from alphaloop.data.synthetic import generate
    from alphaloop.engines.sweep import run_sweep

    bars = generate(12, 400, seed=4)
    frame = run_sweep(name, bars, n=6, sampler=kind, seed=2, round_size=3)
    assert len(frame) == 6 and frame["strategy_id"].is_unique
    assert (frame["family"] == name).all()
    assert np.isfinite(frame["sharpe"]).all()
    # six different books, not six copies of the buy-and-hold "close > 0" sleeves
    assert frame["sharpe"].round(9).nunique() == 6
    specs = [StrategySpec.model_validate_json(s) for s in frame["spec"]]
    assert all(s.portfolio.cross_sectional for s in specs)
