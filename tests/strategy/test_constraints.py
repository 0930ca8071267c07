"""Constraints: which candidates a rule forbids, and that rules are plain data."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from alphaloop.strategy.constraints import (
    Clause,
    Column,
    Constraint,
    ConstraintLike,
    constraint_id,
    forbidden_by,
    is_forbidden,
)

SHORT_FAST = Constraint(rule_id="c-1", family="sma_cross", reason="TOO_FEW_TRADES",
                        clauses=[Clause(param="fast", op="<=", value=10),
                                 Clause(param="slow", op="<", value=50)])


@pytest.mark.parametrize(("op", "value", "holds"), [
    ("<", 10, False), ("<", 11, True), ("<=", 10, True), ("<=", 9, False),
    (">", 10, False), (">", 9, True), (">=", 10, True), (">=", 11, False),
    ("==", 10, True), ("==", 10.0000000001, True), ("==", 11, False),
    ("!=", 10, False), ("!=", 11, True),
])
def test_numeric_clauses(op: Any, value: float, holds: bool) -> None:
    assert Clause(param="n", op=op, value=value).holds({"n": 10}) is holds


def test_float_equality_tolerates_grid_noise() -> None:
    assert Clause(param="k", op="==", value=0.3).holds({"k": 0.1 + 0.2})


@pytest.mark.parametrize("op", ["<", "<=", ">", ">=", "==", "!="])
def test_a_missing_parameter_never_holds(op: Any) -> None:
    assert not Clause(param="missing", op=op, value=1).holds({"n": 1})


def test_string_clauses() -> None:
    none = Clause(param="stop_loss", op="==", value="none")
    assert none.holds({"stop_loss": "none"})
    assert not none.holds({"stop_loss": 0.05})
    assert Clause(param="stop_loss", op="!=", value="none").holds({"stop_loss": 0.05})
    # ordering between strings and numbers is meaningless: it does not hold
    assert not Clause(param="stop_loss", op="<", value=0.1).holds({"stop_loss": "none"})
    assert not Clause(param="stop_loss", op="<", value="z").holds({"stop_loss": "none"})


def test_constraint_needs_every_clause() -> None:
    assert SHORT_FAST.forbids("sma_cross", {"fast": 10, "slow": 40})
    assert not SHORT_FAST.forbids("sma_cross", {"fast": 10, "slow": 50})
    assert not SHORT_FAST.forbids("sma_cross", {"fast": 15, "slow": 40})


def test_constraint_is_scoped_to_its_family() -> None:
    assert not SHORT_FAST.forbids("ema_cross", {"fast": 5, "slow": 20})
    anywhere = SHORT_FAST.model_copy(update={"family": None})
    assert anywhere.forbids("ema_cross", {"fast": 5, "slow": 20})
    assert not anywhere.forbids("rsi_reversion", {"window": 5})  # no such params


def test_constraint_without_clauses_forbids_the_whole_family() -> None:
    ban = Constraint(rule_id="ban", family="momentum", reason="COST_DOMINATED")
    assert ban.forbids("momentum", {"window": 5, "threshold": 0.0})
    assert not ban.forbids("sma_cross", {"fast": 5, "slow": 20})


def named_rule(family: str, params: Mapping[str, Any]) -> bool:
    return family == "sma_cross" and params.get("slow") == 200


def test_forbidden_by_names_rules_and_callables() -> None:
    other = Constraint(rule_id="c-2", family="sma_cross",
                       clauses=[Clause(param="slow", op=">=", value=150)])
    rules: list[ConstraintLike] = [SHORT_FAST, named_rule, other]
    assert forbidden_by(rules, "sma_cross", {"fast": 5, "slow": 200}) == ["named_rule", "c-2"]
    assert forbidden_by(rules, "sma_cross", {"fast": 5, "slow": 20}) == ["c-1"]
    assert forbidden_by(rules, "sma_cross", {"fast": 30, "slow": 100}) == []
    assert forbidden_by([], "sma_cross", {"fast": 5, "slow": 20}) == []


def test_callable_ids() -> None:
    assert constraint_id(named_rule) == "named_rule"
    assert constraint_id(functools.partial(named_rule)) == "partial"
    assert constraint_id(SHORT_FAST) == "c-1"
    assert is_forbidden(lambda f, p: True, "x", {})


def test_json_and_yaml_round_trip() -> None:
    text = SHORT_FAST.model_dump_json()
    assert json.loads(text)["clauses"][0] == {"param": "fast", "op": "<=", "value": 10.0}
    assert Constraint.model_validate_json(text) == SHORT_FAST
    again = Constraint.model_validate(yaml.safe_load(yaml.safe_dump(SHORT_FAST.model_dump())))
    assert again == SHORT_FAST


def test_readable_text() -> None:
    assert str(SHORT_FAST) == "c-1: sma_cross: fast <= 10 and slow < 50"
    soft = Constraint(rule_id="s", clauses=[Clause(param="stop_loss", op="==", value="none")],
                      hard=False)
    assert str(soft) == "s: *: stop_loss == 'none'"


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValidationError, match="op"):
        Clause(param="fast", op="=<", value=1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Extra inputs"):
        Constraint.model_validate({"rule_id": "x", "clause": []})
    with pytest.raises(ValidationError, match="rule_id"):
        Constraint(rule_id="")


def test_rules_are_frozen() -> None:
    with pytest.raises(ValidationError, match="frozen"):
        SHORT_FAST.rule_id = "other"


# ------------------------------------------------------------ many points at once
_VALUES = st.one_of(st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([None, True, False, "long", "short", "3", ""]),
                    st.just(2.0 + 1e-12))
_MISSING = object()


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(_VALUES, st.just(_MISSING)), min_size=1, max_size=30),
       op=st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
       want=st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=True),
                      st.sampled_from(["long", "short", "3", ""])))
def test_a_clause_on_a_column_is_the_clause_on_each_point(values: list[Any], op: Any,
                                                           want: Any) -> None:
    """Clause.mask over a column = Clause.holds point by point: strings, numbers, NaN,
    None, bools, infinities, points without the parameter."""
    clause = Clause(param="x", op=op, value=want)
    rows = [{} if v is _MISSING else {"x": v} for v in values]
    got = clause.mask(Column.table(rows), len(rows)).tolist()
    assert got == [clause.holds(r) for r in rows]


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.fixed_dictionaries({"a": st.integers(0, 9), "b": _VALUES}),
                     min_size=1, max_size=20),
       clauses=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                                  st.sampled_from(["<", ">=", "==", "!="]),
                                  st.one_of(st.integers(0, 9), st.just("long"))),
                        max_size=3),
       family=st.sampled_from([None, "f", "g"]), active=st.booleans())
def test_a_rule_on_a_table_is_the_rule_on_each_point(rows: list[dict[str, Any]],
                                                     clauses: list[Any], family: Any,
                                                     active: bool) -> None:
    rule = Constraint(rule_id="r", family=family,
                      clauses=[Clause(param=p, op=o, value=v) for p, o, v in clauses],
                      status="active" if active else "expired")
    got = rule.mask("f", Column.table(rows), len(rows)).tolist()
    assert got == [rule.forbids("f", r) for r in rows]


def test_column_tables_concatenate_as_one_table_of_all_rows() -> None:
    """Column.concat of consecutive tables equals the table of all their rows at once,
    a name one part lacks included (those rows do not have it)."""
    from alphaloop.strategy.constraints import Column

    rows = [{"a": 1, "s": "none"}, {"a": 2.5}, {"s": 0.05, "b": True}, {"a": None}]
    whole = Column.table(rows)
    parts = Column.concat([(Column.table(rows[:2]), 2), (Column.table(rows[2:]), 2)])
    assert list(parts) == list(whole)
    for name, col in whole.items():
        got = parts[name]
        assert got.present.tolist() == col.present.tolist()
        assert got.is_str.tolist() == col.is_str.tolist()
        assert got.text.tolist() == col.text.tolist()
        assert np.array_equal(got.number, col.number, equal_nan=True)
