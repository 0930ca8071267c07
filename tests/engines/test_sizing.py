"""Sizing shared by both engines: fixed fraction and ATR-based volatility target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alphaloop.data.bars import Bars
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import run_batch
from alphaloop.engines.sizing import ATR_TO_SIGMA, fraction_array, sizing_key
from alphaloop.errors import SpecError
from alphaloop.strategy.spec import Sizing, StrategySpec

ZERO = CostModel(fees_bps=0, slippage_bps=0)


def _bars(o: list[float], h: list[float], lo: list[float], c: list[float]) -> Bars:
    idx = pd.date_range("2023-01-02", periods=len(c), freq="B", tz="UTC")
    col = lambda x: np.array(x, dtype=float)[:, None]  # noqa: E731
    return Bars(index=idx, symbols=("X",), open=col(o), high=col(h), low=col(lo),
                close=col(c), volume=np.ones((len(c), 1)))


def test_fixed_fraction_uses_that_share_of_the_sleeve() -> None:
    # buy at bar 1's open 10 with 40 % of 1.0 → 0.04 shares; close 12 at the end:
    # equity = 0.6 + 0.04 * 12 = 1.08
    bars = _bars([10, 10, 11], [10, 10, 12], [10, 10, 11], [10, 10, 12])
    spec = StrategySpec(entry="close > 0", exit="close < 0",
                        sizing={"method": "fixed_fraction", "fraction": 0.4})
    eq = run_batch([spec], bars, ZERO).equity[0]
    assert eq == pytest.approx([1.0, 1.0, 1.08], rel=1e-12)


def test_atr_vol_target_fraction_by_hand() -> None:
    # true ranges from bar 1: max(h-l, |h-c_prev|, |l-c_prev|)
    # bar1: h 11 l 9 prev 10 -> 2 ; bar2: h 12 l 10 prev 10 -> 2 ; ATR(2) at bar 2 = 2
    # sigma per bar = ATR/close * sqrt(pi/8) = 2/11 * 0.6267; annualized * sqrt(252)
    bars = _bars([10, 10, 11], [10, 11, 12], [10, 9, 10], [10, 10, 11])
    key = sizing_key(Sizing(method="vol_target", target_vol=0.2, vol_window=2,
                            vol_estimator="atr", max_leverage=3))
    fields = {f: np.ascontiguousarray(bars.field(f).T) for f in ("open", "high", "low",
                                                                  "close")}
    frac = fraction_array(key, fields, bars)[0]
    sigma = 2 / 11 * np.sqrt(np.pi / 8) * np.sqrt(252)
    assert abs(ATR_TO_SIGMA - 0.6266570686577501) < 1e-15  # sqrt(pi/8)
    assert np.isnan(frac[:2]).all()
    assert frac[2] == pytest.approx(min(0.2 / sigma, 3), rel=1e-12)


@pytest.mark.parametrize(("sizing", "needle"), [
    ({"method": "fixed_fraction"}, "sizing.fraction is required"),
    ({"method": "equal_weight", "fraction": 0.5}, "only used by method fixed_fraction"),
    ({"method": "fixed_fraction", "fraction": 3}, "above sizing.max_leverage"),
    ({"method": "vol_target", "target_vol": 0.1, "vol_estimator": "garch"}, "vol_estimator"),
    ({"method": "fixed_fraction", "fraction": "0.5"}, "sizing.fraction"),
])
def test_bad_sizing_names_the_field(sizing: dict, needle: str) -> None:
    with pytest.raises(SpecError) as exc:
        StrategySpec.from_dict({"entry": "close > 0", "exit": "close < 0", "sizing": sizing})
    assert needle in exc.value.message


def test_sizing_identity() -> None:
    def sid(**s: object) -> str:
        return StrategySpec(entry="close > 0", exit="close < 0", sizing=s).strategy_id

    assert sid(method="fixed_fraction", fraction=0.5) != sid(method="fixed_fraction",
                                                             fraction=0.6)
    # the default estimator keeps the id a vol_target spec had before estimators existed
    assert sid(method="vol_target", target_vol=0.1) == sid(method="vol_target",
                                                           target_vol=0.1, vol_estimator="std")
    assert sid(method="vol_target", target_vol=0.1) != sid(method="vol_target",
                                                           target_vol=0.1, vol_estimator="atr")


def test_a_batch_computes_each_sizing_rule_once_across_its_chunks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from alphaloop.engines import sizing

    calls: list[tuple[object, ...]] = []
    real = sizing.fraction_array

    def counting(key: sizing.SizingKey, fields: dict[str, np.ndarray],
                 bars: Bars) -> np.ndarray:
        calls.append(key)
        return real(key, fields, bars)

    monkeypatch.setattr(sizing, "fraction_array", counting)
    rng = np.random.default_rng(3)
    c = list(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 60))))
    bars = _bars(c, [x * 1.01 for x in c], [x * 0.99 for x in c], c)
    vol = {"method": "vol_target", "target_vol": 0.1, "vol_window": 5}
    specs = [StrategySpec(entry=f"close > sma(close, {n})", exit=f"close < sma(close, {n})",
                          sizing=vol) for n in (3, 4, 6)]
    one_chunk = run_batch(specs, bars, ZERO)
    calls.clear()
    chunked = run_batch(specs, bars, ZERO, chunk_size=1)  # three chunks, one rule
    assert len(calls) == 1
    np.testing.assert_array_equal(chunked.returns, one_chunk.returns)
