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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from alphaloop.strategy.expression import format_number

ClauseOp = Literal["<", "<=", ">", ">=", "==", "!="]
_ORDER: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_ORDER_ARRAYS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}


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

    def mask(self, columns: Mapping[str, Column], n: int) -> np.ndarray:
        """:meth:`holds` for ``n`` points at once (``columns``: one per name)."""
        column = columns.get(self.param)
        if column is None:
            return np.zeros(n, dtype=bool)
        return column.present & _compare_mask(column, self.op, self.value)

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

    def mask(self, family: str, columns: Mapping[str, Column], n: int) -> np.ndarray:
        """:meth:`forbids` for ``n`` points of ``family`` at once."""
        out = np.full(n, self.active and (self.family is None or self.family == family))
        for clause in self.clauses:
            if not out.any():
                break
            out &= clause.mask(columns, n)
        return out

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


class Column:
    """One parameter (or feature) over many points, as :meth:`Clause.mask` reads it:
    where it is present, which values are strings, and the others as numbers (NaN for
    what is not a number: None, a bool, NaN itself). A ``None`` in ``values`` marks a
    point without it only where ``present`` says so."""

    __slots__ = ("is_str", "number", "present", "text")

    def __init__(self, values: Sequence[Any], present: np.ndarray | None = None) -> None:
        n = len(values)
        self.present = np.ones(n, dtype=bool) if present is None else present
        self.is_str = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=n)
        self.text = np.array([v if isinstance(v, str) else "" for v in values], dtype=object)
        self.number = np.fromiter((math.nan if isinstance(v, str) or (x := _as_number(v)) is None
                                   else x for v in values), dtype=float, count=n)

    @classmethod
    def _of(cls, present: np.ndarray, is_str: np.ndarray, text: np.ndarray,
            number: np.ndarray) -> Column:
        """A column from its arrays, as :meth:`__init__` would have made them."""
        out = cls.__new__(cls)
        out.present, out.is_str, out.text, out.number = present, is_str, text, number
        return out

    @classmethod
    def indexed(cls, values: Sequence[Any], at: np.ndarray) -> Column:
        """``values[at]`` as a column, each distinct value converted once (a grid
        parameter's values, at each point's index into them)."""
        small = cls(values)
        return cls._of(np.ones(len(at), dtype=bool), small.is_str[at], small.text[at],
                       small.number[at])

    @classmethod
    def absent(cls, n: int) -> Column:
        """A column of ``n`` points that do not have it."""
        return cls._of(np.zeros(n, dtype=bool), np.zeros(n, dtype=bool),
                       np.full(n, "", dtype=object), np.full(n, math.nan))

    @classmethod
    def concat(cls, parts: Sequence[tuple[Mapping[str, Column], int]]) -> dict[str, Column]:
        """Tables of consecutive points (each with its number of points) as one table;
        where a part lacks a name, its points do not have it."""
        names = dict.fromkeys(k for table, _ in parts for k in table)
        out: dict[str, Column] = {}
        for name in names:
            pieces = [table.get(name) or cls.absent(n) for table, n in parts]
            out[name] = cls._of(*(np.concatenate([getattr(p, a) for p in pieces])
                                  for a in ("present", "is_str", "text", "number")))
        return out

    @classmethod
    def table(cls, rows: Sequence[Mapping[str, Any]]) -> dict[str, Column]:
        """A column per name that any row has (rows without it: not present)."""
        names = dict.fromkeys(k for row in rows for k in row)
        out: dict[str, Column] = {}
        for name in names:
            present = np.fromiter((name in row for row in rows), dtype=bool, count=len(rows))
            out[name] = cls([row.get(name) for row in rows], present)
        return out


def _compare_mask(column: Column, op: ClauseOp, want: float | str) -> np.ndarray:
    """:func:`_compare` over a column (the same cases, in the same order)."""
    if isinstance(want, str):
        if op not in ("==", "!="):
            return np.zeros(len(column.is_str), dtype=bool)
        equal = column.is_str & (column.text == want)
        return equal if op == "==" else ~equal
    a, b = column.number, float(want)
    with np.errstate(invalid="ignore"):
        valid = ~np.isnan(a)  # strings are NaN here too
        if op in ("==", "!="):
            # math.isclose: an infinity is close only to itself
            near = np.isfinite(a) & math.isfinite(b) & (np.abs(a - b) <= np.maximum(
                1e-9 * np.maximum(np.abs(a), abs(b)), 1e-12))
            close = valid & ((a == b) | near)
            return close if op == "==" else ~close
        ordered: np.ndarray = _ORDER_ARRAYS[op](a, b)
        return valid & ordered


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
