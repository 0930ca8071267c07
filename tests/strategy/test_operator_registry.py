"""The operator registry (strategy/operators.py): a registered operator parses,
type-checks, canonicalizes, has a look-back and is evaluated (and cached) by the
SignalEvaluator; bad names and signatures are refused naming the name.

Every test registers through ``custom_operator`` (or unregisters in ``finally``):
the registry is process-global, and an operator left behind would leak into the
other tests (test_truncation iterates over OPS).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pytest

from alphaloop.data.bars import Bars
from alphaloop.engines.engine_a import run_batch
from alphaloop.engines.signals import SignalEvaluator
from alphaloop.errors import ExpressionError, SpecError
from alphaloop.strategy import expression as ex
from alphaloop.strategy.expression import Call, Field, Num, canonical_text, lookback, parse
from alphaloop.strategy.operators import (
    custom_operator,
    implementation,
    register_operator,
    registered_operators,
    unregister_operator,
)
from alphaloop.strategy.spec import StrategySpec

REGISTRY = "EXPRESSION_OPERATOR_REGISTRY"


def rolling_median(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    if x.shape[1] >= n:
        out[:, n - 1:] = np.median(np.lib.stride_tricks.sliding_window_view(x, n, axis=1),
                                   axis=-1)
    return out


@pytest.fixture(autouse=True)
def registry_left_clean() -> Iterator[None]:
    before = set(ex.OPS)
    yield
    assert set(ex.OPS) == before and registered_operators() == {}


@pytest.fixture
def rmedian() -> Iterator[None]:
    with custom_operator("rmedian", rolling_median, lookback=lambda n: n - 1,
                         doc="median of the last n bars"):
        yield


def panel(close: list[list[float]]) -> Bars:
    """Bars with the given closes (rows = bars); open = close - 0.5, high/low around."""
    c = np.array(close, dtype=float)
    index = pd.date_range("2022-01-03", periods=len(c), freq="D", tz="UTC")
    return Bars(index=index, symbols=tuple(f"S{i}" for i in range(c.shape[1])),
                open=c - 0.5, high=c + 1.0, low=c - 1.0, close=c,
                volume=np.full(c.shape, 100.0))


# ------------------------------------------------- language: parse, types, ids
def test_registered_operator_parses_like_a_builtin(rmedian: None) -> None:
    node = parse("rmedian(close, 5) > open", expect="bool")
    assert node == Call("gt", (Call("rmedian", (Field("close"), Num(5.0))), Field("open")))
    # '<' swaps the operands and the window's constants fold: canonical text by hand
    assert canonical_text("open < rmedian(close, 2 + 3)") == "gt(rmedian(close,5),open)"
    assert registered_operators()["rmedian"].doc == "median of the last n bars"


def test_unknown_before_registration_and_after_unregistration() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("rmedian(close, 5) > open")
    assert info.value.code == "EXPRESSION_UNKNOWN_OPERATOR"
    with custom_operator("rmedian", rolling_median):
        assert "rmedian" in str(parse("rmedian(close, 5) > open"))  # memoized now
        assert implementation("rmedian") is rolling_median
    with pytest.raises(ExpressionError, match="unknown operator 'rmedian'") as info:
        parse("rmedian(close, 5) > open")  # the memoized tree was forgotten
    assert info.value.code == "EXPRESSION_UNKNOWN_OPERATOR"
    assert implementation("rmedian") is None


@pytest.mark.parametrize(("source", "code", "says"), [
    ("rmedian(close > open, 5) > 1", "EXPRESSION_TYPE", "rmedian: argument 1 (x) must be numeric"),
    ("rmedian(close, 2.5) > 1", "EXPRESSION_ARGUMENT", "positive integer constant"),
    ("rmedian(close, 0) > 1", "EXPRESSION_ARGUMENT", "integer in 1..1000"),
    ("rmedian(close, close) > 1", "EXPRESSION_ARGUMENT", "positive integer constant"),
    ("rmedian(close) > 1", "EXPRESSION_ARGUMENT", "expects 2 argument(s) (x, n)"),
    ("rmedian(x=close, n=3) > 1", "EXPRESSION_ARGUMENT", "keyword argument"),
    ("rmedian(close, 3)", "EXPRESSION_TYPE", "must be a boolean expression"),
])
def test_registered_operator_is_type_checked(rmedian: None, source: str, code: str,
                                             says: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(source, expect="bool")
    assert info.value.code == code and says in str(info.value)


def test_min_window_is_enforced() -> None:
    with custom_operator("rmad", rolling_median, min_window=3):
        parse("rmad(close, 3) > 1")
        with pytest.raises(ExpressionError, match=r"rmad: argument 2 \(n\).*3\.\.1000"):
            parse("rmad(close, 2) > 1")


def test_strategy_ids_are_distinct_and_stable() -> None:
    def spec(op: str) -> StrategySpec:
        return StrategySpec(entry=f"close > {op}(close, 5)", exit=f"close < {op}(close, 5)")

    with custom_operator("rmedian", rolling_median):
        first = spec("rmedian")
        assert first.canonical()["entry"] == "gt(close,rmedian(close,5))"
        assert first.strategy_id != spec("sma").strategy_id  # the name is in the text
        same_id = first.strategy_id
    with custom_operator("rmedian", rolling_median):  # registered again: same id
        assert spec("rmedian").strategy_id == same_id
    with custom_operator("rmedian2", rolling_median):  # same function, other name
        assert spec("rmedian2").strategy_id != same_id


def rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    return pd.DataFrame(x.T).rolling(n).mean().to_numpy().T


def test_another_implementation_under_the_same_name_gets_other_ids() -> None:
    """A black-box report: after the operator's code changed, a loop reused the old
    implementation's results from the knowledge base (the id hashed the name only)."""
    def spec() -> StrategySpec:
        return StrategySpec(entry="close > cust(close, 5)", exit="close < sma(close, 5)")

    builtin = StrategySpec(entry="close > sma(close, 5)", exit="close < sma(close, 5)")
    plain_id = builtin.strategy_id
    with custom_operator("cust", rolling_median):
        median_id = spec().strategy_id
        assert spec().canonical()["operators"]["cust"].startswith("src:")
        assert "operators" not in builtin.canonical()  # built-ins keep their ids
    with custom_operator("cust", rolling_mean):  # other source text, other ids
        assert spec().strategy_id != median_id
    with custom_operator("cust", rolling_median, version="v7"):
        pinned = spec().strategy_id
    with custom_operator("cust", rolling_mean, version="v7"):  # the user's promise
        assert spec().strategy_id == pinned != median_id
    assert StrategySpec(entry="close > sma(close, 5)",
                        exit="close < sma(close, 5)").strategy_id == plain_id
    with pytest.raises(ExpressionError, match="version"):
        register_operator("cust", rolling_mean, version=" ")
    assert registered_operators() == {} and implementation("cust") is None


def test_spec_validation_sees_the_registry() -> None:
    data = {"entry": "close > rmedian(close, 5)", "exit": "close < open"}
    with pytest.raises(SpecError, match="rmedian"):
        StrategySpec.from_dict(data)
    with custom_operator("rmedian", rolling_median):
        assert StrategySpec.from_dict(data).entry == data["entry"]


def test_lookback_of_registered_operators() -> None:
    # sma(close, 3) needs 2 bars; a rolling median of 5 adds 4 (declared n - 1)
    with custom_operator("rmedian", rolling_median, lookback=lambda n: n - 1):
        assert lookback(parse("rmedian(sma(close, 3), 5) > close")) == 6
    with custom_operator("rmedian", rolling_median):  # default: the largest window
        assert lookback(parse("rmedian(sma(close, 3), 5) > close")) == 7
    with custom_operator("band", lambda x, y, a, b: x - y, args=("num", "num", "window", "window"),
                         lookback=lambda a, b: a + b):
        assert lookback(parse("band(lag(close, 2), open, 3, 4) > 0")) == 2 + 3 + 4
    with custom_operator("level", lambda x: x, args=("num",)):
        assert lookback(parse("level(sma(close, 10)) > 0")) == 9


def test_lookback_function_answer_is_checked_when_used() -> None:
    # valid at the smallest window (checked at registration), negative at 5
    with custom_operator("odd", rolling_median, lookback=lambda n: 3 - n), \
            pytest.raises(ExpressionError, match=r"odd: its lookback function returned -2"):
        lookback(parse("odd(close, 5) > 1"))


# --------------------------------------------------------- names and signatures
@pytest.mark.parametrize(("name", "why"), [
    ("sma", "built-in"), ("add", "built-in"), ("gt", "built-in"), ("not", "built-in"),
    ("lambda", "keyword"), ("class", "keyword"), ("match", "keyword"), ("close", "bar field"),
    ("volume", "bar field"), ("1abc", "invalid"), ("a-b", "invalid"), ("", "invalid"),
    ("_private", "invalid"), ("x" * 65, "invalid"), ("é", "invalid"),
])
def test_names_that_cannot_be_registered(name: str, why: str) -> None:
    with pytest.raises(ExpressionError) as info:
        register_operator(name, rolling_median)
    assert info.value.code == REGISTRY
    assert repr(name) in str(info.value) and why in str(info.value)


def test_name_must_be_a_string_and_not_taken() -> None:
    with pytest.raises(ExpressionError, match="operator name 3 is invalid"):
        register_operator(3, rolling_median)  # type: ignore[arg-type]
    with custom_operator("rmedian", rolling_median):
        with pytest.raises(ExpressionError, match="'rmedian' is already registered") as info:
            register_operator("rmedian", rolling_median)
        assert info.value.code == REGISTRY
        assert implementation("rmedian") is rolling_median  # the first one stays


@pytest.mark.parametrize(("options", "says"), [
    ({"args": ("bool", "window")}, "must be 'num' or 'window'"),
    ({"args": ("window",)}, "at least one 'num' argument"),
    ({"args": ()}, "at least one 'num' argument"),
    ({"min_window": 0}, "min_window must be an integer in 1..1000"),
    ({"min_window": 2.0}, "min_window must be an integer"),
    ({"arg_names": ("x",)}, "1 arg_names for 2 arguments"),
    ({"lookback": lambda n: -1}, "returned -1"),
    ({"lookback": lambda n: 1.5}, "returned 1.5"),
    ({"lookback": lambda: 0}, "lookback(1,) failed: TypeError"),
])
def test_bad_signatures_are_refused(options: dict[str, object], says: str) -> None:
    with pytest.raises(ExpressionError) as info:
        register_operator("custom", rolling_median, **options)  # type: ignore[arg-type]
    assert info.value.code == REGISTRY
    assert "'custom'" in str(info.value) and says in str(info.value)


def test_fn_must_be_callable() -> None:
    with pytest.raises(ExpressionError, match="'custom': fn must be callable, got int"):
        register_operator("custom", 42)  # type: ignore[arg-type]


def test_unregister_refuses_builtins_and_unknown_names() -> None:
    with pytest.raises(ExpressionError, match="'sma' is built in") as info:
        unregister_operator("sma")
    assert info.value.code == REGISTRY and "sma" in ex.OPS
    with pytest.raises(ExpressionError, match="'nope' is not registered"):
        unregister_operator("nope")


def test_context_manager_cleans_up_after_an_error() -> None:
    with pytest.raises(RuntimeError), custom_operator("rmedian", rolling_median):
        raise RuntimeError("boom")
    assert "rmedian" not in ex.OPS and implementation("rmedian") is None


def test_explicit_register_and_unregister() -> None:
    spec = register_operator("rmedian", rolling_median, arg_names=("series", "bars"))
    try:
        assert spec.arg_names == ("series", "bars") and spec.result == "num"
        assert registered_operators() == {"rmedian": spec}
    finally:
        unregister_operator("rmedian")


# ----------------------------------------------------------------- evaluation
def test_values_by_hand(rmedian: None) -> None:
    bars = panel([[1, 10], [5, 20], [2, 30], [8, np.nan], [3, 50]])
    got = SignalEvaluator(bars).values(parse("rmedian(close, 3)"))
    # medians of 3: S0: (1,5,2)=2, (5,2,8)=5, (2,8,3)=3; S1: (10,20,30)=20, then a NaN
    expected = np.array([[np.nan, np.nan, 2, 5, 3], [np.nan, np.nan, 20, np.nan, np.nan]])
    np.testing.assert_array_equal(got, expected)


def test_signal_by_hand(rmedian: None) -> None:
    bars = panel([[1.0], [5.0], [2.0], [8.0], [3.0]])
    ev = SignalEvaluator(bars)
    # close > median: bar 2: 2 > 2 no; bar 3: 8 > 5 yes; bar 4: 3 > 3 no
    assert ev.signal(parse("close > rmedian(close, 3)")).tolist() == [
        [False, False, False, True, False]]
    # the three-valued code: unknown during warm-up, so 'not' stays false there too
    assert ev.signal(parse("not (close > rmedian(close, 3))")).tolist() == [
        [False, False, True, False, True]]


def test_results_are_cached_like_builtins() -> None:
    calls: list[int] = []

    def counted(x: np.ndarray, n: int) -> np.ndarray:
        calls.append(n)
        return rolling_median(x, n)

    with custom_operator("rmedian", counted):
        ev = SignalEvaluator(panel([[1.0], [2.0], [3.0], [4.0]]))
        ev.signal(parse("rmedian(close, 2) > open"))
        ev.signal(parse("rmedian(close, 2) < high"))
        ev.signal(parse("rmedian(close, 3) < high"))
        assert calls == [2, 3] and "rmedian(close,2)" in ev.cache


def test_several_arguments_in_signature_order() -> None:
    def weighted(x: np.ndarray, y: np.ndarray, a: int, b: int) -> np.ndarray:
        return a * x - b * y

    with custom_operator("weighted", weighted, args=("num", "num", "window", "window")):
        got = SignalEvaluator(panel([[4.0], [6.0]])).values(parse("weighted(close, open, 3, 2)"))
    # 3 * close - 2 * (close - 0.5): 3*4 - 2*3.5 = 5, 3*6 - 2*5.5 = 7
    np.testing.assert_array_equal(got, [[5.0, 7.0]])


def test_inputs_are_read_only_and_errors_name_the_operator() -> None:
    def vandal(x: np.ndarray, n: int) -> np.ndarray:
        x[:] = 0.0
        return x

    bars = panel([[1.0], [2.0]])
    with custom_operator("vandal", vandal):
        ev = SignalEvaluator(bars)
        with pytest.raises(ExpressionError, match="operator 'vandal' failed") as info:
            ev.values(parse("vandal(close, 1)"))
    assert info.value.code == "EXPRESSION_OPERATOR_FAILED"
    assert ev.fields["close"].tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize(("result", "says"), [
    (lambda x, n: x[:, :1], "returned (1, 1)"),
    (lambda x, n: x.tolist(), "returned list"),
    (lambda x, n: None, "returned NoneType"),
    (lambda x, n: np.full(x.shape, "a"), "not numeric"),
])
def test_bad_results_are_refused(result: Callable[..., object], says: str) -> None:
    with custom_operator("bad", result), \
            pytest.raises(ExpressionError, match="operator 'bad'") as info:
        SignalEvaluator(panel([[1.0], [2.0]])).values(parse("bad(close, 1)"))
    assert info.value.code == "EXPRESSION_OPERATOR_RESULT" and says in str(info.value)


def test_results_become_writable_float64() -> None:
    with custom_operator("ident", lambda x, n: x), \
            custom_operator("half", lambda x, n: (x / 2).astype(np.float32)):
        ev = SignalEvaluator(panel([[1.0], [3.0]]))
        same = ev.values(parse("ident(close, 1)"))
        half = ev.values(parse("half(close, 1)"))
    assert same.flags.writeable and not np.shares_memory(same, ev.fields["close"])
    assert half.dtype == np.float64 and half.tolist() == [[0.5, 1.5]]


def test_engine_a_runs_a_registered_operator() -> None:
    """A numpy moving average registered as 'mysma' trades exactly like built-in sma
    (prices on a 0.5 grid: every partial sum is exact, so the two agree bit for bit)."""
    def cumsum_sma(x: np.ndarray, n: int) -> np.ndarray:
        out = np.full(x.shape, np.nan)
        c = np.cumsum(x, axis=1)
        out[:, n - 1] = c[:, n - 1]
        out[:, n:] = c[:, n:] - c[:, :-n]
        return out / n

    rng = np.random.default_rng(2)
    close = 40 + np.round(np.cumsum(rng.normal(0, 1, (150, 3)), axis=0) * 2) / 2
    bars = panel(close.tolist())

    def spec(op: str) -> StrategySpec:
        return StrategySpec(entry=f"close > {op}(close, 4)", exit=f"close < {op}(close, 8)")

    with custom_operator("mysma", cumsum_sma, lookback=lambda n: n - 1):
        mine = run_batch([spec("mysma")], bars)
    builtin = run_batch([spec("sma")], bars)
    assert np.any(builtin.returns != 0)  # it traded
    np.testing.assert_array_equal(mine.equity, builtin.equity)


def test_a_spec_whose_operator_is_gone_is_a_coded_error() -> None:
    """A black-box report: a spec built while its operator was registered, run after it
    was unregistered, was a bare ValueError; in a pool worker that never registered it,
    a pydantic ValidationError (INTERNAL_VALIDATIONERROR)."""
    from alphaloop.engines.costs import CostModel
    from alphaloop.orchestrator.executors import _PANEL, backtest_chunk

    bars = panel([[10.0 + i % 7, 20.0 - i % 5] for i in range(60)])
    with custom_operator("gone", rolling_median):
        spec = StrategySpec(entry="close > gone(close, 5)", exit="close < gone(close, 5)")
        text = spec.model_dump_json()
    with pytest.raises(ExpressionError) as run:
        run_batch([spec], bars, CostModel())
    assert run.value.code == "EXPRESSION_UNKNOWN_OPERATOR" and "'gone'" in run.value.message
    _PANEL["bars"] = bars
    try:
        with pytest.raises(SpecError) as chunk:
            backtest_chunk(([text], 60, 10.0, 5.0))
    finally:
        _PANEL.clear()
    assert chunk.value.code == "SPEC_INVALID" and "gone" in chunk.value.message
