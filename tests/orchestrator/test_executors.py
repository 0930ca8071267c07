"""Executors: the in-process path hands engine A the spec objects, the others their
JSON; both give the same numbers, bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd

from alphaloop.data.synthetic import generate
from alphaloop.engines.costs import CostModel
from alphaloop.orchestrator.executors import LocalExecutor, backtest_all
from alphaloop.strategy.templates import FAMILIES


class _ViaJson(LocalExecutor):
    """In this process, but told it is not: the chunks go as JSON, as to a pool."""

    @property
    def in_process(self) -> bool:
        return False


def test_spec_objects_and_their_json_give_the_same_results() -> None:
    bars = generate(4, 300, seed=7)
    fam = FAMILIES["sma_cross"]
    specs = [fam.build(p) for p in ({"fast": 5, "slow": 20}, {"fast": 10, "slow": 50},
                                    {"fast": 15, "slow": 30})]
    costs = CostModel(fees_bps=10, slippage_bps=5)
    direct = LocalExecutor(1, bars)
    assert direct.in_process and not LocalExecutor(2, bars).in_process
    a_frame, a_ret = backtest_all(direct, specs, 250, costs)
    b_frame, b_ret = backtest_all(_ViaJson(1, bars), specs, 250, costs)
    pd.testing.assert_frame_equal(a_frame, b_frame, check_exact=True)
    np.testing.assert_array_equal(a_ret, b_ret)
    assert list(a_frame["strategy_id"]) == [s.strategy_id for s in specs]
    assert a_ret.shape == (3, 250) and float(np.abs(a_ret).sum()) > 0
