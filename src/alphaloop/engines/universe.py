"""The tradable universe, bar by bar: which symbols share the capital at t.

Both engines split capital among the symbols that are *tradable*, and only those,
so that nothing which happens later (a listing, a delisting, a data error) can
change an earlier bar. The rule, one mask per panel (``live``, N × T), computed
from data up to each bar only:

- **listing**: a symbol joins the universe at its first bar (all of OHLC present);
  when the execution model needs volume (a participation cap or impact), at its
  first bar with positive volume (a symbol with no volume *yet* cannot be traded
  yet, which is not the same as never).
- **delisting**: a symbol leaves when it has had no bar for ``delist_after_bars``
  consecutive panel bars *and* for at least ``delist_after_days`` calendar days
  (both, so a thin intraday symbol missing a few minutes stays, and a monthly one
  missing a month stays). Its position is closed at that bar, at its last close,
  with costs (trade reason ``delisted``). If bars resume, it lists again.
- **membership**: when the panel carries a membership table (survivorship-aware data),
  a symbol is tradable only on the bars where it is a member of the universe; it
  leaves (closed like a delisting) on the first bar after its membership ends.
- **data failure** (engine B's data gate): a symbol leaves for good at the first
  bar where a quality error is observable (trade reason ``data_failure``); the
  bars before it are untouched.

Capital follows the universe. The *allocation set* at bar t is ``live[t-1] &
live[t]``: the symbols tradable at the previous close that are still there. When it
changes, the portfolio is re-split at t's open before any order: its equity (cash,
and positions marked at the open — at the last close where a symbol has no bar) is
divided equally among the allocation set; every held position that has a bar and no
order pending is resized in proportion (paying costs), and cash moves between sleeves
so that each is worth the same. A listing at t is thus funded at t+1's open (its
signal at t's close is the earliest that can trade it), a delisting at t frees its
capital at t's open. Before the first allocation, and while the set is empty,
capital waits as cash.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit
from pydantic import BaseModel, ConfigDict, Field

OUT, LIVE, FAILED = 0, 1, 2
"""States in :attr:`Universe.state`: not tradable, tradable, excluded by the data gate."""


class UniverseRule(BaseModel):
    """When a symbol that stopped printing bars counts as delisted."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    delist_after_bars: int = Field(default=5, ge=1, le=1_000_000)
    delist_after_days: float = Field(default=5.0, ge=0, le=100_000)


@dataclass(frozen=True)
class Universe:
    """The causal universe of one panel, in the kernels' asset-major layout.

    ``state`` (N, T) int8: :data:`LIVE`, :data:`OUT` or :data:`FAILED`;
    ``reallocate`` (T,) bool: the allocation set changes at this bar's open;
    ``alloc`` (N, T) bool: the allocation set (``live[t-1] & live[t]``).
    """

    state: np.ndarray
    reallocate: np.ndarray
    alloc: np.ndarray

    @property
    def live(self) -> np.ndarray:
        return np.asarray(self.state == LIVE)


@njit(cache=True)
def _listed(seen: np.ndarray, days: np.ndarray, after_bars: int, after_days: float
            ) -> np.ndarray:
    """(N, T) bool: symbol i has had a bar at or before t (``seen``), and not so long
    ago that it counts as delisted: fewer than ``after_bars`` panel bars since its
    latest bar, or fewer than ``after_days`` calendar days (``days``: each bar's
    timestamp in days). One pass per symbol that reads bars up to t only."""
    n_sym, n_bars = seen.shape
    live = np.zeros((n_sym, n_bars), dtype=np.bool_)
    for i in range(n_sym):
        last = -1  # the latest bar up to t
        for t in range(n_bars):
            if seen[i, t]:
                last = t
            if last >= 0:
                live[i, t] = not (t - last >= after_bars and days[t] - days[last] >= after_days)
    return live


def build_universe(valid: np.ndarray, index: pd.DatetimeIndex, rule: UniverseRule, *,
                   volume: np.ndarray | None = None,
                   fail_bar: np.ndarray | None = None,
                   member: np.ndarray | None = None) -> Universe:
    """The universe of an (N, T) ``valid`` mask (bars with all of OHLC).

    ``volume`` (N, T), when given, delays each listing to the first positive volume;
    ``fail_bar`` (N,) excludes symbol i from bar ``fail_bar[i]`` on (a value >= T:
    never); ``member`` (N, T), when given, is the membership mask: a symbol is live
    only where it is a member. Every input at bar t is read at or before t.
    """
    n_bars = valid.shape[1]
    bars_seen = valid
    if volume is not None:
        has_vol = np.maximum.accumulate(np.nan_to_num(volume, nan=0.0) > 0, axis=1)
        bars_seen = valid & has_vol
    ts = index.as_unit("ns").asi8.astype(np.float64) / 86_400e9  # any resolution
    live = _listed(np.ascontiguousarray(bars_seen, dtype=np.bool_), ts,
                   rule.delist_after_bars, float(rule.delist_after_days))
    if member is not None:
        live &= np.asarray(member, dtype=np.bool_)
    state = np.where(live, LIVE, OUT).astype(np.int8)
    if fail_bar is not None:
        failed = np.arange(n_bars)[None, :] >= np.asarray(fail_bar)[:, None]
        state[failed] = FAILED
    is_live = state == LIVE
    alloc = np.zeros_like(is_live)
    alloc[:, 1:] = is_live[:, :-1] & is_live[:, 1:]
    reallocate = np.zeros(n_bars, dtype=np.bool_)
    reallocate[1:] = np.any(alloc[:, 1:] != alloc[:, :-1], axis=0)
    return Universe(state=np.ascontiguousarray(state), reallocate=reallocate,
                    alloc=np.ascontiguousarray(alloc))
