"""The operator registry: add a custom operator to the expression language.

::

    import numpy as np
    from alphaloop.strategy.operators import register_operator

    def rolling_median(x: np.ndarray, n: int) -> np.ndarray:
        out = np.full(x.shape, np.nan)          # x: N symbols × T bars, NaN = no bar
        if x.shape[1] >= n:
            win = np.lib.stride_tricks.sliding_window_view(x, n, axis=1)
            out[:, n - 1:] = np.median(win, axis=-1)
        return out

    register_operator("rmedian", rolling_median, lookback=lambda n: n - 1,
                      doc="median of the last n bars")
    StrategySpec(entry="close > rmedian(close, 20)", exit="close < rmedian(close, 20)")

A registered operator parses, type-checks, canonicalizes (its name is part of the
canonical text, so ids of specs that use it are distinct from any built-in's and
stable), has a look-back, and is evaluated (and cached) by the engines'
``SignalEvaluator``, which calls ``fn`` with one float64 (N × T) read-only array per
``"num"`` argument and one ``int`` per ``"window"`` argument, in signature order; ``fn``
returns a float array of the same shape.

Causality is the user's promise: the value at bar ``t`` must depend on bars
``<= t`` only. :func:`alphaloop.engines.lookahead.check_lookahead` tests it.

The registry is **process-global**: a registration is seen by every spec and
evaluator of the process, and by no other process (register in every worker, e.g.
in the module that defines the operator). Evaluators cache results by the canonical
text, so do not re-register a name with a different function while an evaluator
that used the old one is alive. Tests use :func:`custom_operator`, which always
unregisters.

This module evaluates nothing (floor 3): ``fn`` is held opaquely for the engines.
"""

from __future__ import annotations

import hashlib
import inspect
import keyword
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from alphaloop.errors import ExpressionError
from alphaloop.strategy.expression import (
    BUILTIN_OPS,
    FIELDS,
    FUNCTIONS,
    MAX_WINDOW,
    OPS,
    Kind,
    OpSpec,
    add_registered_op,
    registered_op_names,
    remove_registered_op,
)

Implementation = Callable[..., Any]  # (arrays..., windows...) -> array; opaque here
CODE = "EXPRESSION_OPERATOR_REGISTRY"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_IMPLEMENTATIONS: dict[str, Implementation] = {}
_VERSIONS: dict[str, str] = {}  # name -> the implementation's identity (in ids)


def register_operator(name: str, fn: Implementation, *,
                      args: Sequence[Kind] = ("num", "window"),
                      arg_names: Sequence[str] | None = None, doc: str = "",
                      min_window: int = 1,
                      lookback: Callable[..., int] | None = None,
                      version: str | None = None) -> OpSpec:
    """Add operator ``name``, computed by ``fn``; return its signature.

    - ``args``: argument kinds in order, ``"num"`` (an expression) or ``"window"`` (a
      constant integer in ``min_window..MAX_WINDOW``); at least one ``"num"``.
    - ``lookback(*windows)``: bars of history the operator adds to its inputs'
      (``n - 1`` for a rolling window of ``n``, ``n`` for a lag); default: the largest
      window, which is never too small for a window-bounded operator.
    - ``version``: the implementation's identity, part of the id of every spec that
      uses the operator, so that a knowledge base never hands back results computed
      by another implementation under the same name. Default: a hash of ``fn``'s
      source text (any edit of ``fn`` gives new ids; helpers it calls are not seen:
      give an explicit version, and change it, when they change), or its qualified
      name where the source cannot be read.

    Raises :class:`ExpressionError` (code ``EXPRESSION_OPERATOR_REGISTRY``) naming
    ``name`` when it is taken (a built-in, a bar field, a Python keyword or an
    operator already registered) or the signature is invalid.
    """
    _check_name(name)
    if not callable(fn):
        raise ExpressionError(f"operator {name!r}: fn must be callable, got "
                              f"{type(fn).__name__}", code=CODE)
    kinds = _check_args(name, args)
    names = _check_arg_names(name, kinds, arg_names)
    _check_min_window(name, min_window)
    lookback_fn = lookback or _largest_window
    _check_lookback(name, lookback_fn, kinds, min_window)
    spec = OpSpec(name, kinds, "num", names, min_window=min_window, doc=str(doc))
    identity = _version(name, fn, version)
    _IMPLEMENTATIONS[name] = fn
    _VERSIONS[name] = identity
    add_registered_op(spec, lookback_fn)
    return spec


def operator_versions(names: Iterator[str] | Sequence[str] | set[str]) -> dict[str, str]:
    """The implementation identity (``version``) of each registered operator among
    ``names``; built-ins have none (the package version pins them)."""
    return {n: _VERSIONS[n] for n in sorted(set(names)) if n in _VERSIONS}


def _version(name: str, fn: Implementation, given: str | None) -> str:
    if given is not None:
        if not isinstance(given, str) or not given.strip():
            raise ExpressionError(f"operator {name!r}: version must be a non-empty string",
                                  code=CODE)
        return given
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):  # defined in a REPL, a C function, a callable object
        text = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    return "src:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def unregister_operator(name: str) -> None:
    """Remove a registered operator; expressions using it stop parsing."""
    if name in BUILTIN_OPS:
        raise ExpressionError(f"operator {name!r} is built in and cannot be unregistered",
                              code=CODE)
    if name not in _IMPLEMENTATIONS:
        raise ExpressionError(f"operator {name!r} is not registered", code=CODE)
    del _IMPLEMENTATIONS[name]
    _VERSIONS.pop(name, None)
    remove_registered_op(name)


@contextmanager
def custom_operator(name: str, fn: Implementation, **options: Any) -> Iterator[OpSpec]:
    """Register ``name`` for the ``with`` block only (tests, notebooks)."""
    spec = register_operator(name, fn, **options)
    try:
        yield spec
    finally:
        unregister_operator(name)


def registered_operators() -> dict[str, OpSpec]:
    """The registered (non-built-in) operators and their signatures."""
    return {name: OPS[name] for name in sorted(registered_op_names())}


def implementation(name: str) -> Implementation | None:
    """The function behind a registered operator; None for built-ins (engines use it)."""
    return _IMPLEMENTATIONS.get(name)


# ---------------------------------------------------------------- checks
def _check_name(name: object) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ExpressionError(
            f"operator name {name!r} is invalid: use a letter then letters, digits or "
            "'_' (at most 64 characters)", code=CODE)
    if name in BUILTIN_OPS or name in FUNCTIONS:
        raise ExpressionError(f"operator name {name!r} is a built-in operator", code=CODE)
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ExpressionError(f"operator name {name!r} is a Python keyword", code=CODE)
    if name in FIELDS:
        raise ExpressionError(f"operator name {name!r} is a bar field", code=CODE)
    if name in _IMPLEMENTATIONS:
        # replacing in place would leave evaluators' cached results of the old one
        raise ExpressionError(f"operator {name!r} is already registered; unregister it "
                              "first", code=CODE)


def _check_args(name: str, args: Sequence[str]) -> tuple[Kind, ...]:
    if isinstance(args, str):  # ("num") is a string, not a one-element tuple
        args = (args,)
    kinds = tuple(args)
    bad = [k for k in kinds if k not in ("num", "window")]
    if bad:
        raise ExpressionError(f"operator {name!r}: argument kinds must be 'num' or "
                              f"'window', got {bad}", code=CODE)
    if "num" not in kinds:
        raise ExpressionError(f"operator {name!r}: needs at least one 'num' argument",
                              code=CODE)
    return kinds  # type: ignore[return-value]  # checked just above


def _check_arg_names(name: str, kinds: tuple[Kind, ...],
                     arg_names: Sequence[str] | None) -> tuple[str, ...]:
    if arg_names is None:
        counts = {"num": 0, "window": 0}
        out = []
        for k in kinds:
            counts[k] += 1
            out.append(f"{'x' if k == 'num' else 'n'}{counts[k] if kinds.count(k) > 1 else ''}")
        return tuple(out)
    names = tuple(str(a) for a in arg_names)
    if len(names) != len(kinds):
        raise ExpressionError(f"operator {name!r}: {len(names)} arg_names for "
                              f"{len(kinds)} arguments", code=CODE)
    return names


def _check_min_window(name: str, min_window: object) -> None:
    if isinstance(min_window, bool) or not isinstance(min_window, int) \
            or not 1 <= min_window <= MAX_WINDOW:
        raise ExpressionError(f"operator {name!r}: min_window must be an integer in "
                              f"1..{MAX_WINDOW}, got {min_window!r}", code=CODE)


def _check_lookback(name: str, fn: Callable[..., int], kinds: tuple[Kind, ...],
                    min_window: int) -> None:
    """Try the look-back once, at the smallest windows, so a broken one fails here."""
    if not callable(fn):
        raise ExpressionError(f"operator {name!r}: lookback must be callable", code=CODE)
    windows = [min_window] * kinds.count("window")
    try:
        value = fn(*windows)
    except Exception as exc:
        raise ExpressionError(f"operator {name!r}: lookback{tuple(windows)} failed: "
                              f"{type(exc).__name__}: {exc}", code=CODE) from exc
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ExpressionError(f"operator {name!r}: lookback{tuple(windows)} returned "
                              f"{value!r}; expected a non-negative integer", code=CODE)


def _largest_window(*windows: int) -> int:
    return max(windows, default=0)


__all__ = ["custom_operator", "implementation", "register_operator", "registered_operators",
           "unregister_operator"]
