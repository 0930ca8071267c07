"""Spec features: numbers a parameter set implies *before* any backtest.

Rules may talk about these besides the parameters (``warmup >= 150`` says more across
families than ``slow >= 150``). Only quantities known before the backtest belong
here: a rule over an outcome such as turnover or the number of trades would explain
failures perfectly and forbid nothing, since a sampler cannot know it for a new
candidate. Give the same function to the learner (as :class:`Observation` features)
and to the samplers (``features=spec_features``)::

    obs = Observation(family=f, params=p, codes=codes, features=spec_features(f, p))
    make_sampler("sobol", f, seed=1, constraints=rules, features=spec_features)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from alphaloop.strategy.expression import lookback
from alphaloop.strategy.templates import get_family

FEATURES = ("warmup", "stop_distance", "trailing_stop", "take_profit", "max_bars",
            "rebalance_every")
"""``warmup``: bars of history the entry and exit expressions (and a cross-sectional
score) need (the longest window: a proxy of the signal's horizon, hence of the holding
period); ``stop_distance``, ``trailing_stop``, ``take_profit``: the risk exits as
fractions of the entry price, ``max_bars`` the time exit (0 where the spec has none);
``rebalance_every``: bars between a ranked book's rebalances (0 for sleeves)."""


def spec_features(family: str, params: Mapping[str, Any]) -> dict[str, float]:
    """The :data:`FEATURES` of the spec ``family`` builds from ``params`` (normalized)."""
    return dict(_features(family, json.dumps(dict(params), sort_keys=True)))


@lru_cache(maxsize=65_536)  # samplers ask for the same points again (capacity, screening)
def _features(family: str, key: str) -> tuple[tuple[str, float], ...]:
    # build_valid: the builder, without the registered ranges (a widened family's
    # values lie outside them, and the caller's parameters are normalized already)
    spec = get_family(family).build_valid(json.loads(key))
    risk, book = spec.risk, spec.portfolio
    warmup = max(lookback(node) for _, node in spec.expression_nodes())
    return (("warmup", float(warmup)),
            ("stop_distance", float(risk.stop_loss or 0.0)),
            ("trailing_stop", float(risk.trailing_stop or 0.0)),
            ("take_profit", float(risk.take_profit or 0.0)),
            ("max_bars", float(risk.max_bars or 0)),
            ("rebalance_every", float(book.rebalance_every if book.cross_sectional else 0)))
