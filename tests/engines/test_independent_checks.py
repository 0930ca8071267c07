"""Independent checks of stops and vol-target sizing (issue 8, item 7).

Engine A and engine B share ``kernel_a._decide``, ``kernel_a._protective_exit`` and
``sizing.size_arrays``, so A/B parity cannot catch a mistake in them. The reference
values here come from elsewhere:

- hand calculations from the documented semantics (``kernel_a`` module docstring,
  ``costs``, ``Risk`` and ``Sizing`` in ``strategy.spec``), worked out in the comments
  of each test and written out with plain Python/numpy, never with alphaloop code;
- a peer, backtesting.py, on real data (S&P 500 daily) for a strategy with a stop loss.

The documented semantics used throughout (fee f = 10 bps, slippage s = 5 bps, a single
symbol, so its sleeve is the whole starting capital 1.0):

- a signal at bar t's close fills at bar t+1's open ``O``: a buy at ``O·(1+s)``, a
  short sale at ``O·(1-s)`` (slippage against the trader);
- all-in sizing: ``q = w·E / (p·(1+f))`` with ``E`` the sleeve's equity (its cash,
  flat) and ``w`` the size fraction (1 for ``equal_weight``); the commission is
  ``f`` on filled notional per side, so a long entry leaves ``E - q·p·(1+f)`` cash;
- stop levels are fractions of the entry *fill* price ``pe`` (the trade list's
  ``entry_price``): stop loss ``pe·(1-sl)`` (long) / ``pe·(1+sl)`` (short),
  take profit ``pe·(1+tp)`` / ``pe·(1-tp)``, trailing ``X·(1-ts)`` with ``X`` the highest
  high since entry over bars *before* the current one (the entry price on the entry bar);
- inside a bar: when the open is already beyond a level (a gap) the raw exit price is
  the open, otherwise the level itself if the bar's low/high reaches it; the stop is
  checked before the take-profit (conservative); the raw price then gets slippage
  against the trader (a long sells at ``raw·(1-s)``, a short buys back at
  ``raw·(1+s)``) and pays the commission;
- hence a long trade's return on its sleeve is ``px·(1-f) / (pe·(1+f)) - 1`` and a
  short's ``((1-f)·pe - (1+f)·px) / ((1+f)·pe)`` (``px`` the exit fill price), and
  its pnl is that return times the sleeve's equity before the entry.

Signals are steered through the volume column of the hand-built panels: entry
``volume > 1.5`` (a bar with volume 2 or 3), exit ``volume > 2.5`` (volume 3). Every
symbol has bars from bar 0 to the end and only trades closed before the last bar are
compared (end-of-data and listing semantics are out of scope here).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from alphaloop import load_bars
from alphaloop.data.bars import Bars
from alphaloop.engines import CostModel, backtest
from alphaloop.engines.engine_b import verify
from alphaloop.engines.execution import ExecutionModel
from alphaloop.strategy import StrategySpec

FEE, SLIP = 0.001, 0.0005  # CostModel() defaults: 10 bps commission, 5 bps slippage
COSTS = CostModel(fees_bps=10, slippage_bps=5)
RTOL = 1e-12
ENGINES = ("engine_a", "engine_b")


# --------------------------------------------------------------------- helpers
def _panel(rows: list[tuple[float, float, float, float, float]]) -> Bars:
    """One symbol ``X`` from (open, high, low, close, volume) rows, weekday daily bars."""
    a = np.array(rows, dtype=np.float64)
    idx = pd.bdate_range("2024-01-01", periods=len(rows), tz="UTC")
    return Bars(index=idx, symbols=("X",), open=a[:, [0]].copy(), high=a[:, [1]].copy(),
                low=a[:, [2]].copy(), close=a[:, [3]].copy(), volume=a[:, [4]].copy())


def _run(engine: str, spec: StrategySpec, bars: Bars, costs: CostModel = COSTS
         ) -> tuple[pd.DataFrame, pd.DataFrame | None, float]:
    """(trades, fills ledger or None, final equity over starting capital)."""
    if engine == "engine_a":
        res = backtest(spec, bars, costs)
        return res.trades, None, float(res.equity.iloc[-1])
    model = ExecutionModel.from_cost_model(costs, initial_capital=1.0)
    out = verify(spec, bars, model, capacity=False)
    assert out.status == "SUCCESS"
    return out.trades, out.fills, float(out.equity.iloc[-1])


def _closed(trades: pd.DataFrame, bars: Bars) -> pd.DataFrame:
    """Trades that exited before the last bar."""
    last = bars.index[-1]
    return trades[trades["exit_time"].notna() & (trades["exit_time"] < last)]


def _check_trades(engine: str, spec: StrategySpec, bars: Bars,
                  expected: list[dict[str, float | int | str]]) -> None:
    """Compare every trade with the hand-worked ``expected`` rows: entry bar ``eb``,
    exit bar ``xb``, side, entry fill ``pe``, raw exit ``raw`` (level or open), exit
    fill ``px``, reason and the return ``ret``; the size and pnl follow from
    ``q = E/(pe·(1+f))`` with ``E`` compounding the previous trades' returns."""
    trades, fills, final = _run(engine, spec, bars)
    closed = _closed(trades, bars)
    assert len(trades) == len(closed) == len(expected)  # all closed, nothing open
    equity = 1.0
    for k, (row, want) in enumerate(zip(closed.itertuples(), expected, strict=True)):
        pe, px, ret = float(want["pe"]), float(want["px"]), float(want["ret"])
        assert row.entry_time == bars.index[want["eb"]], k
        assert row.exit_time == bars.index[want["xb"]], k
        assert row.side == want["side"], k
        assert row.reason == want["reason"], k
        assert row.entry_price == pytest.approx(pe, rel=RTOL), k
        assert row.exit_price == pytest.approx(px, rel=RTOL), k
        assert row.qty == pytest.approx(equity / (pe * (1 + FEE)), rel=RTOL), k
        assert row.pnl == pytest.approx(equity * ret, rel=RTOL), k
        if fills is not None:  # engine B's ledger: an entry fill and an exit fill
            ent, ext = fills.iloc[2 * k], fills.iloc[2 * k + 1]
            buy, sell = ("buy", "sell") if want["side"] == "long" else ("sell", "buy")
            assert (ent["side"], ent["reason"]) == (buy, "entry"), k
            assert (ext["side"], ext["reason"]) == (sell, want["reason"]), k
            assert ent["price"] == pytest.approx(pe, rel=RTOL), k
            assert ent["quantity"] == pytest.approx(row.qty, rel=RTOL), k
            assert ext["ref_price"] == pytest.approx(float(want["raw"]), rel=RTOL), k
            assert ext["price"] == pytest.approx(px, rel=RTOL), k
            assert ent["fee"] == pytest.approx(ent["quantity"] * pe * FEE, rel=RTOL), k
        equity *= 1.0 + ret
    assert final == pytest.approx(equity, rel=RTOL)


def _long(eb: int, xb: int, o: float, raw: float, reason: str) -> dict[str, float | int | str]:
    """A long trade entered at bar ``eb``'s open ``o`` and left at bar ``xb`` at the raw
    price ``raw`` (the level, or the open on a gap), by the formulas above."""
    pe, px = o * (1 + SLIP), raw * (1 - SLIP)
    return {"eb": eb, "xb": xb, "side": "long", "pe": pe, "raw": raw, "px": px,
            "reason": reason, "ret": px * (1 - FEE) / (pe * (1 + FEE)) - 1}


def _short(eb: int, xb: int, o: float, raw: float, reason: str) -> dict[str, float | int | str]:
    """The mirror of :func:`_long` for a short sale."""
    pe, px = o * (1 - SLIP), raw * (1 + SLIP)
    return {"eb": eb, "xb": xb, "side": "short", "pe": pe, "raw": raw, "px": px,
            "reason": reason, "ret": ((1 - FEE) * pe - (1 + FEE) * px) / ((1 + FEE) * pe)}


ENTRY, EXIT = "volume > 1.5", "volume > 2.5"


# ----------------------------------------------------------------------- stops
@pytest.mark.parametrize("engine", ENGINES)
def test_stop_loss_intrabar_gap_and_entry_bar_by_hand(engine: str) -> None:
    """Long, stop loss 5 %.

    bar 0: volume 2 → buy at bar 1's open.
    bar 1: open 100 → pe = 100·1.0005 = 100.05, stop = 100.05·0.95 = 95.0475; low 98: held.
    bar 2: open 99 > 95.0475, low 94 ≤ 95.0475 → intrabar: raw exit 95.0475, sold at
           95.0475·0.9995 = 94.99997625; return 94.99997625·0.999/(100.05·1.001) - 1
           = -5.2372 %. Volume 2 at the close (flat again) → buy at bar 3's open.
    bar 3: open 96 → pe = 96.048, stop = 91.2456; low 95: held.
    bar 4: open 90 ≤ 91.2456 → gap: raw exit = the open 90, sold at 89.955; return
           89.955·0.999/(96.048·1.001) - 1 = -6.5308 %. Volume 2 → buy at bar 5.
    bar 5: open 91 → pe = 91.0455, stop = 86.493225; the entry bar's own low 86 reaches
           it (open 91 above) → stopped on the entry bar at 86.493225·0.9995.
    bar 6: flat to the end.
    """
    bars = _panel([(100, 101, 99, 100, 2), (100, 102, 98, 101, 1), (99, 100, 94, 96, 2),
                   (96, 97, 95, 96, 1), (90, 92, 89, 91, 2), (91, 92, 86, 88, 1),
                   (88, 89, 87, 88, 1)])
    spec = StrategySpec(entry=ENTRY, exit=EXIT, risk={"stop_loss": 0.05})
    _check_trades(engine, spec, bars, [
        _long(1, 2, 100, 100.05 * 0.95, "stop_loss"),     # intrabar, at the level
        _long(3, 4, 96, 90, "stop_loss"),                 # gap, at the open
        _long(5, 5, 91, 91.0455 * 0.95, "stop_loss"),     # on the entry bar itself
    ])
    assert _long(1, 2, 100, 100.05 * 0.95, "")["ret"] == pytest.approx(-0.052372152847, abs=1e-12)
    assert _long(3, 4, 96, 90, "")["ret"] == pytest.approx(-0.065308286167, abs=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_trailing_stop_uses_previous_highs_intrabar_and_gap_by_hand(engine: str) -> None:
    """Long, trailing stop 10 % (no fixed stop).

    bar 0: volume 2 → buy at bar 1's open.
    bar 1: open 100 → pe = 100.05; level on the entry bar 100.05·0.9 = 90.045 (low 99:
           held); the best price so far becomes the bar's high 104.
    bar 2: level 104·0.9 = 93.6 (low 103: held); best price 110.
    bar 3: level 110·0.9 = 99 — *not* 115·0.9 = 103.5: this bar's own high 115 is not
           known when the level is set. Open 108 > 99, low 98 ≤ 99 → intrabar exit at
           99, sold at 98.9505: return 98.9505·0.999/(100.05·1.001) - 1 = -1.2966 %.
           Volume 2 → buy at bar 4.
    bar 4: open 100 → pe = 100.05 (level 90.045, low 100: held); best price 120.
    bar 5: level 120·0.9 = 108; open 105 ≤ 108 → gap exit at the open 105, sold at
           104.9475: return 104.9475·0.999/(100.05·1.001) - 1 = +4.6855 %.
    bar 6: flat to the end.
    """
    bars = _panel([(100, 101, 99, 100, 2), (100, 104, 99, 103, 1), (104, 110, 103, 109, 1),
                   (108, 115, 98, 100, 2), (100, 120, 100, 118, 1), (105, 106, 100, 101, 1),
                   (101, 102, 100, 101, 1)])
    spec = StrategySpec(entry=ENTRY, exit=EXIT, risk={"trailing_stop": 0.10})
    _check_trades(engine, spec, bars, [
        _long(1, 3, 100, 110 * (1 - 0.10), "trailing_stop"),  # intrabar, at the level
        _long(4, 5, 100, 105, "trailing_stop"),               # gap, at the open
    ])


@pytest.mark.parametrize("engine", ENGINES)
def test_take_profit_intrabar_gap_and_stop_first_by_hand(engine: str) -> None:
    """Long, stop loss 5 % and take profit 10 %.

    bar 0: volume 2 → buy at bar 1's open.
    bar 1: open 100 → pe = 100.05: stop 95.0475, target 100.05·1.1 = 110.055; held.
    bar 2: open 106 < 110.055, high 111 ≥ 110.055 → take profit at the level, sold at
           110.055·0.9995 = 109.9999725: return +9.7253 %. Volume 2 → buy at bar 3.
    bar 3: open 108 → pe = 108.054: stop 102.6513, target 118.8594; held.
    bar 4: open 120 ≥ 118.8594 → gap: take profit at the open 120, sold at 119.94:
           return 119.94·0.999/(108.054·1.001) - 1 = +10.7783 %. Volume 2 → buy at bar 5.
    bar 5: open 121 → pe = 121.0605: stop 115.007475, target 133.16655; held.
    bar 6: low 115 ≤ 115.007475 *and* high 134 ≥ 133.16655: the stop is assumed first →
           exit at 115.007475, sold at 114.9499712625 (reason stop_loss).
    bar 7: flat to the end.
    """
    bars = _panel([(100, 101, 99, 100, 2), (100, 105, 99, 104, 1), (106, 111, 105, 108, 2),
                   (108, 109, 107, 108, 1), (120, 125, 119, 121, 2), (121, 122, 120, 121, 1),
                   (121, 134, 115, 120, 1), (120, 121, 119, 120, 1)])
    spec = StrategySpec(entry=ENTRY, exit=EXIT, risk={"stop_loss": 0.05, "take_profit": 0.10})
    _check_trades(engine, spec, bars, [
        _long(1, 2, 100, 100.05 * 1.1, "take_profit"),    # intrabar, at the level
        _long(3, 4, 108, 120, "take_profit"),             # gap, at the open
        _long(5, 6, 121, 121.0605 * 0.95, "stop_loss"),   # both inside: stop first
    ])
    assert _long(3, 4, 108, 120, "")["ret"] == pytest.approx(0.107782771951, abs=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_short_stop_loss_intrabar_and_take_profit_gap_by_hand(engine: str) -> None:
    """Short, stop loss 5 % and take profit 10 %.

    bar 0: volume 2 → sell short at bar 1's open.
    bar 1: open 100 → pe = 100·0.9995 = 99.95: stop 99.95·1.05 = 104.9475, target
           99.95·0.9 = 89.955; high 101, low 97: held.
    bar 2: open 101 < 104.9475, high 106 ≥ it → bought back at the level ·1.0005 =
           104.99997375: return (0.999·99.95 - 1.001·104.99997375)/(1.001·99.95)
           = -5.2523 %. Volume 2 → short again at bar 3.
    bar 3: open 104 → pe = 103.948: stop 109.1454, target 93.5532; held.
    bar 4: open 92 ≤ 93.5532 → gap: take profit at the open, bought at 92.046: return
           (0.999·103.948 - 1.001·92.046)/(1.001·103.948) = +11.2502 %.
    bar 5: flat to the end.
    """
    bars = _panel([(100, 101, 99, 100, 2), (100, 101, 97, 98, 1), (101, 106, 100, 105, 2),
                   (104, 105, 103, 104, 1), (92, 93, 90, 91, 1), (91, 92, 90, 91, 1)])
    spec = StrategySpec(entry=ENTRY, exit=EXIT, direction="short",
                        risk={"stop_loss": 0.05, "take_profit": 0.10})
    _check_trades(engine, spec, bars, [
        _short(1, 2, 100, 99.95 * 1.05, "stop_loss"),     # intrabar, at the level
        _short(3, 4, 104, 92, "take_profit"),             # gap, at the open
    ])
    assert _short(3, 4, 104, 92, "")["ret"] == pytest.approx(0.112501555473, abs=1e-12)


# ------------------------------------------------------- vol-target sizing
VOL_WINDOW, SIGNAL_BAR, EXIT_BAR, N_BARS = 10, 25, 32, 40


def _vol_panel() -> Bars:
    """40 weekday bars of a seeded random walk (2 % daily moves, small overnight gaps,
    highs/lows around open and close); volume 2 on bar 25 (entry signal, fill at bar
    26's open) and 3 on bar 32 (exit signal, fill at bar 33's open), 1 elsewhere."""
    rng = np.random.default_rng(20261108)
    close = 100.0 * np.exp(np.cumsum(0.02 * rng.standard_normal(N_BARS)))
    opn = np.concatenate([[100.0], close[:-1] * (1 + 0.003 * rng.standard_normal(N_BARS - 1))])
    high = np.maximum(opn, close) * (1 + 0.006 * np.abs(rng.standard_normal(N_BARS)))
    low = np.minimum(opn, close) * (1 - 0.006 * np.abs(rng.standard_normal(N_BARS)))
    vol = np.ones(N_BARS)
    vol[SIGNAL_BAR], vol[EXIT_BAR] = 2.0, 3.0
    return _panel(list(zip(opn, high, low, close, vol, strict=True)))


def _std_vol_by_hand(close: np.ndarray, t: int, n: int) -> float:
    """Annualized realized vol known at bar t's close: the sample std (ddof = 1) of
    the n close-to-close returns r_k = c_k / c_(k-1) - 1, k = t-n+1 .. t, times
    sqrt(252) (weekday daily bars)."""
    r = [close[k] / close[k - 1] - 1.0 for k in range(t - n + 1, t + 1)]
    mean = sum(r) / n
    return math.sqrt(sum((x - mean) ** 2 for x in r) / (n - 1)) * math.sqrt(252.0)


def _atr_vol_by_hand(high: np.ndarray, low: np.ndarray, close: np.ndarray, t: int,
                     n: int) -> float:
    """Annualized vol from Wilder's ATR, as documented in ``indicators.atr`` and
    ``sizing``: true range TR_k = max(H_k - L_k, |H_k - C_(k-1)|, |L_k - C_(k-1)|) for
    k >= 1; ATR first exists at bar n as the mean of TR_1..TR_n, then
    ATR_k = (ATR_(k-1)·(n-1) + TR_k) / n. Per-bar sigma = ATR_t / C_t · sqrt(pi/8)
    (E[high - low] = sqrt(8/pi)·sigma for a Brownian motion), times sqrt(252)."""
    tr = [max(high[k] - low[k], abs(high[k] - close[k - 1]), abs(low[k] - close[k - 1]))
          for k in range(1, t + 1)]  # tr[k-1] is TR_k
    atr = sum(tr[:n]) / n  # ATR_n
    for k in range(n + 1, t + 1):
        atr = (atr * (n - 1) + tr[k - 1]) / n
    return atr / close[t] * math.sqrt(math.pi / 8.0) * math.sqrt(252.0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("estimator", ["std", "atr"])
@pytest.mark.parametrize(("target_vol", "cap"), [(0.10, 1.0), (2.0, 1.5)],
                         ids=["uncapped", "capped"])
@pytest.mark.parametrize("costs", [CostModel(fees_bps=0, slippage_bps=0), COSTS],
                         ids=["frictionless", "fees_and_slippage"])
def test_vol_target_quantity_by_hand(engine: str, estimator: str, target_vol: float,
                                     cap: float, costs: CostModel) -> None:
    """The entry signal at bar 25's close fills at bar 26's open O (p = O·(1+s)) with
    q = w·E / (p·(1+f)), E = 1 (flat sleeve, first trade) and
    w = min(target_vol / vol_25, max_leverage), vol_25 the annualized vol known at bar
    25 (by hand above). target_vol 0.10 lands well below the cap; target_vol 2.0 is
    capped at max_leverage 1.5 (a position on borrowed cash). The trade exits on a
    signal at bar 33's open, before the last bar (39)."""
    bars = _vol_panel()
    o, h, lo, c = (bars.open[:, 0], bars.high[:, 0], bars.low[:, 0], bars.close[:, 0])
    vol = (_std_vol_by_hand(c, SIGNAL_BAR, VOL_WINDOW) if estimator == "std"
           else _atr_vol_by_hand(h, lo, c, SIGNAL_BAR, VOL_WINDOW))
    w = min(target_vol / vol, cap)
    if cap == 1.0:
        assert 0.05 < w < 0.9  # a real fraction: neither tiny nor the cap
    else:
        assert w == cap and target_vol / vol > 2 * cap
    fee, slip = costs.fees_bps / 1e4, costs.slippage_bps / 1e4
    p = o[SIGNAL_BAR + 1] * (1 + slip)
    q = w * 1.0 / (p * (1 + fee))

    spec = StrategySpec(entry=ENTRY, exit=EXIT, sizing={
        "method": "vol_target", "target_vol": target_vol, "vol_window": VOL_WINDOW,
        "vol_estimator": estimator, "max_leverage": cap})
    trades, fills, _ = _run(engine, spec, bars, costs)
    closed = _closed(trades, bars)
    assert len(trades) == len(closed) == 1
    tr = closed.iloc[0]
    assert tr["entry_time"] == bars.index[SIGNAL_BAR + 1]
    assert tr["exit_time"] == bars.index[EXIT_BAR + 1]
    assert (tr["reason"], tr["side"]) == ("signal", "long")
    assert tr["entry_price"] == pytest.approx(p, rel=RTOL)
    assert tr["qty"] == pytest.approx(q, rel=RTOL)
    if fills is not None:  # engine B's ledger: the entry fill's quantity
        entry = fills.iloc[0]
        assert (entry["side"], entry["reason"]) == ("buy", "entry")
        assert entry["timestamp"] == bars.index[SIGNAL_BAR + 1]
        assert entry["quantity"] == pytest.approx(q, rel=RTOL)
        assert entry["price"] == pytest.approx(p, rel=RTOL)


# ------------------------------------------------- peer: backtesting.py stops
PEER_FAST, PEER_SLOW, PEER_STOP = 10, 50, 0.02
PEER_CASH, PEER_UNIT = 10_000.0, 1e-9


def _peer_stop_loss_run(bars: Bars) -> pd.Series:
    """SMA(10)/SMA(50) levels, long only, 2 % stop loss, in backtesting.py.

    Each setting that makes its semantics alphaloop's, and why:

    - fills: market orders fill at the next bar's open (``trade_on_close=False``, the
      default); ``commission=0.001`` per side on traded value = ``fees_bps=10``;
      ``spread=0`` = ``slippage_bps=0`` (so the entry fill is the open itself);
    - sizing: ``buy()`` spends all cash including the commission,
      ``size = cash // (price·(1+commission))`` = ``q = E/(p·(1+f))``; whole units
      of ``FractionalBacktest(fractional_unit=1e-9)``, a rounding of < 1e-12 of equity;
    - the stop: backtesting.py's ``sl`` is a stop-market order that fills at the level
      when the bar's low reaches it and at the open when the open is already below
      (``price = min(open, stop)``), checked on the entry bar too (its SL order is
      re-processed in the bar the entry filled). alphaloop's level is a fraction of the
      entry *fill* price, which a real order placed at the close does not know yet, so
      the peer strategy reads the next bar's open from the full (scaled) open array it
      keeps from ``init()`` — a look-ahead used only to place the level where alphaloop
      documents it, never to decide anything. With spread 0 that open is the fill;
    - signals: strict ``>``/``<`` of the two averages at the close, levels not
      crossings; NaN-free indicators (zeros in the warm-up) and ``next()`` ignoring the
      bars before the 50th, where alphaloop's signals are undefined (see
      ``test_parity_backtesting``); no entry is placed on the last bar (no next open);
    - an exit signal and a gapped stop on the same open fill at the same price (the
      open), so prices and pnl agree even where the two label the exit differently;
    - end of data: ``finalize_trades=False``; only trades closed before the last bar
      are compared.
    """
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest

    def sma_no_nan(values: np.ndarray, n: int) -> np.ndarray:
        return pd.Series(values).rolling(n).mean().fillna(0.0).to_numpy()

    class SmaStop(Strategy):
        def init(self) -> None:
            self.fast = self.I(sma_no_nan, self.data.Close, PEER_FAST)
            self.slow = self.I(sma_no_nan, self.data.Close, PEER_SLOW)
            self.opens = np.array(self.data.Open)  # all bars, in the peer's price units

        def next(self) -> None:
            i = len(self.data) - 1
            if i < PEER_SLOW - 1:
                return
            if not self.position and self.fast[-1] > self.slow[-1]:
                if i + 1 < len(self.opens):
                    self.buy(sl=self.opens[i + 1] * (1.0 - PEER_STOP))
            elif self.position and self.fast[-1] < self.slow[-1]:
                self.position.close()

    ohlcv = pd.DataFrame({
        "Open": bars.open[:, 0], "High": bars.high[:, 0], "Low": bars.low[:, 0],
        "Close": bars.close[:, 0], "Volume": bars.volume[:, 0],
    }, index=bars.index.tz_localize(None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = FractionalBacktest(ohlcv, SmaStop, cash=PEER_CASH, commission=0.001,
                                 fractional_unit=PEER_UNIT, finalize_trades=False).run()
    assert len(out["_strategy"].opens) == bars.n_bars
    return out


@pytest.fixture(scope="module")
def sp500_peer() -> tuple[Bars, pd.Series]:
    pytest.importorskip("backtesting")
    bars = load_bars("sp500")
    return bars, _peer_stop_loss_run(bars)


@pytest.mark.parametrize("engine", ENGINES)
def test_stop_loss_matches_backtesting_py_on_real_sp500(
        engine: str, sp500_peer: tuple[Bars, pd.Series]) -> None:
    bars, peer = sp500_peer
    spec = StrategySpec(entry=f"sma(close, {PEER_FAST}) > sma(close, {PEER_SLOW})",
                        exit=f"sma(close, {PEER_FAST}) < sma(close, {PEER_SLOW})",
                        risk={"stop_loss": PEER_STOP})
    trades, _, _ = _run(engine, spec, bars, CostModel(fees_bps=10, slippage_bps=0))

    last = bars.n_bars - 1
    pt = peer["_trades"]
    pt = pt[pt["ExitBar"] < last]
    ours = _closed(trades, bars)
    entry_bar = bars.index.get_indexer(ours["entry_time"])
    exit_bar = bars.index.get_indexer(ours["exit_time"])
    assert len(pt) > 100  # 121 round trips, 62 of them stopped out
    np.testing.assert_array_equal(entry_bar, pt["EntryBar"].to_numpy())
    np.testing.assert_array_equal(exit_bar, pt["ExitBar"].to_numpy())
    np.testing.assert_allclose(ours["entry_price"], pt["EntryPrice"], rtol=1e-13, atol=0)
    np.testing.assert_allclose(ours["exit_price"], pt["ExitPrice"], rtol=1e-13, atol=0)
    np.testing.assert_allclose(ours["qty"] * PEER_CASH, pt["Size"], rtol=1e-9, atol=0)
    np.testing.assert_allclose(ours["pnl"], pt["PnL"] / PEER_CASH, rtol=0, atol=1e-9)

    # the stops exercised: many at the level (intrabar, some on the entry bar), at
    # least one gap at the open; the peer filled each at its own SL level or the open
    stops = ours["reason"].to_numpy() == "stop_loss"
    level = ours["entry_price"].to_numpy() * (1 - PEER_STOP)
    px = ours["exit_price"].to_numpy()
    opens = bars.open[exit_bar, 0]
    at_level = stops & np.isclose(px, level, rtol=1e-13, atol=0)
    at_gap = stops & (opens < level) & np.isclose(px, opens, rtol=1e-13, atol=0)
    assert np.array_equal(stops, at_level | at_gap)
    assert at_level.sum() > 50 and at_gap.sum() >= 1
    assert (stops & (entry_bar == exit_bar)).sum() >= 1
    np.testing.assert_allclose(pt["SL"].to_numpy()[stops], level[stops], rtol=1e-13, atol=0)
    np.testing.assert_allclose(px[stops], np.minimum(opens, level)[stops], rtol=1e-13, atol=0)
