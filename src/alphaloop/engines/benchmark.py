"""The default benchmark: the causal equal-weight buy-and-hold of the panel's universe.

It is a strategy spec like any other (always long: ``entry: close > 0``, never an
exit signal), so it runs through the same engine code as the candidates, with the same
universe rule and the same costs: capital is split equally among the symbols
tradable at each bar (:mod:`alphaloop.engines.universe`), a symbol listed late enters
at the open after its first bar (when its first signal can trade), a delisted or
removed member is sold, and every resize pays fees and slippage. Between universe
changes each sleeve simply holds its shares (buy-and-hold, no periodic rebalance).

Other benchmarks: one symbol of the panel (its own buy-and-hold, through the same
engine) and cash (all-zero returns, named ``cash``). A separate series from a file is
resolved by :mod:`alphaloop.evaluation.benchmark`.
"""

from __future__ import annotations

import numpy as np

from alphaloop.data.bars import Bars
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import run_batch
from alphaloop.errors import AlphaloopError, ErrorClass
from alphaloop.strategy.spec import StrategySpec

EQUAL_WEIGHT = "equal_weight"
CASH = "cash"


class BenchmarkError(AlphaloopError):
    """A benchmark that cannot be built (unknown symbol, unreadable or short series)."""

    code = "BENCHMARK_INVALID"
    error_class = ErrorClass.PERMANENT


def benchmark_spec() -> StrategySpec:
    """Long every tradable symbol from its first bar on, never exit on a signal."""
    return StrategySpec(family="benchmark", name="equal_weight_buy_and_hold",
                        entry="close > 0", exit="close < 0", direction="long")


def equal_weight_returns(bars: Bars, costs: CostModel | None = None) -> np.ndarray:
    """Per-bar returns (T,) of the equal-weight buy-and-hold of ``bars``' universe."""
    return np.asarray(run_batch([benchmark_spec()], bars, costs).returns[0])


def symbol_returns(bars: Bars, symbol: str, costs: CostModel | None = None) -> np.ndarray:
    """Per-bar returns (T,) of buying and holding one symbol of the panel."""
    if symbol not in bars.symbols:
        raise BenchmarkError(f"benchmark symbol {symbol!r} is not in the data; symbols: "
                             f"{', '.join(bars.symbols)}", code="BENCHMARK_UNKNOWN_SYMBOL")
    return equal_weight_returns(bars.select([symbol]), costs)


def panel_benchmark(bars: Bars, name: str, costs: CostModel | None = None) -> np.ndarray:
    """Returns of a benchmark named ``equal_weight``, ``cash`` or a symbol of ``bars``."""
    if name == EQUAL_WEIGHT:
        return equal_weight_returns(bars, costs)
    if name == CASH:
        return np.zeros(bars.n_bars)
    return symbol_returns(bars, name, costs)
