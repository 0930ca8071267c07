"""The strategy expression language.

A small, causal language for entry and exit conditions::

    sma(close, 10) > sma(close, 50) and rsi(close, 14) < 70

Source text is parsed with Python's :mod:`ast` and every node is checked against a
whitelist; nothing is ever passed to ``eval``. The parsed form is a tree of
:class:`Num`, :class:`Field` and :class:`Call` nodes in which operators are calls
too (``a + b`` is ``Call("add", (a, b))``), which keeps validation,
canonicalization and evaluation uniform.

Every operator is causal: its value at bar ``t`` depends on bars ``<= t`` only.
``highest``/``lowest`` look at the *previous* ``n`` bars (excluding ``t``) so that
``close > highest(high, 20)`` expresses a breakout.

Users may add operators (:mod:`alphaloop.strategy.operators`); causality is then
their promise, which :mod:`alphaloop.engines.lookahead` checks.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Literal

from alphaloop.errors import ExpressionError

Kind = Literal["num", "bool", "window"]
FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
MAX_WINDOW = 1000
MAX_SOURCE_LEN = 2000
# Nesting limit. Consumers of a tree (canonicalize, lookback, str, the signal
# evaluator) recurse with up to ~4 Python frames per level, so 100 levels stay far
# below Python's default limit of 1,000 frames even when called from a deep stack.
MAX_DEPTH = 100
INTERNAL_ERROR = "EXPRESSION_INTERNAL"  # a refusal that no specific check classified


# --------------------------------------------------------------------- nodes
@dataclass(frozen=True)
class Num:
    value: float

    def __str__(self) -> str:
        return format_number(self.value)


@dataclass(frozen=True)
class Field:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Call:
    op: str
    args: tuple[Node, ...]

    def __str__(self) -> str:
        # kept on the (immutable) node: canonical ordering, dedup and the strategy id
        # print the same subtrees again and again. Not a cached_property: that would
        # add stack frames per level of a deep tree.
        text = self.__dict__.get("_text")
        if text is None:
            text = f"{self.op}({','.join(str(a) for a in self.args)})"
            self.__dict__["_text"] = text  # a frozen dataclass: around __setattr__
        return text

    def __hash__(self) -> int:
        # the memos (parse, canonical form, look-back) hash whole trees: hashing the
        # kept text costs O(1) instead of a walk (equal trees print the same text)
        return hash(str(self))


Node = Num | Field | Call


def format_number(v: float) -> str:
    """One spelling per number: ``10``, ``10.0`` and ``1e1`` all print as ``10``."""
    f = float(v)
    if f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return repr(f)


# ----------------------------------------------------------------- operators
@dataclass(frozen=True)
class OpSpec:
    """Signature of an operator: argument kinds, result kind and properties."""

    name: str
    args: tuple[Kind, ...]
    result: Kind
    arg_names: tuple[str, ...]
    commutative: bool = False
    associative: bool = False
    min_window: int = 1
    doc: str = ""


def _fn(name: str, args: tuple[Kind, ...], names: tuple[str, ...], result: Kind = "num",
        min_window: int = 1, doc: str = "") -> OpSpec:
    return OpSpec(name, args, result, names, min_window=min_window, doc=doc)


OPS: dict[str, OpSpec] = {
    # arithmetic
    "add": OpSpec("add", ("num", "num"), "num", ("a", "b"), True, True, doc="a + b"),
    "sub": OpSpec("sub", ("num", "num"), "num", ("a", "b"), doc="a - b"),
    "mul": OpSpec("mul", ("num", "num"), "num", ("a", "b"), True, True, doc="a * b"),
    "div": OpSpec("div", ("num", "num"), "num", ("a", "b"), doc="a / b (NaN where b == 0)"),
    "neg": OpSpec("neg", ("num",), "num", ("a",), doc="-a"),
    "abs": OpSpec("abs", ("num",), "num", ("x",), doc="|x|"),
    "min": OpSpec("min", ("num", "num"), "num", ("a", "b"), True, True, doc="elementwise min"),
    "max": OpSpec("max", ("num", "num"), "num", ("a", "b"), True, True, doc="elementwise max"),
    # comparisons (NaN compares False)
    "gt": OpSpec("gt", ("num", "num"), "bool", ("a", "b"), doc="a > b"),
    "ge": OpSpec("ge", ("num", "num"), "bool", ("a", "b"), doc="a >= b"),
    "eq": OpSpec("eq", ("num", "num"), "bool", ("a", "b"), True, doc="a == b"),
    "ne": OpSpec("ne", ("num", "num"), "bool", ("a", "b"), True, doc="a != b"),
    # logic
    "and": OpSpec("and", ("bool", "bool"), "bool", ("a", "b"), True, True, doc="a and b"),
    "or": OpSpec("or", ("bool", "bool"), "bool", ("a", "b"), True, True, doc="a or b"),
    "not": OpSpec("not", ("bool",), "bool", ("a",), doc="not a"),
    # time-series (per symbol, causal)
    "lag": _fn("lag", ("num", "window"), ("x", "n"), doc="x n bars ago"),
    "sma": _fn("sma", ("num", "window"), ("x", "n"), doc="simple moving average"),
    "ema": _fn("ema", ("num", "window"), ("x", "n"),
               doc="exponential moving average, alpha = 2/(n+1), seeded with the first n-bar SMA"),
    "std": _fn("std", ("num", "window"), ("x", "n"), min_window=2,
               doc="rolling sample standard deviation (ddof = 1)"),
    "zscore": _fn("zscore", ("num", "window"), ("x", "n"), min_window=2,
                  doc="(x - sma(x, n)) / std(x, n)"),
    "roc": _fn("roc", ("num", "window"), ("x", "n"), doc="x / lag(x, n) - 1"),
    "rsi": _fn("rsi", ("num", "window"), ("x", "n"), doc="Wilder's RSI in 0..100"),
    "atr": _fn("atr", ("window",), ("n",), doc="Wilder's average true range of the bars"),
    "highest": _fn("highest", ("num", "window"), ("x", "n"),
                   doc="max of x over the previous n bars (t-n .. t-1)"),
    "lowest": _fn("lowest", ("num", "window"), ("x", "n"),
                  doc="min of x over the previous n bars (t-n .. t-1)"),
    "cross_above": _fn("cross_above", ("num", "num"), ("a", "b"), "bool",
                       doc="a > b now and a <= b on the previous bar"),
    "cross_below": _fn("cross_below", ("num", "num"), ("a", "b"), "bool",
                       doc="a < b now and a >= b on the previous bar"),
    # cross-sectional
    "rank": _fn("rank", ("num",), ("x",),
                doc="cross-sectional percentile rank in [0, 1] among symbols with a value at t"),
}

# names users may call directly (operators spelled with symbols are internal)
FUNCTIONS: frozenset[str] = frozenset(
    {"abs", "min", "max", "lag", "sma", "ema", "std", "zscore", "roc", "rsi", "atr",
     "highest", "lowest", "cross_above", "cross_below", "rank"})

# Operators a user adds at run time (:mod:`alphaloop.strategy.operators`). Their
# signatures join OPS, so parsing, type checks, canonicalization and look-back treat
# them like built-ins; their implementations never come here (this floor evaluates
# nothing). Process-global, like OPS itself.
BUILTIN_OPS: frozenset[str] = frozenset(OPS)
_REGISTERED_LOOKBACK: dict[str, Callable[..., int]] = {}


def add_registered_op(spec: OpSpec, lookback_fn: Callable[..., int]) -> None:
    """Make ``spec`` callable in expressions (use :func:`operators.register_operator`).

    ``lookback_fn(*windows)`` gives the bars of history the operator adds to its
    inputs' look-back. Memoized parses are forgotten, so no stale tree survives.
    """
    OPS[spec.name] = spec
    _REGISTERED_LOOKBACK[spec.name] = lookback_fn
    clear_caches()


def remove_registered_op(name: str) -> None:
    """Undo :func:`add_registered_op` (use :func:`operators.unregister_operator`)."""
    OPS.pop(name, None)
    _REGISTERED_LOOKBACK.pop(name, None)
    clear_caches()  # a memoized tree using the operator must fail to parse again


def registered_op_names() -> frozenset[str]:
    return frozenset(_REGISTERED_LOOKBACK)


def _is_function(name: str) -> bool:
    return name in FUNCTIONS or name in _REGISTERED_LOOKBACK


_BINOPS: dict[type, str] = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div"}
_CMPOPS: dict[type, tuple[str, bool]] = {  # op name, swap operands
    ast.Gt: ("gt", False), ast.GtE: ("ge", False), ast.Lt: ("gt", True),
    ast.LtE: ("ge", True), ast.Eq: ("eq", False), ast.NotEq: ("ne", False)}
_SYMBOL_HINT = {ast.BitAnd: "use 'and'", ast.BitOr: "use 'or'", ast.Invert: "use 'not'",
                ast.Pow: "'**' is not supported", ast.Mod: "'%' is not supported",
                ast.FloorDiv: "'//' is not supported; use '/'"}


# -------------------------------------------------------------------- parse
def parse(source: str, *, expect: Kind | None = None, where: str = "expression") -> Node:
    """Parse, validate and type-check ``source``; return its tree.

    ``expect`` ("bool" or "num") checks the type of the whole expression.
    Raises :class:`ExpressionError` naming the operator, argument and reason.
    Trees are immutable, so results are memoized: a sweep parses each text once.
    """
    if not isinstance(source, str):
        raise ExpressionError(f"{where}: expected a string, got {type(source).__name__}")
    text = source.strip()  # before the cache, so padding cannot bloat its keys
    try:
        return _parse(text, expect, where)
    except ExpressionError:
        raise
    except RecursionError:  # the caller's own stack was already deep
        raise ExpressionError(f"{where}: expression nested too deeply for the call stack: "
                              f"{_excerpt(text)}", code="EXPRESSION_SYNTAX") from None
    except Exception as exc:
        # Defence in depth: every known refusal is raised by a specific check above;
        # should a bug let another exception through, it still leaves classified (and
        # the hostile-expression tests fail on INTERNAL_ERROR, so it gets fixed).
        raise ExpressionError(f"{where}: cannot check {_excerpt(text)}: internal "
                              f"{type(exc).__name__}: {exc}", code=INTERNAL_ERROR) from exc


def _excerpt(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


@lru_cache(maxsize=1 << 16)
def _parse(text: str, expect: Kind | None, where: str) -> Node:
    if "#" in text:  # the shapes' slot marker (a comment in the text): no template
        return _parse_text(text, expect, where)
    shape, literals = _shape(text)
    template = _TEMPLATES.get(shape)
    if template is not None and len(text) <= MAX_SOURCE_LEN:
        node = _from_template(template.tree, literals)
        if node is not None:
            # the operators, arities and kinds are the template's, checked when it was
            # learned: only the values in window positions can be wrong
            for path, spec, i in template.windows:
                _check_filled_window(node, path, spec, i)
            _check_kind(template.kind, expect, text, where)
            return node
    node = _parse_text(text, expect, where)
    if template is None and literals and len(_TEMPLATES) < _MAX_TEMPLATES:
        _learn_template(shape, literals, node)
    return node


# A family's candidates differ only in their numbers: ``sma(close, 10) > sma(close,
# 50)`` and ``sma(close, 20) > sma(close, 100)`` have one *shape*, the text with each
# decimal literal replaced. Two texts of one shape parse to the same tree but for the
# constants (a literal is an atom of Python's grammar), so the tree of a shape seen
# before is rebuilt with the new numbers and only the value checks (windows) run again:
# a tenth of the cost of a parse. The regular expressions follow Python's grammar for
# decimal literals; anything else (hex, '010', '1__0') stays in the shape as text.
_DIGITS = r"\d(?:_?\d)*"
_POINT = rf"(?:{_DIGITS})?\.{_DIGITS}|{_DIGITS}\."
_LITERAL = re.compile(rf"(?<![\w.])(?:(?:{_POINT}|{_DIGITS})[eE][+-]?{_DIGITS}|{_POINT}"
                      rf"|[1-9](?:_?\d)*|0+(?:_?0)*)(?![\w.])")
_MAX_TEMPLATES = 4096


@dataclass(frozen=True)
class _Template:
    """A shape's tree, whose ``Num(-k - 1)`` is the k-th literal; the kind of every
    tree it gives; and its window arguments, as (path of argument indices to the
    call, the call's operator, the argument's index), in the order :func:`check_types`
    checks them (so a fill reports the same first error as a full check)."""

    tree: Node
    kind: Kind
    windows: tuple[tuple[tuple[int, ...], OpSpec, int], ...]


_TEMPLATES: dict[str, _Template] = {}  # shape -> template


def _shape(text: str) -> tuple[str, list[str]]:
    return _LITERAL.sub("#", text), _LITERAL.findall(text)


def _literal_value(token: str) -> float:
    # as _convert reads ast.Constant: an int literal is converted from the int
    if any(c in token for c in ".eE"):
        return float(token)
    return float(int(token))


def _from_template(template: Node, literals: list[str]) -> Node | None:
    """The template with its slots filled; None where a value is not a finite float
    (the full parse then gives its error)."""
    try:
        values = [_literal_value(t) for t in literals]
    except (ValueError, OverflowError):
        return None
    if not all(math.isfinite(v) for v in values):
        return None
    return _fill(template, values)


def _fill(node: Node, values: list[float]) -> Node:
    if isinstance(node, Num):
        return Num(values[-int(node.value) - 1])
    if isinstance(node, Call):
        return Call(node.op, tuple(_fill(a, values) for a in node.args))
    return node


def _learn_template(shape: str, literals: list[str], node: Node) -> None:
    """Parse the shape with slot markers (-1, -2, ...) as its numbers; keep it only if
    filling it with this text's own numbers gives exactly the tree just parsed."""
    marks = iter(range(1, len(literals) + 1))
    probe = re.sub("#", lambda _: f"(0-{next(marks)})", shape)
    try:
        tree = _convert(ast.parse(probe, mode="eval").body, "template")
    except (ExpressionError, SyntaxError, ValueError, RecursionError):
        return
    template = _marks(tree)
    if template is not None and _from_template(template, literals) == node:
        _TEMPLATES[shape] = _Template(template, check_types(node),
                                      tuple(_window_slots(template, ())))


def _window_slots(node: Node, path: tuple[int, ...]
                  ) -> Iterator[tuple[tuple[int, ...], OpSpec, int]]:
    """The window arguments under ``node`` (at ``path``), in :func:`check_types`'
    order: an argument's own windows before the argument itself."""
    if not isinstance(node, Call):
        return
    spec = OPS[node.op]
    for i, (arg, kind) in enumerate(zip(node.args, spec.args, strict=True)):
        yield from _window_slots(arg, (*path, i))
        if kind == "window":
            yield path, spec, i


def _check_filled_window(node: Node, path: tuple[int, ...], spec: OpSpec, i: int) -> None:
    call = node
    for step in path:
        assert isinstance(call, Call)
        call = call.args[step]
    assert isinstance(call, Call)
    arg = call.args[i]
    kind = "num" if isinstance(arg, Num) else check_types(arg)
    _check_window(spec, _arg_label(spec, i + 1), arg, kind)


def _marks(node: Node) -> Node | None:
    """``sub(0, k)``, the parsed ``(0-k)``, back to a slot ``Num(-k)``; None if the
    probe has any other constant, which the fill could not tell from a slot."""
    if isinstance(node, Num):
        return None if node.value != 0 else node
    if isinstance(node, Field):
        return node
    a = node.args
    if node.op == "sub" and len(a) == 2 and a[0] == Num(0.0) and isinstance(a[1], Num):
        return Num(-a[1].value)
    args = [_marks(x) for x in a]
    if any(x is None for x in args):
        return None
    return Call(node.op, tuple(x for x in args if x is not None))


def _parse_text(text: str, expect: Kind | None, where: str) -> Node:
    if not text:
        raise ExpressionError(f"{where}: empty expression", code="EXPRESSION_SYNTAX")
    if len(text) > MAX_SOURCE_LEN:
        raise ExpressionError(f"{where}: expression longer than {MAX_SOURCE_LEN} characters",
                              code="EXPRESSION_SYNTAX")
    try:
        with warnings.catch_warnings():
            # Python's lexer merely warns, on stderr, about '1or' and the like; here
            # they are syntax errors, so a refusal is one classified line, nothing else
            warnings.simplefilter("error")
            tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        offset = exc.offset or 0
        at = f"column {offset}" if 0 < offset <= len(text) else "the end"
        raise ExpressionError(f"{where}: syntax error at {at}: {exc.msg} in {text!r}",
                              code="EXPRESSION_SYNTAX") from None
    except (ValueError, RecursionError, MemoryError, Warning) as exc:  # null bytes, nesting
        raise ExpressionError(f"{where}: cannot parse: {exc}", code="EXPRESSION_SYNTAX") from None
    # bound the recursion of _convert before it starts (1,990 unary minuses fit in
    # the length limit); chains (a and b and ...) nest deeper than the source, so
    # the converted tree is bounded again for what later recursion sees
    # every level of nesting takes at least one character of source (an operand, an
    # operator or a call's name), so a text no longer than MAX_DEPTH cannot be too deep
    # and the walks, a third of a parse, are skipped for the short texts of templates
    deep = len(text) > MAX_DEPTH
    if deep:
        _check_depth(_ast_depth(tree.body), where)
    node = _convert(tree.body, where)
    if deep:
        _check_depth(_tree_depth(node), where)
    _check_kind(check_types(node, where), expect, text, where)
    return node


def _check_kind(kind: Kind, expect: Kind | None, text: str, where: str) -> None:
    if expect is not None and kind != expect:
        want = "boolean" if expect == "bool" else "numeric"
        got = "boolean" if kind == "bool" else "numeric"
        raise ExpressionError(f"{where}: must be a {want} expression, got a {got} one: {text!r}",
                              code="EXPRESSION_TYPE")


def _tree_depth(root: Node) -> int:
    """Depth of a tree, computed without recursion (so absurd input cannot overflow)."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
        if isinstance(node, Call):
            stack.extend([(child, depth + 1) for child in node.args])
    return deepest


def _ast_depth(root: ast.AST) -> int:
    """Nesting of the sub-expressions of a Python syntax tree, computed without recursion.

    Only ``ast.expr`` children count: they are what ``_convert`` recurses into, and
    they nest like the converted tree (``Load`` contexts and ``Add`` markers do not).
    """
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend([(child, depth + 1) for child in ast.iter_child_nodes(node)
                      if isinstance(child, ast.expr)])
    return deepest


def _check_depth(depth: int, where: str) -> None:
    if depth > MAX_DEPTH:
        raise ExpressionError(f"{where}: expression nested too deeply ({depth} levels, "
                              f"at most {MAX_DEPTH})", code="EXPRESSION_SYNTAX")


def _convert(n: ast.AST, where: str) -> Node:
    col = getattr(n, "col_offset", 0) + 1
    if isinstance(n, ast.Constant):
        if isinstance(n.value, bool) or not isinstance(n.value, int | float):
            raise ExpressionError(f"{where}: unsupported constant {n.value!r} at column {col}; "
                                  "only numbers are allowed", code="EXPRESSION_SYNTAX")
        try:
            value = float(n.value)
        except OverflowError:  # an integer literal beyond the float range
            value = math.inf
        if not math.isfinite(value):
            raise ExpressionError(f"{where}: number at column {col} is too large (not a "
                                  "finite float)", code="EXPRESSION_SYNTAX")
        return Num(value)
    if isinstance(n, ast.Name):
        if n.id in FIELDS:
            return Field(n.id)
        hint = f"; did you mean {n.id}(...)?" if _is_function(n.id) else ""
        raise ExpressionError(f"{where}: unknown name {n.id!r} at column {col}; "
                              f"bar fields are {', '.join(FIELDS)}{hint}",
                              code="EXPRESSION_UNKNOWN_NAME")
    if isinstance(n, ast.BoolOp):
        op = "and" if isinstance(n.op, ast.And) else "or"
        args = [_convert(v, where) for v in n.values]
        out = args[0]
        for a in args[1:]:
            out = Call(op, (out, a))
        return out
    if isinstance(n, ast.UnaryOp):
        if isinstance(n.op, ast.Not):
            return Call("not", (_convert(n.operand, where),))
        if isinstance(n.op, ast.USub):
            return Call("neg", (_convert(n.operand, where),))
        if isinstance(n.op, ast.UAdd):
            return _convert(n.operand, where)
        raise _unsupported(n.op, col, where)
    if isinstance(n, ast.BinOp):
        name = _BINOPS.get(type(n.op))
        if name is None:
            raise _unsupported(n.op, col, where)
        return Call(name, (_convert(n.left, where), _convert(n.right, where)))
    if isinstance(n, ast.Compare):
        parts: list[Node] = []
        left = _convert(n.left, where)
        for cmp, comp in zip(n.ops, n.comparators, strict=True):
            right = _convert(comp, where)
            spec = _CMPOPS.get(type(cmp))
            if spec is None:
                raise ExpressionError(f"{where}: comparison {type(cmp).__name__} at column {col} "
                                      "is not supported", code="EXPRESSION_UNKNOWN_OPERATOR")
            name, swap = spec
            parts.append(Call(name, (right, left) if swap else (left, right)))
            left = right
        out = parts[0]
        for p in parts[1:]:
            out = Call("and", (out, p))
        return out
    if isinstance(n, ast.Call):
        if not isinstance(n.func, ast.Name):
            raise ExpressionError(f"{where}: call of {ast.unparse(n.func)!r} at column {col} "
                                  "is not allowed; only plain operator calls such as "
                                  "sma(close, 10)", code="EXPRESSION_SYNTAX")
        fname = n.func.id
        if not _is_function(fname):
            known = ", ".join(sorted(FUNCTIONS | registered_op_names()))
            raise ExpressionError(f"{where}: unknown operator {fname!r} at column {col}; "
                                  f"known operators: {known}", code="EXPRESSION_UNKNOWN_OPERATOR")
        if n.keywords:
            names = ", ".join(repr(k.arg) if k.arg else "**" for k in n.keywords)
            raise ExpressionError(f"{fname}: keyword argument(s) {names} not supported; pass "
                                  f"{', '.join(OPS[fname].arg_names)} by position",
                                  code="EXPRESSION_ARGUMENT")
        return Call(fname, tuple(_convert(a, where) for a in n.args))
    raise ExpressionError(f"{where}: {type(n).__name__} at column {col} is not allowed in "
                          "strategy expressions", code="EXPRESSION_SYNTAX")


def _unsupported(op: ast.AST, col: int, where: str) -> ExpressionError:
    hint = _SYMBOL_HINT.get(type(op), "not supported")
    return ExpressionError(f"{where}: operator {type(op).__name__} at column {col}: {hint}",
                           code="EXPRESSION_UNKNOWN_OPERATOR")


# --------------------------------------------------------------- type check
def check_types(node: Node, where: str = "expression") -> Kind:
    """Return ``"num"`` or ``"bool"``; raise naming operator, argument and reason."""
    if isinstance(node, Num | Field):
        return "num"
    spec = OPS.get(node.op)
    if spec is None:
        raise ExpressionError(f"{where}: unknown operator {node.op!r}",
                              code="EXPRESSION_UNKNOWN_OPERATOR")
    if len(node.args) != len(spec.args):
        sig = ", ".join(spec.arg_names)
        raise ExpressionError(f"{spec.name}: expects {len(spec.args)} argument(s) ({sig}), "
                              f"got {len(node.args)}", code="EXPRESSION_ARGUMENT")
    for i, (arg, kind) in enumerate(zip(node.args, spec.args, strict=True), start=1):
        label = _arg_label(spec, i)
        got = check_types(arg, where)  # before any folding: abs() cannot be evaluated
        if kind == "window":
            _check_window(spec, label, arg, got)
            continue
        if got != kind:
            want = "boolean" if kind == "bool" else "numeric"
            have = "boolean" if got == "bool" else "numeric"
            raise ExpressionError(f"{label} must be {want}, got a {have} expression: {arg}",
                                  code="EXPRESSION_TYPE")
    return spec.result


def _arg_label(spec: OpSpec, i: int) -> str:
    """How errors name argument ``i`` (from 1) of ``spec``."""
    return f"{spec.name}: argument {i} ({spec.arg_names[i - 1]})"


def _check_window(spec: OpSpec, label: str, arg: Node, kind: Kind) -> None:
    """A window is a constant integer in ``min_window..MAX_WINDOW``; ``arg`` is type-checked."""
    value = _constant_value(arg) if kind == "num" else None
    if value is None or not float(value).is_integer():
        raise ExpressionError(f"{label} must be a positive integer constant, got {arg}",
                              code="EXPRESSION_ARGUMENT")
    if not spec.min_window <= value <= MAX_WINDOW:
        raise ExpressionError(
            f"{label} must be an integer in {spec.min_window}..{MAX_WINDOW}, "
            f"got {format_number(value)}", code="EXPRESSION_ARGUMENT")


def _constant_value(node: Node) -> float | None:
    folded = fold_constants(node)
    return folded.value if isinstance(folded, Num) else None


# ------------------------------------------------------------ canonical form
_FOLD: dict[str, Callable[..., float]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "neg": operator.neg,
    "abs": abs, "min": min, "max": max,
    "div": lambda a, b: a / b if b != 0 else math.nan,
}


def fold_constants(node: Node) -> Node:
    """Evaluate arithmetic whose operands are all constants."""
    if not isinstance(node, Call):
        return node
    args = tuple(fold_constants(a) for a in node.args)
    folded = _fold(node.op, list(args))
    return folded if folded is not None else Call(node.op, args)


def canonicalize(node: Node) -> Node:
    """Canonical tree: equal trees for expressions that mean the same thing.

    Rules: constants folded; ``a < b`` becomes ``b > a`` (done at parse time);
    associative operators flattened and constants among their operands combined;
    operands of commutative operators sorted by their canonical text;
    ``not not a`` is ``a``; ``a - c`` with constant ``c`` is ``a + (-c)``;
    ``not (a > b)`` is ``b >= a`` (and the like for ``>=``, ``==``, ``!=``: exact under
    the engines' three-valued logic, where a comparison with NaN is unknown and
    ``not unknown`` stays unknown); ``cross_below(a, b)`` is ``cross_above(b, a)``;
    repeated operands of ``and``/``or``/``min``/``max`` count once.

    ``node`` must be type-checked (as :func:`parse` returns it). Never raises anything
    but :class:`ExpressionError`, so the strategy id of a parsed spec cannot crash.
    """
    try:
        return _canonical(node)
    except RecursionError:  # a tree built by hand, deeper than parse allows
        raise ExpressionError(f"expression nested too deeply to canonicalize "
                              f"({_tree_depth(node)} levels, at most {MAX_DEPTH})",
                              code="EXPRESSION_SYNTAX") from None
    except (ArithmeticError, TypeError, ValueError, KeyError, IndexError) as exc:
        # defence in depth, as in parse: a bug must not escape unclassified
        top = node.op if isinstance(node, Call) else type(node).__name__
        raise ExpressionError(f"cannot canonicalize an expression with top operator "
                              f"{top!r}: internal {type(exc).__name__}: {exc}",
                              code=INTERNAL_ERROR) from exc


@lru_cache(maxsize=1 << 16)
def _canonical(node: Node) -> Node:
    if not isinstance(node, Call):
        return node
    if node.op == "cross_below":
        node = Call("cross_above", (node.args[1], node.args[0]))
    node = _sub_as_add(node)
    op, spec = node.op, OPS[node.op]
    # operands of a whole chain such as ``a + b + c``, so its constants fold in one step
    raw = _flatten(op, list(node.args)) if spec.associative else list(node.args)
    args = [_canonical(a) for a in raw]
    if not spec.associative:
        folded = _fold(op, args)
        if folded is not None:
            return folded
    if op == "not" and isinstance(args[0], Call) and args[0].op == "not":
        return args[0].args[0]
    if op == "not" and isinstance(args[0], Call) and args[0].op in _NEGATED:
        neg_op, swap = _NEGATED[args[0].op]
        a, b = args[0].args
        return _canonical(Call(neg_op, (b, a) if swap else (a, b)))
    if spec.associative:
        flat = _flatten(op, args)
        consts = [a for a in flat if isinstance(a, Num)]
        value = _combine(op, [c.value for c in consts]) if len(consts) > 1 else math.nan
        if math.isfinite(value):
            flat = [*[a for a in flat if not isinstance(a, Num)], Num(value)]
        if op == "add":
            flat = [a for a in flat if not (isinstance(a, Num) and a.value == 0)] or [Num(0.0)]
        if op == "mul":
            flat = [a for a in flat if not (isinstance(a, Num) and a.value == 1)] or [Num(1.0)]
        args = flat
    if spec.commutative:
        args = sorted(args, key=str)
    if op in _IDEMPOTENT:
        args = [a for i, a in enumerate(args) if i == 0 or str(a) != str(args[i - 1])]
    if spec.associative:
        if len(args) == 1:
            return args[0]
        return _nest(op, args)
    if len(args) == len(node.args) and all(a is b for a, b in zip(args, node.args, strict=True)):
        return node  # already canonical: the same node keeps its printed text
    return Call(op, tuple(args))


# not(a > b) == b >= a, not(a >= b) == b > a, not(a == b) == a != b, not(a != b) == a == b
_NEGATED: dict[str, tuple[str, bool]] = {
    "gt": ("ge", True), "ge": ("gt", True), "eq": ("ne", False), "ne": ("eq", False)}
_IDEMPOTENT = frozenset({"and", "or", "min", "max"})


def _sub_as_add(node: Call) -> Call:
    """``a - c`` with constant ``c`` as ``a + (-c)``, so it joins an addition chain."""
    if node.op == "sub":
        c = _constant_value(node.args[1])
        if c is not None and math.isfinite(c):
            return Call("add", (node.args[0], Num(-c)))
    return node


def _fold(op: str, args: list[Node]) -> Num | None:
    """The value of a folding operator applied to constants, if finite; else None."""
    # the arity test keeps a builtin such as abs() from ever seeing an unchecked call
    if op not in _FOLD or len(args) != len(OPS[op].args) \
            or not all(isinstance(a, Num) for a in args):
        return None
    value = _FOLD[op](*(a.value for a in args if isinstance(a, Num)))
    return Num(float(value)) if math.isfinite(value) else None


def _combine(op: str, values: list[float]) -> float:
    """Fold the constants of an associative chain independently of order and grouping.

    ``fsum`` is exactly rounded and products are taken in sorted order, so
    ``x + 0.1 + 0.7`` and ``x + 0.7 + 0.1`` fold to the same number.
    """
    if op == "add":
        return _exact_sum(values)
    acc = 1.0 if op == "mul" else sorted(values)[0]
    for v in sorted(values):
        acc = _FOLD[op](acc, v)
    return float(acc)


def _exact_sum(values: list[float]) -> float:
    """The correctly rounded sum; ``inf`` if it overflows.

    ``fsum`` raises when a partial sum overflows, which depends on the order of
    the values (1e308 + 1e308 - 1e308); the exact rational sum does not.
    """
    try:
        return math.fsum(values)
    except OverflowError:
        try:
            return float(sum(map(Fraction, values), Fraction(0)))
        except OverflowError:
            return math.inf


def _flatten(op: str, args: list[Node]) -> list[Node]:
    """Operands of a chain of ``op``: ``add(add(a,b),add(c,d))`` → ``[a, b, c, d]``."""
    flat: list[Node] = []
    for a in args:
        if isinstance(a, Call) and op == "add":
            a = _sub_as_add(a)
        if isinstance(a, Call) and a.op == op:
            flat.extend(_flatten(op, list(a.args)))
        else:
            flat.append(a)
    return flat


def _nest(op: str, args: list[Node]) -> Node:
    """Binary left-nested form of an associative operator: ``op(op(a,b),c)``."""
    out = args[0]
    for a in args[1:]:
        out = Call(op, (out, a))
    return out


def canonical_text(source: str | Node, *, expect: Kind | None = None) -> str:
    """The canonical spelling of an expression (the input of the normalizer hash)."""
    node = parse(source, expect=expect) if isinstance(source, str) else source
    return str(canonicalize(node))


# ------------------------------------------------------------- static facts
@lru_cache(maxsize=1 << 16)
def lookback(node: Node) -> int:
    """Bars of history the expression needs before its first defined value.

    A static warm-up count: ``sma(x, n)`` needs ``n - 1`` bars more than ``x``,
    ``lag``/``highest``/``lowest``/``roc`` need ``n``, crosses need one.
    """
    if not isinstance(node, Call):
        return 0
    spec = OPS[node.op]
    inner = max((lookback(a) for a, k in zip(node.args, spec.args, strict=True)
                 if k != "window"), default=0)
    if node.op in _REGISTERED_LOOKBACK:
        return inner + _registered_lookback(node)
    window = int(_constant_value(node.args[-1]) or 0) if spec.args[-1] == "window" else 0
    extra = {"sma": window - 1, "ema": window - 1, "std": window - 1, "zscore": window - 1,
             "lag": window, "roc": window, "highest": window, "lowest": window,
             "rsi": window, "atr": window, "cross_above": 1, "cross_below": 1}.get(node.op, 0)
    return inner + extra


def _registered_lookback(node: Call) -> int:
    windows = [int(_constant_value(a) or 0)
               for a, k in zip(node.args, OPS[node.op].args, strict=True) if k == "window"]
    extra = _REGISTERED_LOOKBACK[node.op](*windows)
    # a user's function: its answer is checked here, where a bad one would do harm
    if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
        raise ExpressionError(f"{node.op}: its lookback function returned {extra!r} for "
                              f"windows {windows}; expected a non-negative integer",
                              code="EXPRESSION_OPERATOR_REGISTRY")
    return extra


def operators_used(node: Node) -> set[str]:
    if not isinstance(node, Call):
        return set()
    out = {node.op}
    for a in node.args:
        out |= operators_used(a)
    return out


def walk(node: Node) -> list[Node]:
    """All nodes, children before parents."""
    out: list[Node] = []
    if isinstance(node, Call):
        for a in node.args:
            out.extend(walk(a))
    out.append(node)
    return out


def clear_caches() -> None:
    """Forget every memoized parse, canonical form and look-back (benchmarks and tests
    that must measure or recompute, not recall)."""
    for memo in (_parse, _canonical, lookback):
        memo.cache_clear()
    _TEMPLATES.clear()
