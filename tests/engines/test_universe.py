"""The universe's listing and delisting rule, against the rule written out bar by bar."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from alphaloop.engines.universe import LIVE, OUT, UniverseRule, build_universe


def _live_by_definition(valid: np.ndarray, index: pd.DatetimeIndex,
                        rule: UniverseRule) -> np.ndarray:
    """The module docstring's rule, one (symbol, bar) at a time: listed from its first
    bar; delisted after ``delist_after_bars`` panel bars *and* ``delist_after_days``
    days without a bar."""
    n_sym, n_bars = valid.shape
    days = np.asarray((index - index[0]) / pd.Timedelta(days=1))
    live = np.zeros((n_sym, n_bars), dtype=bool)
    for i in range(n_sym):
        for t in range(n_bars):
            seen = [s for s in range(t + 1) if valid[i, s]]
            if not seen:
                continue
            last = seen[-1]
            live[i, t] = not (t - last >= rule.delist_after_bars
                              and days[t] - days[last] >= rule.delist_after_days)
    return live


@settings(max_examples=150, deadline=None)
@given(valid=hnp.arrays(bool, st.tuples(st.integers(1, 4), st.integers(1, 40))),
       gaps=st.lists(st.integers(1, 4), min_size=40, max_size=40),
       after_bars=st.integers(1, 6), after_days=st.sampled_from([0.0, 0.5, 2.0, 5.0]))
def test_live_is_the_rule_bar_by_bar(valid: np.ndarray, gaps: list[int], after_bars: int,
                                     after_days: float) -> None:
    n_bars = valid.shape[1]
    # irregular calendar: 1 to 4 days between bars
    index = pd.DatetimeIndex(pd.Timestamp("2021-01-04", tz="UTC") + pd.to_timedelta(
        np.cumsum([0, *gaps[: n_bars - 1]]), unit="D"))
    rule = UniverseRule(delist_after_bars=after_bars, delist_after_days=after_days)
    uni = build_universe(valid, index, rule)
    want = _live_by_definition(valid, index, rule)
    np.testing.assert_array_equal(uni.state, np.where(want, LIVE, OUT))
    # the allocation set: live at the previous bar and at this one
    np.testing.assert_array_equal(uni.alloc[:, 1:], want[:, :-1] & want[:, 1:])
    assert not uni.alloc[:, 0].any()


def test_a_gap_shorter_than_either_limit_keeps_the_symbol() -> None:
    # one symbol, daily bars, a 3-bar hole: with 5 bars / 5 days it stays live through
    # the hole; with 2 bars / 2 days it leaves at the hole's second bar and returns
    index = pd.date_range("2022-01-03", periods=8, freq="D", tz="UTC")  # microseconds
    valid = np.array([[True, True, False, False, False, True, True, True]])
    keep = build_universe(valid, index, UniverseRule())
    assert (keep.state == LIVE).all()
    short = build_universe(valid, index, UniverseRule(delist_after_bars=2,
                                                      delist_after_days=2.0))
    assert short.state[0].tolist() == [LIVE, LIVE, LIVE, OUT, OUT, LIVE, LIVE, LIVE]
