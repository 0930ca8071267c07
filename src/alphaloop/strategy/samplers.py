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
record evidence (``rejected_by_constraint["c-17"] == 42``). Screening is bounded:
``ask(n)`` gives up after ``max(min_attempts, attempts_per_item * n)`` draws and
returns fewer sets (each kind caps the budget at ``max_attempts``), and an empty list
once the space is exhausted (:attr:`Sampler.exhausted`).

All randomness comes from ``seed``: the same seed, family, constraints and sequence
of ``ask``/``tell`` calls give the same proposals.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from alphaloop.errors import SpecError
from alphaloop.strategy.constraints import ConstraintLike, forbidden_by
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
Verdict = Literal["ok", "invalid", "forbidden", "duplicate"]


def params_key(params: Mapping[str, Any]) -> Key:
    """A hashable identity for a normalized parameter set."""
    return tuple(sorted(params.items()))


class Sampler(ABC):
    """Common screening loop; subclasses only say how to draw the next candidate."""

    kind: str = "base"
    attempts_per_item: int = 50
    min_attempts: int = 500
    max_attempts: int = 1_000_000

    def __init__(self, family: Family, *, seed: int,
                 constraints: Sequence[ConstraintLike] = ()) -> None:
        self.family = family
        self.seed = seed
        self.constraints: tuple[ConstraintLike, ...] = tuple(constraints)
        self.rejected_by_constraint: Counter[str] = Counter()
        self.rejected_invalid = 0
        self.duplicates = 0
        self._seen: set[Key] = set()
        self._exhausted = False

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
            if verdict == "ok":
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
        another over a wider space (seed 004 §6.2 branch A) must not propose it again."""
        self._seen |= earlier._seen

    # ----------------------------------------------------------- screening
    def _screen(self, raw: Mapping[str, Any]) -> tuple[Params, Verdict]:
        """Normalize ``raw`` and say whether it may be proposed; count rejections."""
        try:
            clean = self.family.validate(raw)
        except SpecError:
            self.rejected_invalid += 1
            return dict(raw), "invalid"
        rules = forbidden_by(self.constraints, self.family.name, clean)
        if rules:
            self.rejected_by_constraint.update(rules)
            return clean, "forbidden"
        if params_key(clean) in self._seen:
            self.duplicates += 1
            return clean, "duplicate"
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

    def __init__(self, family: Family, *, seed: int,
                 constraints: Sequence[ConstraintLike] = ()) -> None:
        super().__init__(family, seed=seed, constraints=constraints)
        self._it: Iterator[Params] = family.grid()

    def _draw(self) -> Params | None:
        return next(self._it, None)


class _UnitCubeSampler(Sampler):
    """Draws points of the unit cube and maps them through the parameters' unit maps.

    Knows the grid size when the family has one, and stops once every valid grid
    point has been proposed.
    """

    def __init__(self, family: Family, *, seed: int,
                 constraints: Sequence[ConstraintLike] = ()) -> None:
        super().__init__(family, seed=seed, constraints=constraints)
        self._capacity = _allowed_count(family, self.constraints)

    def _draw(self) -> Params | None:
        if self._capacity is not None and len(self._seen) >= self._capacity:
            return None
        return self.family.from_unit(self._unit_point())

    @abstractmethod
    def _unit_point(self) -> Sequence[float]:
        """One point of [0, 1)^d, d = number of parameters."""


class RandomSampler(_UnitCubeSampler):
    kind = "random"

    def __init__(self, family: Family, *, seed: int,
                 constraints: Sequence[ConstraintLike] = ()) -> None:
        super().__init__(family, seed=seed, constraints=constraints)
        self._rng = np.random.default_rng(seed)

    def _unit_point(self) -> Sequence[float]:
        return list(self._rng.random(len(self.family.params)))


class SobolSampler(_UnitCubeSampler):
    """Scrambled Sobol points, drawn in blocks of 64 (a power of two keeps balance)."""

    kind = "sobol"
    block = 64

    def __init__(self, family: Family, *, seed: int,
                 constraints: Sequence[ConstraintLike] = ()) -> None:
        super().__init__(family, seed=seed, constraints=constraints)
        from scipy.stats import qmc

        # ``seed=`` works on every scipy we support (>= 1.11); ``rng=`` only on >= 1.15
        self._engine = qmc.Sobol(len(family.params), scramble=True, seed=seed)
        self._buffer: list[list[float]] = []

    def _unit_point(self) -> Sequence[float]:
        if not self._buffer:
            self._buffer = self._engine.random(self.block).tolist()[::-1]
        return self._buffer.pop()


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

    def __init__(self, family: Family, *, seed: int,
                 constraints: Sequence[ConstraintLike] = ()) -> None:
        super().__init__(family, seed=seed, constraints=constraints)
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
        self._capacity = _allowed_count(family, self.constraints)

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
        if verdict == "ok":
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
            self.study.add_trial(create_trial(
                params=clean, distributions=self._dists, value=float(value)))
        if finite:
            self._values[key] = float(value)
        if not forbidden_by(self.constraints, self.family.name, clean):
            self._seen.add(key)  # evaluated already: never propose it again


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


def _allowed_count(family: Family, constraints: Sequence[ConstraintLike],
                   limit: int = 200_000) -> int | None:
    """How many grid points are valid and allowed, or None (no grid, or too big to count).

    Lets random, Sobol and TPE samplers notice that everything has been proposed
    instead of drawing duplicates until their attempt budget runs out.
    """
    sizes = [p.n_points for p in family.params.values()]
    if any(s is None for s in sizes) or math.prod(s for s in sizes if s is not None) > limit:
        return None
    return sum(1 for p in family.grid() if not forbidden_by(constraints, family.name, p))


_KINDS: dict[str, type[Sampler]] = {
    "grid": GridSampler, "random": RandomSampler, "sobol": SobolSampler, "tpe": TPESampler}


def make_sampler(kind: str, family: Family | str, *, seed: int,
                 constraints: Sequence[ConstraintLike] = ()) -> Sampler:
    """A sampler of ``kind`` over ``family`` (a :class:`Family` or its name).

    Unknown kinds raise SpecError ``SPEC_UNKNOWN_SAMPLER`` listing the known ones.
    """
    cls = _KINDS.get(kind)
    if cls is None:
        raise SpecError(f"unknown sampler {kind!r}; known samplers: {', '.join(SAMPLER_KINDS)}",
                        code="SPEC_UNKNOWN_SAMPLER")
    fam = get_family(family) if isinstance(family, str) else family
    return cls(fam, seed=seed, constraints=constraints)

