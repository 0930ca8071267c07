"""Samplers: propose parameter sets for a family, skipping what constraints forbid.

Four kinds share one contract (:class:`Sampler`):

- ``grid``: the family's grid in plain lexicographic order.
- ``random``: uniform over the grid points, from ``numpy.random.default_rng(seed)``.
- ``sobol``: a scrambled Sobol sequence (``scipy.stats.qmc``) mapped through each
  parameter's unit map; covers the space more evenly than random draws.
- ``tpe``: optuna's Tree-structured Parzen Estimator; :meth:`Sampler.tell` feeds it
  the objective (maximized) so later proposals move towards good regions.

Every proposal is normalized and screened before it reaches the caller: invalid
parameter sets (a family rule such as ``fast < slow`` broken), sets a constraint
forbids, and sets already proposed are dropped. The screen counts why, so the run can
record evidence (``rejected_by_constraint["c-17"] == 42``).

Hard and soft rules (MOD-451). A hard rule (``Constraint(hard=True)`` or any
callable) is never broken. A soft rule, learned from failures, steers: what it
forbids is rejected, except at *exploration points*, a seeded share ``explore``
(default :data:`EXPLORE_SHARE`, 10 %) of the parameter space that soft rules never
close, so that every soft rule keeps being re-tested. Whether a point explores is a
function of ``(seed, family, params)`` only (a hash, see :meth:`Sampler.explores`;
a sampler that replaces another keeps its seed for this, :meth:`Sampler.carry_over`),
so it does not depend on the sampler kind or the order of draws: about ``explore``
of the region a soft rule forbids stays proposable, and each proposal that breaks a
soft rule is listed in :attr:`Sampler.soft_breaks` (the loop counts those re-tests).
TPE is steered as well: every trial carries one optuna constraint per soft rule
(``Trial.set_constraint``, optuna >= 5: 1.0 broken, 0.0 kept), so the Parzen
estimators treat the soft-forbidden region as infeasible and draw less from it; with
an older optuna TPE is steered by rejection alone. Without soft rules every sampler
behaves exactly as before. Screening is bounded:
``ask(n)`` gives up after ``max(min_attempts, attempts_per_item * n)`` draws and
returns fewer sets (each kind caps the budget at ``max_attempts``), and an empty list
once the space is exhausted (:attr:`Sampler.exhausted`).

All randomness comes from ``seed``: the same seed, family, constraints and sequence
of ``ask``/``tell`` calls give the same proposals.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from alphaloop.errors import SpecError
from alphaloop.strategy.constraints import (
    Column,
    Constraint,
    ConstraintLike,
    constraint_id,
    forbidden_by,
    split_rules,
)
from alphaloop.strategy.templates import (
    ChoiceParam,
    Family,
    FloatParam,
    IntParam,
    Param,
    Params,
    get_family,
)

if TYPE_CHECKING:  # optuna and scipy.stats take ~1.5 s to import: only when used
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.trial import Trial

SamplerKind = Literal["grid", "random", "sobol", "tpe"]
SAMPLER_KINDS: tuple[str, ...] = ("grid", "random", "sobol", "tpe")
Key = tuple[tuple[str, Any], ...]
Verdict = Literal["ok", "explore", "invalid", "forbidden", "duplicate"]
#: Derived quantities of a parameter set (holding period, stop distance, ...) that
#: rules may talk about besides the parameters themselves: ``(family, params) -> {...}``.
Features = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]
EXPLORE_SHARE = 0.10
"""Default share of the parameter space where soft rules do not apply (re-tests)."""


def params_key(params: Mapping[str, Any]) -> Key:
    """A hashable identity for a normalized parameter set."""
    return tuple(sorted(params.items()))


class Sampler(ABC):
    """Common screening loop; subclasses only say how to draw the next candidate."""

    kind: str = "base"
    attempts_per_item: int = 50
    min_attempts: int = 500
    max_attempts: int = 1_000_000

    #: True for samplers that count the proposable grid points (to know when done)
    counts_capacity = False

    def __init__(self, family: Family, *, seed: int,
                 constraints: Sequence[ConstraintLike] = (),
                 explore: float = EXPLORE_SHARE, features: Features | None = None) -> None:
        if not 0.0 <= explore <= 1.0:
            raise ValueError(f"explore must lie in [0, 1], got {explore!r}")
        self.family = family
        self.seed = seed
        #: the seed of the exploration points; :meth:`carry_over` keeps the earlier one
        self.explore_seed = seed
        self.explore = float(explore)
        self.features = features
        self.rejected_by_constraint: Counter[str] = Counter()
        self.rejected_invalid = 0
        self.duplicates = 0
        #: proposals that break soft rules: params key -> ids of the rules broken
        self.soft_breaks: dict[Key, tuple[str, ...]] = {}
        self._seen: set[Key] = set()
        self._exhausted = False
        self._capacity: int | None = None
        self._grid: _GridTable | Literal[False] | None = None  # built at the first count
        #: per rule (hard, soft), the grid points it forbids: set by each count
        self._masks: tuple[list[np.ndarray], list[np.ndarray]] | None = None
        self._explored: dict[Key, bool] = {}  # explores(), per point
        self._explore_known: np.ndarray | None = None  # ... and per grid point
        self._explore_mask: np.ndarray | None = None
        #: from the last count: the grid points the rules keep closed, and those a soft
        #: rule forbids (open where they explore)
        self._blocked: np.ndarray | None = None
        self._soft_any: np.ndarray | None = None
        self.set_constraints(constraints)

    # ------------------------------------------------------------ public
    def ask(self, n: int) -> list[Params]:
        """Up to ``n`` new, valid, allowed parameter sets (fewer if the space runs out)."""
        out: list[Params] = []
        budget = min(self.max_attempts, max(self.min_attempts, self.attempts_per_item * n))
        while len(out) < n and budget > 0 and not self._exhausted:
            raw = self._draw()
            if raw is None:
                self._exhausted = True
                break
            budget -= 1
            clean, verdict = self._screen(raw)
            self._after_screen(clean, verdict)
            if verdict in ("ok", "explore"):
                self._seen.add(params_key(clean))
                out.append(clean)
        return out

    def tell(self, params: Mapping[str, Any], value: float) -> None:
        """Report the objective of ``params`` (higher is better). Ignored by default."""
        return None

    @property
    def exhausted(self) -> bool:
        """True once the sampler knows it has nothing new left to propose."""
        return self._exhausted

    @property
    def proposed(self) -> int:
        return len(self._seen)

    def carry_over(self, earlier: Sampler) -> None:
        """Treat what ``earlier`` proposed as proposed here: a sampler that replaces
        another over a wider space (seed 004 §6.2 branch A) must not propose it again.
        The exploration points stay those of ``earlier``, so the same share of each soft
        rule's region stays open to re-tests."""
        self._seen |= earlier._seen
        self.soft_breaks.update(earlier.soft_breaks)
        self.explore_seed = earlier.explore_seed
        self._explored, self._explore_known = {}, None  # they were of the other seed
        self._capacity = None  # the capacity depends on both: count it again
        self.set_constraints(self.constraints)

    def set_constraints(self, constraints: Sequence[ConstraintLike]) -> None:
        """Replace the rules for the draws to come (the constraint update of an
        iteration, or a branch that disables the newest rules). What was proposed stays
        proposed; a grid sampler does not go back to points it already skipped (make a
        new sampler and :meth:`carry_over` for that). The same rules again (most
        constraint updates change nothing) only reopen the draws: the allowed count they
        give is the one already known, so the grid is not walked again."""
        rules = tuple(constraints)
        same = rules == getattr(self, "constraints", None) and self._capacity is not None
        self.constraints: tuple[ConstraintLike, ...] = rules
        self._hard, self._soft = split_rules(self.constraints)
        self._exhausted = False
        if self.counts_capacity and not same:
            self._capacity = self._count_allowed()

    def explores(self, params: Mapping[str, Any]) -> bool:
        """True when ``params`` (normalized) is an exploration point, where soft rules
        do not apply: a sha256 of (``explore_seed``, family, params) read as a number in
        [0, 1) falls below ``explore``. Deterministic and independent of the draw order
        (remembered per point: the screen and the capacity count ask again and again)."""
        if self.explore <= 0.0:
            return False
        key = params_key(params)
        hit = self._explored.get(key)
        if hit is None:
            hit = self._explored[key] = _explore_hit(f"{self._explore_prefix}{key!r}",
                                                     self.explore)
        return hit

    @property
    def _explore_prefix(self) -> str:
        return f"{self.explore_seed}|{self.family.name}|"

    def rules_against(self, params: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """Ids of the hard and of the soft rules that forbid ``params`` (normalized)."""
        at = self._grid.index_of(params) if self._grid else None
        if at is not None and self._masks is not None:  # read off the last count's masks
            hard_masks, soft_masks = self._masks
            return ([constraint_id(r) for r, m in zip(self._hard, hard_masks, strict=True)
                     if m[at]],
                    [constraint_id(r) for r, m in zip(self._soft, soft_masks, strict=True)
                     if m[at]])
        view = rule_view(self.features, self.family.name, params)
        return (forbidden_by(self._hard, self.family.name, view),
                forbidden_by(self._soft, self.family.name, view))

    def proposable(self, params: Mapping[str, Any]) -> bool:
        """True when the rules let ``params`` (normalized) be proposed at all."""
        hard, soft = self.rules_against(params)
        return not hard and (not soft or self.explores(params))

    def _count_allowed(self) -> int | None:
        """How many grid points :meth:`proposable` allows, or None (no grid, or too big
        to count). Lets random, Sobol and TPE samplers notice that everything has been
        proposed instead of drawing duplicates until their attempt budget runs out.
        Every rule is asked about every point at once (:meth:`Constraint.mask`); only
        the points a soft rule alone forbids are asked whether they explore."""
        if self._grid is None:
            self._grid = _GridTable.of(self.family, self.features) or False
        grid = self._grid
        if grid is False:
            return None
        self._masks = ([grid.forbidden(r) for r in self._hard],
                       [grid.forbidden(r) for r in self._soft])
        hard = _any(self._masks[0], grid.n)
        soft = _any(self._masks[1], grid.n) & ~hard
        self._blocked = hard | (soft & ~self._exploring(grid, soft))
        self._soft_any = soft
        return grid.n - int(self._blocked.sum())

    def _exploring(self, grid: _GridTable, asked: np.ndarray) -> np.ndarray:
        """Which grid points explore (known at least where ``asked``): each point's
        hash is taken once per sampler, the first time a count needs it."""
        if self._explore_known is None or len(self._explore_known) != grid.n:
            self._explore_known = np.zeros(grid.n, dtype=bool)
            self._explore_mask = np.zeros(grid.n, dtype=bool)
        assert self._explore_mask is not None
        todo = np.flatnonzero(asked & ~self._explore_known)
        if len(todo) and self.explore > 0.0:
            self._explore_mask[todo] = _explore_hits(
                grid.key_texts(todo, self._explore_prefix), self.explore)
        self._explore_known |= asked
        return self._explore_mask

    def broken_soft_rules(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """Ids of the soft rules a proposal of this sampler broke (empty: none)."""
        return self.soft_breaks.get(params_key(self.family.validate(params)), ())

    # ----------------------------------------------------------- screening
    def _screen(self, raw: Mapping[str, Any]) -> tuple[Params, Verdict]:
        """Normalize ``raw`` and say whether it may be proposed; count rejections."""
        try:
            clean = self.family.validate(raw)
        except SpecError:
            self.rejected_invalid += 1
            return dict(raw), "invalid"
        hard, soft = self.rules_against(clean)
        blocked = hard or (soft if soft and not self.explores(clean) else [])
        if blocked:
            self.rejected_by_constraint.update(blocked)
            return clean, "forbidden"
        key = params_key(clean)
        if key in self._seen:
            self.duplicates += 1
            return clean, "duplicate"
        if soft:
            self.soft_breaks[key] = tuple(soft)
            return clean, "explore"
        return clean, "ok"

    def _after_screen(self, clean: Params, verdict: Verdict) -> None:
        """Hook called for every draw with its verdict (TPE reports it to optuna)."""
        return None

    @abstractmethod
    def _draw(self) -> Mapping[str, Any] | None:
        """The next raw candidate, or None when the space is exhausted."""


class GridSampler(Sampler):
    """The family's valid grid, in order; exhausted at the end of the grid."""

    kind = "grid"
    min_attempts = max_attempts = 10_000_000  # the grid itself is the bound

    def __init__(self, family: Family, *, seed: int, constraints: Sequence[ConstraintLike] = (),
                 explore: float = EXPLORE_SHARE, features: Features | None = None) -> None:
        super().__init__(family, seed=seed, constraints=constraints, explore=explore,
                         features=features)
        self._it: Iterator[Params] = family.grid()

    def _draw(self) -> Params | None:
        return next(self._it, None)


class _UnitCubeSampler(Sampler):
    """Draws points of the unit cube and maps them through the parameters' unit maps.

    Knows the grid size when the family has one, and stops once every valid grid
    point has been proposed. There, :meth:`ask` screens a block of draws at once
    (:meth:`_ask_block`): the same draws in the same order get the same verdicts as the
    one-by-one screen, read off the grid's masks, so a seed proposes the same sets
    either way; only the cost differs (a learned rule can make most draws rejections).
    """

    counts_capacity = True
    block = 64

    def __init__(self, family: Family, *, seed: int, constraints: Sequence[ConstraintLike] = (),
                 explore: float = EXPLORE_SHARE, features: Features | None = None) -> None:
        self._points = np.empty((0, len(family.params)))  # drawn, not yet screened
        self._seen_at: np.ndarray | None = None  # grid points in ``_seen``
        self._seen_n = 0  # ... when there were this many
        super().__init__(family, seed=seed, constraints=constraints, explore=explore,
                         features=features)

    def ask(self, n: int) -> list[Params]:
        if not isinstance(self._grid, _GridTable) or self._blocked is None \
                or self._capacity is None:
            return super().ask(n)
        return self._ask_block(n, self._grid)

    def _draw(self) -> Params | None:
        if self._capacity is not None and len(self._seen) >= self._capacity:
            return None
        point = self._next_points()[0]
        self._points = self._points[1:]
        return self.family.from_unit(point.tolist())

    def _next_points(self) -> np.ndarray:
        """The draws to come (at least one): the buffer, refilled a block at a time."""
        if not len(self._points):
            self._points = self._unit_block(self.block)
        return self._points

    @abstractmethod
    def _unit_block(self, n: int) -> np.ndarray:
        """The next ``n`` points of [0, 1)^d (d = number of parameters), in order."""

    # ------------------------------------------------------------ block screen
    def _ask_block(self, n: int, grid: _GridTable) -> list[Params]:
        """:meth:`Sampler.ask` for a counted grid, a block of draws at a time."""
        assert self._blocked is not None and self._soft_any is not None
        assert self._capacity is not None
        out: list[Params] = []
        budget = min(self.max_attempts, max(self.min_attempts, self.attempts_per_item * n))
        seen = self._seen_mask(grid)
        while len(out) < n and budget > 0 and not self._exhausted:
            if len(self._seen) >= self._capacity:
                self._exhausted = True
                break
            points = self._next_points()[:budget]
            at = grid.locate(points)
            valid = at >= 0
            g = np.where(valid, at, 0)
            open_ = valid & ~self._blocked[g]
            first = np.zeros(len(g), dtype=bool)
            first[np.unique(np.where(open_, g, -1), return_index=True)[1]] = True
            new = open_ & first & ~seen[g]
            m, stop = self._consumed(new, n - len(out), self._capacity - len(self._seen))
            self._points = self._points[m:]
            budget -= m
            self._count(g[:m], valid[:m], open_[:m], new[:m])
            for i in g[:m][new[:m]].tolist():
                out.append(self._accept(grid, i, seen))
            self._exhausted = stop
        return out

    @staticmethod
    def _consumed(new: np.ndarray, wanted: int, room: int) -> tuple[int, bool]:
        """How many of the block's draws the one-by-one loop would make: up to the
        ``wanted``-th new set, or until ``room`` new sets fill the capacity (then the
        next draw finds the space exhausted: True)."""
        taken = np.cumsum(new)
        if room < wanted and taken[-1] >= room:
            return int(np.searchsorted(taken, room)) + 1, True
        if taken[-1] >= wanted:
            return int(np.searchsorted(taken, wanted)) + 1, False
        return len(new), False

    def _count(self, g: np.ndarray, valid: np.ndarray, open_: np.ndarray,
               new: np.ndarray) -> None:
        """The rejection counters the one-by-one screen keeps, for a screened block."""
        self.rejected_invalid += int((~valid).sum())
        self.duplicates += int((open_ & ~new).sum())
        closed = g[valid & ~open_]
        if not len(closed) or self._masks is None:
            return
        hard_masks, soft_masks = self._masks
        hard_hit = _any([m[closed] for m in hard_masks], len(closed))
        for rules, masks, rows in ((self._hard, hard_masks, hard_hit),
                                   (self._soft, soft_masks, ~hard_hit)):
            for rule, mask in zip(rules, masks, strict=True):
                k = int((mask[closed] & rows).sum())
                if k:
                    self.rejected_by_constraint[constraint_id(rule)] += k

    def _accept(self, grid: _GridTable, i: int, seen: np.ndarray) -> Params:
        assert self._soft_any is not None and self._masks is not None
        clean = grid.point(i)
        key = params_key(clean)
        self._seen.add(key)
        self._seen_n += 1
        seen[i] = True
        if self._soft_any[i]:
            self.soft_breaks[key] = tuple(constraint_id(r) for r, m in
                                          zip(self._soft, self._masks[1], strict=True) if m[i])
        return clean

    def _seen_mask(self, grid: _GridTable) -> np.ndarray:
        """The grid points already proposed (rebuilt when ``_seen`` grew elsewhere)."""
        # ``_seen`` only grows, and the block screen adds to both: a new length means
        # that sets were added elsewhere (the one-by-one screen, :meth:`carry_over`)
        if self._seen_at is None or self._seen_n != len(self._seen):
            self._seen_at = np.zeros(grid.n, dtype=bool)
            for key in self._seen:
                at = grid.index_of(dict(key))
                if at is not None:
                    self._seen_at[at] = True
        self._seen_n = len(self._seen)
        return self._seen_at


class RandomSampler(_UnitCubeSampler):
    kind = "random"

    def __init__(self, family: Family, *, seed: int, constraints: Sequence[ConstraintLike] = (),
                 explore: float = EXPLORE_SHARE, features: Features | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        super().__init__(family, seed=seed, constraints=constraints, explore=explore,
                         features=features)

    def _unit_block(self, n: int) -> np.ndarray:
        # one (n, d) draw is the same stream as n draws of d numbers
        return self._rng.random((n, len(self.family.params)))


class SobolSampler(_UnitCubeSampler):
    """Scrambled Sobol points, drawn in blocks of 64 (a power of two keeps balance)."""

    kind = "sobol"

    def __init__(self, family: Family, *, seed: int, constraints: Sequence[ConstraintLike] = (),
                 explore: float = EXPLORE_SHARE, features: Features | None = None) -> None:
        from scipy.stats import qmc

        # ``seed=`` works on every scipy we support (>= 1.11); ``rng=`` only on >= 1.15
        self._engine = qmc.Sobol(len(family.params), scramble=True, seed=seed)
        super().__init__(family, seed=seed, constraints=constraints, explore=explore,
                         features=features)

    def _unit_block(self, n: int) -> np.ndarray:
        return np.asarray(self._engine.random(n))


class TPESampler(Sampler):
    """optuna TPE behind the common contract.

    Each draw is an optuna trial. Invalid and forbidden draws are told to the study as
    PRUNED (TPE treats them as bad outcomes and moves away); a repeat of a set whose
    value is known is told that value again; any other repeat is told FAIL (ignored).
    Accepted draws stay open until :meth:`tell`. :meth:`tell` of a set this sampler
    never proposed adds it to the study as a finished trial (a warm start).
    """

    kind = "tpe"
    attempts_per_item = 20  # each attempt is an optuna trial: keep the screen short
    min_attempts = 200
    max_attempts = 1000
    counts_capacity = True

    def __init__(self, family: Family, *, seed: int, constraints: Sequence[ConstraintLike] = (),
                 explore: float = EXPLORE_SHARE, features: Features | None = None) -> None:
        super().__init__(family, seed=seed, constraints=constraints, explore=explore,
                         features=features)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-feature warnings
            sampler = optuna.samplers.TPESampler(seed=seed)
        self.study: optuna.Study = optuna.create_study(direction="maximize", sampler=sampler)
        self._dists = {k: _distribution(p) for k, p in family.params.items()}
        self._trial: Trial | None = None
        self._open: dict[Key, Trial] = {}
        self._values: dict[Key, float] = {}

    def _draw(self) -> Params | None:
        if self._capacity is not None and len(self._seen) >= self._capacity:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._trial = self.study.ask(self._dists)
        return dict(self._trial.params)

    def _after_screen(self, clean: Params, verdict: Verdict) -> None:
        from optuna.trial import TrialState

        assert self._trial is not None
        trial, self._trial = self._trial, None
        if verdict != "invalid":
            self._mark_soft(trial, clean)
        if verdict in ("ok", "explore"):
            self._open[params_key(clean)] = trial
        elif verdict == "duplicate" and params_key(clean) in self._values:
            self.study.tell(trial, self._values[params_key(clean)])
        elif verdict == "duplicate":  # still awaiting its value: say nothing about it
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, state=TrialState.PRUNED)

    def tell(self, params: Mapping[str, Any], value: float) -> None:
        from optuna.trial import TrialState, create_trial

        clean = self.family.validate(params)
        key = params_key(clean)
        finite = math.isfinite(_as_float(value))
        trial = self._open.pop(key, None)
        if trial is not None:
            if finite:
                self.study.tell(trial, float(value))
            else:
                self.study.tell(trial, state=TrialState.FAIL)
        elif finite and key not in self._values:
            frozen = create_trial(params=clean, distributions=self._dists, value=float(value))
            self._mark_soft(frozen, clean)
            self.study.add_trial(frozen)
        if finite:
            self._values[key] = float(value)
        if self.proposable(clean):
            self._seen.add(key)  # evaluated already: never propose it again

    def _mark_soft(self, trial: Any, clean: Params) -> None:
        """Tell optuna which soft rules the trial breaks (1.0) or keeps (0.0): TPE
        treats a trial with any positive constraint as infeasible and samples less near
        it. Only with soft rules (so plain runs are unchanged) and optuna >= 5."""
        if not self._soft or not hasattr(trial, "set_constraint"):
            return
        broken = set(self.rules_against(clean)[1])
        for rule in self._soft:
            trial.set_constraint(rule.rule_id, 1.0 if rule.rule_id in broken else 0.0)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _distribution(param: Param) -> BaseDistribution:
    """The optuna search distribution of one parameter space."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(param, IntParam):
        return IntDistribution(param.low, param.high, step=param.step)
    if isinstance(param, FloatParam):
        return FloatDistribution(param.low, param.high, step=param.step)
    if isinstance(param, ChoiceParam):
        return CategoricalDistribution(param.choices)
    raise TypeError(f"unsupported parameter space {param!r}")


def rule_view(features: Features | None, family: str,
              params: Mapping[str, Any]) -> Mapping[str, Any]:
    """What rules see of ``params``: its derived features, and the parameters over them."""
    return params if features is None else {**features(family, params), **params}


def _explore_hit(text: str, share: float) -> bool:
    """Whether the point named ``text`` explores: its sha256 read as a number in [0, 1)
    falls below ``share``."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < share


def _explore_hits(texts: list[str], share: float) -> list[bool]:
    """:func:`_explore_hit` of each text, the same arithmetic in one comprehension (a
    grid of a million points asks a million times)."""
    sha, scale = hashlib.sha256, 2.0**64
    return [int.from_bytes(sha(t.encode()).digest()[:8], "big") / scale < share
            for t in texts]


def _any(masks: Sequence[np.ndarray], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    for mask in masks:
        out |= mask
    return out


class _GridTable:
    """A family's valid grid as columns (a sampler builds it once): the capacity count
    asks each rule about all points at once, and the screen then reads a drawn point's
    rules off those masks by the point's index.

    Point ``i`` is kept as its index into the product of the parameters' grids
    (row-major, the order of :meth:`Family.grid`); parameter columns are built from
    those indices, so a grid of a million points costs arrays, not a million dicts.
    Derived features are asked point by point (the function is the caller's), hence
    the smaller limit with ``features``."""

    def __init__(self, family: Family, features: Features | None) -> None:
        self.names = list(family.params)
        self.family, self.features = family.name, features
        self._grids = [family.params[n].grid() for n in self.names]
        self.sizes = [len(g) for g in self._grids]
        self._where = [{v: k for k, v in enumerate(g)} for g in self._grids]
        self._strides = [math.prod(self.sizes[j + 1:]) for j in range(len(self.sizes))]
        self.flat = self._valid(family)
        self.n = len(self.flat)
        self._at_flat = np.full(math.prod(self.sizes), -1, dtype=np.int64)
        self._at_flat[self.flat] = np.arange(self.n)
        digits = self._digits(self.flat)
        if features is None:
            self.columns = {name: Column.indexed(grid, d) for name, grid, d
                            in zip(self.names, self._grids, digits, strict=True)}
        else:
            self.columns = Column.table([self.view(i) for i in range(self.n)])

    def _valid(self, family: Family) -> np.ndarray:
        """The product indices of the valid combinations. A rule with a column form
        (:attr:`Rule.columns`) is asked about every point at once; any other rule point
        by point, on the points the column rules left."""
        flat = np.arange(math.prod(self.sizes), dtype=np.int64)
        by_column = [r for r in family.rules if r.columns is not None]
        by_point = [r for r in family.rules if r.columns is None]
        if by_column:
            values = [np.asarray(g)[d] for g, d in zip(self._grids, self._digits(flat),
                                                        strict=True)]
            cols = dict(zip(self.names, values, strict=True))
            keep = np.ones(len(flat), dtype=bool)
            for rule in by_column:
                assert rule.columns is not None
                keep &= np.asarray(rule.columns(cols), dtype=bool)
            flat = flat[keep]
        if by_point:
            flat = np.fromiter(
                (k for k in flat.tolist() if all(r.check(self._params(k)) for r in by_point)),
                dtype=np.int64)
        return flat

    def _params(self, k: int) -> Params:
        """The parameter set of product index ``k``."""
        return {name: grid[d] for name, grid, d
                in zip(self.names, self._grids, self._digits(k), strict=True)}

    @classmethod
    def of(cls, family: Family, features: Features | None) -> _GridTable | None:
        """The table, or None when a parameter has no grid or the grid is too big."""
        sizes = [p.n_points for p in family.params.values()]
        limit = GRID_TABLE_LIMIT if features is None else GRID_TABLE_LIMIT // 5
        if any(s is None for s in sizes) or math.prod(s for s in sizes if s is not None) > limit:
            return None
        return cls(family, features)

    def _digits(self, flat: Any) -> list[Any]:
        """Per parameter, the index into its grid of each product index in ``flat``."""
        return [flat // stride % size
                for stride, size in zip(self._strides, self.sizes, strict=True)]

    def point(self, i: int) -> Params:
        return self._params(int(self.flat[i]))

    def key_texts(self, at: np.ndarray, prefix: str = "") -> list[str]:
        """``prefix + repr(params_key(self.point(i)))`` for each ``i`` in ``at`` (what
        :meth:`Sampler.explores` hashes), from each grid value's text made once and
        joined column by column (numpy adds object arrays of strings element-wise)."""
        order = sorted(range(len(self.names)), key=lambda j: self.names[j])
        every = self._digits(self.flat[at])
        out = np.full(len(at), prefix + "(", dtype=object)
        for n, j in enumerate(order):
            sep = ", " if n else ""
            texts = np.array([f"{sep}({self.names[j]!r}, {v!r})" for v in self._grids[j]],
                             dtype=object)
            out += texts[every[j]]
        out += ",)" if len(order) == 1 else ")"  # a 1-tuple's repr keeps its comma
        return out.tolist()

    def index_of(self, params: Mapping[str, Any]) -> int | None:
        """The index of a normalized parameter set, or None (off the grid, invalid)."""
        flat = 0
        for name, where, size in zip(self.names, self._where, self.sizes, strict=True):
            try:
                k = where.get(params.get(name, _MISSING))
            except TypeError:  # an unhashable value is on no grid
                return None
            if k is None:
                return None
            flat = flat * size + k
        at = int(self._at_flat[flat])
        return at if at >= 0 else None

    def locate(self, points: np.ndarray) -> np.ndarray:
        """Each unit-cube point's grid index, as the parameters' unit maps place it
        (-1: the family's rules make that combination invalid)."""
        flat = np.zeros(len(points), dtype=np.int64)
        for j, size in enumerate(self.sizes):
            flat = flat * size + np.minimum((points[:, j] * size).astype(np.int64), size - 1)
        return self._at_flat[flat]

    def view(self, i: int) -> Mapping[str, Any]:
        return rule_view(self.features, self.family, self.point(i))

    def forbidden(self, rule: ConstraintLike) -> np.ndarray:
        """The points ``rule`` forbids (a callable rule is asked point by point)."""
        if isinstance(rule, Constraint):
            return rule.mask(self.family, self.columns, self.n)
        return np.fromiter((bool(rule(self.family, self.view(i))) for i in range(self.n)),
                           dtype=bool, count=self.n)


_MISSING = object()
#: The largest grid (product of the parameters' grids) a sampler keeps as a table.
GRID_TABLE_LIMIT = 1_000_000


_KINDS: dict[str, type[Sampler]] = {
    "grid": GridSampler, "random": RandomSampler, "sobol": SobolSampler, "tpe": TPESampler}


def make_sampler(kind: str, family: Family | str, *, seed: int,
                 constraints: Sequence[ConstraintLike] = (), explore: float = EXPLORE_SHARE,
                 features: Features | None = None) -> Sampler:
    """A sampler of ``kind`` over ``family`` (a :class:`Family` or its name).

    ``explore`` is the share of the space where soft rules do not apply (0 turns
    re-testing off); ``features`` derives the quantities rules may name besides the
    parameters. Unknown kinds raise SpecError ``SPEC_UNKNOWN_SAMPLER`` listing the
    known ones.
    """
    cls = _KINDS.get(kind)
    if cls is None:
        raise SpecError(f"unknown sampler {kind!r}; known samplers: {', '.join(SAMPLER_KINDS)}",
                        code="SPEC_UNKNOWN_SAMPLER")
    fam = get_family(family) if isinstance(family, str) else family
    return cls(fam, seed=seed, constraints=constraints, explore=explore, features=features)

