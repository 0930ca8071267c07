"""The learning cycle without the loop: sample, fail, learn, inject, re-test, expire.

An oracle stands in for the backtest: on sma_cross, ``slow >= 150`` fails with
TOO_FEW_TRADES and everything else passes. Each iteration asks a sampler for a batch,
diagnoses it with the oracle, learns from everything seen, updates the constraint set
(tallying the re-tests of proposals that broke a soft rule) and hands the rules in
force to the sampler. Numbers are from the construction: the region is 60 of 174
points (34 %).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alphaloop.research.learning import (
    ConstraintSet,
    LearningConfig,
    Observation,
    constraint_update,
    retests_of,
)
from alphaloop.research.space import forbidden_share
from alphaloop.strategy.samplers import make_sampler, params_key
from alphaloop.strategy.templates import get_family

SMA = get_family("sma_cross")
Oracle = Callable[[dict[str, Any]], tuple[str, ...]]


def sparse(p: dict[str, Any]) -> tuple[str, ...]:
    return ("TOO_FEW_TRADES",) if p["slow"] >= 150 else ()


def nothing_fails(p: dict[str, Any]) -> tuple[str, ...]:
    return ()


class Cycle:
    def __init__(self, explore: float, seed: int = 3) -> None:
        self.sampler = make_sampler("random", SMA, seed=seed, explore=explore)
        self.cs: ConstraintSet | None = None
        self.history: list[ConstraintSet] = []
        self.obs: list[Observation] = []
        self.cfg = LearningConfig(max_depth=1)
        self.failed_share: list[float] = []

    def iteration(self, it: int, n: int, oracle: Oracle) -> None:
        batch = self.sampler.ask(n)
        codes = {str(params_key(p)): oracle(p) for p in batch}
        self.obs += [Observation(family="sma_cross", params=p, codes=codes[str(params_key(p))],
                                 iteration=it) for p in batch]
        broken = {str(params_key(p)): list(self.sampler.broken_soft_rules(p)) for p in batch
                  if self.sampler.broken_soft_rules(p)}
        retests = retests_of(broken, codes, self.cs.rules if self.cs else ())
        self.cs = constraint_update(self.cs, self.obs, {"sma_cross": SMA}, retests=retests,
                                    iteration=it, config=self.cfg)
        if not self.history or self.history[-1] is not self.cs:
            self.history.append(self.cs)  # a new version only when something changed
        self.sampler.set_constraints(self.cs.active)
        self.failed_share.append(sum(bool(c) for c in codes.values()) / max(len(batch), 1))


def test_the_failing_region_is_learned_and_avoided() -> None:
    cyc = Cycle(explore=0.1)
    for it in range(1, 6):
        cyc.iteration(it, 20, sparse)
    assert cyc.cs is not None
    (rule,) = cyc.cs.active
    assert rule.code == "TOO_FEW_TRADES" and rule.status == "active"
    # before the rule, batches are uniform: about a third fails; once it is in force
    # (at least 10 failures seen: min_support) only re-tests at exploration points do
    born = next(k for k, cs in enumerate(cyc.history) if cs.active)
    before, after = cyc.failed_share[:born + 1], cyc.failed_share[born + 1:]
    assert after and min(before) >= 0.2
    assert max(after) <= min(before) / 2
    share = forbidden_share(SMA, cyc.cs.active, samples=4000, seed=0).share
    assert 0.25 < share < 0.5  # the rule covers the region (60/174 = 0.34) or a bit more


def test_a_rule_the_world_no_longer_supports_expires() -> None:
    """Two iterations teach the rule; then nothing fails any more. The re-tests at the
    exploration points pass, and after three of them the rule is retired; the old
    failures do not bring it back."""
    cyc = Cycle(explore=0.3)
    for it in (1, 2):
        cyc.iteration(it, 30, sparse)
    assert cyc.cs is not None and len(cyc.cs.active) == 1
    rid = cyc.cs.active[0].rule_id
    for it in range(3, 9):
        cyc.iteration(it, 15, nothing_fails)
    rule = cyc.cs.get(rid)
    assert rule is not None and rule.status == "expired"
    assert rule.retests >= 3 and rule.retest_hits == 0
    assert cyc.cs.active == ()
    expired = [c for cs in cyc.history for c in cs.changes if c.action == "expired"]
    assert [c.rule_id for c in expired] == [rid]
    assert "re-tests contradict it" in expired[0].why
