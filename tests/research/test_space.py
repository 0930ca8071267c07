"""The share of a family's space the rules forbid, against counts made by hand."""

from __future__ import annotations

import math

import pytest

from alphaloop.research.space import forbidden_share
from alphaloop.strategy.constraints import Clause, Constraint
from alphaloop.strategy.templates import get_family

SMA = get_family("sma_cross")
FAST = Constraint(rule_id="fast", family="sma_cross",
                  clauses=[Clause(param="fast", op="<=", value=10)])


def test_share_matches_the_hand_count() -> None:
    """sma_cross: fast 5..50 step 5, slow 20..200 step 10, fast < slow. Valid points:
    fast 5, 10, 15 with all 19 slow values (57), then 20: 18, 25: 18, 30: 17, 35: 17,
    40: 16, 45: 16, 50: 15, in all 174. fast <= 10 forbids 2 x 19 = 38 of them. Under the
    prior (uniform over the valid grid) the share is 38 / 174 = 0.2184."""
    exact = 38 / 174
    est = forbidden_share(SMA, [FAST], samples=8000, seed=1)
    assert est.n_valid > 6000  # 174 valid of 10 x 19 = 190 cells: ~92 % of draws
    assert abs(est.share - exact) < 4 * math.sqrt(exact * (1 - exact) / est.n_valid)
    assert est.stderr == pytest.approx(math.sqrt(est.share * (1 - est.share) / est.n_valid))


def test_seeded_and_rule_aware() -> None:
    a = forbidden_share(SMA, [FAST], samples=2000, seed=4)
    assert a == forbidden_share(SMA, [FAST], samples=2000, seed=4)
    assert forbidden_share(SMA, [], samples=500).share == 0.0
    everything = Constraint(rule_id="all", family="sma_cross")
    assert forbidden_share(SMA, [everything], samples=500).share == 1.0
    gone = FAST.model_copy(update={"status": "expired"})
    assert forbidden_share(SMA, [gone], samples=500).share == 0.0
    other = FAST.model_copy(update={"family": "ema_cross"})
    assert forbidden_share(SMA, [other], samples=500).share == 0.0


def test_two_rules_are_counted_once() -> None:
    """fast <= 10: 38 points. slow <= 30: slow 20 with fast 5, 10, 15 and slow 30 with
    fast 5..25, 3 + 5 = 8 points. Both: fast 5, 10 with slow 20, 30, 4 points. Union
    38 + 8 - 4 = 42 of 174."""
    slow = Constraint(rule_id="slow", family="sma_cross",
                      clauses=[Clause(param="slow", op="<=", value=30)])
    exact = 42 / 174
    est = forbidden_share(SMA, [FAST, slow], samples=8000, seed=2)
    assert abs(est.share - exact) < 4 * math.sqrt(exact * (1 - exact) / est.n_valid)


def test_bad_sample_count() -> None:
    with pytest.raises(ValueError):
        forbidden_share(SMA, [], samples=0)
