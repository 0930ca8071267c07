"""The parse fast path: a text of a shape seen before is rebuilt from that shape's tree.

Its promise is that it never changes an answer: every text gives the tree (or the
error) that the full parse gives. The reference is ``_parse_text``, the full parse
with Python's ``ast``, which the fast path skips.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphaloop.errors import ExpressionError
from alphaloop.strategy import expression
from alphaloop.strategy.expression import Call, Field, Num, parse


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    expression.clear_caches()
    yield
    expression.clear_caches()


def _full(text: str) -> object:
    """The full parse's answer: a tree, or the error's code and message."""
    try:
        return expression._parse_text(text.strip(), "bool", "entry")
    except ExpressionError as exc:
        return (exc.code, exc.message)


def _fast(text: str) -> object:
    try:
        return parse(text, expect="bool", where="entry")
    except ExpressionError as exc:
        return (exc.code, exc.message)


def test_a_second_text_of_a_shape_uses_the_template() -> None:
    parse("sma(close, 10) > sma(close, 50) * 1.0012", expect="bool")
    assert "sma(close, #) > sma(close, #) * #" in expression._TEMPLATES
    node = parse("sma(close, 20) > sma(close, 100) * 1.5", expect="bool")
    # written out by hand: a > b is gt(a, b); the literals in their places
    sma = lambda n: Call("sma", (Field("close"), Num(n)))  # noqa: E731
    assert node == Call("gt", (sma(20.0), Call("mul", (sma(100.0), Num(1.5)))))


def test_swapped_operands_keep_their_numbers() -> None:
    # 'a < b' is gt(b, a): the slots must follow the operands, not the text's order
    parse("sma(close, 5) < lag(close, 3) - 2", expect="bool")
    node = parse("sma(close, 7) < lag(close, 9) - 4", expect="bool")
    assert node == Call("gt", (Call("sub", (Call("lag", (Field("close"), Num(9.0))), Num(4.0))),
                               Call("sma", (Field("close"), Num(7.0)))))


@pytest.mark.parametrize("second, code", [
    ("sma(close, 0) > 1", "EXPRESSION_ARGUMENT"),      # window below its minimum
    ("sma(close, 2.5) > 1", "EXPRESSION_ARGUMENT"),    # not an integer
    ("sma(close, 5000) > 1", "EXPRESSION_ARGUMENT"),   # above MAX_WINDOW
    ("sma(close, 010) > 1", "EXPRESSION_SYNTAX"),      # leading zero: not a Python literal
    ("sma(close, 1__0) > 1", "EXPRESSION_SYNTAX"),     # double underscore
    ("sma(close, 10) > 1e999", "EXPRESSION_SYNTAX"),   # not a finite number
])
def test_value_errors_are_found_as_by_the_full_parse(second: str, code: str) -> None:
    parse("sma(close, 10) > 1", expect="bool")  # learns the shape
    assert "sma(close, #) > #" in expression._TEMPLATES
    got = _fast(second)
    assert isinstance(got, tuple) and got[0] == code
    expression.clear_caches()
    assert got == _full(second)


def test_a_text_over_the_length_limit_is_refused_even_with_a_known_shape() -> None:
    parse("close > 1", expect="bool")
    long = "close > " + "1" * expression.MAX_SOURCE_LEN
    with pytest.raises(ExpressionError, match="longer than"):
        parse(long, expect="bool")


def test_other_literals_stay_in_the_shape() -> None:
    shape, literals = expression._shape("lag(close, 0x10) > 1_000.5e-3 and sma2(x, 1j)")
    assert literals == ["1_000.5e-3"]
    assert shape == "lag(close, 0x10) > # and sma2(x, 1j)"


_NUMBER = st.one_of(
    st.integers(0, 2000).map(str),
    st.floats(0, 1e6, allow_nan=False).map(repr),
    st.sampled_from(["0", "00", "010", "1_0", "1__0", "1.", ".5", "1e5", "1E-3", "2_0.0_1",
                     "1e999", "9" * 400, "0.0", "1_", "1e"]))
_SHAPES = ["sma(close, {0}) > sma(close, {1}) * {2}",
           "{0} < rsi(close, {1}) and close > lowest(low, {2})",
           "not (zscore(close, {0}) > -{1}) or ema(volume, {2}) / {0} >= {1}",
           "lag(close, {0} + {1}) - {2} > open",
           "cross_above(close, highest(high, {2})) and std(close, {0}) > {1}"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_SHAPES), st.lists(_NUMBER, min_size=3, max_size=3),
       st.lists(_NUMBER, min_size=3, max_size=3))
def test_fast_path_answers_as_the_full_parse(shape: str, first: list[str],
                                             second: list[str]) -> None:
    expression.clear_caches()
    a, b = shape.format(*first), shape.format(*second)
    assert _fast(a) == _full(a)
    assert _fast(b) == _full(b)  # through the template when 'a' parsed


@pytest.mark.parametrize("first, second", [
    ("close > 5 # a comment", "close > # 5"),   # same shape; the second is only a comment
    ("-abs(0) >close # comment open", "close > 1 # x"),  # more '#' than numbers
])
def test_a_text_with_a_hash_never_meets_a_template(first: str, second: str) -> None:
    """'#', the shapes' slot marker, is also Python's comment: such a text is parsed in
    full (found by the hostile-expression fuzzing: '#' in a text made the template probe
    fail internally, and a learned shape could have accepted a text that is all comment)."""
    for text in (first, second):
        assert _fast(text) == _full(text)
    assert expression._TEMPLATES == {}  # nothing learned from a text with a comment
    assert isinstance(_fast("close > # 5"), tuple)  # a comparison with nothing: refused
