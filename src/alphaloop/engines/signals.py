"""Evaluate expression trees on a Bars panel, sharing sub-expressions.

:class:`SignalEvaluator` keeps every numeric sub-expression it computed, keyed by
its canonical text, so a batch of 174 SMA crossovers computes each distinct
``sma(close, n)`` once. Arrays are asset-major (N symbols × T bars): the layout the
indicator and simulation kernels walk fastest.

Boolean sub-expressions are three-valued (false, unknown, true): a comparison that
touches a NaN is unknown, ``not unknown`` is unknown, and only a *true* final value
fires. So a signal is never true before its indicators have warmed up or where a
symbol has no bar, even when the condition is negated.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import numpy as np

from alphaloop.data.bars import FIELDS, Bars
from alphaloop.engines import indicators as ind
from alphaloop.errors import AlphaloopError, ExpressionError
from alphaloop.strategy.expression import OPS, Call, Field, Node, Num, canonicalize
from alphaloop.strategy.operators import Implementation, implementation

Value = np.ndarray | float
_COMPARE = {"gt": 0, "ge": 1, "eq": 2, "ne": 3}

_NUMERIC: dict[str, Callable[..., np.ndarray]] = {
    "lag": ind.lag, "sma": ind.sma, "ema": ind.ema, "std": ind.rolling_std, "rsi": ind.rsi,
    "highest": ind.highest_prev, "lowest": ind.lowest_prev,
}


_ASSET_MAJOR: weakref.WeakKeyDictionary[Bars, tuple[dict[str, np.ndarray], np.ndarray]] = (
    weakref.WeakKeyDictionary())


def asset_major(bars: Bars) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The panel's fields as (N, T) C-contiguous copies, and its bar mask (a bar exists
    where all of OHLC do; the kernels test this one mask).

    Made once per panel and shared by every evaluator of it, as long as the panel
    lives: a sweep calls the engine again and again on one panel, and the transposed
    copies cost more than a small batch's own Python work. Bars' arrays are read-only,
    so the copies cannot go stale; the kernels and indicators only read them."""
    hit = _ASSET_MAJOR.get(bars)
    if hit is None:
        f = {name: np.array(bars.field(name).T, order="C") for name in FIELDS}
        valid = ~(np.isnan(f["open"]) | np.isnan(f["high"]) | np.isnan(f["low"])
                  | np.isnan(f["close"]))
        hit = _ASSET_MAJOR[bars] = (f, valid)
    return hit


class SignalEvaluator:
    """Evaluates canonical expression trees on one panel, caching numeric results."""

    def __init__(self, bars: Bars, *, max_cache_bytes: int = 2 << 30) -> None:
        self.bars = bars
        self.fields, self.valid = asset_major(bars)
        self.cache: dict[str, np.ndarray] = {}
        self.max_cache_bytes = max_cache_bytes
        self._cache_bytes = 0
        self._flats: dict[str, np.ndarray] = {}  # constant operands (8 bytes each)

    @property
    def shape(self) -> tuple[int, int]:
        n_sym, n_bars = self.fields["close"].shape
        return n_sym, n_bars

    def signal(self, node: Node, *, out: np.ndarray | None = None,
               canonical: bool = False) -> np.ndarray:
        """A boolean (N × T) array: True where the expression is (known to be) true.

        ``canonical=True`` skips canonicalization for trees that already are
        (``StrategySpec.entry_node``); ``out`` receives the result in place.
        """
        codes = self._eval(node if canonical else canonicalize(node))
        if isinstance(codes, float):
            raise TypeError("a boolean expression evaluated to a constant")
        return np.equal(codes, ind.TRUE, out=out)

    def values(self, node: Node) -> np.ndarray:
        """A float (N × T) array for a numeric expression (constants broadcast)."""
        out = self._eval(canonicalize(node))
        return np.full(self.shape, out) if isinstance(out, float) else out

    # ----------------------------------------------------------- internals
    def _eval(self, node: Node) -> Value:
        if isinstance(node, Num):
            return float(node.value)
        if isinstance(node, Field):
            return self.fields[node.name]
        key = str(node)
        hit = self._lookup(key)
        if hit is not None:
            return hit
        out = self._compute(node)
        # boolean nodes are cheap to recompute and numerous in a sweep: only numeric
        # intermediate results (the indicators) are worth keeping.
        if isinstance(out, np.ndarray) and out.dtype == np.float64:
            self._remember(key, out)
        return out

    def cached(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The array cached under ``key``, computed by ``compute()`` on a miss and kept
        within the cache's byte budget (for arrays that are not expression nodes)."""
        hit = self._lookup(key)
        if hit is None:
            hit = compute()
            self._remember(key, hit)
        return hit

    def _lookup(self, key: str) -> np.ndarray | None:
        hit = self.cache.pop(key, None)
        if hit is not None:
            self.cache[key] = hit  # the most recently used go last
        return hit

    def _remember(self, key: str, arr: np.ndarray) -> None:
        # least recently used out first: a batch keeps what it reuses (a comparison's
        # constant, a shared indicator) when one-off indicators overflow the budget
        old = self.cache.pop(key, None)
        if old is not None:
            self._cache_bytes -= old.nbytes
        while self.cache and self._cache_bytes + arr.nbytes > self.max_cache_bytes:
            self._cache_bytes -= self.cache.pop(next(iter(self.cache))).nbytes
        self.cache[key] = arr
        self._cache_bytes += arr.nbytes

    def _compute(self, node: Call) -> Value:
        op, args = node.op, node.args
        if op in _NUMERIC:
            return _NUMERIC[op](self._array(args[0]), _window(args[1]))
        if op == "atr":
            f = self.fields
            return ind.atr(f["high"], f["low"], f["close"], _window(args[0]))
        if op == "zscore":
            x, n = args[0], args[1]
            mean = self._array(Call("sma", (x, n)))
            sd = self._array(Call("std", (x, n)))
            return ind.standardize(self._array(x), mean, sd)
        if op == "roc":
            past = self._eval(Call("lag", (args[0], args[1])))
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(past != 0, self._eval(args[0]) / past - 1.0, np.nan)
        if op == "rank":
            return ind.cross_rank(self._array(args[0]))
        if op in ("cross_above", "cross_below"):
            return ind.cross(self._array(args[0]), self._array(args[1]), op == "cross_above")
        if op in _COMPARE:
            return self._compare(op, self._eval(args[0]), self._eval(args[1]))
        registered = implementation(op)
        if registered is not None:
            return self._registered(node, registered)
        vals = [self._eval(a) for a in args]
        return _elementwise(op, vals)

    def _registered(self, node: Call, fn: Implementation) -> np.ndarray:
        """A user-registered operator (:mod:`alphaloop.strategy.operators`)."""
        inputs: list[np.ndarray | int] = []
        for arg, kind in zip(node.args, OPS[node.op].args, strict=True):
            if kind == "window":
                inputs.append(_window(arg))
            else:
                # read-only views: a user function writing into its input would
                # corrupt the cached indicator or the bar field it was handed
                view = self._array(arg).view()
                view.flags.writeable = False
                inputs.append(view)
        try:
            out = fn(*inputs)
        except AlphaloopError:
            raise
        except Exception as exc:
            raise ExpressionError(f"operator {node.op!r} failed on {node}: "
                                  f"{type(exc).__name__}: {exc}",
                                  code="EXPRESSION_OPERATOR_FAILED") from exc
        return self._registered_result(node, out)

    def _registered_result(self, node: Call, out: object) -> np.ndarray:
        shape = self.shape
        if not isinstance(out, np.ndarray) or out.shape != shape:
            got = out.shape if isinstance(out, np.ndarray) else type(out).__name__
            raise ExpressionError(f"operator {node.op!r} returned {got}; expected a float "
                                  f"array of shape {shape} (symbols × bars)",
                                  code="EXPRESSION_OPERATOR_RESULT")
        # the kernels take writable, C-contiguous float64 (a read-only array would make
        # numba compile another specialization); an input handed back is copied
        if out.dtype != np.float64 or not out.flags.c_contiguous or not out.flags.writeable:
            try:
                out = np.array(out, dtype=np.float64, order="C")
            except (TypeError, ValueError) as exc:
                raise ExpressionError(f"operator {node.op!r} returned an array of "
                                      f"{out.dtype} that is not numeric: {exc}",
                                      code="EXPRESSION_OPERATOR_RESULT") from exc
        return out

    def _compare(self, op: str, a: Value, b: Value) -> np.ndarray:
        code = _COMPARE[op]
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            return ind.compare(a, b, code)
        if isinstance(a, np.ndarray):
            return ind.compare_scalar(a, float(b), code, False)
        if isinstance(b, np.ndarray):
            return ind.compare_scalar(b, float(a), code, True)
        return np.full(self.shape, ind._cmp(float(a), float(b), code))

    def _array(self, node: Node) -> np.ndarray:
        out = self._eval(node)
        return self.constant(out) if isinstance(out, float) else out

    def constant(self, value: float) -> np.ndarray:
        """A cached (N × T) array filled with ``value`` (kernels take arrays only)."""
        return self.cached(f"const({value!r})", lambda: np.full(self.shape, value))

    def comparison(self, node: Node) -> tuple[np.ndarray, np.ndarray, int]:
        """A canonical boolean tree as one comparison ``(a, b, op)`` for the kernel.

        A top-level comparison hands over its two operands, so the simulation
        kernel compares them bar by bar without a signal array in between; any
        other boolean tree is evaluated here and handed over as its three-valued
        codes compared ``> 1.5`` (true only where the code is TRUE).
        """
        if isinstance(node, Call) and node.op in _COMPARE:
            return self._operand(node.args[0]), self._operand(node.args[1]), _COMPARE[node.op]
        # the float codes are cached like an indicator: specs of a batch that share a
        # boolean tree share one array, not one copy each
        return (self.cached(f"codes({node})", lambda: self._float_codes(node)),
                self._flat(1.5), _COMPARE["gt"])

    def _operand(self, node: Node) -> np.ndarray:
        out = self._eval(node)
        return self._flat(out) if isinstance(out, float) else out

    def _flat(self, value: float) -> np.ndarray:
        """A constant operand of a comparison: a read-only (N × T) view of one number.

        Why not :meth:`constant`: a threshold such as ``rsi(close, 14) < 30`` would be a
        full array per distinct value (80 MB on a 50 × 200,000 minute panel) that the
        kernel streams from memory on every bar it scans. The view's strides are zero:
        8 bytes, whose reads stay in the CPU's cache. The kernels take operands in any
        layout (``engine_a.OPERAND``); a consumer that needs a contiguous array copies.
        """
        key = repr(value)
        hit = self._flats.get(key)
        if hit is None:
            hit = np.lib.stride_tricks.as_strided(np.array([value]), shape=self.shape,
                                                  strides=(0, 0), writeable=False)
            self._flats[key] = hit
        return hit

    def _float_codes(self, node: Node) -> np.ndarray:
        codes = self._eval(node)
        if isinstance(codes, float):
            raise TypeError("a boolean expression evaluated to a constant")
        return codes.astype(np.float64)


def _window(node: Node) -> int:
    assert isinstance(node, Num), "window arguments are constants after canonicalization"
    return int(node.value)


def _elementwise(op: str, v: list[Value]) -> Value:
    if all(isinstance(a, float) for a in v):
        # constants that folding left alone (e.g. 1/0): stay scalars, broadcast later
        return float(_elementwise(op, [np.asarray(a) for a in v]))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if op == "add":
            return v[0] + v[1]
        if op == "sub":
            return v[0] - v[1]
        if op == "mul":
            return v[0] * v[1]
        if op == "div":
            return np.where(np.asarray(v[1]) != 0, np.divide(v[0], v[1]), np.nan)
        if op == "neg":
            return -v[0]
        if op == "abs":
            return np.abs(v[0])
        if op == "min":
            return np.minimum(v[0], v[1])
        if op == "max":
            return np.maximum(v[0], v[1])
        # booleans are three-valued uint8 codes (see indicators.FALSE/UNKNOWN/TRUE)
        if op == "and":
            return np.minimum(v[0], v[1])
        if op == "or":
            return np.maximum(v[0], v[1])
        if op == "not":
            return ind.TRUE - v[0]
    # a spec built while a registered operator existed, evaluated after it was
    # unregistered (or in a process that never registered it)
    raise ExpressionError(f"operator {op!r} is not registered in this process: register "
                          "it (alphaloop.register_operator) before evaluating specs that "
                          "use it", code="EXPRESSION_UNKNOWN_OPERATOR")
