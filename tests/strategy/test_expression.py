"""The expression language: every operator parses; every bad input says why."""

from __future__ import annotations

import sys
from types import FrameType

import pytest

from alphaloop.errors import ExpressionError
from alphaloop.strategy.expression import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_WINDOW,
    OPS,
    Call,
    Field,
    Num,
    canonical_text,
    canonicalize,
    check_types,
    lookback,
    operators_used,
    parse,
)

# one source text per operator; symbol operators are spelled as users write them
OPERATOR_EXAMPLES: dict[str, str] = {
    "add": "close + open > 1",
    "sub": "close - open > 1",
    "mul": "close * volume > 1",
    "div": "close / open > 1",
    "neg": "-close < 1",
    "abs": "abs(close - open) > 1",
    "min": "min(close, open) > 1",
    "max": "max(close, open) > 1",
    "gt": "close > open",
    "ge": "close >= open",
    "eq": "close == open",
    "ne": "close != open",
    "and": "close > 1 and open > 1",
    "or": "close > 1 or open > 1",
    "not": "not close > 1",
    "lag": "lag(close, 1) > 1",
    "sma": "sma(close, 10) > 1",
    "ema": "ema(close, 10) > 1",
    "std": "std(close, 10) > 1",
    "zscore": "zscore(close, 20) < -2",
    "roc": "roc(close, 5) > 0",
    "rsi": "rsi(close, 14) < 30",
    "atr": "atr(14) > 1",
    "highest": "close > highest(high, 20)",
    "lowest": "close < lowest(low, 20)",
    "cross_above": "cross_above(sma(close, 5), sma(close, 20))",
    "cross_below": "cross_below(sma(close, 5), sma(close, 20))",
    "rank": "rank(roc(close, 20)) >= 0.8",
}


def test_examples_cover_every_operator() -> None:
    assert set(OPERATOR_EXAMPLES) == set(OPS)


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_operator_parses_and_type_checks(op: str) -> None:
    node = parse(OPERATOR_EXAMPLES[op], expect="bool")
    assert op in operators_used(node)
    assert check_types(node) == "bool"


@pytest.mark.parametrize("op", sorted(FUNCTIONS))
def test_every_function_is_an_operator_with_a_numeric_or_boolean_result(op: str) -> None:
    assert OPS[op].result in ("num", "bool")


def test_parse_builds_calls_fields_and_numbers() -> None:
    node = parse("sma(close, 10) > 2.5")
    assert node == Call("gt", (Call("sma", (Field("close"), Num(10.0))), Num(2.5)))


def test_less_than_is_greater_than_with_operands_swapped() -> None:
    assert parse("close < open") == parse("open > close")
    assert parse("close <= open") == parse("open >= close")


def test_chained_comparison_is_a_conjunction() -> None:
    assert canonical_text("1 < close < 2") == canonical_text("close > 1 and 2 > close")


def test_windows_may_be_constant_expressions() -> None:
    assert canonical_text("sma(close, 5 + 5) > 1") == canonical_text("sma(close, 10) > 1")


def test_lookback_counts_warm_up_bars() -> None:
    assert lookback(parse("sma(close, 10) > 1")) == 9
    assert lookback(parse("lag(sma(close, 10), 3) > 1")) == 12
    assert lookback(parse("close > highest(high, 20)")) == 20


# --------------------------------------------------------------- bad input
BAD: list[tuple[str, list[str]]] = [
    # (source, fragments the message must contain)
    ("foo(close) > 1", ["unknown operator", "'foo'", "known operators", "sma"]),
    ("sma(close) > 1", ["sma", "expects 2 argument", "got 1"]),
    ("sma(close, 5, 6) > 1", ["sma", "expects 2", "got 3"]),
    ("atr(close, 14) > 1", ["atr", "expects 1", "(n)"]),
    ("sma(close, 2.5) > 1", ["sma", "argument 2 (n)", "integer", "2.5"]),
    ("sma(close, -3) > 1", ["sma", "argument 2 (n)", f"1..{MAX_WINDOW}", "-3"]),
    ("sma(close, 0) > 1", ["sma", "argument 2 (n)", "got 0"]),
    (f"sma(close, {MAX_WINDOW + 1}) > 1", ["sma", "argument 2 (n)", str(MAX_WINDOW + 1)]),
    ("std(close, 1) > 0", ["std", "argument 2 (n)", "2..", "got 1"]),
    ("sma(close, close) > 1", ["sma", "argument 2 (n)", "constant", "close"]),
    ("sma(close > 1, 5) > 1", ["sma", "argument 1 (x)", "must be numeric", "boolean"]),
    ("not close", ["not", "argument 1", "must be boolean", "numeric"]),
    ("(close > 1) + 1 > 0", ["add", "argument 1", "must be numeric", "boolean"]),
    ("close > 1 and open", ["and", "argument 2", "must be boolean"]),
    ("cross_above(close > 1, open)", ["cross_above", "argument 1 (a)", "numeric"]),
    ("close >", ["syntax error"]),
    ("close > 1or open > 1", ["syntax error", "column 9", "invalid decimal literal"]),
    ("sma(close,", ["syntax error", "never closed"]),
    ("sma(close, n=5) > 1", ["sma", "keyword argument", "'n'", "by position"]),
    ("np.exp(close) > 1", ["'np.exp'", "not allowed", "plain operator calls"]),
    ("close.mean() > 1", ["'close.mean'", "not allowed"]),
    ("__import__('os')", ["unknown operator", "'__import__'"]),
    ("(lambda x: x)(close) > 1", ["lambda", "not allowed"]),
    ("lambda: 1", ["Lambda", "not allowed"]),
    ("close[1] > 1", ["Subscript", "not allowed"]),
    ("'abc' > close", ["constant", "'abc'", "only numbers"]),
    ("True", ["constant", "True", "only numbers"]),
    ("foo > 1", ["unknown name", "'foo'", "close"]),
    ("sma > 1", ["unknown name", "did you mean sma(...)"]),
    ("close ** 2 > 1", ["Pow", "'**' is not supported"]),
    ("close > 1 & open > 1", ["BitAnd", "use 'and'"]),
    ("close in high", ["comparison In", "not supported"]),
    ("close if high else low", ["IfExp", "not allowed"]),
    ("sma(*[close, 5]) > 1", ["Starred", "not allowed"]),
    ("", ["empty expression"]),
    ("close" + " + close" * 400 + " > 1", ["longer than"]),
    ("-" * 300 + "close > 1", ["nested too deeply"]),
]


@pytest.mark.parametrize(("source", "fragments"), BAD, ids=[b[0][:40] for b in BAD])
def test_bad_input_names_the_operator_argument_and_reason(source: str,
                                                           fragments: list[str]) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(source, expect="bool")
    message = info.value.message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_numeric_entry_is_rejected_with_both_kinds_named() -> None:
    with pytest.raises(ExpressionError, match="must be a boolean expression, got a numeric"):
        parse("sma(close, 10)", expect="bool", where="entry")


def test_boolean_where_numeric_expected_at_top_level() -> None:
    with pytest.raises(ExpressionError, match="must be a numeric expression, got a boolean"):
        parse("close > 1", expect="num")


def test_error_messages_name_the_place() -> None:
    with pytest.raises(ExpressionError, match=r"^\[EXPRESSION_UNKNOWN_NAME\] exit: "):
        parse("foo > 1", expect="bool", where="exit")


def test_non_string_input() -> None:
    with pytest.raises(ExpressionError, match="expected a string, got int"):
        parse(42)  # type: ignore[arg-type]


def test_error_codes_are_stable() -> None:
    codes = {}
    for source in ("foo(close) > 1", "sma(close) > 1", "close >", "not close", "foo > 1"):
        with pytest.raises(ExpressionError) as info:
            parse(source, expect="bool")
        codes[source] = info.value.code
    assert codes == {"foo(close) > 1": "EXPRESSION_UNKNOWN_OPERATOR",
                     "sma(close) > 1": "EXPRESSION_ARGUMENT",
                     "close >": "EXPRESSION_SYNTAX",
                     "not close": "EXPRESSION_TYPE",
                     "foo > 1": "EXPRESSION_UNKNOWN_NAME"}



# ------------------------------------------------------------ nesting limit
NESTINGS = ("neg", "not", "sma", "lag", "sum", "and")
STACK_BUDGET = 500  # frames the whole pipeline may use: half of Python's default limit


def _stack_depth() -> int:
    frame: FrameType | None = sys._getframe()
    depth = 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def _nested(kind: str, levels: int) -> str:
    """A boolean expression whose tree is exactly ``levels`` deep."""
    k = levels - 2  # the comparison and the leaf take two levels
    return {
        "neg": "-" * k + "close > 1",
        "not": "not " * k + "close > 1",
        "sma": "sma(" * k + "close" + ", 2)" * k + " > 1",
        "lag": "lag(" * k + "close" + ", 1)" * k + " > 1",
        "sum": "close" + " + open" * k + " > 1",
        "and": " and ".join(f"close > {i}" for i in range(k + 1)),
    }[kind]


@pytest.mark.parametrize("kind", NESTINGS)
def test_the_deepest_accepted_expression_runs_through_the_whole_pipeline(kind: str) -> None:
    """Parsing, the id, lookback and evaluation all recurse; at MAX_DEPTH they must fit
    in STACK_BUDGET frames, so that a deep caller (CLI, worker, test) cannot overflow."""
    from alphaloop.data.synthetic import generate
    from alphaloop.engines.signals import SignalEvaluator
    from alphaloop.strategy import expression
    from alphaloop.strategy.spec import StrategySpec

    source = _nested(kind, MAX_DEPTH)
    expression.clear_caches()  # measure the recursion, not a cache hit
    bars = generate(n_symbols=2, n_bars=40, seed=0)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(_stack_depth() + STACK_BUDGET)
    try:
        spec = StrategySpec.from_dict({"entry": source, "exit": source})
        assert expression._tree_depth(parse(source)) == MAX_DEPTH
        assert len(spec.strategy_id) == 64 and lookback(spec.entry_node) >= 0
        assert lookback(parse(source)) >= 0 and str(parse(source))
        signal = SignalEvaluator(bars).signal(spec.entry_node, canonical=True)
    finally:
        sys.setrecursionlimit(limit)
    assert signal.shape == (2, 40)


@pytest.mark.parametrize("kind", NESTINGS)
def test_one_level_more_than_max_depth_is_refused(kind: str) -> None:
    with pytest.raises(ExpressionError, match=rf"nested too deeply \({MAX_DEPTH + 1} levels"):
        parse(_nested(kind, MAX_DEPTH + 1), expect="bool")


def test_a_caller_with_little_stack_left_gets_a_classified_error() -> None:
    source = "-" * 60 + "close > 1"  # within MAX_DEPTH, but not within 40 frames
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(_stack_depth() + 40)
    try:
        parse(source, expect="bool", where="entry")
    except ExpressionError as exc:
        error: ExpressionError | None = exc
    else:
        error = None
    finally:
        sys.setrecursionlimit(limit)
    assert error is not None and error.code == "EXPRESSION_SYNTAX"
    assert "nested too deeply for the call stack" in error.message


def test_canonicalize_refuses_a_hand_built_tree_deeper_than_the_stack() -> None:
    node: Call | Field = Field("close")
    for _ in range(5000):  # parse would refuse this; canonicalize must not crash on it
        node = Call("neg", (node,))
    with pytest.raises(ExpressionError, match="nested too deeply to canonicalize"):
        canonicalize(node)
