"""How much of a family's parameter space the rules in force forbid (issue 10, item 5).

The share is taken under the samplers' prior: a point of the unit cube, uniform,
mapped through each parameter's ``from_unit`` (every grid value of a parameter equally
likely), kept only when it satisfies the family's validity rules. It is a Monte
Carlo estimate from a seeded generator, so the same family, rules, ``samples`` and
``seed`` give the same number; :class:`SpaceShare` carries its binomial standard error.
Exploration points (where samplers let soft rules be broken) are not subtracted: the
share is what the active rules forbid, not what the samplers will never propose.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alphaloop.strategy.constraints import ConstraintLike, forbidden_by
from alphaloop.strategy.samplers import rule_view
from alphaloop.strategy.templates import Family


@dataclass(frozen=True)
class SpaceShare:
    """``share`` of ``n_valid`` valid prior draws that a rule forbids (``stderr`` its
    binomial standard error; ``share`` is 0 and ``stderr`` NaN when no draw was valid)."""

    family: str
    share: float
    stderr: float
    n_valid: int
    samples: int
    seed: int


def forbidden_share(family: Family, rules: Sequence[ConstraintLike], *, samples: int = 4096,
                    seed: int = 0,
                    features: Callable[[str, Mapping[str, Any]], Mapping[str, Any]] | None = None
                    ) -> SpaceShare:
    """Estimate the share of ``family``'s valid space that ``rules`` forbid.

    ``rules`` as the samplers take them (expired rules forbid nothing); ``features`` as
    the samplers' (rules may name derived features).
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    rng = np.random.default_rng(seed)
    valid = hit = 0
    for point in rng.random((samples, len(family.params))):
        raw = family.from_unit(point.tolist())
        if family.broken_rules(raw):
            continue  # outside the family's space: the prior never proposes it
        valid += 1
        view = rule_view(features, family.name, raw)
        hit += bool(forbidden_by(rules, family.name, view))
    if valid == 0:
        return SpaceShare(family.name, 0.0, math.nan, 0, samples, seed)
    share = hit / valid
    return SpaceShare(family.name, share, math.sqrt(share * (1 - share) / valid), valid,
                      samples, seed)
