"""Peer parity: engine A vs backtesting.py on real data (S&P 500 daily, 1999-2018).

The same SMA(10)/SMA(50) crossover, long only, runs through both engines with the
same semantics. Each setting aligned, and why:

- fills: backtesting.py fills market orders at the next bar's open
  (``trade_on_close=False``, its default) — engine A's rule;
- commission: ``commission=0.001`` is charged per side on traded value in
  backtesting.py; engine A gets ``fees_bps=10``; slippage 0 on both (backtesting.py's
  ``spread=0``);
- sizing: ``buy()`` with no size spends all available cash *including* the
  commission (``size = cash // (price·(1+commission))``) — engine A sizes
  ``q = E / (p·(1+fee))``. backtesting.py trades whole units, so we use its
  ``FractionalBacktest`` with a 1e-9 unit: rounding then costs < 1e-12 of equity;
- warm-up: backtesting.py only starts calling ``next()`` one bar *after* every
  indicator is defined, so it would miss the signal on the first bar where SMA(50)
  exists. The indicators handed to it are NaN-free (zeros during warm-up) and
  ``next()`` ignores bars before the 50th itself; engine A's three-valued signals
  are undefined (never true) on those bars;
- end of data: an open position is marked to the last close in both
  (``finalize_trades=False``); backtesting.py's ``# Trades`` counts closed trades,
  engine A's ``n_trades`` counts entries, so an open final trade is added back.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from alphaloop.data import load_bars
from alphaloop.engines import CostModel, backtest
from alphaloop.strategy import StrategySpec

backtesting = pytest.importorskip("backtesting")
from backtesting import Strategy  # noqa: E402
from backtesting.lib import FractionalBacktest  # noqa: E402

FAST, SLOW = 10, 50


def _sma_no_nan(values: np.ndarray, n: int) -> np.ndarray:
    return pd.Series(values).rolling(n).mean().fillna(0.0).to_numpy()


class SmaCross(Strategy):
    def init(self) -> None:
        self.fast = self.I(_sma_no_nan, self.data.Close, FAST)
        self.slow = self.I(_sma_no_nan, self.data.Close, SLOW)

    def next(self) -> None:
        if len(self.data) < SLOW:  # SMA(50) undefined before the 50th bar
            return
        if not self.position and self.fast[-1] > self.slow[-1]:
            self.buy()
        elif self.position and self.fast[-1] < self.slow[-1]:
            self.position.close()


def test_sma_cross_matches_backtesting_py_on_real_sp500() -> None:
    bars = load_bars("sp500")
    ohlcv = pd.DataFrame({
        "Open": bars.open[:, 0], "High": bars.high[:, 0], "Low": bars.low[:, 0],
        "Close": bars.close[:, 0], "Volume": bars.volume[:, 0],
    }, index=bars.index.tz_localize(None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = FractionalBacktest(ohlcv, SmaCross, cash=10_000, commission=0.001,
                                  fractional_unit=1e-9, finalize_trades=False).run()

    spec = StrategySpec(entry=f"sma(close, {FAST}) > sma(close, {SLOW})",
                        exit=f"sma(close, {FAST}) < sma(close, {SLOW})")
    ours = backtest(spec, bars, CostModel(fees_bps=10, slippage_bps=0))

    peer_trades = len(peer["_trades"])
    still_open = peer["_strategy"].position.size != 0
    assert ours.metrics["n_trades"] == peer_trades + int(still_open)
    assert peer_trades > 50  # a real test: many round trips over 20 years
    assert ours.metrics["total_return"] == pytest.approx(peer["Return [%]"] / 100, abs=1e-6)
    peer_equity = peer["_equity_curve"]["Equity"].to_numpy() / 10_000
    np.testing.assert_allclose(ours.equity.to_numpy(), peer_equity, rtol=0, atol=1e-6)
