"""Out-of-sample validation and robustness checks (MOD-432).

Five checks, each a function that returns a typed, JSON-serializable pydantic
model, so a robustness report can hold them and the failure analysis can quote
them as evidence (``OOS_DECAY``, ``UNSTABLE_PARAMS``, ``COST_DOMINATED``):

==========================  ================================================================
:func:`splits`              anchored or rolling train/test folds over ``n_bars`` (no leakage:
                            every test window lies strictly after its fold's train window)
:func:`out_of_sample`       one in-sample / out-of-sample split of one strategy, with the
                            decay ratio ``OOS Sharpe / IS Sharpe``
:func:`walk_forward`        pick the best of many candidates on each fold's *train* window,
                            trade it on the fold's *test* window, join the test windows
:func:`neighbourhood_stability`  the metric of the ±1-step neighbours of a parameter set in
                            its family's grid, against the centre's
:func:`cost_stress`         the core metrics at multiples (1×, 2×, 3×) of fees and slippage
:func:`subperiod_consistency`  Sharpe per contiguous sub-period (first half vs second half)
==========================  ================================================================

Conventions:

- Returns are the per-bar portfolio returns of engine A
  (:func:`alphaloop.engines.engine_a.run_batch`); metrics are those of
  :mod:`alphaloop.engines.metrics` (one implementation everywhere), annualized with
  the panel's ``periods_per_year``.
- Engine A is causal: a decision at bar t uses data up to t and fills at t+1's open,
  so the return of bar t depends on bars ≤ t only. Every check therefore runs the
  backtest **once on the full panel** and cuts the per-bar returns into windows.
  Indicators in a later window are warmed up on earlier history and a position
  opened in one window is carried into the next, exactly as a live system that has
  been running all along would see it. Cutting returns this way leaks nothing: the
  returns of a window never depend on bars after it.
- Undefined numbers (a Sharpe of a flat series, a ratio over a non-positive
  denominator) are ``None`` in the results, never NaN, so
  ``model_dump_json()`` / ``model_validate_json()`` round-trip.
- Bad arguments raise :class:`ValueError` naming the argument and the reason; bad
  family parameters raise :class:`~alphaloop.errors.SpecError` from the family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from alphaloop.data.bars import Bars
from alphaloop.engines.costs import CostModel
from alphaloop.engines.engine_a import BatchResult, run_batch
from alphaloop.engines.metrics import CORE_METRICS, return_metrics, to_jsonable
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.strategy.spec import StrategySpec
from alphaloop.strategy.templates import (
    ChoiceParam,
    Family,
    FloatParam,
    IntParam,
    ParamError,
    get_family,
)

__all__ = [
    "NEIGHBOUR_THRESHOLD",
    "STABILITY_METRICS",
    "STABLE_FRACTION",
    "SURVIVE_MULTIPLIER",
    "WALK_FORWARD_OBJECTIVES",
    "CostLevel",
    "CostStressResult",
    "Fold",
    "FoldSelection",
    "Neighbour",
    "OOSResult",
    "StabilityResult",
    "SubperiodPart",
    "SubperiodResult",
    "WalkForwardResult",
    "Window",
    "cost_stress",
    "neighbourhood_stability",
    "neighbours",
    "out_of_sample",
    "splits",
    "subperiod_consistency",
    "walk_forward",
]

Scheme = Literal["anchored", "rolling"]
Metrics = dict[str, float | int | None]

WALK_FORWARD_OBJECTIVES: tuple[str, ...] = (
    "sharpe", "sortino", "calmar", "cagr", "total_return", "max_drawdown")
"""Objectives :func:`walk_forward` can select on: return metrics (computable on any
window of returns) where higher is better (``max_drawdown`` is ``<= 0``, so the
shallowest drawdown wins)."""

STABILITY_METRICS: tuple[str, ...] = (
    "sharpe", "sortino", "calmar", "cagr", "total_return", "win_rate")
"""Metrics :func:`neighbourhood_stability` accepts: higher is better and a positive
value means the strategy works, so "at least half the centre's value" makes sense."""

NEIGHBOUR_THRESHOLD = 0.5
"""A neighbour *holds up* when its metric is at least this fraction of the centre's."""

STABLE_FRACTION = 0.5
"""A parameter set is stable when at least this fraction of its neighbours hold up."""

SURVIVE_MULTIPLIER = 2.0
""":func:`cost_stress` says a strategy survives when its Sharpe at this multiple of
the base costs is still above zero."""


# ===================================================================== models
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Model):
    """Bars ``start:stop`` of the panel (``stop`` exclusive) and their first and last
    timestamps (ISO 8601, UTC; ``None`` when the returns carried no timestamps)."""

    start: int
    stop: int
    first: str | None = None
    last: str | None = None

    @property
    def n_bars(self) -> int:
        return self.stop - self.start

    def as_slice(self) -> slice:
        return slice(self.start, self.stop)


class OOSResult(_Model):
    """In-sample vs out-of-sample return metrics of one strategy (:func:`out_of_sample`).

    ``decay_ratio = oos_metrics["sharpe"] / is_metrics["sharpe"]``, ``None`` unless
    the in-sample Sharpe is positive (a decay from a losing or flat strategy means
    nothing). Around 1: the edge held up; near 0 or negative: it did not.
    """

    strategy_id: str
    data_ref: str
    cost_policy: str
    periods_per_year: float
    split: float
    in_sample: Window
    out_of_sample: Window
    is_metrics: Metrics
    oos_metrics: Metrics
    decay_ratio: float | None


class FoldSelection(_Model):
    """One walk-forward fold: the candidate chosen on ``train`` and how it did on ``test``.

    ``train_objective`` is the chosen (best) candidate's objective on the train window,
    ``test_objective`` its objective on the test window; ``test_metrics`` are the
    return metrics of the test window alone.
    """

    fold: int
    train: Window
    test: Window
    chosen_index: int
    chosen_params: dict[str, Any]
    chosen_strategy_id: str
    train_objective: float | None
    test_objective: float | None
    test_metrics: Metrics


class WalkForwardResult(_Model):
    """The walk-forward record (:func:`walk_forward`).

    ``oos_returns`` are the joined test-window returns (one per bar of ``oos``) and
    ``oos_metrics`` their return metrics. ``mean_train_objective`` is the mean over
    folds of the in-sample best objective; ``decay_ratio`` is
    ``oos_metrics[objective] / mean_train_objective`` (``None`` unless the latter is
    positive).
    """

    family: str
    scheme: Scheme
    objective: str
    n_candidates: int
    data_ref: str
    cost_policy: str
    periods_per_year: float
    folds: list[FoldSelection]
    oos: Window
    oos_returns: list[float]
    oos_metrics: Metrics
    mean_train_objective: float | None
    decay_ratio: float | None
    n_distinct_choices: int


class Neighbour(_Model):
    """A parameter set one grid step away from the centre in parameter ``changed``."""

    params: dict[str, Any]
    changed: str
    direction: Literal[-1, 1]
    strategy_id: str
    value: float | None


class StabilityResult(_Model):
    """The centre's metric against its ±1-step neighbours (:func:`neighbourhood_stability`).

    ``fraction_ok`` is the fraction of neighbours whose metric is at least
    ``threshold × centre_value`` (a neighbour with an undefined metric does not hold
    up); it is ``None`` when the centre value is not positive or there are no
    neighbours. ``stable`` is true when the centre value is positive, there is at
    least one neighbour and ``fraction_ok >= min_fraction``; ``reason`` says why not.
    ``skipped_params`` are parameters without a grid (continuous floats), which have
    no neighbours.
    """

    family: str
    params: dict[str, Any]
    strategy_id: str
    metric: str
    data_ref: str
    cost_policy: str
    centre_value: float | None
    neighbours: list[Neighbour]
    min_value: float | None
    median_value: float | None
    threshold: float
    min_fraction: float
    fraction_ok: float | None
    stable: bool
    reason: str
    skipped_params: list[str]


class CostLevel(_Model):
    """Core metrics with fees and slippage both multiplied by ``multiplier``."""

    multiplier: float
    fees_bps: float
    slippage_bps: float
    cost_policy: str
    metrics: Metrics


class CostStressResult(_Model):
    """Metrics at each cost multiple (:func:`cost_stress`), ordered by multiplier.

    ``survives`` is true when the Sharpe at ``survive_multiplier`` (2× by default)
    is defined and above zero: the edge is not eaten by costs twice as high as
    assumed. ``sharpe_at_survive`` is that Sharpe.
    """

    strategy_id: str
    data_ref: str
    base_fees_bps: float
    base_slippage_bps: float
    levels: list[CostLevel]
    survive_multiplier: float
    sharpe_at_survive: float | None
    survives: bool


class SubperiodPart(_Model):
    """One contiguous sub-period of a return series."""

    part: int
    window: Window
    mean_return: float
    total_return: float
    sharpe: float | None


class SubperiodResult(_Model):
    """Sharpe per contiguous sub-period (:func:`subperiod_consistency`).

    ``sign_agreement``: every part's Sharpe is defined and all have the same sign
    (all positive or all negative). ``fraction_positive``: parts with a positive
    Sharpe. ``ratio = min / max`` of the parts' Sharpes (``None`` unless all are
    defined and the max is positive): 1 means equally good in every part, a value
    in (0, 1) how much weaker the worst part is, ≤ 0 that some part lost money.
    """

    periods_per_year: float
    n_parts: int
    full_sharpe: float | None
    parts: list[SubperiodPart]
    sign_agreement: bool
    fraction_positive: float
    ratio: float | None


# ===================================================================== splits
@dataclass(frozen=True)
class Fold:
    """Bar slices of one fold: ``train`` then ``test``, ``train.stop == test.start``."""

    train: slice
    test: slice


def _int_arg(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def splits(n_bars: int, *, scheme: Scheme, n_folds: int, train_bars: int,
           test_bars: int | None = None) -> list[Fold]:
    """Train/test folds over bars ``0..n_bars-1`` for walk-forward evaluation.

    The first test window starts at bar ``train_bars``; the test windows follow one
    another without gaps or overlaps, and each fold's train window ends where its
    test window starts (so ``max(train) < min(test)``: no leakage).

    - ``anchored``: every train window starts at bar 0 (an expanding window).
    - ``rolling``: every train window has exactly ``train_bars`` bars.

    With ``test_bars`` the test windows have that many bars each and bars after the
    last one are not used; without it, the bars ``train_bars..n_bars-1`` are split
    into ``n_folds`` test windows whose sizes differ by at most one (the earlier
    ones get the extra bars), so together they cover the rest of the data.

    >>> [(f.train, f.test) for f in splits(10, scheme="rolling", n_folds=2, train_bars=4)]
    [(slice(0, 4, None), slice(4, 7, None)), (slice(3, 7, None), slice(7, 10, None))]
    """
    if scheme not in ("anchored", "rolling"):
        raise ValueError(f"scheme must be 'anchored' or 'rolling', got {scheme!r}")
    n_bars = _int_arg("n_bars", n_bars, 2)
    n_folds = _int_arg("n_folds", n_folds, 1)
    train_bars = _int_arg("train_bars", train_bars, 1)
    rest = n_bars - train_bars
    if test_bars is None:
        if rest < n_folds:
            raise ValueError(
                f"train_bars={train_bars} leaves {max(rest, 0)} of n_bars={n_bars} bars for "
                f"n_folds={n_folds} test windows; need at least one bar per fold")
        base, extra = divmod(rest, n_folds)
        sizes = [base + (1 if i < extra else 0) for i in range(n_folds)]
    else:
        test_bars = _int_arg("test_bars", test_bars, 1)
        if train_bars + n_folds * test_bars > n_bars:
            raise ValueError(
                f"train_bars + n_folds * test_bars = {train_bars} + {n_folds} * {test_bars} "
                f"= {train_bars + n_folds * test_bars} exceeds n_bars={n_bars}")
        sizes = [test_bars] * n_folds
    folds: list[Fold] = []
    start = train_bars
    for size in sizes:
        train = slice(0, start) if scheme == "anchored" else slice(start - train_bars, start)
        folds.append(Fold(train=train, test=slice(start, start + size)))
        start += size
    return folds


# ================================================================== helpers
def _num(value: Any) -> float | None:
    """A finite float, or None."""
    f = float(value)
    return f if math.isfinite(f) else None


def _metrics(values: Mapping[str, Any]) -> Metrics:
    return to_jsonable(values)


def _window(index: pd.DatetimeIndex | None, start: int, stop: int) -> Window:
    if index is None or stop <= start:
        return Window(start=start, stop=stop)
    return Window(start=start, stop=stop, first=index[start].isoformat(),
                  last=index[stop - 1].isoformat())


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def _family(family: Family | str) -> Family:
    return family if isinstance(family, Family) else get_family(family)


def _row_metrics(res: BatchResult, k: int) -> Metrics:
    row = res.metrics.iloc[k]
    return _metrics({name: (int(row[name]) if name == "n_trades" else float(row[name]))
                     for name in CORE_METRICS})


# ============================================================ out of sample
def out_of_sample(spec: StrategySpec, bars: Bars, costs: CostModel | None = None, *,
                  split: float = 0.7) -> OOSResult:
    """In-sample vs out-of-sample metrics of ``spec``, cut at ``split`` of the bars.

    The in-sample window is bars ``0..cut-1`` with ``cut = floor(split * n_bars)``,
    the out-of-sample window bars ``cut..n_bars-1``; each needs at least two bars.
    Engine A is causal (a decision at t uses data ≤ t and fills at t+1), so the
    strategy is run **once on the full panel** and its per-bar returns are cut at
    ``cut``: the out-of-sample window's indicators are warmed up on in-sample
    history and a position open at the cut is carried over, as a live system would
    see it, and the out-of-sample returns equal those of a run that only knew the
    data up to each bar. ``decay_ratio = OOS Sharpe / IS Sharpe`` (``None`` unless
    the in-sample Sharpe is positive).
    """
    if isinstance(split, bool) or not isinstance(split, int | float) or not 0 < split < 1:
        raise ValueError(f"split must be a fraction strictly between 0 and 1, got {split!r}")
    n = bars.n_bars
    cut = math.floor(split * n)
    if cut < 2 or n - cut < 2:
        raise ValueError(f"split={split} of {n} bars leaves {cut} in-sample and {n - cut} "
                         "out-of-sample bars; each side needs at least 2")
    res = run_batch([spec], bars, costs)
    r = res.returns[0]
    ppy = res.periods_per_year
    is_m = return_metrics(r[:cut], ppy)
    oos_m = return_metrics(r[cut:], ppy)
    return OOSResult(
        strategy_id=spec.strategy_id, data_ref=res.data_ref,
        cost_policy=res.costs.policy_version, periods_per_year=ppy, split=float(split),
        in_sample=_window(bars.index, 0, cut), out_of_sample=_window(bars.index, cut, n),
        is_metrics=_metrics(is_m), oos_metrics=_metrics(oos_m),
        decay_ratio=_ratio(_num(oos_m["sharpe"]), _num(is_m["sharpe"])))


# ============================================================= walk forward
def walk_forward(family: Family | str, params_list: Sequence[Mapping[str, Any]], bars: Bars,
                 costs: CostModel | None = None, *, scheme: Scheme = "anchored",
                 n_folds: int = 5, train_bars: int, test_bars: int | None = None,
                 objective: str = "sharpe") -> WalkForwardResult:
    """Walk-forward selection among candidate parameter sets of ``family``.

    All candidates are backtested once on the full panel (one :func:`run_batch`, so
    indicators are shared). For each fold of :func:`splits` (``scheme``,
    ``n_folds``, ``train_bars``, ``test_bars``) the candidate with the best
    ``objective`` (one of :data:`WALK_FORWARD_OBJECTIVES`) on the **train window
    only** is chosen, and its returns on the fold's test window are kept. The test
    windows' returns, joined, are the out-of-sample record; selection never sees a
    test bar, and since engine A is causal a candidate's train-window returns do
    not depend on any later bar either.

    Ties and undefined objectives: an undefined (NaN) objective ranks below every
    defined one and ties go to the earliest candidate in ``params_list``; if every
    objective is undefined the first candidate is chosen and ``train_objective`` is
    ``None``.

    Approximation: the chosen candidate's test-window returns are those of that
    candidate running all along, so a position it opened before the test window is
    held into it and the trades of switching from the previous fold's choice are
    not charged (at most one round trip per symbol per fold).
    """
    if objective not in WALK_FORWARD_OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(WALK_FORWARD_OBJECTIVES)}; "
                         f"got {objective!r}")
    fam = _family(family)
    if len(params_list) == 0:
        raise ValueError("params_list is empty; walk_forward needs at least one candidate")
    folds = splits(bars.n_bars, scheme=scheme, n_folds=n_folds, train_bars=train_bars,
                   test_bars=test_bars)
    specs = [fam.build(p) for p in params_list]
    res = run_batch(specs, bars, costs)
    returns, ppy = res.returns, res.periods_per_year
    selections: list[FoldSelection] = []
    pieces: list[np.ndarray] = []
    for i, fold in enumerate(folds):
        scores = np.asarray(return_metrics(returns[:, fold.train], ppy)[objective], dtype=float)
        ranked = np.where(np.isfinite(scores), scores, -np.inf)
        k = int(np.argmax(ranked))  # first maximum: ties go to the earliest candidate
        test_r = returns[k, fold.test]
        test_m = return_metrics(test_r, ppy)
        pieces.append(test_r)
        selections.append(FoldSelection(
            fold=i, train=_window(bars.index, fold.train.start, fold.train.stop),
            test=_window(bars.index, fold.test.start, fold.test.stop),
            chosen_index=k, chosen_params=dict(specs[k].params),
            chosen_strategy_id=specs[k].strategy_id, train_objective=_num(scores[k]),
            test_objective=_num(test_m[objective]), test_metrics=_metrics(test_m)))
    oos_r = np.concatenate(pieces)
    oos_m = return_metrics(oos_r, ppy)
    train_objs = [s.train_objective for s in selections if s.train_objective is not None]
    mean_train = float(np.mean(train_objs)) if len(train_objs) == len(selections) else None
    return WalkForwardResult(
        family=fam.name, scheme=scheme, objective=objective, n_candidates=len(specs),
        data_ref=res.data_ref, cost_policy=res.costs.policy_version, periods_per_year=ppy,
        folds=selections,
        oos=_window(bars.index, folds[0].test.start, folds[-1].test.stop),
        oos_returns=[float(x) for x in oos_r], oos_metrics=_metrics(oos_m),
        mean_train_objective=mean_train,
        decay_ratio=_ratio(_num(oos_m[objective]), mean_train),
        n_distinct_choices=len({s.chosen_index for s in selections}))


# ================================================================ stability
def neighbours(family: Family | str,
               params: Mapping[str, Any]) -> tuple[list[tuple[str, int, dict[str, Any]]],
                                                   list[str]]:
    """The valid ±1-step neighbours of ``params`` in ``family``'s grid.

    For each parameter in declaration order, down then up: an integer or stepped
    float moves by its ``step``, a choice moves to the adjacent choice; the other
    parameters stay. A neighbour off the parameter's range or breaking one of the
    family's rules is left out. Returns ``([(name, -1 | +1, params), ...],
    skipped)`` where ``skipped`` names parameters without a grid (continuous floats).
    """
    fam = _family(family)
    centre = fam.validate(params)
    out: list[tuple[str, int, dict[str, Any]]] = []
    skipped: list[str] = []
    for name, space in fam.params.items():
        v = centre[name]
        for direction in (-1, 1):
            moved: Any
            if isinstance(space, ChoiceParam):
                j = space.choices.index(v) + direction
                if not 0 <= j < len(space.choices):
                    continue
                moved = space.choices[j]
            elif isinstance(space, IntParam):
                moved = v + direction * space.step
            elif isinstance(space, FloatParam) and space.step is not None:
                moved = round(v + direction * space.step, 12)
            else:
                if name not in skipped:
                    skipped.append(name)
                continue
            try:
                moved = space.check(moved)
            except ParamError:
                continue
            candidate = {**centre, name: moved}
            if fam.broken_rules(candidate):
                continue
            out.append((name, direction, candidate))
    return out, skipped


def neighbourhood_stability(family: Family | str, params: Mapping[str, Any], bars: Bars,
                            costs: CostModel | None = None, *, metric: str = "sharpe",
                            threshold: float = NEIGHBOUR_THRESHOLD,
                            min_fraction: float = STABLE_FRACTION) -> StabilityResult:
    """How the ±1-step neighbours of ``params`` (see :func:`neighbours`) score.

    The centre and its neighbours are backtested in one batch on ``bars`` with
    ``costs``; ``metric`` (one of :data:`STABILITY_METRICS`) is read from engine A's
    metrics. A neighbour *holds up* when its metric is at least ``threshold``
    (default 0.5, i.e. 50 %) of the centre's; the parameter set is ``stable`` when
    the centre's metric is positive and at least ``min_fraction`` (default 0.5) of
    its neighbours hold up. An isolated peak — a good centre whose neighbours
    collapse — is the signature of an overfit parameter choice.
    """
    if metric not in STABILITY_METRICS:
        raise ValueError(f"metric must be one of {', '.join(STABILITY_METRICS)}; "
                         f"got {metric!r}")
    for name, value in (("threshold", threshold), ("min_fraction", min_fraction)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    fam = _family(family)
    centre_params = fam.validate(params)
    near, skipped = neighbours(fam, centre_params)
    specs = [fam.build(centre_params), *(fam.build(p) for _, _, p in near)]
    res = run_batch(specs, bars, costs)
    values = res.metrics[metric].to_numpy(dtype=float)
    centre = _num(values[0])
    neigh_values = values[1:]
    items = [Neighbour(params=p, changed=name, direction=1 if d > 0 else -1,
                       strategy_id=s.strategy_id, value=_num(v))
             for (name, d, p), s, v in zip(near, specs[1:], neigh_values, strict=True)]
    finite = neigh_values[np.isfinite(neigh_values)]
    min_v = float(finite.min()) if finite.size else None
    med_v = float(np.median(finite)) if finite.size else None
    fraction: float | None = None
    if centre is None or centre <= 0:
        stable, reason = False, f"centre {metric} is {centre} (not positive)"
    elif not items:
        stable, reason = False, "no valid neighbours in the family's grid"
    else:
        ok = np.isfinite(neigh_values) & (neigh_values >= threshold * centre)
        fraction = float(ok.mean())
        stable = fraction >= min_fraction
        reason = (f"{int(ok.sum())} of {len(items)} neighbours have {metric} >= "
                  f"{threshold:g} x centre ({threshold * centre:.4g}); need a fraction "
                  f">= {min_fraction:g}")
    return StabilityResult(
        family=fam.name, params=centre_params, strategy_id=specs[0].strategy_id,
        metric=metric, data_ref=res.data_ref, cost_policy=res.costs.policy_version,
        centre_value=centre, neighbours=items, min_value=min_v, median_value=med_v,
        threshold=float(threshold), min_fraction=float(min_fraction), fraction_ok=fraction,
        stable=stable, reason=reason, skipped_params=skipped)


# ============================================================== cost stress
def cost_stress(spec: StrategySpec, bars: Bars, costs: CostModel | None = None,
                multipliers: Sequence[float] = (1, 2, 3), *,
                survive_multiplier: float = SURVIVE_MULTIPLIER) -> CostStressResult:
    """Core metrics of ``spec`` with fees and slippage both scaled by each multiplier.

    ``costs`` (default :class:`CostModel`'s defaults) is the 1× level. The
    ``survive_multiplier`` level (2× by default) is always evaluated, added to
    ``multipliers`` if missing; ``survives`` is true when its Sharpe is defined and
    above zero. Levels come back sorted by multiplier, each once. The signals are
    computed once and shared by all levels.
    """
    base = costs or CostModel()
    try:
        wanted = [float(m) for m in multipliers]
    except (TypeError, ValueError):
        raise ValueError(f"multipliers must be numbers, got {multipliers!r}") from None
    if not wanted:
        raise ValueError("multipliers is empty; give at least one cost multiple")
    levels_m = sorted({*wanted, float(survive_multiplier)})
    for m in levels_m:
        if not math.isfinite(m) or m < 0:
            raise ValueError(f"cost multipliers must be finite and >= 0, got {m!r}")
        worst = max(base.fees_bps, base.slippage_bps) * m
        if worst > 1000:
            raise ValueError(f"multiplier {m:g} gives {worst:g} bps, above the cost model's "
                             "limit of 1000 bps per side")
    ev = SignalEvaluator(bars)
    levels: list[CostLevel] = []
    for m in levels_m:
        cm = CostModel(fees_bps=base.fees_bps * m, slippage_bps=base.slippage_bps * m)
        res = run_batch([spec], bars, cm, evaluator=ev)
        levels.append(CostLevel(multiplier=m, fees_bps=cm.fees_bps,
                                slippage_bps=cm.slippage_bps,
                                cost_policy=cm.policy_version, metrics=_row_metrics(res, 0)))
    at = next(lv for lv in levels if lv.multiplier == float(survive_multiplier))
    sharpe = at.metrics["sharpe"]
    sharpe_f = float(sharpe) if sharpe is not None else None
    return CostStressResult(
        strategy_id=spec.strategy_id, data_ref=bars.data_ref,
        base_fees_bps=base.fees_bps, base_slippage_bps=base.slippage_bps, levels=levels,
        survive_multiplier=float(survive_multiplier), sharpe_at_survive=sharpe_f,
        survives=sharpe_f is not None and sharpe_f > 0)


# ===================================================== sub-period consistency
def subperiod_consistency(returns: np.ndarray | pd.Series | Sequence[float],
                          periods_per_year: float, n_parts: int = 2) -> SubperiodResult:
    """Sharpe of each of ``n_parts`` contiguous sub-periods of ``returns``.

    The series is cut into ``n_parts`` windows whose lengths differ by at most one
    (the earlier ones get the extra bars, as :func:`numpy.array_split`); each needs
    at least two returns. A :class:`pandas.Series` with a DatetimeIndex gives the
    windows' timestamps. See :class:`SubperiodResult` for ``sign_agreement`` and
    ``ratio``; with the default two parts this is "first half vs second half".
    """
    n_parts = _int_arg("n_parts", n_parts, 2)
    index = returns.index if isinstance(returns, pd.Series) else None
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"returns must be one series (shape (T,)), got shape {r.shape}")
    if r.size < 2 * n_parts:
        raise ValueError(f"{r.size} returns are too few for n_parts={n_parts}; "
                         "each part needs at least 2")
    dt_index = index if isinstance(index, pd.DatetimeIndex) else None
    full = return_metrics(r, periods_per_year)  # also validates r and periods_per_year
    ppy = float(periods_per_year)
    parts: list[SubperiodPart] = []
    start = 0
    for i, chunk in enumerate(np.array_split(r, n_parts)):
        stop = start + chunk.size
        m = return_metrics(chunk, ppy)
        parts.append(SubperiodPart(
            part=i, window=_window(dt_index, start, stop), mean_return=float(chunk.mean()),
            total_return=float(m["total_return"]), sharpe=_num(m["sharpe"])))
        start = stop
    sharpes = [p.sharpe for p in parts]
    defined = [s for s in sharpes if s is not None]
    all_defined = len(defined) == len(sharpes)
    agree = all_defined and (all(s > 0 for s in defined) or all(s < 0 for s in defined))
    ratio = (min(defined) / max(defined)
             if all_defined and max(defined) > 0 else None)
    return SubperiodResult(
        periods_per_year=ppy, n_parts=n_parts, full_sharpe=_num(full["sharpe"]), parts=parts,
        sign_agreement=agree, fraction_positive=sum(s > 0 for s in defined) / n_parts,
        ratio=ratio)
