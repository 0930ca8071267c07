"""The causality suite: nothing after bar t changes any result up to bar t.

DESIGN §4: "a decision at t uses data <= t and executes at t+1; the future never
changes the past — not through bars, not through which symbols exist later, not
through a data error found later, not through a fill that knows the rest of its bar."

Every test here runs an engine twice: once on a hostile panel, once on the same panel
with everything after bar t cut away (``Bars.slice(0, t + 1, drop_empty=True)``, so
the symbol set is cut too) or rewritten (new prices, a symbol that lists later, a
delisting that never happens, a data error), and requires the results on bars 0..t to
be identical. The panel has all the hard cases (see :func:`hostile_panel`): a symbol
that lists late, one that is delisted, one with holes and a data failure, and volume
that starts late; the cut points sit on and around each of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphaloop.data.bars import FIELDS, Bars
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import backtest, run_batch
from alphaloop.engines.engine_b import verify
from alphaloop.engines.execution import ExecutionModel
from alphaloop.strategy.spec import StrategySpec

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
N_BARS = 180
LIST_BAR = 40  # BBB's first bar
NO_VOLUME_UNTIL = 45  # BBB prints no volume before this bar (engine B cannot size it)
LAST_BAR = 109  # CCC's last bar: delisted after 5 bars and 5 days without one (bar 114)
DELIST_BAR = 114
GAPS = (60, 61, 62, 90)  # DDD has no bar
FAIL_BAR = 150  # DDD's high < low: engine B's data gate excludes it from here on
CUTS = (3, 39, 40, 41, 44, 45, 46, 59, 60, 62, 63, 90, 91, 109, 110, 113, 114, 115, 149,
        150, 151, N_BARS - 2)

COSTS = CostModel(fees_bps=10, slippage_bps=5)
# realistic defaults, plus the range spread (reads a high-low range) and a volume cap
REALISTIC = ExecutionModel(spread={"model": "range", "range_fraction": 0.5},
                           volume={"max_participation": 0.05})

SPECS = [
    StrategySpec(entry="sma(close, 5) > sma(close, 20)", exit="sma(close, 5) < sma(close, 20)",
                 risk={"stop_loss": 0.03, "trailing_stop": 0.05}),
    StrategySpec(entry="close < lowest(low, 10)", exit="close > sma(close, 10)",
                 direction="short", risk={"take_profit": 0.04, "max_bars": 12}),
    StrategySpec(entry="rank(roc(close, 5)) > 0.6", exit="rank(roc(close, 5)) < 0.4",
                 direction="both",
                 sizing={"method": "vol_target", "target_vol": 0.15, "vol_window": 10,
                         "max_leverage": 2.0}),
    StrategySpec(entry="close > 0", exit="close < 0"),  # always invested: every re-split shows
    # ranked books: a name listing later must not move earlier ranks, weights or fills
    StrategySpec.from_dict({"portfolio": {
        "method": "cross_sectional", "score": "roc(close, 5)", "long": 0.5, "short": 0.5,
        "buffer": 1, "weighting": "rank"}}),
    StrategySpec.from_dict({"portfolio": {
        "method": "cross_sectional", "score": "-std(close, 10)", "long": 2,
        "weighting": "inverse_vol", "vol_window": 5, "rebalance_every": 3},
        "exit": "close < sma(close, 10)"}),
]


def hostile_panel(seed: int = 3, n_bars: int = N_BARS) -> Bars:
    """Four business-day symbols with the hard cases at known bars (module constants)."""
    rng = np.random.default_rng(seed)
    n = len(SYMBOLS)
    drift = np.sin(np.arange(n_bars) / 9.0)[:, None] * 0.004
    close = 50.0 * np.exp(np.cumsum(drift + rng.normal(0.0, 0.012, (n_bars, n)), axis=0))
    opn = close * np.exp(rng.normal(0.0, 0.006, close.shape))
    high = np.maximum(opn, close) * (1.0 + rng.random(close.shape) * 0.01)
    low = np.minimum(opn, close) * (1.0 - rng.random(close.shape) * 0.01)
    vol = rng.uniform(5e4, 2e5, close.shape)
    arrays = {"open": opn, "high": high, "low": low, "close": close, "volume": vol}
    for a in arrays.values():
        a[:LIST_BAR, 1] = np.nan
        a[LAST_BAR + 1:, 2] = np.nan
        a[list(GAPS), 3] = np.nan
    vol[LIST_BAR:NO_VOLUME_UNTIL, 1] = 0.0
    high[FAIL_BAR, 3] = low[FAIL_BAR, 3] * 0.9
    idx = pd.date_range("2022-01-03", periods=n_bars, freq="B", tz="UTC")
    return Bars(index=idx, symbols=SYMBOLS, name="hostile", **arrays)


def cut(bars: Bars, t: int) -> Bars:
    return bars.slice(0, t + 1, drop_empty=True)


def rewrite_future(bars: Bars, t: int, seed: int) -> Bars:
    """Everything after bar t replaced: new random prices and volumes for every symbol
    (CCC keeps trading, so it is never delisted), a new symbol listing after t, and a
    bar with high < low for AAA."""
    rng = np.random.default_rng(seed)
    n_bars = bars.n_bars
    cols = {f: np.column_stack([np.array(bars.field(f)), np.full(n_bars, np.nan)])
            for f in FIELDS}
    future = slice(t + 1, None)
    k = n_bars - t - 1
    base = np.nanmax(np.array(bars.close[: t + 1]), axis=0, initial=10.0)
    base = np.append(base, 20.0)
    close = base * np.exp(np.cumsum(rng.normal(0.0, 0.05, (k, len(base))), axis=0))
    cols["close"][future] = close
    cols["open"][future] = close * np.exp(rng.normal(0.0, 0.02, close.shape))
    cols["high"][future] = np.maximum(cols["open"][future], close) * 1.03
    cols["low"][future] = np.minimum(cols["open"][future], close) * 0.97
    cols["volume"][future] = rng.uniform(1.0, 1e6, close.shape)
    if k > 1:
        cols["high"][t + 2, 0] = cols["low"][t + 2, 0] * 0.5
    return Bars(index=bars.index, symbols=(*bars.symbols, "NEW"),
                **{f: np.ascontiguousarray(a) for f, a in cols.items()}, name="rewritten")


def closed_by(frame: pd.DataFrame, when: pd.Timestamp, column: str) -> pd.DataFrame:
    """Rows whose ``column`` time is at or before ``when``, in a canonical order."""
    rows = frame[frame[column].notna() & (frame[column] <= when)]
    rows = rows.sort_values([column, "symbol"], kind="stable").reset_index(drop=True)
    text = {c: object for c in ("symbol", "side", "reason")}
    return rows.astype(text)  # an empty selection infers another string dtype


@pytest.fixture(scope="module")
def panel() -> Bars:
    return hostile_panel()


def test_the_panel_has_every_hard_case(panel: Bars) -> None:
    """The panel is what the tests claim (a failure here voids the others)."""
    valid = ~np.isnan(panel.close)
    assert not valid[:LIST_BAR, 1].any() and valid[LIST_BAR:, 1].all()
    assert valid[: LAST_BAR + 1, 2].all() and not valid[LAST_BAR + 1:, 2].any()
    assert not valid[list(GAPS), 3].any()
    assert panel.high[FAIL_BAR, 3] < panel.low[FAIL_BAR, 3]
    assert cut(panel, LIST_BAR - 1).symbols == ("AAA", "CCC", "DDD")
    full = run_batch(SPECS, panel, COSTS)
    assert (full.metrics["n_trades"] > 3).all()
    res = verify(SPECS[3], panel, REALISTIC, capacity=False)
    assert {"delisted", "data_failure", "universe", "entry"} <= set(res.fills["reason"])


# ------------------------------------------------------------------ engine A
@pytest.mark.parametrize("t", CUTS)
def test_engine_a_cut_at_t_is_the_past_of_the_full_run(panel: Bars, t: int) -> None:
    full = run_batch(SPECS, panel, COSTS)
    part = run_batch(SPECS, cut(panel, t), COSTS)
    np.testing.assert_array_equal(part.equity, full.equity[:, : t + 1])
    np.testing.assert_array_equal(part.returns, full.returns[:, : t + 1])


@pytest.mark.parametrize("t", CUTS[::3])
def test_engine_a_trades_closed_by_t_do_not_change(panel: Bars, t: int) -> None:
    when = panel.index[t]
    for spec in SPECS:
        full = closed_by(backtest(spec, panel, COSTS).trades, when, "exit_time")
        part = closed_by(backtest(spec, cut(panel, t), COSTS).trades, when, "exit_time")
        pd.testing.assert_frame_equal(part, full)


@pytest.mark.parametrize("t", (20, LIST_BAR + 3, 100, DELIST_BAR, FAIL_BAR - 5))
def test_engine_a_unchanged_when_the_future_is_rewritten(panel: Bars, t: int) -> None:
    full = run_batch(SPECS, panel, COSTS)
    for seed in range(3):
        other = run_batch(SPECS, rewrite_future(panel, t, seed), COSTS)
        np.testing.assert_array_equal(other.equity[:, : t + 1], full.equity[:, : t + 1])


# ------------------------------------------------------------------ engine B
@pytest.fixture(scope="module")
def verified(panel: Bars) -> list:
    return [verify(s, panel, REALISTIC, capacity=False) for s in SPECS]


@pytest.mark.parametrize("t", CUTS)
def test_engine_b_cut_at_t_is_the_past_of_the_full_run(panel: Bars, verified: list,
                                                      t: int) -> None:
    when = panel.index[t]
    for spec, full in zip(SPECS, verified, strict=True):
        part = verify(spec, cut(panel, t), REALISTIC, capacity=False)
        np.testing.assert_array_equal(part.equity.to_numpy(), full.equity.to_numpy()[: t + 1])
        pd.testing.assert_frame_equal(closed_by(part.fills, when, "timestamp"),
                                      closed_by(full.fills, when, "timestamp"))
        pd.testing.assert_frame_equal(closed_by(part.trades, when, "exit_time"),
                                      closed_by(full.trades, when, "exit_time"))
        shared = list(part.positions.columns)
        pd.testing.assert_frame_equal(part.positions, full.positions[shared].iloc[: t + 1])


@pytest.mark.parametrize("t", (20, LIST_BAR + 3, 100, DELIST_BAR, FAIL_BAR - 5))
def test_engine_b_unchanged_when_the_future_is_rewritten(panel: Bars, verified: list,
                                                        t: int) -> None:
    for spec, full in zip(SPECS, verified, strict=True):
        for seed in range(2):
            other = verify(spec, rewrite_future(panel, t, seed), REALISTIC, capacity=False)
            np.testing.assert_array_equal(other.equity.to_numpy()[: t + 1],
                                          full.equity.to_numpy()[: t + 1])


def test_a_data_failure_acts_only_from_its_bar(panel: Bars, verified: list) -> None:
    """The same panel without the bad bar: identical up to the bar before it; from the
    failing bar on, DDD is out (closed at its last good close, reason data_failure)."""
    high = np.array(panel.high)
    high[FAIL_BAR, 3] = max(panel.open[FAIL_BAR, 3], panel.close[FAIL_BAR, 3]) * 1.001
    clean = Bars(index=panel.index, symbols=panel.symbols, open=np.array(panel.open),
                 high=high, low=np.array(panel.low), close=np.array(panel.close),
                 volume=np.array(panel.volume))
    for spec, bad in zip(SPECS, verified, strict=True):
        good = verify(spec, clean, REALISTIC, capacity=False)
        assert good.status == "SUCCESS" and bad.status == "PARTIAL"
        np.testing.assert_array_equal(bad.equity.to_numpy()[:FAIL_BAR],
                                      good.equity.to_numpy()[:FAIL_BAR])
        assert (bad.positions["DDD"].to_numpy()[FAIL_BAR:] == 0).all()
    excluded = verified[3].excluded
    assert [(e["symbol"], e["from"]) for e in excluded] == [
        ("DDD", panel.index[FAIL_BAR].isoformat())]
    out = verified[3].fills[verified[3].fills["reason"] == "data_failure"]
    assert list(out["symbol"]) == ["DDD"] and out["timestamp"].iloc[0] == panel.index[FAIL_BAR]
    assert out["ref_price"].iloc[0] == panel.close[FAIL_BAR - 1, 3]


# --------------------------------------------------- fills at the open of bar t
OPEN_FILLS = ("entry", "signal", "max_bars", "universe", "rebalance")


def with_bar_changed(bars: Bars, t: int, seed: int) -> Bars:
    """Bar t's high, low, close and volume changed (its open kept), for every symbol."""
    rng = np.random.default_rng(seed)
    a = {f: np.array(bars.field(f)) for f in FIELDS}
    o = a["open"][t]
    a["high"][t] = np.maximum(a["high"][t], o) * rng.uniform(1.0, 1.3, o.shape)
    a["low"][t] = np.minimum(a["low"][t], o) * rng.uniform(0.7, 1.0, o.shape)
    a["close"][t] = a["low"][t] + (a["high"][t] - a["low"][t]) * rng.random(o.shape)
    a["volume"][t] = a["volume"][t] * rng.choice([0.01, 100.0], o.shape)
    return Bars(index=bars.index, symbols=bars.symbols, **a, name="bar-changed")


def test_engine_b_open_fills_do_not_know_the_rest_of_their_bar(panel: Bars,
                                                              verified: list) -> None:
    checked = 0
    for spec, full in zip(SPECS, verified, strict=True):
        at_open = full.fills[full.fills["reason"].isin(OPEN_FILLS)]
        for when in at_open["timestamp"].drop_duplicates().iloc[::7]:
            t = int(panel.index.get_loc(when))
            other = verify(spec, with_bar_changed(panel, t, seed=t), REALISTIC,
                           capacity=False)
            cols = ["symbol", "side", "quantity", "price", "ref_price", "fee",
                    "spread_cost", "impact_cost", "adv_util", "reason"]
            mine = other.fills[(other.fills["timestamp"] == when)
                               & other.fills["reason"].isin(OPEN_FILLS)][cols]
            theirs = at_open[at_open["timestamp"] == when][cols]
            pd.testing.assert_frame_equal(mine.reset_index(drop=True),
                                          theirs.reset_index(drop=True))
            checked += len(theirs)
    assert checked >= 20


def test_engine_a_entries_do_not_know_the_rest_of_their_bar(panel: Bars) -> None:
    """On AAA and DDD (no listing or delisting: a trade's size stays its entry size)."""
    checked = 0
    panel = panel.select(["AAA", "DDD"])
    for spec in SPECS:
        trades = backtest(spec, panel, COSTS).trades
        for when in trades["entry_time"].drop_duplicates().iloc[::5]:
            t = int(panel.index.get_loc(when))
            other = backtest(spec, with_bar_changed(panel, t, seed=t), COSTS).trades
            cols = ["symbol", "side", "entry_time", "qty", "entry_price"]
            mine = other[other["entry_time"] == when][cols].reset_index(drop=True)
            theirs = trades[trades["entry_time"] == when][cols].reset_index(drop=True)
            pd.testing.assert_frame_equal(mine, theirs)
            checked += len(theirs)
    assert checked >= 20


# -------------------------------------------------------- listing, delisting
def test_a_late_listing_changes_nothing_before_it_is_funded(panel: Bars) -> None:
    """Without BBB at all, every bar up to its listing bar is the same (its capital
    arrives at the next open, when the portfolio is re-split with costs)."""
    alone = panel.select(["AAA", "CCC", "DDD"])
    full, without = run_batch(SPECS, panel, COSTS), run_batch(SPECS, alone, COSTS)
    np.testing.assert_array_equal(full.equity[:, : LIST_BAR + 1],
                                  without.equity[:, : LIST_BAR + 1])
    assert (full.equity[3, LIST_BAR + 1:] != without.equity[3, LIST_BAR + 1:]).any()


def test_a_delisted_position_closes_at_its_last_close_with_costs(panel: Bars) -> None:
    """An always-long CCC: engine A sells at bar DELIST_BAR at its last close less
    slippage (close·(1 - 5 bps)), paying the fee; engine B fills at the last close
    as reference price, paying commission and half the spread; neither holds it after."""
    trades = backtest(SPECS[3], panel, COSTS).trades
    last = trades[trades["symbol"] == "CCC"].iloc[-1]
    assert last["reason"] == "delisted" and last["exit_time"] == panel.index[DELIST_BAR]
    assert last["exit_price"] == pytest.approx(panel.close[LAST_BAR, 2] * (1 - 5e-4), rel=1e-15)
    res = verify(SPECS[3], panel, REALISTIC, capacity=False)
    out = res.fills[(res.fills["symbol"] == "CCC") & (res.fills["reason"] == "delisted")]
    assert len(out) == 1 and out["timestamp"].iloc[0] == panel.index[DELIST_BAR]
    assert out["ref_price"].iloc[0] == panel.close[LAST_BAR, 2]
    assert out["side"].iloc[0] == "sell" and out["fee"].iloc[0] > 0
    assert (res.positions["CCC"].to_numpy()[DELIST_BAR:] == 0).all()
    assert res.trades[res.trades["symbol"] == "CCC"]["reason"].iloc[-1] == "delisted"


def test_no_volume_yet_is_a_late_listing_in_engine_b(panel: Bars, verified: list) -> None:
    """BBB prints bars from LIST_BAR but volume only from NO_VOLUME_UNTIL: engine B
    (which caps participation) funds it at the open after its first volume."""
    fills = verified[3].fills
    first = fills[fills["symbol"] == "BBB"]["timestamp"].min()
    assert first == panel.index[NO_VOLUME_UNTIL + 1]
    assert not [e for e in verified[3].excluded if e["symbol"] == "BBB"]


# ------------------------------------------------------------ random panels
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.integers(2, N_BARS - 2))
def test_random_cut_points_on_random_panels(seed: int, t: int) -> None:
    panel = hostile_panel(seed)
    spec = SPECS[seed % len(SPECS)]
    full_a, part_a = run_batch([spec], panel, COSTS), run_batch([spec], cut(panel, t), COSTS)
    np.testing.assert_array_equal(part_a.equity, full_a.equity[:, : t + 1])
    full_b = verify(spec, panel, REALISTIC, capacity=False)
    part_b = verify(spec, cut(panel, t), REALISTIC, capacity=False)
    np.testing.assert_array_equal(part_b.equity.to_numpy(), full_b.equity.to_numpy()[: t + 1])
