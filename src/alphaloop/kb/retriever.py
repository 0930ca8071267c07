"""The retriever (MOD-462): which strategies in the knowledge base are like this one?

Two questions, both answered from the KB alone, across runs:

- :func:`similar` — the strategies most like a stored one, for diversity and for
  ``alphaloop kb similar``;
- :func:`tried_before` — "have we tried something like this on this data?", asked
  before a candidate is backtested.

Two distances, each in ``[0, 1]`` (0 = the same):

**spec_distance** (what the strategy *is*).

- Same family: the parameters. Each numeric parameter is scaled by the range
  (max - min) seen in the KB for that family (the query included), a non-numeric one
  (a string, a bool) counts 0 when equal and 1 when not, a parameter only one side has
  counts 1; the distance is the root mean square over the union of parameter names:
  ``sqrt(mean(((x_p - y_p) / range_p)**2))`` (a parameter with range 0 counts 0).
- Another family (or no family on either side): the structure of the canonical entry
  and exit expressions. Each expression is parsed and canonicalized
  (:func:`alphaloop.strategy.expression.canonicalize`), and its tokens are the operator
  names and field names of the tree, prefixed by the side (``entry:gt``,
  ``entry:sma``, ``entry:close``, ``exit:rsi``, …; a cross-sectional spec adds its
  score's, ``score:roc``, ``score:close``); numbers are left out, since they are
  what the parameters set. The distance is ``1 - |A ∩ B| / |A ∪ B|`` (Jaccard) over the
  two token sets; 1 when neither side has a token (an expression that does not parse).

**profile_distance** (what the strategy *did*). The KB does not store per-bar return
series, so the true return correlation cannot be computed from it: the loop clusters
by return correlation within an iteration, where the series exist. Here the backtest
metric profile recorded in the KB stands in for it: ``sharpe``, ``turnover``,
``exposure``, ``n_trades`` and ``max_drawdown`` of the latest engine-A search-window
backtest on the same ``data_ref`` (:meth:`KnowledgeBase.tested`). Each metric is
scaled by its range over the strategies tested on that ``data_ref``; the distance is
the root mean square over the metrics both sides have (NaN when they share none, or
when a strategy has no backtest on that data). Two strategies with the same profile
need not have correlated returns: a proxy, not a measurement.

All of it is numpy/pandas over the whole KB (:meth:`KnowledgeBase.strategy_index`,
:meth:`KnowledgeBase.tested`): a fixed number of queries, none per row.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from alphaloop.errors import AlphaloopError
from alphaloop.kb.store import KBError, KnowledgeBase
from alphaloop.strategy.expression import Call, Field, canonicalize, parse, walk
from alphaloop.strategy.spec import StrategySpec

__all__ = ["PROFILE", "SIMILAR_COLUMNS", "TriedBefore", "expression_tokens", "similar",
           "tried_before"]

PROFILE = ("sharpe", "turnover", "exposure", "n_trades", "max_drawdown")
"""The backtest metrics compared by ``profile_distance``."""

SIMILAR_COLUMNS = ("strategy_id", "family", "params", "spec_distance", "profile_distance",
                   "best_score", "runs")


@dataclass(frozen=True)
class TriedBefore:
    """The answer of :func:`tried_before`; true when anything like the spec was tried.

    ``exact``: this very strategy (same ``strategy_id``) was tested on the data;
    ``neighbours``: strategies tested on the data within the distance threshold,
    nearest first (columns :data:`SIMILAR_COLUMNS`; the exact one is not among them).
    """

    strategy_id: str
    exact: bool
    neighbours: pd.DataFrame = field(repr=False)

    def __bool__(self) -> bool:
        return self.exact or not self.neighbours.empty


# ------------------------------------------------------------------ public API
def similar(kb: KnowledgeBase, strategy_id_or_prefix: str, *, n: int = 10,
            data_ref: str | None = None,
            by: Literal["spec", "profile"] = "spec") -> pd.DataFrame:
    """The ``n`` strategies of the KB most like the given one (an id or a unique
    prefix), itself left out, nearest first by ``spec_distance`` (``by="profile"``:
    by ``profile_distance``, NaN last), ties by the other distance, then by id.

    The profile is read on ``data_ref``; by default the data of the strategy's latest
    backtest. Columns :data:`SIMILAR_COLUMNS`; ``runs`` lists the runs that
    backtested each strategy, oldest first. Raises ``KB_NOT_FOUND``/``KB_AMBIGUOUS``
    for an id that matches no strategy or several, and ``KB_NOT_FOUND`` for a
    ``data_ref`` the knowledge base has no engine A backtest on.
    """
    if n < 1:
        raise KBError(f"n must be at least 1, not {n}", code="KB_BAD_QUERY")
    if by not in ("spec", "profile"):
        raise KBError(f"similar strategies are ranked by spec or profile, not {by!r}",
                      code="KB_BAD_QUERY")
    target = kb.strategy(strategy_id_or_prefix)
    sid = str(target["strategy_id"])
    tested = None if data_ref is None else kb.tested(data_ref)
    if tested is not None and tested.empty:  # a typo must not read as "no profile"
        raise KBError(f"no engine A backtest on data {data_ref!r} in the knowledge base "
                      "(`alphaloop kb show ID` lists a strategy's data refs)",
                      code="KB_NOT_FOUND")
    if data_ref is None and target["backtests"]:
        tested = kb.tested(str(target["backtests"][-1]["data_ref"]))
    index = kb.strategy_index()
    spec_d = _spec_distances(index, target.get("family"), target.get("params") or {},
                             _spec_tokens(target.get("spec") or {}))
    profile_d = (np.full(len(index), np.nan) if tested is None
                 else _profile_distances(tested, index, sid))
    frame = _result(index, spec_d, profile_d)
    frame = frame[frame["strategy_id"] != sid]
    return _ranked(frame, by).head(n).reset_index(drop=True)


def tried_before(kb: KnowledgeBase, spec: StrategySpec | Mapping[str, Any], data_ref: str,
                 *, threshold: float = 0.1, n: int = 5) -> TriedBefore:
    """Have we tried something like ``spec`` on ``data_ref``?

    First the exact question: was its ``strategy_id`` (the normalizer hash) tested on
    that data (engine A, search window: what the trial count counts)? Then the
    neighbours: up to ``n`` strategies tested on that data whose ``spec_distance`` to
    the spec is at most ``threshold``, nearest first. ``bool(answer)`` is true when
    either found something. The spec need not be in the KB.
    """
    if not isinstance(spec, StrategySpec):
        spec = StrategySpec.from_dict(dict(spec))
    sid = spec.strategy_id
    tested = set(kb.tested(data_ref)["strategy_id"].astype(str))
    index = kb.strategy_index()
    index = index[index["strategy_id"].isin(tested)].reset_index(drop=True)
    tokens = _node_tokens(dict(spec.expression_nodes()))
    spec_d = _spec_distances(index, spec.family, spec.params, tokens)
    frame = _result(index, spec_d, np.full(len(index), np.nan))
    frame = frame[(frame["strategy_id"] != sid) & (frame["spec_distance"] <= threshold)]
    neighbours = _ranked(frame, "spec").head(n).reset_index(drop=True)
    return TriedBefore(strategy_id=sid, exact=sid in tested, neighbours=neighbours)


def expression_tokens(entry: str | None, exit: str | None,
                      score: str | None = None) -> frozenset[str]:
    """The structural tokens of an entry/exit pair and of a cross-sectional ``score``
    (see the module docstring); an expression that is missing or does not parse adds
    none."""
    nodes = {}
    sides: tuple[tuple[str, str | None, Literal["bool", "num"]], ...] = (
        ("entry", entry, "bool"), ("exit", exit, "bool"), ("score", score, "num"))
    for side, text, kind in sides:
        if not text:
            continue
        try:
            nodes[side] = canonicalize(parse(text, expect=kind, where=side))
        except AlphaloopError:
            continue
    return _node_tokens(nodes)


# ------------------------------------------------------------------ spec distance
def _node_tokens(nodes: Mapping[str, Any]) -> frozenset[str]:
    out: set[str] = set()
    for side, root in nodes.items():
        for node in walk(root):
            if isinstance(node, Call):
                out.add(f"{side}:{node.op}")
            elif isinstance(node, Field):
                out.add(f"{side}:{node.name}")
    return frozenset(out)


def _spec_tokens(spec: Mapping[str, Any]) -> frozenset[str]:
    entry, exit_ = spec.get("entry"), spec.get("exit")
    book = spec.get("portfolio")
    score = book.get("score") if isinstance(book, Mapping) else None
    return expression_tokens(entry if isinstance(entry, str) else None,
                             exit_ if isinstance(exit_, str) else None,
                             score if isinstance(score, str) else None)


def _spec_distances(index: pd.DataFrame, family: str | None, params: Mapping[str, Any],
                    tokens: frozenset[str]) -> np.ndarray:
    """spec_distance of every row of ``index`` to the query (family, params, tokens)."""
    out = np.ones(len(index), dtype=float)
    if index.empty:
        return out
    families = index["family"].to_numpy(dtype=object)
    same = (families == family) if family is not None else np.zeros(len(index), dtype=bool)
    if same.any():
        out[same] = _param_distances(list(index.loc[same, "params"]), dict(params))
    other = ~same
    if other.any():
        specs = index.loc[other, "spec"]
        out[other] = _jaccard_distances([_spec_tokens(s or {}) for s in specs], tokens)
    return out


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float | np.integer | np.floating)
            and not isinstance(value, bool | np.bool_) and math.isfinite(float(value)))


def _param_distances(rows: list[Mapping[str, Any]], query: dict[str, Any]) -> np.ndarray:
    """RMS of range-scaled parameter differences between each row and the query."""
    names = sorted(set(query).union(*(set(r or {}) for r in rows)))
    if not names:
        return np.zeros(len(rows))
    squares = np.zeros((len(rows), len(names)))
    for j, name in enumerate(names):
        have = [(r or {}).get(name, _MISSING) for r in rows]
        want = query.get(name, _MISSING)
        numeric = np.array([_is_number(v) for v in have], dtype=bool)
        if _is_number(want) and numeric.any():
            values = np.array([float(v) if ok else np.nan for v, ok in
                               zip(have, numeric, strict=True)], dtype=float)
            lo = min(np.nanmin(values), float(want))
            span = max(np.nanmax(values), float(want)) - lo
            scaled = np.abs(values - float(want)) / span if span > 0 else np.zeros(len(rows))
            squares[:, j] = np.where(numeric, scaled ** 2, 1.0)
        else:  # strings, bools, a parameter one side lacks: equal or not
            equal = np.array([v is not _MISSING and want is not _MISSING and v == want
                              and type(v) is type(want) for v in have], dtype=bool)
            squares[:, j] = np.where(equal, 0.0, 1.0)
    return np.sqrt(squares.mean(axis=1))


_MISSING: Any = object()


def _jaccard_distances(rows: list[frozenset[str]], query: frozenset[str]) -> np.ndarray:
    """``1 - |A ∩ B| / |A ∪ B|`` of each row against the query (1 when both are empty),
    through one 0/1 token matrix."""
    vocab = sorted(query.union(*rows))
    if not vocab:
        return np.ones(len(rows))
    position = {t: i for i, t in enumerate(vocab)}
    matrix = np.zeros((len(rows), len(vocab)), dtype=np.int64)
    for i, tokens in enumerate(rows):
        matrix[i, [position[t] for t in tokens]] = 1
    want = np.zeros(len(vocab), dtype=np.int64)
    want[[position[t] for t in query]] = 1
    inter = matrix @ want
    union = matrix.sum(axis=1) + want.sum() - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, 1.0 - inter / np.maximum(union, 1), 1.0)
    return np.asarray(out, dtype=float)


# ------------------------------------------------------------------ profile distance
def _profiles(tested: pd.DataFrame) -> pd.DataFrame:
    """The :data:`PROFILE` metrics per strategy (index: strategy_id) from the backtest
    columns, or the ``metrics`` JSON where the table has no column."""
    out = pd.DataFrame(index=tested["strategy_id"].astype(str).to_numpy())
    metrics = [m if isinstance(m, Mapping) else {} for m in tested.get(
        "metrics", pd.Series([{}] * len(tested)))]
    for name in PROFILE:
        column = (tested[name] if name in tested.columns
                  else pd.Series([None] * len(tested), index=tested.index))
        values = [c if c is not None and not pd.isna(c) else m.get(name)
                  for c, m in zip(column, metrics, strict=True)]
        out[name] = pd.to_numeric(pd.Series(values, index=out.index), errors="coerce")
    return out.astype(float)


def _profile_distances(tested: pd.DataFrame, index: pd.DataFrame, sid: str) -> np.ndarray:
    """Each strategy's distance to ``sid`` by metric profile, over ``tested`` (the
    engine A search records of one data ref, :meth:`KnowledgeBase.tested`)."""
    profiles = _profiles(tested)
    if sid not in profiles.index:
        return np.full(len(index), np.nan)
    values = profiles.to_numpy(dtype=float)
    with warnings.catch_warnings():  # a metric no strategy has: an all-NaN column
        warnings.simplefilter("ignore", RuntimeWarning)
        span = np.nanmax(values, axis=0) - np.nanmin(values, axis=0)
    span = np.where(np.isfinite(span) & (span > 0), span, np.nan)
    target = profiles.loc[sid].to_numpy(dtype=float)
    diff = (values - target) / span
    # a metric with range 0 (all equal): no difference where both sides have it
    diff = np.where(np.isnan(span) & ~np.isnan(values) & ~np.isnan(target), 0.0, diff)
    squares = diff ** 2
    have = ~np.isnan(squares)
    count = have.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt(np.where(have, squares, 0.0).sum(axis=1) / count)
    rms = np.where(count > 0, rms, np.nan)
    by_id = pd.Series(rms, index=profiles.index)
    return by_id.reindex(index["strategy_id"].astype(str)).to_numpy(dtype=float)


# ------------------------------------------------------------------ the frame
def _result(index: pd.DataFrame, spec_d: np.ndarray, profile_d: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({
        "strategy_id": index["strategy_id"].astype(str).to_numpy() if len(index) else [],
        "family": index["family"].to_numpy(dtype=object) if len(index) else [],
        "params": index["params"].to_numpy(dtype=object) if len(index) else [],
        "spec_distance": spec_d, "profile_distance": profile_d,
        "best_score": index["best_score"].to_numpy(dtype=float) if len(index) else [],
        "runs": index["runs"].to_numpy(dtype=object) if len(index) else []})
    return frame[list(SIMILAR_COLUMNS)]


def _ranked(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    keys: Iterable[str] = (("spec_distance", "profile_distance") if by == "spec"
                           else ("profile_distance", "spec_distance"))
    return frame.sort_values([*keys, "strategy_id"], na_position="last", kind="stable")
