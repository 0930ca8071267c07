"""Constraint learning (MOD-450): failure records → rules over a family's parameters.

Input: :class:`Observation` s, one per evaluated candidate: its family, parameters,
optional derived features and its failure codes (primary first; empty when it did not
fail). Features must be known before a backtest (warm-up, stop distance:
:func:`alphaloop.research.features.spec_features`): a rule over an outcome such as
turnover would explain the failures and forbid nothing, as samplers cannot know it.

For each (family, failure code) :func:`learn_rules` fits a shallow
:class:`~sklearn.tree.DecisionTreeClassifier` that separates the candidates whose
primary code is ``code`` from all the others, and turns each leaf into a conjunction
of :class:`~alphaloop.strategy.constraints.Clause`::

    sma_cross: fast <= 10 and slow <= 40   -> TOO_FEW_TRADES in 41 of 44 candidates

A leaf becomes a **soft** :class:`~alphaloop.strategy.constraints.Constraint` only when

- ``support`` (candidates the rule covers) ≥ ``min_support``, and
- the Wilson lower bound of ``confidence = hits / support`` at level ``alpha`` (two-
  sided, z = Φ⁻¹(1 − α/2), 1.96 for α = 0.05) is ≥ ``min_confidence``:
  ``(p + z²/2n − z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n)``, p = hits/n
  (:func:`wilson_interval`).

Support and confidence are counted on the observations themselves with the final
clauses, never read from the tree. Thresholds are snapped to observed values
(``fast <= 10`` rather than sklearn's midpoint ``fast <= 12.5``), so a rule never
reaches into values between observations. A rule inside another kept rule is left out.

**Monotone rules**: where a parameter is a threshold whose larger values make ``code``
more likely (``momentum.threshold`` and ``TOO_FEW_TRADES``: +1) or less likely (-1),
the tree is fitted with sklearn's ``monotonic_cst`` and a kept rule is opened on that
side (``threshold >= 0.07`` instead of ``0.07 <= threshold <= 0.08``) when the opened
rule still passes both tests.

**Versions**: rules live in :class:`ConstraintSet` s: ``constraint_set_id`` is a
content hash of the rules, ``parent_id`` the set it came from, ``changes`` what changed
and why, ``iteration`` when. :func:`constraint_update` (or :func:`update_set` with
rules learned elsewhere) tallies re-tests (proposals that broke a soft rule, see the
samplers' exploration share), **expires** a soft rule the re-tests contradict -- at
least ``min_retests`` re-tests and the Wilson *upper* bound of their failure rate
(same ``alpha``) below ``min_confidence``, the level the rule was kept at -- and adds
the new rules. Hard rules (:func:`duplicate_rules`, :func:`structural_rule`) never
expire.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from alphaloop.research.rootcause import Diagnosis
from alphaloop.strategy.constraints import Clause, Column, Constraint
from alphaloop.strategy.templates import ChoiceParam, Family

TRADE_SPARSITY_MONOTONE: dict[str, dict[str, int]] = {
    "momentum": {"threshold": 1},
    "rsi_reversion": {"lower": -1, "upper": 1},
    "bollinger_reversion": {"k": 1},
    "volatility_breakout": {"k": 1},
    "zscore_reversion": {"entry_z": 1},
    "donchian_breakout": {"entry_window": 1},
}
"""Threshold parameters per family and the direction in which they make trades rarer:
a higher momentum threshold, a lower RSI entry level, a wider band all mean fewer
entries. The default ``monotone`` for ``NO_TRADES`` and ``TOO_FEW_TRADES``."""

SPARSITY_CODES = ("NO_TRADES", "TOO_FEW_TRADES")


# ------------------------------------------------------------------ statistics
def wilson_interval(hits: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion ``hits / n`` at level ``1 - alpha``
    (two-sided). ``(0.0, 1.0)`` when ``n == 0``: nothing is known."""
    if not 0 <= hits <= n:
        raise ValueError(f"need 0 <= hits <= n, got hits={hits}, n={n}")
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import norm

    z = float(norm.ppf(1.0 - alpha / 2.0))
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denom = 1 + z * z / n
    return max(0.0, (centre - spread) / denom), min(1.0, (centre + spread) / denom)


# ------------------------------------------------------------------ inputs
class Observation(BaseModel):
    """One evaluated candidate: ``codes`` its failure codes, primary first (empty: it
    was not rejected). ``features``: derived numbers rules may also use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str
    params: dict[str, Any]
    codes: tuple[str, ...] = ()
    features: dict[str, float] = Field(default_factory=dict)
    strategy_id: str | None = None
    iteration: int | None = None

    @property
    def view(self) -> dict[str, Any]:
        """What rules see: the features, and the parameters over them."""
        return {**self.features, **self.params}

    @classmethod
    def of(cls, diagnosis: Diagnosis, features: Mapping[str, float] | None = None, *,
           iteration: int | None = None) -> Observation:
        """The observation a failure record stands for."""
        if diagnosis.family is None:
            raise ValueError(f"{diagnosis.strategy_id}: a diagnosis without a family "
                             "cannot teach rules over a family's parameters")
        return cls(family=diagnosis.family, params=diagnosis.params,
                   codes=diagnosis.codes, features=dict(features or {}),
                   strategy_id=diagnosis.strategy_id, iteration=iteration)

    def has(self, code: str, use_secondary: bool = False) -> bool:
        """Whether this candidate counts as a failure with ``code``."""
        return code in (self.codes if use_secondary else self.codes[:1])


class LearningConfig(BaseModel):
    """How rules are induced and retired (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_depth: int = Field(default=2, ge=1, le=6)
    min_support: int = Field(default=10, ge=1)
    min_confidence: float = Field(default=0.6, gt=0, le=1)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    min_retests: int = Field(default=3, ge=1)
    use_secondary: bool = False
    codes: tuple[str, ...] | None = None  # None: every code observed, but skip_codes
    #: codes no rule is learned for: a data failure is about symbols and periods, not
    #: about the parameters (seed 004 §6.4 excludes the data instead)
    skip_codes: tuple[str, ...] = ("DATA_FAILURE",)


# ------------------------------------------------------------------ features
@dataclass(frozen=True)
class _Column:
    name: str
    param: str
    choice: Any = None  # a ChoiceParam's value for a one-hot column

    @property
    def one_hot(self) -> bool:
        return self.name != self.param


def _columns(family: Family, features: Iterable[str]) -> list[_Column]:
    """The tree's columns: the parameters (a choice one-hot) and the ``features`` that
    the observations carry besides them."""
    cols: list[_Column] = []
    for name, space in family.params.items():
        if isinstance(space, ChoiceParam):  # why: a tree cannot order "none" vs 0.05
            cols += [_Column(f"{name}={c!r}", name, c) for c in space.choices]
        else:
            cols.append(_Column(name, name))
    feats = sorted(set(features) - set(family.params))
    return cols + [_Column(f, f) for f in feats]


def _feature_names(obs: Iterable[Observation]) -> set[str]:
    return {k for o in obs for k in o.features}


def _row(o: Observation, cols: Sequence[_Column]) -> list[float] | None:
    values = o.view
    row: list[float] = []
    for c in cols:
        v = values.get(c.param)
        if c.one_hot:
            row.append(1.0 if v == c.choice else 0.0)
            continue
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None  # a candidate without this number cannot be placed
        if not math.isfinite(f):
            return None
        row.append(f)
    return row


# ------------------------------------------------------------------ learning
class _Design:
    """The feature rows of one family's observations over one set of columns, in the
    observations' order: ``x`` (NaN rows where an observation lacks a number),
    ``ok`` (which rows are usable), ``primary`` (each one's primary code, or "")."""

    def __init__(self, cols: Sequence[_Column]) -> None:
        self.cols = list(cols)
        self.obs: list[Observation] = []
        self._source: Sequence[Observation] | None = None  # the list last extended from
        self.x = np.empty((0, len(self.cols)), dtype=np.float64)
        self.ok = np.empty(0, dtype=bool)
        self.primary = np.empty(0, dtype=object)

    def prefix_of(self, obs: Sequence[Observation]) -> bool:
        if len(self.obs) > len(obs):
            return False
        if obs is self._source:  # a RowCache's own per-family list: it only grows
            return True
        return all(a is b for a, b in zip(self.obs, obs, strict=False))

    def extend(self, new: Sequence[Observation]) -> None:
        if not new:
            return
        rows = [_row(o, self.cols) for o in new]
        block = np.array([r if r is not None else [math.nan] * len(self.cols) for r in rows],
                         dtype=np.float64).reshape(len(new), len(self.cols))
        self.x = np.concatenate([self.x, block])
        self.ok = np.concatenate([self.ok, np.array([r is not None for r in rows], bool)])
        self.primary = np.concatenate([self.primary, np.array(
            [o.codes[0] if o.codes else "" for o in new], dtype=object)])
        self.obs += new

    def extend_from(self, obs: Sequence[Observation]) -> None:
        self.extend(obs[len(self.obs):])
        self._source = obs


class RowCache:
    """Observations' feature rows, kept from one constraint update to the next (the
    loop keeps one per run). A row is a function of its observation and the columns
    only, so a kept row is the row that would be built again: learning with the cache
    gives exactly what learning without it gives, and a resumed run, whose cache
    starts empty, learns what an uninterrupted one learns. Rows are added for the
    observations appended since the last update; a list that is not an extension of
    the last one is rebuilt."""

    def __init__(self) -> None:
        self._designs: dict[tuple[str, tuple[str, ...]], _Design] = {}
        self._reset_index()

    def design(self, family: str, obs: Sequence[Observation],
               cols: Sequence[_Column]) -> _Design:
        key = (family, tuple(c.name for c in cols))
        found = self._designs.get(key)
        if found is None or not found.prefix_of(obs):
            found = self._designs[key] = _Design(cols)
        found.extend_from(obs)
        return found

    # -- the run's observations by family, indexed as they arrive (what :func:`learn`
    # would otherwise sort out of the whole list at every update)
    def _reset_index(self) -> None:
        self._indexed: list[Observation] = []
        self._by_family: dict[str, list[Observation]] = {}
        self._codes: dict[tuple[str, bool], set[str]] = {}
        self._features: dict[str, set[str]] = {}
        # per family, built when first asked and then extended: what rules see of each
        # observation as columns, and each one's iteration (NaN: unknown)
        self._views: dict[str, tuple[dict[str, Column], int]] = {}
        self._iterations: dict[str, np.ndarray] = {}

    def index(self, obs: Sequence[Observation]) -> None:
        """Index the observations appended to ``obs`` since the last call; a list that
        is not an extension of the last one is indexed from scratch. An extension is
        recognized by the identity of the observations at the first, the last indexed
        and 16 evenly spaced positions (the loop's list only grows)."""
        n = len(self._indexed)
        probes = {0, n - 1, *range(0, n, max(n // 16, 1))} if n else set()
        if n > len(obs) or any(obs[i] is not self._indexed[i] for i in probes):
            self._reset_index()
        for o in obs[len(self._indexed):]:
            self._by_family.setdefault(o.family, []).append(o)
            self._codes.setdefault((o.family, False), set()).update(o.codes[:1])
            self._codes.setdefault((o.family, True), set()).update(o.codes)
            self._features.setdefault(o.family, set()).update(o.features)
        self._indexed = list(obs)

    def family(self, name: str) -> list[Observation]:
        """The indexed observations of family ``name``, in order (the same list object
        from call to call, which only grows)."""
        return self._by_family.setdefault(name, [])

    def codes(self, family: str, secondary: bool) -> set[str]:
        """The primary codes (with ``secondary``: all codes) observed in ``family``."""
        return self._codes.get((family, secondary), set())

    def features(self, family: str) -> set[str]:
        return self._features.get(family, set())

    def usable(self, family: str, code: str, expired: Sequence[Constraint]) -> np.ndarray:
        """Which of ``family``'s indexed observations still count for ``code``: not
        those inside an expired rule about ``code`` from before it expired (or of
        unknown iteration)."""
        obs = self.family(family)
        n = len(obs)
        table, done = self._views.get(family, ({}, 0))
        if done < n:
            new = Column.table([o.view for o in obs[done:]])
            table = Column.concat([(table, done), (new, n - done)])
            self._views[family] = (table, n)
        it = self._iterations.get(family, np.empty(0))
        if len(it) < n:
            it = self._iterations[family] = np.concatenate([it, np.array(
                [math.nan if o.iteration is None else o.iteration for o in obs[len(it):]],
                dtype=float)])
        out = np.ones(n, dtype=bool)
        for r in expired:
            if r.code != code or (r.family is not None and r.family != family):
                continue
            inside = np.ones(n, dtype=bool)
            for clause in r.clauses:
                inside &= clause.mask(table, n)
            if r.expired_at_iteration is not None:
                inside &= np.isnan(it) | (it < r.expired_at_iteration)
            out &= ~inside
        return out


def learn_rules(observations: Iterable[Observation], family: Family, code: str, *,
                config: LearningConfig | None = None, iteration: int | None = None,
                monotone: Mapping[str, int] | None = None,
                cache: RowCache | None = None) -> list[Constraint]:
    """Soft rules saying where in ``family``'s space ``code`` is the likely outcome.

    ``observations`` of other families are ignored, as are those missing a number the
    tree needs. ``monotone`` maps a parameter to +1/-1 (larger values make ``code``
    more/less likely; default :data:`TRADE_SPARSITY_MONOTONE` for trade-sparsity
    codes). A rule inside another kept rule's region is left out (it forbids nothing
    more; if the wider rule expires, the next learning pass finds it again).
    Deterministic: the tree's ``random_state`` is fixed. ``cache`` keeps the feature
    rows for the next call (:class:`RowCache`).
    """
    obs = [o for o in observations if o.family == family.name]
    return _learn_family(obs, None, family, code, config or LearningConfig(), iteration,
                         monotone, cache or RowCache(), _feature_names(obs))


def _learn_family(obs: list[Observation], usable: np.ndarray | None, family: Family,
                  code: str, cfg: LearningConfig, iteration: int | None,
                  monotone: Mapping[str, int] | None, cache: RowCache,
                  features: set[str]) -> list[Constraint]:
    """:func:`learn_rules` on ``family``'s observations ``obs``, of which only the
    ``usable`` ones (a mask; None: all) count; ``features``: the feature names ``obs``
    carry (those of the usable ones are found here)."""
    if usable is not None:
        features = _feature_names(o for o, u in zip(obs, usable, strict=True) if u)
    cols = _columns(family, features)
    design = cache.design(family.name, obs, cols)
    sel = design.ok if usable is None else design.ok & usable
    if not sel.any():
        return []
    x = design.x[sel]
    if cfg.use_secondary:
        y = np.array([o.has(code, True) for o, k in zip(design.obs, sel, strict=True) if k],
                     dtype=np.int64)
    else:
        y = (design.primary[sel] == code).astype(np.int64)
    mono = dict(monotone if monotone is not None else _default_monotone(family.name, code))
    boxes = _leaf_boxes(x, y, cols, cfg, mono)
    rules: dict[str, Constraint] = {}
    for clauses in boxes:
        rule = _kept(clauses, x, y, cols, family.name, code, cfg, iteration, mono)
        if rule is not None:
            rules.setdefault(rule.rule_id, rule)
    kept = list(rules.values())
    return [r for r in kept
            if not any(o is not r and _contains(o.clauses, r.clauses) for o in kept)]


def learn(observations: Iterable[Observation], families: Mapping[str, Family], *,
          config: LearningConfig | None = None, iteration: int | None = None,
          monotone: Mapping[str, Mapping[str, int]] | None = None,
          retired: Iterable[Constraint] = (), cache: RowCache | None = None
          ) -> list[Constraint]:
    """:func:`learn_rules` for every family in ``families`` and every code observed
    there as a primary code but ``config.skip_codes`` (or ``config.codes``), sorted by
    family, code, rule id. ``monotone`` is keyed by family (default as in
    :func:`learn_rules`). ``cache`` keeps the feature rows for the next call.

    ``retired``: rules (any status; the expired ones count) whose re-tests contradicted
    them. For an expired rule's code, the observations inside its region from before it
    expired (or of unknown iteration) are left out: the re-tests showed that evidence
    no longer holds, and learning from it again would bring the rule straight back.
    """
    cfg = config or LearningConfig()
    obs = observations if isinstance(observations, list) else list(observations)
    gone = [r for r in retired if r.status == "expired"]
    rows = cache or RowCache()  # an observation's row is the same for every code
    rows.index(obs)
    out: list[Constraint] = []
    for name in sorted(families):
        mine = rows.family(name)
        seen = sorted(rows.codes(name, cfg.use_secondary) - set(cfg.skip_codes))
        for code in (cfg.codes if cfg.codes is not None else tuple(seen)):
            mono = None if monotone is None else monotone.get(name, {})
            usable = rows.usable(name, code, gone) if gone else None
            out += sorted(_learn_family(mine, usable, families[name], code, cfg, iteration,
                                        mono, rows, rows.features(name)),
                          key=lambda r: r.rule_id)
    return out


def _default_monotone(family: str, code: str) -> dict[str, int]:
    return dict(TRADE_SPARSITY_MONOTONE.get(family, {})) if code in SPARSITY_CODES else {}


Box = list[tuple[int, Literal["<=", ">"], float]]  # (column, side, sklearn threshold)


def _leaf_boxes(x: np.ndarray, y: np.ndarray, cols: Sequence[_Column], cfg: LearningConfig,
                mono: Mapping[str, int]) -> list[list[Clause]]:
    """The clauses of every leaf of a shallow tree (one empty box if y has one class)."""
    if len(set(y.tolist())) < 2:
        return [[]]
    from sklearn.tree import DecisionTreeClassifier

    cst = [0 if c.one_hot else int(mono.get(c.param, 0)) for c in cols]
    tree = DecisionTreeClassifier(max_depth=cfg.max_depth, min_samples_leaf=cfg.min_support,
                                  random_state=0,
                                  monotonic_cst=cst if any(cst) else None)
    tree.fit(x, y)
    t = tree.tree_
    boxes: list[list[Clause]] = []

    def walk(node: int, box: Box) -> None:
        left, right = int(t.children_left[node]), int(t.children_right[node])
        if left == right:  # a leaf
            boxes.append(_clauses(box, x, cols))
            return
        f, thr = int(t.feature[node]), float(t.threshold[node])
        walk(left, [*box, (f, "<=", thr)])
        walk(right, [*box, (f, ">", thr)])

    walk(0, [])
    return boxes


def _clauses(box: Box, x: np.ndarray, cols: Sequence[_Column]) -> list[Clause]:
    """A leaf's path as clauses: thresholds snapped to observed values, one lower and
    one upper bound per parameter, ``==`` making ``!=`` of the same parameter moot."""
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    eq: dict[str, Any] = {}
    ne: dict[str, list[Any]] = {}
    for f, side, thr in box:
        col, seen = cols[f], x[:, f]
        if col.one_hot:
            if side == ">":
                eq[col.param] = col.choice
            else:
                ne.setdefault(col.param, []).append(col.choice)
        elif side == "<=":
            hi[col.param] = min(hi.get(col.param, math.inf), float(seen[seen <= thr].max()))
        else:
            lo[col.param] = max(lo.get(col.param, -math.inf), float(seen[seen > thr].min()))
    out = [Clause(param=p, op="==", value=v) for p, v in eq.items()]
    out += [Clause(param=p, op="!=", value=v) for p, vs in ne.items() if p not in eq
            for v in vs]
    out += [Clause(param=p, op=">=", value=v) for p, v in lo.items()]
    out += [Clause(param=p, op="<=", value=v) for p, v in hi.items()]
    return sorted(out, key=lambda c: (c.param, c.op, str(c.value)))


def _covered(clauses: Sequence[Clause], x: np.ndarray, cols: Sequence[_Column]) -> np.ndarray:
    """Which observations the clauses cover, evaluated on the design matrix."""
    mask = np.ones(len(x), dtype=bool)
    for c in clauses:
        if isinstance(c.value, str) or c.op in ("==", "!="):
            hit = np.zeros(len(x), dtype=bool)
            for k, col in enumerate(cols):
                if col.param == c.param and _same(col.choice, c.value):
                    hit = x[:, k] > 0.5
            mask &= hit if c.op == "==" else ~hit
            continue
        k = next(k for k, col in enumerate(cols) if col.name == c.param)
        mask &= x[:, k] <= c.value if c.op == "<=" else x[:, k] >= c.value
    return mask


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) and isinstance(a, str) == isinstance(b, str)


def _opened(clauses: Sequence[Clause], mono: Mapping[str, int]) -> list[Clause]:
    """Drop the bound a monotone parameter makes needless: with +1 (larger values fail
    more) a region that fails at ``p <= t`` fails above ``t`` as well."""
    return [c for c in clauses
            if not (mono.get(c.param) == 1 and c.op == "<=")
            and not (mono.get(c.param) == -1 and c.op == ">=")]


def _contains(wide: Sequence[Clause], narrow: Sequence[Clause]) -> bool:
    """True when every point ``narrow`` covers is covered by ``wide``: each clause of
    ``wide`` follows from the clauses of ``narrow`` (learned clauses use ``==``,
    ``!=``, ``>=`` and ``<=`` only)."""
    return all(any(_implies(c, w) for c in narrow) for w in wide)


def _implies(have: Clause, want: Clause) -> bool:
    if have.param != want.param:
        return False
    if have == want or have.op == "==":  # a single value decides by itself
        return have == want or want.holds({have.param: have.value})
    if isinstance(have.value, str) or isinstance(want.value, str) or have.op != want.op:
        return False
    return have.value >= want.value if want.op == ">=" else (
        want.op == "<=" and have.value <= want.value)


def _kept(clauses: list[Clause], x: np.ndarray, y: np.ndarray, cols: Sequence[_Column],
          family: str, code: str, cfg: LearningConfig, iteration: int | None,
          mono: Mapping[str, int]) -> Constraint | None:
    """The rule of one leaf (opened where monotone) if it passes support and Wilson."""
    for candidate in (_opened(clauses, mono), clauses):
        mask = _covered(candidate, x, cols)
        n, hits = int(mask.sum()), int(y[mask].sum())
        if n < cfg.min_support:
            continue
        lower = wilson_interval(hits, n, cfg.alpha)[0]
        if lower >= cfg.min_confidence:
            return soft_rule(family, code, candidate, hits=hits, support=n, lower=lower,
                             iteration=iteration, alpha=cfg.alpha)
    return None


# ------------------------------------------------------------------ rules
def rule_id(prefix: str, family: str | None, code: str | None,
            clauses: Sequence[Clause]) -> str:
    """A content id: the same family, code and clauses give the same id."""
    body = json.dumps({"family": family, "code": code,
                       "clauses": [c.model_dump() for c in clauses]}, sort_keys=True)
    return f"{prefix}-{hashlib.sha256(body.encode()).hexdigest()[:12]}"


def soft_rule(family: str, code: str, clauses: Sequence[Clause], *, hits: int, support: int,
              lower: float, iteration: int | None, alpha: float = 0.05) -> Constraint:
    """A learned rule with its evidence in words and numbers."""
    conf = hits / support
    return Constraint(
        rule_id=rule_id("r", family, code, clauses), family=family, clauses=list(clauses),
        hard=False, code=code, support=support, hits=hits, confidence=conf,
        confidence_lower=lower, created_at_iteration=iteration,
        reason=(f"{code} in {hits} of {support} candidates (confidence {conf:.2f}, Wilson "
                f"lower bound {lower:.2f} at {1 - alpha:.0%})"))


def structural_rule(family: str | None, clauses: Sequence[Clause], reason: str, *,
                    iteration: int | None = None) -> Constraint:
    """A hard rule: what cannot work by construction (never expires)."""
    return Constraint(rule_id=rule_id("h", family, None, clauses), family=family,
                      clauses=list(clauses), hard=True, reason=reason,
                      created_at_iteration=iteration)


def duplicate_rules(family: str, tested: Iterable[Mapping[str, Any]], *,
                    iteration: int | None = None) -> list[Constraint]:
    """Hard rules forbidding exactly the parameter sets already tested (e.g. found in
    the knowledge base), one per distinct set."""
    out: dict[str, Constraint] = {}
    for params in tested:
        clauses = [Clause(param=k, op="==", value=v) for k, v in sorted(params.items())]
        rule = structural_rule(family, clauses, "exact duplicate of a tested candidate",
                               iteration=iteration)
        out.setdefault(rule.rule_id, rule)
    return list(out.values())


# ------------------------------------------------------------------ sets
class Change(BaseModel):
    """One change from a constraint set's parent: what happened to which rule, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["added", "expired", "retested"]
    rule_id: str
    why: str


class ConstraintSet(BaseModel):
    """A version of the rules in force. ``constraint_set_id`` is a hash of ``rules``
    only, so equal rules give equal ids whatever the history."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    constraint_set_id: str
    parent_id: str | None = None
    iteration: int | None = None
    rules: tuple[Constraint, ...] = ()
    changes: tuple[Change, ...] = ()

    @classmethod
    def build(cls, rules: Iterable[Constraint], *, parent_id: str | None = None,
              iteration: int | None = None, changes: Iterable[Change] = ()) -> ConstraintSet:
        ordered = tuple(sorted(rules, key=lambda r: r.rule_id))
        return cls(constraint_set_id=set_id(ordered), parent_id=parent_id,
                   iteration=iteration, rules=ordered, changes=tuple(changes))

    @property
    def active(self) -> tuple[Constraint, ...]:
        """The rules samplers should get (hard and active soft ones)."""
        return tuple(r for r in self.rules if r.active)

    def get(self, rule_id: str) -> Constraint | None:
        return next((r for r in self.rules if r.rule_id == rule_id), None)

    def newest(self) -> tuple[str, ...]:
        """Ids of the active soft rules created at the latest iteration any of them was:
        what seed 004 §6.2 branch B disables for a while."""
        born = {r.rule_id: i for r in self.active
                if not r.hard and (i := r.created_at_iteration) is not None}
        last = max(born.values(), default=None)
        return tuple(rid for rid, i in born.items() if i == last)

    def active_without(self, rule_ids: Iterable[str]) -> tuple[Constraint, ...]:
        """The rules in force but ``rule_ids`` (hard rules are never left out)."""
        drop = set(rule_ids)
        return tuple(r for r in self.active if r.hard or r.rule_id not in drop)


def set_id(rules: Sequence[Constraint]) -> str:
    """``cs-`` + sha256 of the rules' canonical JSON, sorted by rule id."""
    body = json.dumps([r.model_dump(mode="json") for r in sorted(rules, key=lambda r: r.rule_id)],
                      sort_keys=True)
    return "cs-" + hashlib.sha256(body.encode()).hexdigest()[:16]


class Retest(BaseModel):
    """A proposal that broke soft rule ``rule_id`` and was evaluated: ``failed`` when
    it failed with that rule's code (the rule's prediction held)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_id: str
    strategy_id: str
    failed: bool


def retests_of(broken: Mapping[str, Sequence[str]], outcomes: Mapping[str, Sequence[str]],
               rules: Iterable[Constraint], *, use_secondary: bool = False) -> list[Retest]:
    """Re-tests from what the samplers report: ``broken`` maps a strategy id to the
    soft rules its parameters broke; ``outcomes`` maps it to its failure codes, primary
    first (missing or empty: it did not fail). Strategies not yet evaluated are left
    out by passing only evaluated ones in ``broken``."""
    code_of = {r.rule_id: r.code for r in rules}
    out = []
    for sid in sorted(broken):
        codes = tuple(outcomes.get(sid, ()))
        seen = codes if use_secondary else codes[:1]
        out += [Retest(rule_id=rid, strategy_id=sid, failed=code_of.get(rid) in seen)
                for rid in broken[sid]]
    return out


def update_set(current: ConstraintSet | None, *, learned: Iterable[Constraint] = (),
               retests: Iterable[Retest] = (), iteration: int | None = None,
               config: LearningConfig | None = None) -> ConstraintSet:
    """The next version: re-tests tallied, contradicted soft rules expired, new rules
    added (a learned rule whose id is already in the set, active or expired, is not
    added again: an expired rule stays retired). Returns ``current`` itself when
    nothing changed. :func:`constraint_update` also does the learning, in the order
    that keeps a retired rule's old evidence out."""
    base = current or ConstraintSet.build(())
    rules, changes = _retire(base, retests, iteration, config or LearningConfig())
    return _commit(base, rules, changes, learned, iteration)


def constraint_update(current: ConstraintSet | None, observations: Iterable[Observation],
                      families: Mapping[str, Family], *, retests: Iterable[Retest] = (),
                      iteration: int | None = None, config: LearningConfig | None = None,
                      monotone: Mapping[str, Mapping[str, int]] | None = None,
                      cache: RowCache | None = None) -> ConstraintSet:
    """One constraint update (the loop's CONSTRAINT_UPDATE), one new version at most:
    tally the re-tests and expire the rules they contradict, then :func:`learn` from
    ``observations`` (everything evaluated so far, failed or not) with the retired
    rules' old evidence left out, then add what is new. Deterministic."""
    cfg = config or LearningConfig()
    base = current or ConstraintSet.build(())
    rules, changes = _retire(base, retests, iteration, cfg)
    learned = learn(observations, families, config=cfg, iteration=iteration,
                    monotone=monotone, retired=rules.values(), cache=cache)
    return _commit(base, rules, changes, learned, iteration)


def _retire(base: ConstraintSet, retests: Iterable[Retest], iteration: int | None,
            cfg: LearningConfig) -> tuple[dict[str, Constraint], list[Change]]:
    rules = {r.rule_id: r for r in base.rules}
    changes: list[Change] = []
    _tally(rules, list(retests), changes)
    _expire(rules, cfg, iteration, changes)
    return rules, changes


def _commit(base: ConstraintSet, rules: dict[str, Constraint], changes: list[Change],
            learned: Iterable[Constraint], iteration: int | None) -> ConstraintSet:
    for rule in learned:
        if rule.rule_id not in rules and not _subsumed(rule, rules.values()):
            rules[rule.rule_id] = rule
            changes.append(Change(action="added", rule_id=rule.rule_id,
                                  why=rule.reason or "added"))
    if not changes:
        return base
    return ConstraintSet.build(rules.values(), parent_id=base.constraint_set_id,
                               iteration=iteration, changes=changes)


def _subsumed(rule: Constraint, rules: Iterable[Constraint]) -> bool:
    """A rule inside an active rule of the same family, kind and code adds nothing: it
    would count as a constraint change (resetting the loop's patience) while the space
    forbidden stays the same."""
    return any(r.active and (r.family, r.hard, r.code) == (rule.family, rule.hard, rule.code)
               and _contains(r.clauses, rule.clauses) for r in rules)


def _tally(rules: dict[str, Constraint], retests: list[Retest], changes: list[Change]) -> None:
    for rid in sorted({t.rule_id for t in retests}):
        rule = rules.get(rid)
        if rule is None or not rule.active or rule.hard:
            continue  # a re-test of a rule no longer in force teaches it nothing
        mine = [t for t in retests if t.rule_id == rid]
        hits = sum(t.failed for t in mine)
        rules[rid] = rule.model_copy(update={"retests": rule.retests + len(mine),
                                             "retest_hits": rule.retest_hits + hits})
        changes.append(Change(action="retested", rule_id=rid,
                              why=f"{hits} of {len(mine)} re-tests failed with {rule.code}"))


def _expire(rules: dict[str, Constraint], cfg: LearningConfig, iteration: int | None,
            changes: list[Change]) -> None:
    for rid, rule in sorted(rules.items()):
        why = contradiction(rule, cfg)
        if why is not None:
            rules[rid] = rule.model_copy(update={"status": "expired", "expiry_reason": why,
                                                 "expired_at_iteration": iteration})
            changes.append(Change(action="expired", rule_id=rid, why=why))


def contradiction(rule: Constraint, config: LearningConfig | None = None) -> str | None:
    """Why the re-tests contradict an active soft rule, or None: at least
    ``min_retests`` re-tests and the Wilson upper bound of their failure rate below
    ``min_confidence``."""
    cfg = config or LearningConfig()
    if rule.hard or not rule.active or rule.retests < cfg.min_retests:
        return None
    upper = wilson_interval(rule.retest_hits, rule.retests, cfg.alpha)[1]
    if upper >= cfg.min_confidence:
        return None
    return (f"re-tests contradict it: {rule.retest_hits} of {rule.retests} re-tested "
            f"candidates failed with {rule.code}; Wilson upper bound {upper:.3f} < "
            f"{cfg.min_confidence:g}")
