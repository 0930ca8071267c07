"""The normalizer hash (MOD-412): same meaning → same ``strategy_id``, else different.

Random expression trees are rendered to source text in several equivalent spellings
(commutative operands swapped, ``a < b`` for ``b > a``, redundant parentheses,
``10.0`` for ``10``, ``x + -2`` for ``x - 2``, ``not not a`` for ``a``); every spelling
must hash to the same id. Changing a window, a field or the order of a
non-commutative operator must change it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from alphaloop.strategy.expression import (
    FIELDS,
    OPS,
    Call,
    Field,
    Node,
    Num,
    canonical_text,
    canonicalize,
)
from alphaloop.strategy.spec import StrategySpec

TS_OPS = ("lag", "sma", "ema", "std", "zscore", "roc", "rsi", "highest", "lowest")
INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "gt": ">", "ge": ">=",
         "eq": "==", "ne": "!="}
SWAPPED = {"gt": "<", "ge": "<="}  # a > b is b < a
COMMUTATIVE = {name for name, spec in OPS.items() if spec.commutative}
EXIT = "close < sma(close, 20)"
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# -------------------------------------------------------------- trees
def _ts(op: str, x: Node, window: int) -> Node:
    return Call(op, (x, Num(float(max(window, OPS[op].min_window)))))


def _numeric_children(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    binary = st.builds(lambda op, a, b: Call(op, (a, b)),
                       st.sampled_from(["add", "sub", "mul", "div", "min", "max"]),
                       children, children)
    unary = st.builds(lambda op, a: Call(op, (a,)), st.sampled_from(["neg", "abs", "rank"]),
                      children)
    series = st.builds(_ts, st.sampled_from(TS_OPS), children, st.integers(1, 60))
    chain = st.builds(_left_nested, st.sampled_from(["add", "mul", "min", "max"]),
                      st.lists(children, min_size=3, max_size=5))
    return st.one_of(binary, unary, series, chain)


def _left_nested(op: str, items: list[Node]) -> Node:
    out = items[0]
    for item in items[1:]:
        out = Call(op, (out, item))
    return out


fields = st.sampled_from(FIELDS).map(Field)
# small integers and halves: constant folding is exact, whatever the operand order
constants = st.sampled_from([-3, -2, -1, 0, 1, 2, 3, 5, 10, 0.5, 1.5, 2.5]).map(
    lambda v: Num(float(v)))
atr_leaf = st.integers(1, 30).map(lambda n: Call("atr", (Num(float(n)),)))
numeric = st.recursive(st.one_of(fields, fields, constants, atr_leaf), _numeric_children,
                       max_leaves=6)
comparison = st.builds(lambda op, a, b: Call(op, (a, b)),
                       st.sampled_from(["gt", "ge", "eq", "ne", "cross_above", "cross_below"]),
                       numeric, numeric)
boolean = st.recursive(
    comparison,
    lambda ch: st.one_of(
        st.builds(lambda op, a, b: Call(op, (a, b)), st.sampled_from(["and", "or"]), ch, ch),
        st.builds(lambda a: Call("not", (a,)), ch)),
    max_leaves=3)


def has_series(node: Node) -> bool:
    """True when the tree depends on bar data (so it cannot fold to a constant)."""
    if isinstance(node, Field):
        return True
    return isinstance(node, Call) and (node.op == "atr" or any(map(has_series, node.args)))


# ------------------------------------------------------------ rendering
class Chooser:
    """Chooses among equivalent spellings; the base class always takes the plain one."""

    def flip(self) -> bool:
        return False

    def shuffle(self, items: list[Node]) -> None:
        return None

    def split(self, n: int) -> int:
        """Where to cut a chain of ``n`` operands into two groups (plain: left-nested)."""
        return n - 1


class RandomChooser(Chooser):
    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd

    def flip(self) -> bool:
        return self.rnd.random() < 0.5

    def shuffle(self, items: list[Node]) -> None:
        self.rnd.shuffle(items)

    def split(self, n: int) -> int:
        return self.rnd.randint(1, n - 1)


PLAIN = Chooser()


def render(node: Node, c: Chooser) -> str:
    """Source text for ``node``, spelled as the chooser decides."""
    text = _render(node, c)
    return f"({text})" if c.flip() else text


def _render(node: Node, c: Chooser) -> str:
    if isinstance(node, Num):
        return _number(node.value, c)
    if isinstance(node, Field):
        return node.name
    args = list(node.args)
    if OPS[node.op].associative:  # all of them are commutative too
        return _chain(node.op, _operands(node.op, node), c)
    if node.op in COMMUTATIVE and c.flip():
        args.reverse()
    if node.op == "sub" and isinstance(args[1], Num) and c.flip():
        return f"({render(args[0], c)} + -{render(args[1], c)})"  # x - k == x + -k
    if node.op in SWAPPED and c.flip():
        return f"({render(args[1], c)} {SWAPPED[node.op]} {render(args[0], c)})"
    if node.op in INFIX:
        return f"({render(args[0], c)} {INFIX[node.op]} {render(args[1], c)})"
    if node.op == "neg":
        return f"(-{render(args[0], c)})"
    if node.op == "not":
        inner = f"(not {render(args[0], c)})"
        return f"(not (not {inner}))" if c.flip() else inner
    return f"{node.op}({', '.join(render(a, c) for a in args)})"


def _operands(op: str, node: Node) -> list[Node]:
    if isinstance(node, Call) and node.op == op:
        return [x for a in node.args for x in _operands(op, a)]
    return [node]


def _chain(op: str, operands: list[Node], c: Chooser) -> str:
    """An associative, commutative chain in a chosen order and grouping."""
    items = list(operands)
    c.shuffle(items)
    return _group(op, items, c)


def _group(op: str, items: list[Node], c: Chooser) -> str:
    if len(items) == 1:
        return render(items[0], c)
    cut = c.split(len(items))
    left, right = _group(op, items[:cut], c), _group(op, items[cut:], c)
    if op in INFIX:
        return f"({left} {INFIX[op]} {right})"
    if op in ("and", "or"):
        return f"({left} {op} {right})"
    return f"{op}({left}, {right})"


def _number(value: float, c: Chooser) -> str:
    text = str(int(value)) if value.is_integer() and not c.flip() else repr(value)
    return f"({text})" if value < 0 or c.flip() else text


def sid(entry: str, exit: str = EXIT, **extra: object) -> str:
    return StrategySpec(entry=entry, exit=exit, **extra).strategy_id  # type: ignore[arg-type]


# ---------------------------------------------------------- equivalence
@SETTINGS
@given(tree=boolean, rnd=st.randoms(use_true_random=False))
def test_equivalent_spellings_have_the_same_id(tree: Node, rnd: random.Random) -> None:
    plain, variant = render(tree, PLAIN), render(tree, RandomChooser(rnd))
    assert canonical_text(plain) == canonical_text(variant), (plain, variant)
    assert sid(plain) == sid(variant)
    assert sid(EXIT.replace("20", "30"), plain) == sid(EXIT.replace("20", "30"), variant)


@SETTINGS
@given(tree=boolean)
def test_double_negation_is_removed(tree: Node) -> None:
    plain = render(tree, PLAIN)
    assert sid(f"not (not ({plain}))") == sid(plain)


def test_documented_examples() -> None:
    same = [("sma(close, 10) > sma(close, 50)", "sma(close, 50) < sma(close, 10)"),
            ("close > open + 2", "close > 2 + open"),
            ("close - 2 > open", "close + -2 > open"),
            ("sma(close, 10) > 1", "sma(close, 10.0) > 1.0"),
            ("((close)) > (open)", "close > open"),
            ("close * 2 * 3 > 1", "3 * (close * 2) > 1"),
            ("high + low + close > 1", "close + (low + high) > 1"),
            ("close + 0.1 + 0.2 + 0.7 > 1", "close + 0.7 + 0.2 + 0.1 > 1"),
            ("not not close > 1", "close > 1"),
            ("close > 1 and open > 2", "open > 2 and close > 1")]
    for a, b in same:
        assert sid(a) == sid(b), (a, b)


# ------------------------------------------------------------- defaults
def test_explicit_defaults_hash_like_omitted_ones() -> None:
    bare = StrategySpec(entry="close > open", exit="close < open")
    explicit = StrategySpec.model_validate({
        "entry": "close > open", "exit": "close < open", "direction": "long",
        "risk": {"stop_loss": None, "trailing_stop": None, "take_profit": None,
                 "max_bars": None},
        "sizing": {"method": "equal_weight", "vol_window": 20, "max_leverage": 1.0}})
    assert bare.strategy_id == explicit.strategy_id


def test_informational_fields_do_not_change_the_id() -> None:
    bare = sid("close > open", "close < open")
    labelled = sid("close > open", "close < open", family="sma_cross",
                   params={"fast": 10, "slow": 50}, name="my strategy")
    assert bare == labelled


def test_equal_weight_ignores_vol_target_settings() -> None:
    assert sid("close > open", sizing={"vol_window": 60}) == sid("close > open")


def test_risk_key_order_and_number_spelling_do_not_matter() -> None:
    a = sid("close > open", risk={"stop_loss": 0.05, "take_profit": 0.1})
    b = sid("close > open", risk={"take_profit": 0.10, "stop_loss": 5e-2})
    assert a == b


def test_meaningful_settings_change_the_id() -> None:
    base = sid("close > open")
    others = {sid("close > open", direction="short"),
              sid("close > open", direction="both"),
              sid("close > open", risk={"stop_loss": 0.05}),
              sid("close > open", risk={"max_bars": 10}),
              sid("close > open", sizing={"method": "vol_target", "target_vol": 0.1}),
              sid("close > open", sizing={"method": "vol_target", "target_vol": 0.2}),
              sid("close > open", EXIT.replace("20", "21")),
              sid(EXIT, "close > open")}  # entry and exit swapped
    assert base not in others
    assert len(others) == 8


# ------------------------------------------------------- non-equivalence
def _paths(node: Node, want: Callable[[Node], bool], path: tuple[int, ...] = ()
           ) -> list[tuple[int, ...]]:
    found = [path] if want(node) else []
    if isinstance(node, Call):
        for i, arg in enumerate(node.args):
            found += _paths(arg, want, (*path, i))
    return found


def _replace(node: Node, path: tuple[int, ...], new: Node) -> Node:
    if not path:
        return new
    assert isinstance(node, Call)
    args = list(node.args)
    args[path[0]] = _replace(args[path[0]], path[1:], new)
    return Call(node.op, tuple(args))


def _get(node: Node, path: tuple[int, ...]) -> Node:
    for i in path:
        assert isinstance(node, Call)
        node = node.args[i]
    return node


def _is_window_op(node: Node) -> bool:
    return isinstance(node, Call) and node.op in (*TS_OPS, "atr")


@SETTINGS
@given(tree=boolean, data=st.data())
def test_a_different_window_changes_the_id(tree: Node, data: st.DataObject) -> None:
    tree = Call("and", (tree, Call("gt", (_ts("sma", Field("close"), 10), Num(1.0)))))
    call_path = data.draw(st.sampled_from(_paths(tree, _is_window_op)))
    op = _get(tree, call_path)
    assert isinstance(op, Call)
    path = (*call_path, len(op.args) - 1)  # the window is the last argument
    old = _get(tree, path)
    assert isinstance(old, Num)
    new_window = data.draw(st.integers(OPS[op.op].min_window, 200)
                           .filter(lambda w: w != old.value))
    changed = _replace(tree, path, Num(float(new_window)))
    assert sid(render(tree, PLAIN)) != sid(render(changed, PLAIN))


@SETTINGS
@given(tree=boolean, data=st.data())
def test_a_different_field_changes_the_id(tree: Node, data: st.DataObject) -> None:
    tree = Call("or", (tree, Call("gt", (Field("close"), Num(1.0)))))
    path = data.draw(st.sampled_from(_paths(tree, lambda n: isinstance(n, Field))))
    old = _get(tree, path)
    assert isinstance(old, Field)
    new_field = data.draw(st.sampled_from([f for f in FIELDS if f != old.name]))
    changed = _replace(tree, path, Field(new_field))
    # min(open, high) with open -> high is min(high, high) = high: an idempotent
    # operator whose operands become equal really does mean something else
    assume(not _idempotent_duplicates(tree) and not _idempotent_duplicates(changed))
    assert sid(render(tree, PLAIN)) != sid(render(changed, PLAIN))


def _idempotent_duplicates(node: Node) -> bool:
    """True if an and/or/min/max chain has two operands that canonicalize alike."""
    if not isinstance(node, Call):
        return False
    if node.op in ("and", "or", "min", "max"):
        chain: list[Node] = []
        stack = list(node.args)
        while stack:
            n = stack.pop()
            if isinstance(n, Call) and n.op == node.op:
                stack.extend(n.args)
            else:
                chain.append(n)
        texts = [str(canonicalize(n)) for n in chain]
        if len(set(texts)) < len(texts):
            return True
    return any(_idempotent_duplicates(a) for a in node.args)


@SETTINGS
@given(a=numeric, b=numeric, op=st.sampled_from(["sub", "div", "gt"]))
def test_swapping_non_commutative_operands_changes_the_id(a: Node, b: Node, op: str) -> None:
    assume(has_series(a) and has_series(b))
    assume(canonical_text(render(a, PLAIN)) != canonical_text(render(b, PLAIN)))
    forward, backward = Call(op, (a, b)), Call(op, (b, a))
    if op != "gt":
        forward, backward = (Call("gt", (forward, Num(0.0))), Call("gt", (backward, Num(0.0))))
    assert sid(render(forward, PLAIN)) != sid(render(backward, PLAIN))


def test_known_non_equivalences() -> None:
    different = [("close - open > 0", "open - close > 0"),
                 ("close / open > 1", "open / close > 1"),
                 ("close > open", "open > close"),
                 ("sma(close, 10) > 1", "sma(close, 11) > 1"),
                 ("sma(close, 10) > 1", "sma(open, 10) > 1"),
                 ("sma(close, 10) > 1", "ema(close, 10) > 1"),
                 ("close > open", "close >= open")]
    for a, b in different:
        assert sid(a) != sid(b), (a, b)
