"""Peer parity: engine B vs backtrader on real data (S&P 500 daily, 1999-2018).

The same SMA(10)/SMA(50) long-only strategy (entries and exits are *levels*: flat
and SMA10 > SMA50 → buy; long and SMA10 < SMA50 → sell) runs through engine B and
through backtrader (a test-only dependency) configured the same way. Each setting
aligned, and why:

- data: the bundled ``us_indices`` panel, symbol ``SPX`` only (5031 daily bars),
  handed to backtrader as a ``PandasData`` feed of the same OHLCV arrays;
- frictions: engine B gets a 10 bps commission and nothing else (``Spread(bps=0)``,
  ``Impact(k=0)``, no participation cap, no borrow, no leverage cap); backtrader
  gets ``setcommission(commission=0.001)``, which (``percabs=True``, no margin)
  is a stock-like percentage commission ``|q| · price · 0.001`` per fill, engine
  B's ``q · price · bps/1e4``; backtrader's slippage is 0 by default;
- fills: engine B decides at bar t's close and fills at bar t+1's open. In
  backtrader ``next()`` runs at bar t's close and only *records* the decision;
  the order is sent from ``next_open()`` of bar t+1 with ``cheat_on_open=True``
  (which also sets the broker's ``coo``), so the market order fills at that same
  bar's open. A plain ``next()`` market order would also fill at the next open,
  but its size would have to be chosen at the close, without the open price;
- sizing: engine B sizes an entry all-in at the fill bar's open,
  ``q = E / (open · (1 + 0.001))`` with ``E`` the (flat) account's cash, rounded
  down to whole shares (``lot_size=1``). ``next_open()`` computes the same
  ``floor(cash / (open · 1.001))`` from the broker's cash before the fill (with
  ``coo`` backtrader's own cash check also prices market orders at the open, so
  the order is never rejected). Backtrader trades whole shares; a capital of 10
  million keeps the rounding residual small (SPX is 700–2900 points); an exit
  sells the whole position (``close()``);
- warm-up: SMA(50) first exists on the 50th bar (index 49). Backtrader calls
  ``next()`` from that bar on (``prenext()`` before); engine B's signals are
  undefined, hence false, before it. Both evaluate the first signal on bar 49;
- signals: backtrader's own ``SMA`` indicators with strict ``>``/``<`` as in the
  spec (equal averages: neither entry nor exit);
- end of data: an open position is marked to the last close by both (engine B's
  equity, backtrader's ``getvalue()``). Engine B values an open trade less the exit
  commission only in its pnl statistics, so an open trade (trade-list reason
  ``"open"``, no exit time) is compared by entry date, side and size alone (no
  exit, no pnl). The test runs twice: on all 5031 bars, where the last trade closes
  on 2018-10-12 (the final equity is pure cash in both, no trade is open), and on
  the first 2000 bars, which end inside the trade entered on 2006-08-01, so that
  exactly one trade is open at the end and the closed-trade comparison must leave
  it out;
- trade count: engine B's ``n_trades`` counts entries (open trades included), so
  backtrader's entries are counted the same way.

Compared: every fill (date, side, shares, price, commission), every round trip
(entry date, exit date, side, shares, pnl after commissions), the number of
trades, the whole equity curve and the final equity (relative tolerance 1e-9; the
engines add the same numbers in a different order, e.g. backtrader books a sale
as cost basis plus pnl, so agreement is to rounding, not bit for bit).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from alphaloop import load_bars
from alphaloop.engines.engine_b import verify
from alphaloop.engines.execution import (
    Commission,
    ExecutionModel,
    Impact,
    Spread,
    Volume,
)
from alphaloop.strategy import StrategySpec

bt = pytest.importorskip("backtrader")

FAST, SLOW = 10, 50
CAPITAL = 10_000_000.0
COMMISSION = 0.001  # 0.1 % of notional per fill = 10 bps
RTOL = 1e-9


class SmaLevels(bt.Strategy):
    """Decide at the close (``next``), trade at the next open (``next_open``)."""

    def __init__(self) -> None:
        self.fast = bt.indicators.SMA(self.data.close, period=FAST)
        self.slow = bt.indicators.SMA(self.data.close, period=SLOW)
        self.decision: str | None = None
        self.fills: list[tuple] = []
        self.closed: list[tuple] = []
        self.values: list[float] = []

    def prenext(self) -> None:  # warm-up bars: flat, equity is cash
        self.values.append(self.broker.getvalue())

    def next(self) -> None:  # bar t's close, after the broker marked positions
        self.values.append(self.broker.getvalue())
        self.decision = None
        if not self.position and self.fast[0] > self.slow[0]:
            self.decision = "buy"
        elif self.position and self.fast[0] < self.slow[0]:
            self.decision = "sell"

    def next_open(self) -> None:  # bar t+1 before its open: fills at this open
        if self.decision == "buy":
            cash = self.broker.getcash()
            self.buy(size=math.floor(cash / (self.data.open[0] * (1.0 + COMMISSION))))
        elif self.decision == "sell":
            self.close()
        self.decision = None

    def notify_order(self, order) -> None:
        if order.status == order.Completed:
            ex = order.executed
            self.fills.append((bt.num2date(ex.dt).date(), "buy" if order.isbuy() else "sell",
                               abs(ex.size), ex.price, ex.comm))

    def notify_trade(self, trade) -> None:
        if trade.isclosed:
            self.closed.append((bt.num2date(trade.dtopen).date(),
                                bt.num2date(trade.dtclose).date(), trade.pnlcomm))


def _run_backtrader(ohlcv: pd.DataFrame) -> SmaLevels:
    cerebro = bt.Cerebro(stdstats=False, cheat_on_open=True)
    cerebro.adddata(bt.feeds.PandasData(dataname=ohlcv, openinterest=None))
    cerebro.addstrategy(SmaLevels)
    cerebro.broker.setcash(CAPITAL)
    cerebro.broker.setcommission(commission=COMMISSION)
    return cerebro.run()[0]


def _trades_from_fills(fills: list[tuple]) -> list[tuple]:
    """Round trips (entry date, exit date or None, side, shares) from buy/sell fills."""
    trades, entry = [], None
    for date, side, qty, *_ in fills:
        if side == "buy":
            assert entry is None, "long only: no buy while long"
            entry = (date, qty)
        else:
            assert entry is not None and qty == entry[1], "a sell closes the position"
            trades.append((entry[0], date, "long", qty))
            entry = None
    if entry is not None:  # open at the end of data
        trades.append((entry[0], None, "long", entry[1]))
    return trades


# (bars used, trades still open at the end): all bars, and a window ending mid-trade
WINDOWS = {"all_5031_bars": (None, 0), "first_2000_bars": (2000, 1)}


@pytest.mark.parametrize("window", list(WINDOWS))
def test_sma_levels_match_backtrader_on_real_sp500(window: str) -> None:
    stop, n_open = WINDOWS[window]
    bars = load_bars("us_indices").select(["SPX"]).slice(0, stop)
    ohlcv = pd.DataFrame({
        "open": bars.open[:, 0], "high": bars.high[:, 0], "low": bars.low[:, 0],
        "close": bars.close[:, 0], "volume": bars.volume[:, 0],
    }, index=bars.index.tz_localize(None))
    peer = _run_backtrader(ohlcv)

    spec = StrategySpec(entry=f"sma(close, {FAST}) > sma(close, {SLOW})",
                        exit=f"sma(close, {FAST}) < sma(close, {SLOW})")
    model = ExecutionModel(initial_capital=CAPITAL, commission=Commission(bps=10),
                           spread=Spread(bps=0), impact=Impact(k=0),
                           volume=Volume(max_participation=None), lot_size=1.0,
                           borrow_bps=0, max_leverage=None)
    ours = verify(spec, bars, model, capacity=False)

    # fills: date, side, shares exactly; price and commission to rounding
    f = ours.fills
    our_fills = list(zip(f["timestamp"].dt.date, f["side"], f["quantity"],
                         f["price"], f["fee"], strict=True))
    assert len(peer.fills) > 50  # a real test: many round trips (136 fills on all bars)
    assert [x[:3] for x in our_fills] == [x[:3] for x in peer.fills]
    np.testing.assert_allclose([x[3:] for x in our_fills], [x[3:] for x in peer.fills],
                               rtol=RTOL, atol=0)

    # round trips: entry date, exit date, side, shares; pnl of the closed ones
    t = ours.trades
    exits = [None if pd.isna(x) else x.date() for x in t["exit_time"]]
    our_trades = list(zip(t["entry_time"].dt.date, exits, t["side"], t["qty"], strict=True))
    peer_trades = _trades_from_fills(peer.fills)
    assert our_trades == peer_trades
    assert ours.metrics["n_trades"] == len(peer_trades)
    # a trade open at the end has reason "open" and no exit time (kernel_a.EXIT_REASONS);
    # the window decides how many there are, and backtrader holds shares iff one is
    is_open = t["reason"] == "open"
    assert is_open.tolist() == t["exit_time"].isna().tolist()
    assert int(is_open.sum()) == n_open == int(peer.position.size != 0)
    closed = t[~is_open]
    assert len(closed) == len(peer.closed) == len(t) - n_open
    closed_dates = list(zip(closed["entry_time"].dt.date, closed["exit_time"].dt.date,
                            strict=True))
    assert closed_dates == [c[:2] for c in peer.closed]
    np.testing.assert_allclose(closed["pnl"].to_numpy(), [c[2] for c in peer.closed],
                               rtol=0, atol=RTOL * CAPITAL)

    # equity marked to each close, and the final equity (same shares held at the end)
    assert ours.positions.iloc[-1, 0] == peer.position.size
    assert len(peer.values) == bars.n_bars
    np.testing.assert_allclose(ours.equity.to_numpy(), peer.values, rtol=RTOL, atol=0)
    assert ours.equity.iloc[-1] == pytest.approx(peer.broker.getvalue(), rel=RTOL, abs=0)
