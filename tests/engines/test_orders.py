"""Engine B's order ledger: one row per order placed, agreeing with the order counter
and with the fills ledger (every fill belongs to one order), in both kernels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_engine_b import FAST, _random_bars, _trend_bars, panels, specs

from alphaloop.data.bars import Bars
from alphaloop.engines.engine_b import VerificationResult, verify
from alphaloop.engines.execution import ExecutionModel, Volume
from alphaloop.strategy.spec import StrategySpec

STATUSES = {"pending", "filled", "partial_cancelled", "cancelled", "no_trade"}
# thin markets: the volume cap cuts orders short, the TTL cancels what is left
THIN = ExecutionModel(initial_capital=1e6, volume=Volume(max_participation=0.05,
                                                         order_ttl_bars=3))


def _check_ledger(res: VerificationResult) -> pd.DataFrame:
    """What must hold of any result's order ledger; returns it."""
    orders, fills = res.orders, res.fills
    assert len(orders) == res.execution["n_orders"]
    assert int(orders["n_fills"].sum()) == len(fills) == res.execution["n_fills"]
    # the fills of every symbol, summed, are what its orders say they filled
    per_order = orders.groupby("symbol")["filled_quantity"].sum()
    per_fill = fills.groupby("symbol")["quantity"].sum()
    both = pd.concat([per_order.rename("o"), per_fill.rename("f")], axis=1).fillna(0.0)
    np.testing.assert_allclose(both["o"], both["f"], rtol=1e-12, atol=1e-9)
    assert set(orders["status"]) <= STATUSES
    assert orders["timestamp"].is_monotonic_increasing  # in the order placed
    filled = orders[orders["n_fills"] > 0]
    assert (filled["filled_quantity"] > 0).all()
    assert (filled["last_fill"] >= filled["timestamp"]).all()
    assert (orders.loc[orders["n_fills"] == 0, "last_fill"].isna()).all()
    pending = orders["status"] == "pending"
    assert orders.loc[pending, "ended"].isna().all()
    assert orders.loc[~pending, "ended"].notna().all()
    assert (orders.loc[~pending, "ended"] >= orders.loc[~pending, "timestamp"]).all()
    known = orders["quantity"].notna()
    assert (orders.loc[known, "filled_quantity"]
            <= orders.loc[known, "quantity"] * (1 + 1e-9) + 1e-9).all()
    done = orders[orders["status"] == "filled"]
    np.testing.assert_allclose(done["filled_quantity"], done["quantity"], rtol=1e-9)
    assert (orders.loc[orders["status"].isin(["cancelled", "no_trade"]),
                       "filled_quantity"] == 0).all()
    part = orders[orders["status"] == "partial_cancelled"]
    assert (part["filled_quantity"] > 0).all()
    assert (orders.loc[orders["status"] == "no_trade", "quantity"] == 0).all()
    # a fill's side is its order's side
    assert (orders.loc[orders["n_fills"] > 0, "side"].isin(["buy", "sell"])).all()
    return orders


@FAST
@given(spec=specs(), bars=panels)
def test_sleeve_orders_agree_with_the_counter_and_the_fills(spec: StrategySpec,
                                                           bars: Bars) -> None:
    for model in (ExecutionModel(initial_capital=1e5), THIN,
                  ExecutionModel.frictionless(1e4)):
        _check_ledger(verify(spec, bars, model, capacity=False))


XS = [{"score": "roc(close, 3)", "long": 1, "short": 1, "rebalance_every": 2},
      {"score": "close", "long": 0.5, "buffer": 0.25, "rebalance_every": 1,
       "weighting": "inverse_vol", "vol_window": 3},
      {"score": "rsi(close, 4)", "long": 2, "rebalance_every": 3, "weighting": "rank"}]


@FAST
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, len(XS) - 1),
       holes=st.booleans())
def test_cross_sectional_orders_agree_with_the_counter_and_the_fills(
        seed: int, which: int, holes: bool) -> None:
    bars = _random_bars(seed, 4, 60, holes)
    spec = StrategySpec.from_dict({"portfolio": {"method": "cross_sectional", **XS[which]},
                                   "exit": "close < sma(close, 20)"})
    for model in (ExecutionModel(initial_capital=1e5), THIN):
        orders = _check_ledger(verify(spec, bars, model, capacity=False))
        rebal = orders[orders["reason"] == "rebalance"]
        assert rebal["target_weight"].notna().all()


def test_a_stop_is_an_order_of_its_own() -> None:
    """Enter at bar 1's open (100 shares of 100 with 10 000); bar 2 gaps to 80 through
    a 5 % stop (sold at 80: 8 000 left); at bar 2's close the entry signal buys again
    (100 shares of 80 at bar 3's open). Three orders, each filled once."""
    o = c = np.array([100.0, 100.0, 80.0, 80.0])
    idx = pd.date_range("2023-01-02", periods=4, freq="B", tz="UTC")
    bars = Bars(index=idx, symbols=("X",), open=o[:, None], high=o[:, None],
                low=c[:, None], close=c[:, None], volume=np.full((4, 1), 1e9))
    spec = StrategySpec(entry="close > 0", exit="close < 0", risk={"stop_loss": 0.05})
    orders = verify(spec, bars, ExecutionModel.frictionless(1e4), capacity=False).orders
    got = orders[["timestamp", "side", "quantity", "reason", "filled_quantity", "n_fills",
                  "last_fill", "status"]].to_dict("records")
    assert got == [
        {"timestamp": idx[0], "side": "buy", "quantity": 100.0, "reason": "entry",
         "filled_quantity": 100.0, "n_fills": 1, "last_fill": idx[1], "status": "filled"},
        {"timestamp": idx[2], "side": "sell", "quantity": 100.0, "reason": "stop_loss",
         "filled_quantity": 100.0, "n_fills": 1, "last_fill": idx[2], "status": "filled"},
        {"timestamp": idx[2], "side": "buy", "quantity": 100.0, "reason": "entry",
         "filled_quantity": 100.0, "n_fills": 1, "last_fill": idx[3], "status": "filled"}]


def test_an_order_the_volume_cap_cuts_short_is_cancelled_by_its_ttl() -> None:
    """ADV 500 and a 10 % cap: 50 shares a bar. A TTL of 2 bars lets the entry fill
    at the two opens after its decision, then cancels the rest."""
    bars = _trend_bars(volume=500.0)
    spec = StrategySpec(entry="close > sma(close, 10)", exit="close < sma(close, 10)")
    model = ExecutionModel(initial_capital=1e6, volume=Volume(max_participation=0.1,
                                                              order_ttl_bars=2))
    res = verify(spec, bars, model, capacity=False)
    orders = _check_ledger(res)
    first = orders.iloc[0]
    t0 = bars.index.get_loc(first["timestamp"])
    assert (first["side"], first["reason"]) == ("buy", "entry")
    assert first["quantity"] > 1000  # a million buys far more than the cap allows
    assert (first["filled_quantity"], first["n_fills"]) == (100.0, 2)
    assert first["last_fill"] == first["ended"] == bars.index[t0 + 2]
    assert first["status"] == "partial_cancelled"


def test_an_order_still_working_at_the_end_is_pending() -> None:
    bars = _trend_bars(volume=500.0)
    spec = StrategySpec(entry="close > 0", exit="close < 0")  # in at once, never out
    model = ExecutionModel(initial_capital=1e6, volume=Volume(max_participation=0.1))
    orders = _check_ledger(verify(spec, bars, model, capacity=False))
    assert len(orders) == 1  # one entry that 50 shares a bar never completes
    (row,) = orders.to_dict("records")
    assert row["status"] == "pending" and pd.isna(row["ended"])
    assert row["filled_quantity"] == 50.0 * row["n_fills"] > 0
    assert row["last_fill"] == bars.index[-1]


def test_a_symbol_that_leaves_closes_by_an_order_of_its_own() -> None:
    """A symbol that stops printing bars is delisted after five bars and its position
    closed at its last close: an order (reason ``delisted``) filled at once."""
    full = _trend_bars(volume=1e9)
    cut = full.n_bars - 20

    def tail_gone(a: np.ndarray) -> np.ndarray:
        out = a.copy()
        out[cut:] = np.nan
        return out

    bars = Bars(index=full.index, symbols=full.symbols, open=tail_gone(full.open),
                high=tail_gone(full.high), low=tail_gone(full.low),
                close=tail_gone(full.close), volume=tail_gone(full.volume))
    spec = StrategySpec(entry="close > 0", exit="close < 0")
    res = verify(spec, bars, ExecutionModel.frictionless(1e4), capacity=False)
    orders = _check_ledger(res)
    gone = orders[orders["reason"] == "delisted"]
    assert len(gone) == 1
    row = gone.iloc[0]
    assert row["side"] == "sell" and row["status"] == "filled"
    assert row["filled_quantity"] == pytest.approx(float(res.positions.iloc[cut - 1, 0]))
    assert row["timestamp"] > bars.index[cut]
