"""Cross-sectional portfolios (issue 16, item 1): toy panels computed by hand,
the buffer, dollar neutrality, frictionless engine B = engine A, and the spec."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_engine_b import FAST, _random_bars

from alphaloop.data.bars import Bars
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import backtest, run_batch
from alphaloop.engines.engine_b import verify
from alphaloop.engines.execution import ExecutionModel
from alphaloop.errors import SpecError
from alphaloop.strategy.spec import StrategySpec


def _bars(opens: list[list[float]], closes: list[list[float]]) -> Bars:
    o, c = np.array(opens, dtype=float), np.array(closes, dtype=float)
    idx = pd.date_range("2024-01-01", periods=len(o), freq="D", tz="UTC")
    return Bars(index=idx, symbols=tuple(f"S{i}" for i in range(o.shape[1])), open=o,
                high=np.maximum(o, c) * 1.01, low=np.minimum(o, c) * 0.99, close=c,
                volume=np.full(o.shape, 1e9))


def _xs(**portfolio: object) -> StrategySpec:
    return StrategySpec.from_dict({"portfolio": {"method": "cross_sectional", **portfolio}})


# ------------------------------------------------------------- by hand
def test_two_names_long_short_by_hand() -> None:
    """Long the higher close, short the lower, half the equity each, 10 bps per side.

    Bar 0 decides (S1 at 20 beats S0 at 10): long S1, short S0. Bar 1's open (equity
    1.0): short 0.5/10 = 0.05 S0 and buy 0.5/20 = 0.025 S1, each paying 10 bps of its
    notional 0.5. Bar 2's open resizes both to half of the equity at that open.
    Bar 2's close makes S0 (25) the leader, so bar 3's open reverses both names.
    """
    bars = _bars(opens=[[10, 20], [10, 20], [12, 18], [24, 19]],
                 closes=[[10, 20], [11, 19], [25, 18], [24, 19]])
    spec = _xs(score="close", long=1, short=1)
    f = 0.001
    # bar 1: open both legs from cash 1.0
    cash = 1.0 + 0.05 * 10 - 0.5 * f - 0.025 * 20 - 0.5 * f
    eq1 = cash + 0.025 * 19 - 0.05 * 11
    # bar 2: equity at the open and the new share targets
    e_open = cash - 0.05 * 12 + 0.025 * 18
    q0, q1 = -0.5 * e_open / 12, 0.5 * e_open / 18
    cash -= (q0 + 0.05) * 12 + abs(q0 + 0.05) * 12 * f  # buy back part of the short
    cash -= (q1 - 0.025) * 18 + abs(q1 - 0.025) * 18 * f  # sell part of the long
    eq2 = cash + q0 * 25 + q1 * 18
    # bar 3: reverse: close both (reductions first), then open the new legs
    e_open = cash + q0 * 24 + q1 * 19
    cash += q0 * 24 - abs(q0) * 24 * f  # buy back the whole S0 short
    cash += q1 * 19 - abs(q1) * 19 * f  # sell the whole S1 long
    n0, n1 = 0.5 * e_open / 24, -0.5 * e_open / 19
    cash -= n0 * 24 + abs(n0) * 24 * f
    cash -= n1 * 19 + abs(n1) * 19 * f
    eq3 = cash + n0 * 24 + n1 * 19
    expected = np.array([1.0, eq1, eq2, eq3])
    res = backtest(spec, bars, CostModel(fees_bps=10, slippage_bps=0))
    np.testing.assert_allclose(res.equity.to_numpy(), expected, rtol=0, atol=1e-14)
    t = res.trades
    assert t["side"].tolist() == ["short", "long", "long", "short"]
    assert t["symbol"].tolist() == ["S0", "S1", "S0", "S1"]
    assert t["reason"].tolist() == ["rebalance", "rebalance", "open", "open"]
    # the first S0 short: every cash flow it caused (entry, resize, exit, with fees)
    pnl0 = (0.05 * 10 * (1 - f)            # sold short at bar 1
            - (0.05 + q0) * 12 * (1 + f)    # part bought back at bar 2
            + q0 * 24 * (1 + f))            # the rest bought back at bar 3 (q0 < 0)
    assert t["pnl"].iloc[0] == pytest.approx(pnl0, abs=1e-14)


def test_five_names_rank_weights_fills_and_costs_by_hand() -> None:
    """Long the top 2 of 5 by close, rank weights (2/3 and 1/3) of an 80 % gross
    book, 20 bps commission and 5 bps slippage per side."""
    closes = [[10.0, 50.0, 30.0, 40.0, 20.0]] * 2
    opens = [[10.0, 50.0, 30.0, 40.0, 20.0], [11.0, 52.0, 29.0, 41.0, 19.0]]
    bars = _bars(opens=opens, closes=closes)
    spec = _xs(score="close", long=2, weighting="rank", gross=0.8)
    model = ExecutionModel.from_cost_model(CostModel(fees_bps=20, slippage_bps=5))
    res = verify(spec, bars, model, capacity=False)
    fills = res.fills
    # ranked 50 (S1) > 40 (S3) > ...: S1 gets 2/3 of 0.8, S3 1/3, bought at bar 1's open
    assert fills["symbol"].tolist() == ["S1", "S3"]
    w1, w3 = 0.8 * 2 / 3, 0.8 * 1 / 3
    q1, q3 = w1 * 1.0 / 52.0, w3 * 1.0 / 41.0
    assert fills["quantity"].to_numpy() == pytest.approx([q1, q3], rel=1e-12)
    p1, p3 = 52.0 * 1.0005, 41.0 * 1.0005  # slippage as half-spread against the buyer
    assert fills["price"].to_numpy() == pytest.approx([p1, p3], rel=1e-12)
    assert fills["fee"].to_numpy() == pytest.approx([q1 * p1 * 0.002, q3 * p3 * 0.002],
                                                   rel=1e-12)
    cash = 1.0 - q1 * p1 * 1.002 - q3 * p3 * 1.002
    assert res.equity.iloc[1] == pytest.approx(cash + q1 * 50.0 + q3 * 40.0, rel=1e-12)


def test_a_name_between_entry_and_exit_ranks_is_kept() -> None:
    """long 1 with buffer 1: a held name that slips to rank 2 stays; at rank 3 it goes."""
    closes = [[30.0, 20.0, 10.0],   # S0 first: bought at bar 1
              [20.0, 30.0, 10.0],   # S0 second: inside the buffer, kept
              [10.0, 30.0, 20.0],   # S0 third: beyond the buffer, replaced by S1
              [10.0, 30.0, 20.0]]
    bars = _bars(opens=closes, closes=closes)
    buffered = backtest(_xs(score="close", long=1, buffer=1), bars,
                        CostModel(fees_bps=0, slippage_bps=0))
    t = buffered.trades
    assert t["symbol"].tolist() == ["S0", "S1"]
    assert t["entry_time"].tolist() == [bars.index[1], bars.index[3]]
    assert t["exit_time"].iloc[0] == bars.index[3]
    plain = backtest(_xs(score="close", long=1), bars, CostModel(fees_bps=0, slippage_bps=0))
    # without a buffer S0 is sold at bar 2's open, S1 bought, then kept
    assert plain.trades["symbol"].tolist() == ["S0", "S1"]
    assert plain.trades["entry_time"].iloc[1] == bars.index[2]


def test_dollar_neutral_book_stays_near_zero_net_every_bar() -> None:
    """Net exposure is zero at each open after the rebalance (frictionless, daily) and
    drifts by at most gross × the largest open-to-close move of the day by the close."""
    bars = _random_bars(7, 12, 300, holes=False)
    spec = _xs(score="roc(close, 10)", long=0.25, short=0.25)
    res = verify(spec, bars, ExecutionModel.frictionless(), capacity=False)
    net = res.extra["net_exposure"]
    move = np.nanmax(np.abs(bars.close / bars.open - 1.0), axis=1)
    eq = res.equity.to_numpy()
    open_eq = np.r_[1.0, eq[:-1]]  # the equity the book was set from, near enough
    live = np.arange(len(net)) > 11  # first book set at bar 10's close, traded at 11
    bound = 1.0 * move * (open_eq / eq) * 1.05 + 1e-12  # + a 5 % margin for drift of E
    assert (np.abs(net[live]) <= bound[live]).all()
    assert np.nanmean(np.abs(net[live])) < 0.01


# ----------------------------------------------------- frictionless B = A
XS_PORTFOLIOS = [
    {"score": "roc(close, 3)", "long": 0.5, "short": 0.5},
    {"score": "roc(close, 3)", "long": 1, "buffer": 1, "rebalance_every": 3},
    {"score": "close / sma(close, 4)", "long": 2, "short": 1, "weighting": "rank",
     "gross": 1.5, "net": 0.3},
    {"score": "-std(close, 5)", "short": 0.5, "weighting": "score", "gross": 0.7},
    {"score": "roc(close, 2)", "long": 0.5, "weighting": "inverse_vol", "vol_window": 4,
     "max_weight": 0.3},
]


@FAST
@given(pf=st.sampled_from(XS_PORTFOLIOS), seed=st.integers(0, 2**32 - 1),
       n_sym=st.integers(1, 6), n_bars=st.integers(2, 80), holes=st.booleans())
def test_frictionless_engine_b_reproduces_engine_a(pf: dict[str, object], seed: int,
                                                   n_sym: int, n_bars: int,
                                                   holes: bool) -> None:
    bars = _random_bars(seed, n_sym, n_bars, holes)
    spec = _xs(**pf)
    a = run_batch([spec], bars, CostModel(fees_bps=0, slippage_bps=0))
    b = verify(spec, bars, ExecutionModel.frictionless(), capacity=False)
    np.testing.assert_allclose(b.returns.to_numpy(), a.returns[0], rtol=0, atol=1e-9)
    assert b.metrics["n_trades"] == a.metrics["n_trades"].iloc[0]


def test_a_batch_keeps_the_order_of_mixed_specs() -> None:
    """Sleeve specs and ranked books in one batch: each row is its spec's own result."""
    bars = _random_bars(3, 5, 120, holes=True)
    sleeve = StrategySpec(entry="close > sma(close, 5)", exit="close < sma(close, 5)")
    books = [_xs(**pf) for pf in XS_PORTFOLIOS[:3]]
    costs = CostModel(fees_bps=10, slippage_bps=2)
    mixed = run_batch([books[0], sleeve, books[1], books[2]], bars, costs, chunk_size=2)
    alone = [run_batch([s], bars, costs) for s in (books[0], sleeve, books[1], books[2])]
    for k, one in enumerate(alone):
        np.testing.assert_array_equal(mixed.returns[k], one.returns[0])
        assert mixed.metrics.index[k] == one.metrics.index[0]


def test_engine_b_frictions_cost_a_ranked_book_something() -> None:
    bars = _random_bars(11, 8, 200, holes=False)
    spec = _xs(score="roc(close, 5)", long=0.25, short=0.25)
    free = verify(spec, bars, ExecutionModel.frictionless(), capacity=False)
    real = verify(spec, bars, ExecutionModel(), capacity=False)
    assert real.execution["costs"]["total"] > 0
    assert real.equity.iloc[-1] / real.model.initial_capital < free.equity.iloc[-1]


# ----------------------------------------------------------------- spec
@pytest.mark.parametrize(("portfolio", "message"), [
    ({"method": "cross_sectional", "long": 0.1}, "score is required"),
    ({"method": "cross_sectional", "score": "close > 1", "long": 0.1}, "numeric"),
    ({"method": "cross_sectional", "score": "close", "long": 0.6, "short": 0.5},
     "more than all"),
    ({"method": "cross_sectional", "score": "close", "long": 0}, ">= 1"),
    ({"method": "cross_sectional", "score": "close", "long": 1.5}, r"\(0, 1\]"),
    ({"method": "cross_sectional", "score": "close", "long": 3, "net": 0}, "net must"),
    ({"method": "cross_sectional", "score": "close"}, "long, short or both"),
    ({"long": 0.1}, "only method cross_sectional"),
    ({"method": "cross_sectional", "score": "close", "long": 2, "buffer": -0.5},
     r"\[0, 1\]"),
])
def test_bad_portfolios_name_the_field(portfolio: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        StrategySpec.from_dict({"entry": "close > 1", "exit": "close < 1",
                                "portfolio": portfolio})


def test_an_empty_buffer_is_allowed_as_a_count_or_a_fraction() -> None:
    pf = {"method": "cross_sectional", "score": "close", "long": 2}
    zero = [StrategySpec.from_dict({"portfolio": {**pf, "buffer": b}}) for b in (0, 0.0)]
    assert all(z.portfolio.buffer == 0 for z in zero)


def test_a_ranked_book_refuses_sleeve_settings() -> None:
    pf = {"method": "cross_sectional", "score": "close", "long": 2}
    for extra in ({"direction": "short"}, {"risk": {"stop_loss": 0.05}},
                  {"sizing": {"method": "fixed_fraction", "fraction": 0.5}}):
        with pytest.raises(SpecError):
            StrategySpec.from_dict({"portfolio": pf, **extra})


def test_ids_of_sleeve_specs_do_not_change_and_books_hash_their_settings() -> None:
    sleeve = StrategySpec(entry="close > 1", exit="close < 1")
    assert "portfolio" not in sleeve.canonical()
    a = _xs(score="roc(close, 20)", long=0.1, short=0.1)
    same = _xs(score="roc( close,20 )", long=0.1, short=0.1, net=0.0)  # net's default
    count = _xs(score="roc(close, 20)", long=1, short=0.1)
    assert a.strategy_id == same.strategy_id
    assert a.strategy_id != count.strategy_id  # one name is not 10 % of the names
    assert a.entry == "close > 0" and a.exit == "close < 0"
