"""Lookahead detection for one strategy spec, modelled on freqtrade's ``lookahead-analysis``.

DESIGN §4: a decision at bar t may use bars <= t only. Built-in operators are
causal by construction (and tested so); a user-registered operator
(:mod:`alphaloop.strategy.operators`) is causal only by promise. Before a candidate
is trusted, :func:`check_lookahead` tests the promise on the data at hand:

1. **Truncation.** Every sub-expression of the entry and exit trees (indicator
   values and boolean conditions) is evaluated on the full panel and on panels that
   end at sampled bars t (``bars.slice(0, t + 1, drop_empty=True)``: the symbols with a
   bar by t, as the data at t knew them); values at bars <= t must be
   identical (NaN == NaN; booleans compared as their three-valued codes). Cut points
   are drawn with a seeded generator among the bars where a signal fires or changes
   (freqtrade re-runs at every entry and exit) plus a few uniform ones.
2. **Warm-up.** A registered operator's value at the last bars must not depend on
   how much history precedes them beyond its declared look-back: it is recomputed on
   ``bars.slice(k, None)`` keeping just enough history, and must agree up to a
   tolerance (running sums and recursive averages such as EMA, RSI and ATR
   accumulate float error differently from another start; the recursive ones are
   given the history their decay needs). This catches an operator whose look-back
   is understated, e.g. a normalization by everything seen so far. Built-in
   operators are proven independent of their warm-up by the test suite
   (tests/engines/test_truncation.py), so by default only registered operators are
   compared: a near-zero denominator can amplify rounding differences beyond any
   tolerance, and a false alarm here would stop a run. ``warmup_scope="all"``
   compares every numeric sub-expression.

Only the innermost offending sub-expression is reported for each cause (its
operator is the culprit: its own inputs agreed), so the report names the operator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np

from alphaloop.data.bars import Bars
from alphaloop.engines import indicators as ind
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.errors import LookaheadError
from alphaloop.strategy.expression import OPS, Call, Node, Num, lookback, walk
from alphaloop.strategy.operators import implementation
from alphaloop.strategy.spec import StrategySpec

POLICY_CODE = "LOOKAHEAD_POLICY_VIOLATION"
Check = Literal["truncation", "warmup"]
Signal = Literal["entry", "exit", "score"]
# relative influence of the first bars that a recursive average (EMA, Wilder) may keep
# when the warm-up check compares it: far below the comparison tolerance
_DECAY_TOL = 1e-12
_CODE_NAMES = {0: "false", 1: "unknown", 2: "true"}


@dataclass(frozen=True)
class LookaheadFinding:
    """One sub-expression whose values changed when the data changed."""

    check: Check
    signal: Signal  # the first tree (entry, then exit) that contains the sub-expression
    expression: str  # canonical text of the sub-expression
    operator: str  # its top operator: the culprit, since its own inputs agreed
    kind: Literal["num", "bool"]
    bar: int  # first bar whose value differs
    timestamp: str
    symbol: str
    cut: int  # truncation: the panel ended at this bar; warm-up: it started here
    full_value: float  # booleans as codes 0 false, 1 unknown, 2 true
    cut_value: float

    def describe(self) -> str:
        full, cut = self._show(self.full_value), self._show(self.cut_value)
        where = (f"operator {self.operator!r} in {self.signal} sub-expression "
                 f"{self.expression!r} at bar {self.bar} ({self.timestamp}, {self.symbol})")
        if self.check == "truncation":
            return (f"{where} is {full} on the full data but {cut} when the data end at "
                    f"bar {self.cut}: it reads bars after the one it is computed for (or "
                    "is not deterministic: a value must depend on the bars up to it only)")
        return (f"{where} is {full} on the full data but {cut} when the data start at "
                f"bar {self.cut}: it depends on more history than its declared look-back")

    def _show(self, value: float) -> str:
        if self.kind == "bool" and not math.isnan(value):
            return _CODE_NAMES.get(int(value), repr(value))
        return repr(value)


@dataclass(frozen=True)
class LookaheadReport:
    """What :func:`check_lookahead` compared and what differed."""

    strategy_id: str
    cuts: tuple[int, ...]  # the truncation points t (bars 0..t kept)
    warmup_starts: tuple[int, ...]  # the first bars k of the warm-up panels
    n_expressions: int  # distinct sub-expressions compared
    findings: tuple[LookaheadFinding, ...]
    unchecked_warmup: tuple[str, ...]  # needing more history than the panel has

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def lookahead(self) -> tuple[LookaheadFinding, ...]:
        return tuple(f for f in self.findings if f.check == "truncation")

    @property
    def warmup(self) -> tuple[LookaheadFinding, ...]:
        return tuple(f for f in self.findings if f.check == "warmup")

    def raise_for_lookahead(self, *, warmup: bool = True) -> None:
        """Raise :class:`LookaheadError` (``LOOKAHEAD_POLICY_VIOLATION``, CRITICAL) for the
        first finding; ``warmup=False`` ignores the warm-up check's findings."""
        found = self.findings if warmup else self.lookahead
        if not found:
            return
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise LookaheadError(f"strategy {self.strategy_id[:12]}: {found[0].describe()}{more}",
                             code=POLICY_CODE)


@dataclass(frozen=True)
class WarmupOptions:
    """The warm-up check: which nodes, how many last bars, what tolerance."""

    scope: Literal["registered", "all"] = "registered"
    bars: int = 5  # last bars compared
    rtol: float = 1e-6
    atol: float = 1e-9


def check_lookahead(spec: StrategySpec, bars: Bars, *, n_cuts: int = 8, seed: int = 0,
                    evaluator: SignalEvaluator | None = None,
                    warmup: WarmupOptions | None = None) -> LookaheadReport:
    """Run both checks on ``spec`` over ``bars``; see the module docstring.

    ``evaluator``: a :class:`SignalEvaluator` on the same ``bars`` (e.g. engine A's),
    whose cached indicators are reused for the full-panel values. ``n_cuts``
    truncation points are drawn with ``seed``. Deterministic for given arguments.
    """
    full = evaluator if evaluator is not None else SignalEvaluator(bars)
    if full.bars is not bars:
        raise ValueError("evaluator was built on another Bars panel")
    nodes = _sub_expressions(spec)
    cuts = _cut_points(full, spec, n_cuts, np.random.default_rng(seed))
    findings = _truncation_findings(nodes, bars, full, cuts)
    warm, starts, unchecked = _warmup_findings(nodes, bars, full, warmup or WarmupOptions())
    return LookaheadReport(strategy_id=spec.strategy_id, cuts=cuts, warmup_starts=starts,
                           n_expressions=len(nodes), findings=(*findings, *warm),
                           unchecked_warmup=unchecked)


# ------------------------------------------------------------ sub-expressions
def _sub_expressions(spec: StrategySpec) -> list[tuple[Signal, Call]]:
    """Distinct operator nodes of entry, exit (and a ranked book's score), children
    before parents."""
    seen: dict[str, tuple[Signal, Call]] = {}
    for label, root in spec.expression_nodes():
        for node in walk(root):
            if isinstance(node, Call) and str(node) not in seen:
                seen[str(node)] = (cast(Signal, label), node)
    return list(seen.values())


def _raw(ev: SignalEvaluator, node: Call) -> np.ndarray:
    """Values (float64) or three-valued codes (uint8) of ``node``, as (N × T)."""
    # _eval, not signal(): the codes keep "unknown" apart from "false", so a
    # sub-expression that turns unknown into false on less data is caught
    out = ev._eval(node)
    return np.full(ev.shape, out) if isinstance(out, float) else out


def _descendants(node: Call) -> set[str]:
    return {str(n) for n in walk(node) if isinstance(n, Call) and n is not node}


# ------------------------------------------------------------- cut points
def _cut_points(full: SignalEvaluator, spec: StrategySpec, n_cuts: int,
                rng: np.random.Generator) -> tuple[int, ...]:
    """Up to ``n_cuts`` bars t < T-1: mostly where entry or exit fires or changes (the
    bars a backtest acts on), a quarter uniform (so quiet stretches are tested too)."""
    candidates = full.shape[1] - 1  # a cut at the last bar would be the full panel
    if candidates <= 0 or n_cuts <= 0:
        return ()
    events = _event_bars(_raw(full, _as_call(spec.entry_node)))
    events |= _event_bars(_raw(full, _as_call(spec.exit_node)))
    pool = np.flatnonzero(events[:candidates])
    n_event = min(len(pool), n_cuts - n_cuts // 4)
    picked = rng.choice(pool, n_event, replace=False) if n_event else np.empty(0, np.int64)
    rest = np.setdiff1d(np.arange(candidates), picked)
    n_uniform = min(len(rest), n_cuts - n_event)
    uniform = rng.choice(rest, n_uniform, replace=False) if n_uniform else rest[:0]
    return tuple(sorted(int(t) for t in np.concatenate([picked, uniform])))


def _as_call(node: Node) -> Call:
    if not isinstance(node, Call):  # a boolean tree is always an operator call
        raise TypeError(f"a signal must be a boolean expression, got {node}")
    return node


def _event_bars(codes: np.ndarray) -> np.ndarray:
    """Bars where the signal is true for some symbol or its code changed from t-1."""
    events = np.any(codes == ind.TRUE, axis=0)
    events[1:] |= np.any(codes[:, 1:] != codes[:, :-1], axis=0)
    return events


# ----------------------------------------------------------- truncation
def _truncation_findings(nodes: list[tuple[Signal, Call]], bars: Bars, full: SignalEvaluator,
                         cuts: tuple[int, ...]) -> list[LookaheadFinding]:
    """The cut panel knows only the symbols with a bar by t (``drop_empty``), as the
    data at t did: an operator that reads how many symbols exist later is caught too."""
    cut_evs = []
    for t in cuts:
        part_bars = bars.slice(0, t + 1, drop_empty=True)
        if part_bars.n_symbols:
            kept = np.array([bars.symbols.index(s) for s in part_bars.symbols])
            cut_evs.append((t, kept, SignalEvaluator(part_bars)))
    flagged: set[str] = set()
    findings: list[LookaheadFinding] = []
    for label, node in nodes:  # children first: the first finding names the culprit
        whole = _raw(full, node)
        for t, kept, ev in cut_evs:
            part = _raw(ev, node)
            diff = _first_difference(whole[kept, :t + 1], part, exact=True)
            if diff is None:
                continue
            if not flagged & _descendants(node):  # else an input already explains it
                aligned = np.full((whole.shape[0], t + 1), np.nan)  # part, by full rows
                aligned[kept] = part
                findings.append(_finding("truncation", label, node, bars, t,
                                         (int(kept[diff[0]]), diff[1]), whole, aligned))
            flagged.add(str(node))
            break
    return findings


def _first_difference(a: np.ndarray, b: np.ndarray, *, exact: bool, rtol: float = 0.0,
                      atol: float = 0.0) -> tuple[int, int] | None:
    """(symbol, bar) of the earliest bar where ``a`` and ``b`` differ, else None."""
    if exact:
        same = a == b
        if a.dtype.kind == "f":
            same |= np.isnan(a) & np.isnan(b)
    else:
        same = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    if same.all():
        return None
    bar = int(np.argmax(~same.all(axis=0)))
    return int(np.argmax(~same[:, bar])), bar


def _finding(check: Check, label: Signal, node: Call, bars: Bars, cut: int,
             where: tuple[int, int], full: np.ndarray, other: np.ndarray,
             offset: int = 0) -> LookaheadFinding:
    """``where`` indexes ``other``; ``offset`` maps its bars to the full panel's."""
    sym, bar = where
    at = bar + offset
    return LookaheadFinding(
        check=check, signal=label, expression=str(node), operator=node.op,
        kind="bool" if OPS[node.op].result == "bool" else "num", bar=at,
        timestamp=bars.index[at].isoformat(), symbol=bars.symbols[sym], cut=cut,
        full_value=float(full[sym, at]), cut_value=float(other[sym, bar]))


# --------------------------------------------------------------- warm-up
def _warmup_findings(nodes: list[tuple[Signal, Call]], bars: Bars, full: SignalEvaluator,
                     opts: WarmupOptions,
                     ) -> tuple[list[LookaheadFinding], tuple[int, ...], tuple[str, ...]]:
    """Recompute numeric sub-expressions on panels that start as late as their
    history allows; compare the last ``opts.bars`` bars."""
    n_bars, n_last = bars.n_bars, opts.bars
    groups: dict[int, list[tuple[Signal, Call]]] = {}
    unchecked: list[str] = []
    for label, node in nodes:
        if OPS[node.op].result != "num":
            continue  # booleans follow their (checked) inputs; near-ties could flip
        if opts.scope == "registered" and implementation(node.op) is None:
            continue
        start = n_bars - (_settle(node) + n_last)
        if n_last < 1 or start < 1:  # start 0 would be the full panel itself
            unchecked.append(str(node))
            continue
        groups.setdefault(start, []).append((label, node))
    findings: list[LookaheadFinding] = []
    flagged: set[str] = set()
    for start in sorted(groups):
        ev = SignalEvaluator(bars.slice(start, None))
        for label, node in groups[start]:
            whole, part = _raw(full, node), _raw(ev, node)
            diff = _first_difference(whole[:, -n_last:], part[:, -n_last:], exact=False,
                                     rtol=opts.rtol, atol=opts.atol)
            if diff is None:
                continue
            flagged.add(str(node))
            where = (diff[0], diff[1] + part.shape[1] - n_last)
            findings.append(_finding("warmup", label, node, bars, start, where, whole, part,
                                     offset=start))
    # groups run by start, not tree order: keep only the innermost, in tree order
    order = {str(node): i for i, (_, node) in enumerate(nodes)}
    findings = [f for f in findings if not flagged & _descendants(_node_of(nodes, f))]
    findings.sort(key=lambda f: order[f.expression])
    return findings, tuple(sorted(groups)), tuple(unchecked)


def _node_of(nodes: list[tuple[Signal, Call]], finding: LookaheadFinding) -> Call:
    return next(node for _, node in nodes if str(node) == finding.expression)


def _settle(node: Node) -> int:
    """Bars of history after which the value no longer depends on earlier bars.

    The declared look-back, plus, for recursive averages (EMA; Wilder's RSI and
    ATR), the bars their decay needs to forget the start to ``_DECAY_TOL``.
    """
    if not isinstance(node, Call):
        return 0
    kinds = OPS[node.op].args
    inputs = [a for a, k in zip(node.args, kinds, strict=True) if k != "window"]
    own = lookback(node) - max((lookback(a) for a in inputs), default=0)
    return max((_settle(a) for a in inputs), default=0) + own + _decay_memory(node)


def _decay_memory(node: Call) -> int:
    if node.op not in ("ema", "rsi", "atr"):
        return 0
    n = _window_of(node)
    alpha = 2.0 / (n + 1.0) if node.op == "ema" else 1.0 / n
    if alpha >= 1.0:
        return 0  # a window of one keeps no memory
    return math.ceil(math.log(_DECAY_TOL) / math.log1p(-alpha))


def _window_of(node: Call) -> int:
    last = node.args[-1]
    if not isinstance(last, Num):
        raise TypeError(f"{node.op}: window is not a constant in canonical form: {last}")
    return int(last.value)
