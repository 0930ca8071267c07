"""Constraints: rules over a family's parameter space that samplers must respect.

Constraint learning (MOD-450/451) turns repeated failures into rules such as
"``sma_cross`` with ``fast <= 10`` and ``slow <= 40`` is ``TOO_FEW_TRADES``-prone"::

    Constraint(rule_id="c-17", family="sma_cross",
               clauses=[Clause(param="fast", op="<=", value=10),
                        Clause(param="slow", op="<=", value=40)],
               reason="TOO_FEW_TRADES in 41 of 44 candidates")

A constraint *forbids* a candidate when its family matches (``family=None`` matches
every family) and **all** its clauses hold. A constraint with no clauses therefore
forbids its whole family. A clause over a parameter the candidate does not have does
not hold, so a rule never forbids what it cannot talk about.

Rules are plain pydantic data, so they serialize to JSON/YAML and into the
knowledge base. Samplers also accept any callable ``(family, params) -> bool``
(True = forbidden) for ad-hoc rules; :func:`forbidden_by` names it by its
``__name__``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from alphaloop.strategy.expression import format_number

ClauseOp = Literal["<", "<=", ">", ">=", "==", "!="]
_ORDER: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class Clause(BaseModel):
    """One comparison ``params[param] <op> value``.

    Numbers compare numerically (``==``/``!=`` with a 1e-9 relative tolerance, as
    grid values are floats); strings compare only with ``==``/``!=``, and an
    ordering (``<``, ``<=``, ``>``, ``>=``) of strings never holds. Across types (a
    string against a number) the values differ: ``==`` never holds, ``!=`` always
    holds, and an ordering never holds. A parameter value that is not a number
    (``None``, a bool, NaN) compared with a number likewise satisfies only ``!=``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    param: str = Field(min_length=1)
    op: ClauseOp
    value: float | str

    def holds(self, params: Mapping[str, Any]) -> bool:
        """True when the candidate has ``param`` and the comparison is true."""
        if self.param not in params:
            return False
        return _compare(params[self.param], self.op, self.value)

    def __str__(self) -> str:
        shown = repr(self.value) if isinstance(self.value, str) else format_number(self.value)
        return f"{self.param} {self.op} {shown}"


class Constraint(BaseModel):
    """A rule that forbids candidates of ``family`` satisfying every clause.

    Two kinds (:attr:`kind`):

    - **hard** (``hard=True``, the default): structurally impossible or an exact
      duplicate. Samplers never propose what a hard rule forbids.
    - **soft** (``hard=False``): learned from failures (MOD-450) with ``support``
      (candidates the rule covered when it was learned), ``hits`` (of those, how many
      failed with ``code``), ``confidence = hits / support`` and ``confidence_lower``
      (its Wilson lower bound). Samplers steer away from a soft rule but let an
      exploration share of proposals break it, so that it is re-tested
      (:mod:`alphaloop.strategy.samplers`); ``retests``/``retest_hits`` tally those
      re-tests, and a rule the re-tests contradict is retired: ``status="expired"``,
      with ``expired_at_iteration`` and ``expiry_reason``.

    An expired rule forbids nothing; it stays in its constraint set as history.
    Every learning field has a default, so rules written before they existed still
    load.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_id: str = Field(min_length=1)
    family: str | None = None
    clauses: list[Clause] = Field(default_factory=list)
    reason: str = ""
    hard: bool = True
    code: str | None = None
    support: int = Field(default=0, ge=0)
    hits: int = Field(default=0, ge=0)
    confidence: float | None = Field(default=None, ge=0, le=1)
    confidence_lower: float | None = Field(default=None, ge=0, le=1)
    created_at_iteration: int | None = None
    status: Literal["active", "expired"] = "active"
    retests: int = Field(default=0, ge=0)
    retest_hits: int = Field(default=0, ge=0)
    expired_at_iteration: int | None = None
    expiry_reason: str = ""

    @property
    def kind(self) -> Literal["hard", "soft"]:
        """``"hard"`` or ``"soft"`` (the ``hard`` flag in words, as the KB stores it)."""
        return "hard" if self.hard else "soft"

    @property
    def active(self) -> bool:
        return self.status == "active"

    def forbids(self, family: str, params: Mapping[str, Any]) -> bool:
        """True when this rule is active, applies to ``family`` and all clauses hold."""
        if not self.active or (self.family is not None and self.family != family):
            return False
        return all(clause.holds(params) for clause in self.clauses)

    def __str__(self) -> str:
        scope = self.family or "*"
        body = " and ".join(str(c) for c in self.clauses) or "always"
        return f"{self.rule_id}: {scope}: {body}"


ConstraintLike = Constraint | Callable[[str, Mapping[str, Any]], bool]


def constraint_id(rule: ConstraintLike) -> str:
    """The name a rule is counted under: its ``rule_id`` or the callable's name."""
    if isinstance(rule, Constraint):
        return rule.rule_id
    return str(getattr(rule, "__name__", None) or type(rule).__name__)


def is_forbidden(rule: ConstraintLike, family: str, params: Mapping[str, Any]) -> bool:
    """Ask one rule, whichever form it takes."""
    if isinstance(rule, Constraint):
        return rule.forbids(family, params)
    return bool(rule(family, params))


def forbidden_by(constraints: Iterable[ConstraintLike], family: str,
                 params: Mapping[str, Any]) -> list[str]:
    """Ids of the rules that forbid ``params`` for ``family`` (empty list: allowed)."""
    return [constraint_id(r) for r in constraints if is_forbidden(r, family, params)]


def is_soft(rule: ConstraintLike) -> bool:
    """True for a soft :class:`Constraint`; callables are always hard."""
    return isinstance(rule, Constraint) and not rule.hard


def split_rules(constraints: Iterable[ConstraintLike]
                ) -> tuple[tuple[ConstraintLike, ...], tuple[Constraint, ...]]:
    """``(hard, soft)``: the rules samplers always enforce, and those they steer by."""
    rules = tuple(constraints)
    soft = tuple(r for r in rules if isinstance(r, Constraint) and not r.hard)
    return tuple(r for r in rules if not is_soft(r)), soft


def _compare(have: Any, op: ClauseOp, want: float | str) -> bool:
    if isinstance(want, str) or isinstance(have, str):
        if op not in ("==", "!="):
            return False
        equal = isinstance(have, str) and isinstance(want, str) and have == want
        return equal if op == "==" else not equal
    number = _as_number(have)
    if number is None or math.isnan(number):
        return op == "!="
    if op in ("==", "!="):
        equal = math.isclose(number, want, rel_tol=1e-9, abs_tol=1e-12)
        return equal if op == "==" else not equal
    return _ORDER[op](number, want)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
