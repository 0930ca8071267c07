"""S70 (orchestrator.stages.verify_b): the determinism rerun does not share the
stage's indicator cache, so an indicator that differs from one computation to the next
is caught, not read back from the cache."""

from __future__ import annotations

import itertools

import numpy as np

from alphaloop.data.synthetic import generate
from alphaloop.engines.execution import ExecutionModel
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.orchestrator.stages import verify_b
from alphaloop.strategy.operators import custom_operator
from alphaloop.strategy.spec import StrategySpec


def _verify(spec: StrategySpec, *, shared: bool) -> list[str]:
    bars = generate(3, 300, seed=5)
    ev = SignalEvaluator(bars) if shared else None
    out = verify_b({spec.strategy_id: spec}, [spec.strategy_id], bars,
                   ExecutionModel(), evaluator=ev)
    return list(out.rows[0]["codes"])


def test_a_nondeterministic_indicator_is_caught_with_a_shared_evaluator() -> None:
    calls = itertools.count()

    def drifting_sma(x: np.ndarray, n: int) -> np.ndarray:
        # each computation comes out a little different (a call counter, like a
        # seed taken from the clock): the crossings move between two runs
        shift = 1.0 + 0.01 * next(calls)
        out = np.full(x.shape, np.nan)
        kernel = np.ones(n) / n
        for i, row in enumerate(x):
            out[i, n - 1:] = np.convolve(row, kernel, mode="valid") * shift
        return out

    with custom_operator("dsma", drifting_sma, lookback=lambda n: n - 1):
        spec = StrategySpec(entry="close > dsma(close, 10)", exit="close < dsma(close, 10)")
        assert "NON_DETERMINISTIC" in _verify(spec, shared=True)
        assert "NON_DETERMINISTIC" in _verify(spec, shared=False)


def test_a_deterministic_strategy_passes_the_rerun_with_a_shared_evaluator() -> None:
    spec = StrategySpec(entry="sma(close, 5) > sma(close, 20)",
                        exit="sma(close, 5) < sma(close, 20)")
    assert "NON_DETERMINISTIC" not in _verify(spec, shared=True)
