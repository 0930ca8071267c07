"""Spec features: known before the backtest, usable by the learner and the samplers."""

from __future__ import annotations

from alphaloop.research.features import FEATURES, spec_features
from alphaloop.research.learning import LearningConfig, Observation, learn_rules
from alphaloop.strategy.constraints import Clause, Constraint
from alphaloop.strategy.samplers import make_sampler
from alphaloop.strategy.templates import get_family

SMA = get_family("sma_cross")


def test_features_of_known_specs() -> None:
    # sma(close, 50) needs 49 bars before its first value; no risk exits
    assert spec_features("sma_cross", {"fast": 10, "slow": 50}) == {
        "warmup": 49.0, "stop_distance": 0.0, "trailing_stop": 0.0, "take_profit": 0.0,
        "max_bars": 0.0, "rebalance_every": 0.0}
    # highest(high, 20) needs the 20 previous bars; a 5 % stop
    donchian = spec_features("donchian_breakout",
                             {"entry_window": 20, "exit_window": 10, "stop_loss": 0.05})
    assert (donchian["warmup"], donchian["stop_distance"]) == (20.0, 0.05)
    assert set(donchian) == set(FEATURES)


def test_a_widened_family_has_features_too() -> None:
    wider = SMA.widened()
    assert wider is not None and wider.params["slow"].high > 200  # type: ignore[union-attr]
    assert spec_features("sma_cross", {"fast": 10, "slow": 250})["warmup"] == 249.0


def test_a_rule_over_warmup_steers_the_sampler() -> None:
    long = Constraint(rule_id="long", family="sma_cross",
                      clauses=[Clause(param="warmup", op=">=", value=149)])
    got = make_sampler("grid", SMA, seed=0, constraints=[long],
                       features=spec_features).ask(500)
    assert got and max(p["slow"] for p in got) == 140
    assert len(got) == sum(p["slow"] < 150 for p in SMA.grid())


def test_the_learner_can_state_a_rule_over_spec_features() -> None:
    cloud = [Observation(family="sma_cross", params=p, features=spec_features("sma_cross", p),
                         codes=("TOO_FEW_TRADES",) if p["slow"] >= 150 else ())
             for p in SMA.grid()]
    (rule,) = learn_rules(cloud, SMA, "TOO_FEW_TRADES", config=LearningConfig(max_depth=1))
    assert (rule.support, rule.hits) == (60, 60)  # 6 slow values x 10 fast, all failing
    view = {"fast": 10, "slow": 150, **spec_features("sma_cross", {"fast": 10, "slow": 150})}
    assert rule.forbids("sma_cross", view)
