"""Issue 14, item 10: results show a useful summary in Jupyter, and a sweep's frame
starts with what a reader looks at."""

from __future__ import annotations

import re

import pytest

from alphaloop import StrategySpec, backtest, load_bars, run_sweep
from alphaloop.engines import CostModel
from alphaloop.engines.engine_b import verify
from alphaloop.engines.execution import ExecutionModel

SPEC = StrategySpec(entry="sma(close, 10) > sma(close, 50)",
                    exit="sma(close, 10) < sma(close, 50)")


@pytest.fixture(scope="module")
def sp500():  # type: ignore[no-untyped-def]
    return load_bars("sp500")


def _cells(page: str) -> dict[str, str]:
    return dict(re.findall(r"<th[^>]*>([^<]+)</th><td[^>]*>([^<]*)</td>", page))


def test_backtest_result_repr_html(sp500) -> None:  # type: ignore[no-untyped-def]
    result = backtest(SPEC, sp500, CostModel(fees_bps=7, slippage_bps=3))
    page = result._repr_html_()
    cells = _cells(page)
    assert page.startswith("<div><strong>BacktestResult (engine A)</strong>")
    assert cells["strategy_id"] == SPEC.strategy_id[:16]
    assert cells["entry"] == "sma(close, 10) &gt; sma(close, 50)"
    assert cells["costs"] == "fees 7 + slippage 3 bps per side"
    assert re.fullmatch(r"-?\d+\.\d\d%", cells["total_return"])
    assert re.fullmatch(r"\d+", cells["n_trades"])
    # the main metrics come first
    names = re.findall(r"<tr><th[^>]*>([^<]+)</th><td style='text-align:right'>", page)
    assert names[:5] == ["sharpe", "total_return", "cagr", "max_drawdown", "n_trades"]


def test_verification_result_repr_html(sp500) -> None:  # type: ignore[no-untyped-def]
    result = verify(SPEC, sp500, ExecutionModel(), capacity=False)
    cells = _cells(result._repr_html_())
    assert cells["status"] == "SUCCESS" and cells["capacity"] == "n/a"
    assert cells["fill rate"].endswith("%") and cells["fills"].endswith("(.fills)")
    assert "sharpe" in cells and "max_drawdown" in cells


def test_sweep_frame_puts_id_family_params_and_main_metrics_first(sp500) -> None:  # type: ignore[no-untyped-def]
    frame = run_sweep("sma_cross", sp500, n=3)
    assert list(frame.columns[:7]) == ["strategy_id", "family", "params", "sharpe",
                                       "total_return", "max_drawdown", "n_trades"]
    assert {"entry", "exit", "spec", "data_ref"} <= set(frame.columns)
