"""Validation checks (MOD-432): splits, out-of-sample, walk-forward, neighbourhood
stability, cost stress and sub-period consistency.

The leakage tests are the point: folds never let a train window reach into its test
window, and walk-forward selection is blind to test-window data (a candidate that is
poor in training but great in testing is never picked, and rewriting every bar after
a fold's train window leaves that fold's choice unchanged).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, cast

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from alphaloop.data import load_bars
from alphaloop.data.bars import FIELDS, Bars
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import backtest, run_batch
from alphaloop.engines.metrics import return_metrics
from alphaloop.evaluation.validation import (
    CostStressResult,
    OOSResult,
    StabilityResult,
    SubperiodResult,
    WalkForwardResult,
    cost_stress,
    neighbourhood_stability,
    neighbours,
    out_of_sample,
    splits,
    subperiod_consistency,
    walk_forward,
)
from alphaloop.strategy.spec import StrategySpec
from alphaloop.strategy.templates import ChoiceParam, Family, FloatParam, IntParam, get_family

ZERO = CostModel(fees_bps=0, slippage_bps=0)
SMA = get_family("sma_cross")


@pytest.fixture(scope="module")
def sp500() -> Bars:
    return load_bars("sp500")


M = TypeVar("M", bound=BaseModel)


def roundtrip(model: M) -> M:
    """JSON out and back gives an equal model."""
    again = type(model).model_validate_json(model.model_dump_json())
    assert again == model
    return again


def val_str(x: str | None) -> str:
    assert x is not None
    return x


def val(x: float | int | None) -> float:
    """A result number that must be defined."""
    assert x is not None
    return float(x)


def col(metrics: dict[str, Any], name: str) -> np.ndarray:
    """One metric of a (K, T) return_metrics call, as an array."""
    return np.asarray(metrics[name], dtype=float)


# ------------------------------------------------------------------ toy data
def closes_bars(closes: np.ndarray) -> Bars:
    """One symbol; open = previous close (no gaps), high/low = max/min(open, close)."""
    c = np.asarray(closes, dtype=float)
    o = np.concatenate([[c[0]], c[:-1]])
    idx = pd.date_range("2020-01-01", periods=c.size, freq="D", tz="UTC")
    return Bars(index=idx, symbols=("X",), open=o[:, None].copy(),
                high=np.fmax(o, c)[:, None].copy(), low=np.fmin(o, c)[:, None].copy(),
                close=c[:, None].copy(), volume=np.ones((c.size, 1)))


def trend_closes(signs: list[tuple[int, int]]) -> np.ndarray:
    """Noisy trends: ``(sign, n_bars)`` blocks of alternating +1.5 % / -0.5 % moves
    (sign +1, mean +0.5 %/bar) or their mirror image (sign -1)."""
    steps: list[float] = []
    for sign, n in signs:
        steps += [sign * (0.015 if i % 2 == 0 else -0.005) for i in range(n)]
    return 100 * np.cumprod(1 + np.array(steps))


def _side_builder(p: Mapping[str, Any]) -> StrategySpec:
    side = cast(Literal["long", "short"], str(p["side"]).split("_")[0])  # "short_a" -> short
    return StrategySpec(entry="close > 0", exit="close < 0", direction=side)


# always in the market, long or short: which one wins depends only on the trend
SIDE = Family("side", "always long or always short", {"side": ChoiceParam(("short", "long"))},
              (), _side_builder)
SIDE3 = Family("side3", "a long between two shorts",
               {"side": ChoiceParam(("short_a", "long", "short_b"))}, (), _side_builder)


# ===================================================================== splits
@settings(max_examples=300, deadline=None)
@given(n_bars=st.integers(2, 400), n_folds=st.integers(1, 12), train_bars=st.integers(1, 400),
       test_bars=st.none() | st.integers(1, 120),
       scheme=st.sampled_from(["anchored", "rolling"]))
def test_folds_never_leak(n_bars: int, n_folds: int, train_bars: int, test_bars: int | None,
                          scheme: Any) -> None:
    rest = n_bars - train_bars
    feasible = (rest >= n_folds if test_bars is None
                else train_bars + n_folds * test_bars <= n_bars)
    if not feasible:
        with pytest.raises(ValueError, match="n_bars"):
            splits(n_bars, scheme=scheme, n_folds=n_folds, train_bars=train_bars,
                   test_bars=test_bars)
        return
    folds = splits(n_bars, scheme=scheme, n_folds=n_folds, train_bars=train_bars,
                   test_bars=test_bars)
    assert len(folds) == n_folds
    for f in folds:
        train = range(n_bars)[f.train]
        test = range(n_bars)[f.test]
        assert len(train) >= 1 and len(test) >= 1
        assert max(train) < min(test)                 # no leakage
        assert f.train.stop == f.test.start           # train ends where test begins
        assert f.train.start >= 0 and f.test.stop <= n_bars
        if scheme == "anchored":
            assert f.train.start == 0
        else:
            assert len(train) == train_bars
    # test windows: consecutive, no gaps, no overlaps, starting after the first train
    assert folds[0].test.start == train_bars
    for a, b in itertools.pairwise(folds):
        assert a.test.stop == b.test.start
    sizes = [f.test.stop - f.test.start for f in folds]
    if test_bars is None:
        assert folds[-1].test.stop == n_bars          # the rest of the data is covered
        assert max(sizes) - min(sizes) <= 1
        assert sum(sizes) == rest
    else:
        assert sizes == [test_bars] * n_folds


def test_splits_by_hand() -> None:
    anchored = splits(10, scheme="anchored", n_folds=2, train_bars=4)
    assert [(f.train, f.test) for f in anchored] == [
        (slice(0, 4), slice(4, 7)), (slice(0, 7), slice(7, 10))]
    rolling = splits(10, scheme="rolling", n_folds=3, train_bars=3, test_bars=2)
    assert [(f.train, f.test) for f in rolling] == [
        (slice(0, 3), slice(3, 5)), (slice(2, 5), slice(5, 7)), (slice(4, 7), slice(7, 9))]
    # 7 test bars over 3 folds: 3, 2, 2
    uneven = splits(10, scheme="anchored", n_folds=3, train_bars=3)
    assert [f.test for f in uneven] == [slice(3, 6), slice(6, 8), slice(8, 10)]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"scheme": "expanding"}, "scheme must be 'anchored' or 'rolling'"),
    ({"n_folds": 0}, "n_folds must be >= 1"),
    ({"n_folds": True}, "n_folds must be an integer"),
    ({"train_bars": 0}, "train_bars must be >= 1"),
    ({"train_bars": 2.5}, "train_bars must be an integer"),
    ({"test_bars": 0}, "test_bars must be >= 1"),
    ({"test_bars": 40}, "exceeds n_bars=100"),
    ({"train_bars": 98}, "need at least one bar per fold"),
])
def test_splits_errors_name_the_argument(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"scheme": "rolling", "n_folds": 3, "train_bars": 50, **kwargs}
    with pytest.raises(ValueError, match=match):
        splits(100, **args)


# ============================================================= out of sample
def test_oos_equals_slicing_the_full_run(sp500: Bars) -> None:
    spec = SMA.build({"fast": 10, "slow": 50})
    costs = CostModel()
    res = out_of_sample(spec, sp500, costs, split=0.7)
    full = backtest(spec, sp500, costs).returns.to_numpy()
    cut = math.floor(0.7 * sp500.n_bars)
    assert (res.in_sample.start, res.in_sample.stop) == (0, cut)
    assert (res.out_of_sample.start, res.out_of_sample.stop) == (cut, sp500.n_bars)
    assert val_str(res.in_sample.last) < val_str(res.out_of_sample.first)
    ppy = sp500.periods_per_year
    for name, value in return_metrics(full[:cut], ppy).items():
        assert res.is_metrics[name] == pytest.approx(value, rel=1e-12, abs=1e-15)
    for name, value in return_metrics(full[cut:], ppy).items():
        assert res.oos_metrics[name] == pytest.approx(value, rel=1e-12, abs=1e-15)
    is_s, oos_s = val(res.is_metrics["sharpe"]), val(res.oos_metrics["sharpe"])
    assert res.decay_ratio == (oos_s / is_s if is_s > 0 else None)
    assert res.data_ref == sp500.data_ref and res.cost_policy == costs.policy_version
    assert isinstance(roundtrip(res), OOSResult)


def test_oos_decay_ratio_of_a_broken_trend() -> None:
    # up for 140 bars then down for 60: long is great in sample, a loser out of sample
    bars = closes_bars(trend_closes([(1, 140), (-1, 60)]))
    res = out_of_sample(SIDE.build({"side": "long"}), bars, ZERO, split=0.7)
    assert val(res.is_metrics["sharpe"]) > 0 > val(res.oos_metrics["sharpe"])
    assert res.decay_ratio is not None and res.decay_ratio < 0
    # a strategy that loses in sample has no decay ratio
    short = out_of_sample(SIDE.build({"side": "short"}), bars, ZERO, split=0.7)
    assert short.decay_ratio is None


@pytest.mark.parametrize("split", [0.0, 1.0, 1.5, -0.1, True, 0.001])
def test_oos_rejects_bad_split(split: Any) -> None:
    bars = closes_bars(trend_closes([(1, 100)]))
    with pytest.raises(ValueError, match="split"):
        out_of_sample(SIDE.build({"side": "long"}), bars, ZERO, split=split)


# ============================================================== walk forward
def test_walk_forward_never_picks_on_test_performance() -> None:
    # train window (bars 0..119) trends up, test window (120..199) trends down:
    # "short" is poor in training and great in testing, "long" the other way round.
    bars = closes_bars(trend_closes([(1, 120), (-1, 80)]))
    params = [{"side": "short"}, {"side": "long"}]
    res = run_batch([SIDE.build(p) for p in params], bars, ZERO)
    ppy = bars.periods_per_year
    train_sharpe = col(return_metrics(res.returns[:, :120], ppy), "sharpe")
    test_sharpe = col(return_metrics(res.returns[:, 120:], ppy), "sharpe")
    assert test_sharpe[0] > 0 > train_sharpe[0]            # short: leaky pick
    assert train_sharpe[1] > 0 > test_sharpe[1]            # long: honest pick

    wf = walk_forward(SIDE, params, bars, ZERO, scheme="anchored", n_folds=1, train_bars=120)
    (fold,) = wf.folds
    assert fold.chosen_params == {"side": "long"} and fold.chosen_index == 1
    assert fold.train_objective == pytest.approx(train_sharpe[1])
    assert wf.oos_metrics["sharpe"] == pytest.approx(test_sharpe[1])
    assert val(wf.oos_metrics["sharpe"]) < 0 and val(wf.decay_ratio) < 0
    roundtrip(wf)


def test_walk_forward_selection_ignores_every_later_bar(sp500: Bars) -> None:
    grid = [p for p in SMA.grid() if p["fast"] in (5, 10, 20, 40) and p["slow"] % 40 == 0]
    def run(bars: Bars) -> WalkForwardResult:
        return walk_forward(SMA, grid, bars, CostModel(), scheme="rolling", n_folds=4,
                            train_bars=1500, objective="sharpe")

    wf = run(sp500)
    stop = wf.folds[0].train.stop
    # rewrite history after fold 0's train window: the bars run backwards from there on
    arrays = {}
    for f in FIELDS:
        a = np.array(sp500.field(f))
        a[stop:] = a[stop:][::-1]
        arrays[f] = a
    changed = Bars(index=sp500.index, symbols=sp500.symbols, **arrays, name="changed")
    wf2 = run(changed)
    assert wf2.folds[0].chosen_params == wf.folds[0].chosen_params
    assert wf2.folds[0].train_objective == wf.folds[0].train_objective
    assert wf2.oos_returns != wf.oos_returns  # the future did change


def test_walk_forward_is_the_train_argmax_joined_on_test(sp500: Bars) -> None:
    grid = [p for p in SMA.grid() if p["slow"] in (50, 100, 200) and p["fast"] % 10 == 0]
    costs = CostModel()
    wf = walk_forward("sma_cross", grid, sp500, costs, scheme="anchored", n_folds=3,
                      train_bars=2000, objective="sortino")
    res = run_batch([SMA.build(p) for p in grid], sp500, costs)
    ppy = sp500.periods_per_year
    folds = splits(sp500.n_bars, scheme="anchored", n_folds=3, train_bars=2000)
    pieces = []
    for sel, fold in zip(wf.folds, folds, strict=True):
        assert (sel.train.start, sel.train.stop) == (fold.train.start, fold.train.stop)
        assert (sel.test.start, sel.test.stop) == (fold.test.start, fold.test.stop)
        scores = col(return_metrics(res.returns[:, fold.train], ppy), "sortino")
        best = int(np.nanargmax(scores))
        assert sel.chosen_index == best and sel.chosen_params == grid[best]
        assert sel.train_objective == pytest.approx(scores[best])
        pieces.append(res.returns[best, fold.test])
    joined = np.concatenate(pieces)
    assert wf.oos_returns == pytest.approx(joined.tolist(), rel=0, abs=0)
    assert (wf.oos.start, wf.oos.stop) == (2000, sp500.n_bars)
    assert wf.oos_metrics["sortino"] == pytest.approx(return_metrics(joined, ppy)["sortino"])
    assert wf.mean_train_objective == pytest.approx(
        np.mean([val(s.train_objective) for s in wf.folds]))
    assert isinstance(roundtrip(wf), WalkForwardResult)


def test_walk_forward_errors() -> None:
    bars = closes_bars(trend_closes([(1, 100)]))
    with pytest.raises(ValueError, match="objective must be one of"):
        walk_forward(SIDE, [{"side": "long"}], bars, train_bars=50, objective="ann_volatility")
    with pytest.raises(ValueError, match="params_list is empty"):
        walk_forward(SIDE, [], bars, train_bars=50)
    with pytest.raises(ValueError, match="exceeds n_bars"):
        walk_forward(SIDE, [{"side": "long"}], bars, train_bars=50, n_folds=2, test_bars=30)


# ================================================================= stability
def _pairs(near: list[tuple[str, int, dict[str, Any]]]) -> set[tuple[int, int]]:
    return {(p["fast"], p["slow"]) for _, _, p in near}


def test_sma_cross_neighbours_by_hand() -> None:
    near, skipped = neighbours(SMA, {"fast": 10, "slow": 50})
    assert _pairs(near) == {(5, 50), (15, 50), (10, 40), (10, 60)} and skipped == []
    assert [(name, d) for name, d, _ in near] == [
        ("fast", -1), ("fast", 1), ("slow", -1), ("slow", 1)]
    # corner of the grid: fast 0 and slow 10 are off the grid
    assert _pairs(neighbours(SMA, {"fast": 5, "slow": 20})[0]) == {(10, 20), (5, 30)}
    # against the rule fast < slow: (50, 50) and (45, 40) are invalid
    assert _pairs(neighbours("sma_cross", {"fast": 45, "slow": 50})[0]) == {(40, 50), (45, 60)}


def test_neighbours_of_choice_and_float_params() -> None:
    don = get_family("donchian_breakout")
    near, _ = neighbours(don, {"entry_window": 50, "exit_window": 25, "stop_loss": 0.05})
    got = {(p["entry_window"], p["exit_window"], p["stop_loss"]) for _, _, p in near}
    assert got == {(40, 25, 0.05), (60, 25, 0.05), (50, 20, 0.05), (50, 30, 0.05),
                   (50, 25, 0.02), (50, 25, 0.1)}
    near, _ = neighbours(don, {"entry_window": 50, "exit_window": 25, "stop_loss": "none"})
    assert [p["stop_loss"] for name, _, p in near if name == "stop_loss"] == [0.02]
    boll = get_family("bollinger_reversion")
    ks = [p["k"] for name, _, p in neighbours(boll, {"window": 20, "k": 2.25})[0]
          if name == "k"]
    assert ks == [2.0, 2.5]
    assert [p["k"] for name, _, p in neighbours(boll, {"window": 20, "k": 1.0})[0]
            if name == "k"] == [1.25]
    # a continuous float has no grid neighbours: reported as skipped
    cont = Family("cont", "continuous knob", {"w": IntParam(5, 20, 5), "x": FloatParam(0, 1)},
                  (), lambda p: StrategySpec(entry="close > 0", exit="close < 0"))
    near, skipped = neighbours(cont, {"w": 10, "x": 0.3})
    assert skipped == ["x"] and {p["w"] for _, _, p in near} == {5, 15}


def test_stability_on_real_data(sp500: Bars) -> None:
    res = neighbourhood_stability(SMA, {"fast": 10, "slow": 50}, sp500, CostModel())
    batch = run_batch([SMA.build(p) for p in ({"fast": 10, "slow": 50}, {"fast": 5, "slow": 50},
                                              {"fast": 15, "slow": 50},
                                              {"fast": 10, "slow": 40},
                                              {"fast": 10, "slow": 60})], sp500, CostModel())
    want = batch.metrics["sharpe"].to_numpy()
    assert res.centre_value == pytest.approx(want[0])
    assert [n.value for n in res.neighbours] == pytest.approx(list(want[1:]))
    assert {(n.params["fast"], n.params["slow"]) for n in res.neighbours} == {
        (5, 50), (15, 50), (10, 40), (10, 60)}
    assert res.min_value == pytest.approx(want[1:].min())
    assert res.median_value == pytest.approx(np.median(want[1:]))
    assert want[0] > 0
    frac = float(np.mean(want[1:] >= 0.5 * want[0]))
    assert res.fraction_ok == pytest.approx(frac)
    assert res.stable == (frac >= 0.5)
    assert isinstance(roundtrip(res), StabilityResult)


def test_isolated_peak_is_unstable() -> None:
    bars = closes_bars(trend_closes([(1, 200)]))
    peak = neighbourhood_stability(SIDE3, {"side": "long"}, bars, ZERO)
    assert val(peak.centre_value) > 0
    assert [n.params["side"] for n in peak.neighbours] == ["short_a", "short_b"]
    assert all(val(n.value) < 0 for n in peak.neighbours)
    assert peak.fraction_ok == 0.0 and not peak.stable
    # a losing centre is not stable, whatever its neighbours do
    loser = neighbourhood_stability(SIDE3, {"side": "short_a"}, bars, ZERO)
    assert not loser.stable and loser.fraction_ok is None
    assert "not positive" in loser.reason
    with pytest.raises(ValueError, match="metric must be one of"):
        neighbourhood_stability(SIDE3, {"side": "long"}, bars, ZERO, metric="n_trades")


# =============================================================== cost stress
def test_cost_stress_sharpe_falls_with_costs(sp500: Bars) -> None:
    spec = SMA.build({"fast": 10, "slow": 50})
    res = cost_stress(spec, sp500, CostModel(), multipliers=(0, 1, 2, 3))
    assert [lv.multiplier for lv in res.levels] == [0, 1, 2, 3]
    assert [lv.fees_bps for lv in res.levels] == [0, 10, 20, 30]
    assert [lv.slippage_bps for lv in res.levels] == [0, 5, 10, 15]
    sharpes = [val(lv.metrics["sharpe"]) for lv in res.levels]
    assert all(a > b for a, b in itertools.pairwise(sharpes))
    assert res.levels[1].metrics == pytest.approx(backtest(spec, sp500).metrics)
    assert val(res.levels[1].metrics["n_trades"]) > 0
    assert res.sharpe_at_survive == sharpes[2]
    assert res.survives == (sharpes[2] > 0)
    assert isinstance(roundtrip(res), CostStressResult)


def test_cost_stress_always_runs_the_survival_level() -> None:
    bars = closes_bars(trend_closes([(1, 200)]))
    res = cost_stress(SIDE.build({"side": "long"}), bars, CostModel(), multipliers=(3, 1))
    assert [lv.multiplier for lv in res.levels] == [1, 2, 3]
    assert res.survives  # a steady uptrend held throughout pays its one round trip
    bad: Any
    for bad, match in [((-1,), ">= 0"), ((200,), "above the cost model's limit"),
                       ((), "multipliers is empty"), (("x",), "must be numbers")]:
        with pytest.raises(ValueError, match=match):
            cost_stress(SIDE.build({"side": "long"}), bars, CostModel(), multipliers=bad)


# ==================================================================== subperiod
def test_subperiod_mean_shift_by_hand() -> None:
    # part 1: 0.02, 0, 0.02, 0 -> mean 0.01, sample std 0.01*sqrt(4/3)
    #         Sharpe = sqrt(3)/2 per period, x sqrt(4) = sqrt(3)
    # part 2: 0.02, -0.01, 0.02, -0.01 -> mean 0.005, std 0.015*sqrt(4/3)
    #         Sharpe = (1/3)(sqrt(3)/2) per period, x 2 = sqrt(3)/3
    r = [0.02, 0.0, 0.02, 0.0, 0.02, -0.01, 0.02, -0.01]
    res = subperiod_consistency(r, periods_per_year=4)
    p1, p2 = res.parts
    assert (p1.window.start, p1.window.stop, p2.window.start, p2.window.stop) == (0, 4, 4, 8)
    assert p1.sharpe == pytest.approx(math.sqrt(3))
    assert p2.sharpe == pytest.approx(math.sqrt(3) / 3)
    assert p1.mean_return == pytest.approx(0.01) and p2.mean_return == pytest.approx(0.005)
    assert p1.total_return == pytest.approx(1.02**2 - 1)
    assert p2.total_return == pytest.approx((1.02 * 0.99) ** 2 - 1)
    # full: mean 0.0075, squared deviations sum 0.00135 over 7 degrees of freedom
    assert res.full_sharpe == pytest.approx(0.0075 / math.sqrt(0.00135 / 7) * 2)
    assert res.sign_agreement and res.fraction_positive == 1.0
    assert res.ratio == pytest.approx(1 / 3)
    roundtrip(res)


def test_subperiod_sign_flip_by_hand() -> None:
    # the mean shifts by -0.02: second half is the first half's mirror image
    r = pd.Series([0.02, 0.0, 0.02, 0.0, 0.0, -0.02, 0.0, -0.02],
                  index=pd.date_range("2024-01-01", periods=8, freq="D", tz="UTC"))
    res = subperiod_consistency(r, 4)
    assert [p.sharpe for p in res.parts] == pytest.approx([math.sqrt(3), -math.sqrt(3)])
    assert res.full_sharpe == 0.0
    assert not res.sign_agreement and res.fraction_positive == 0.5
    assert res.ratio == pytest.approx(-1.0)
    assert res.parts[1].window.first == "2024-01-05T00:00:00+00:00"
    assert res.parts[1].window.last == "2024-01-08T00:00:00+00:00"
    assert isinstance(roundtrip(res), SubperiodResult)


def test_subperiod_parts_and_errors() -> None:
    r = [0.01, -0.01, 0.02, 0.0, 0.0, 0.01, -0.01]
    res = subperiod_consistency(r, 252, n_parts=3)
    assert [(p.window.start, p.window.stop) for p in res.parts] == [(0, 3), (3, 5), (5, 7)]
    # part 1 (0, 0) is flat: its Sharpe is undefined, so no agreement and no ratio
    assert res.parts[1].sharpe is None and not res.sign_agreement and res.ratio is None
    with pytest.raises(ValueError, match="n_parts must be >= 2"):
        subperiod_consistency(r, 252, n_parts=1)
    with pytest.raises(ValueError, match="too few"):
        subperiod_consistency(r, 252, n_parts=4)
    with pytest.raises(ValueError, match="NaN"):
        subperiod_consistency([0.01, math.nan, 0.0, 0.01], 252)
