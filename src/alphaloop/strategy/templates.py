"""Template families: typed parameter spaces that build :class:`StrategySpec` objects.

A :class:`Family` is a strategy idea with knobs. ``sma_cross`` has two, ``fast`` and
``slow``, a validity rule ``fast < slow``, and a builder that turns
``{"fast": 10, "slow": 50}`` into::

    entry: sma(close, 10) > sma(close, 50)
    exit:  sma(close, 10) < sma(close, 50)

Each knob is a parameter space that can

- enumerate a grid (:meth:`IntParam.grid`), for exhaustive sweeps;
- map a number ``u`` in ``[0, 1)`` to a value (:meth:`IntParam.from_unit`), so that
  random and Sobol samplers can draw from the unit cube;
- check and normalize a value (:meth:`IntParam.check`): ``10.0`` becomes ``10``,
  ``0.30000000000000004`` becomes ``0.3``, anything out of range or off the step is
  rejected with the reason.

Samplers (:mod:`alphaloop.strategy.samplers`) only ever see families through this
interface, so adding a family is adding one entry to :data:`FAMILIES`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from alphaloop.errors import SpecError
from alphaloop.strategy.expression import MAX_WINDOW, format_number
from alphaloop.strategy.spec import StrategySpec

Value = int | float | str
Params = dict[str, Any]
_DIGITS = 12  # float grid values are rounded to this many decimals


class ParamError(ValueError):
    """A value outside a parameter's space; the message is the reason."""


# ------------------------------------------------------------------ params
@dataclass(frozen=True)
class IntParam:
    """Integers ``low, low + step, ..., high`` (``high - low`` must be a multiple of step)."""

    low: int
    high: int
    step: int = 1
    #: how far :meth:`widened` may move ``high`` (windows: the language's MAX_WINDOW)
    limit: int = MAX_WINDOW

    def __post_init__(self) -> None:
        if self.step < 1 or self.low > self.high or (self.high - self.low) % self.step:
            raise ValueError(f"IntParam({self.low}, {self.high}, step={self.step}): need "
                             "step >= 1, low <= high and high - low a multiple of step")

    def widened(self) -> IntParam:
        """The range grown upwards by its own width (at least one step), within
        ``limit``: seed 004 §6.2 branch A."""
        k = max(self.n_points - 1, 1)
        room = max((self.limit - self.high) // self.step, 0)
        return IntParam(self.low, self.high + min(k, room) * self.step, self.step, self.limit)

    @property
    def n_points(self) -> int:
        return (self.high - self.low) // self.step + 1

    def grid(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def from_unit(self, u: float) -> int:
        """``u`` in [0, 1) → one of the grid points, each with equal probability."""
        return self.low + _unit_index(u, self.n_points) * self.step

    def clip(self, value: float) -> int:
        """Nearest grid point to ``value`` (out-of-range values go to the nearest end)."""
        k = round((min(max(value, self.low), self.high) - self.low) / self.step)
        return self.low + int(k) * self.step

    def check(self, value: Any) -> int:
        """The value as an ``int``; :class:`ParamError` if it is not on the grid."""
        number = _number(value)
        if not float(number).is_integer():
            raise ParamError(f"must be an integer, got {value!r}")
        v = int(number)
        if not self.low <= v <= self.high:
            raise ParamError(f"= {v} is out of range {self.low}..{self.high}")
        if (v - self.low) % self.step:
            raise ParamError(f"= {v} is off the step: must be {self.low} + k*{self.step}")
        return v

    def describe(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "step": self.step}


@dataclass(frozen=True)
class FloatParam:
    """Floats in ``[low, high]``; with ``step``, only ``low + k*step`` (a grid)."""

    low: float
    high: float
    step: float | None = None
    #: how far :meth:`widened` may move ``high`` (None: no bound)
    limit: float | None = None

    def widened(self) -> FloatParam:
        """The range grown upwards by its own width (at least one step), within
        ``limit``: seed 004 §6.2 branch A."""
        width = self.high - self.low
        if self.step is None:
            grow = width if width > 0 else abs(self.high) or 1.0
            high = self.high + grow
            return FloatParam(self.low, high if self.limit is None else
                              max(min(high, self.limit), self.high), None, self.limit)
        k = max(round(width / self.step), 1)
        if self.limit is not None:
            k = min(k, max(math.floor((self.limit - self.high) / self.step + 1e-9), 0))
        return FloatParam(self.low, self._point(round(width / self.step) + k), self.step,
                          self.limit)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"FloatParam({self.low}, {self.high}): need finite low <= high")
        if self.step is not None:
            k = (self.high - self.low) / self.step if self.step > 0 else math.nan
            if not (self.step > 0 and abs(k - round(k)) < 1e-9):
                raise ValueError(f"FloatParam({self.low}, {self.high}, step={self.step}): "
                                 "high - low must be a multiple of a positive step")

    @property
    def n_points(self) -> int | None:
        """Grid size, or None for a continuous parameter."""
        if self.step is None:
            return None
        return round((self.high - self.low) / self.step) + 1

    def _point(self, k: int) -> float:
        step = self.step if self.step is not None else 0.0
        return round(self.low + k * step, _DIGITS)

    def grid(self) -> list[float]:
        if self.n_points is None:
            raise SpecError(f"FloatParam({self.low}, {self.high}) has no step, so no grid",
                            code="SPEC_NO_GRID")
        return [self._point(k) for k in range(self.n_points)]

    def from_unit(self, u: float) -> float:
        """``u`` in [0, 1) → a grid point (with step) or ``low + u*(high - low)``."""
        if self.n_points is None:
            return self.low + min(max(u, 0.0), 1.0) * (self.high - self.low)
        return self._point(_unit_index(u, self.n_points))

    def clip(self, value: float) -> float:
        v = min(max(float(value), self.low), self.high)
        if self.step is None:
            return v
        return self._point(round((v - self.low) / self.step))

    def check(self, value: Any) -> float:
        """The value as a ``float`` (snapped to the grid); :class:`ParamError` otherwise."""
        v = float(_number(value))
        if not math.isfinite(v):
            raise ParamError(f"must be finite, got {value!r}")
        tol = 1e-9 * max(1.0, abs(self.high - self.low))
        if not self.low - tol <= v <= self.high + tol:
            raise ParamError(f"= {v} is out of range {self.low}..{self.high}")
        if self.step is None:
            return min(max(v, self.low), self.high)
        k = (v - self.low) / self.step
        if abs(k - round(k)) > 1e-6:
            raise ParamError(f"= {v} is off the step: must be {self.low} + k*{self.step}")
        return self._point(round(k))

    def describe(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "step": self.step}


@dataclass(frozen=True)
class ChoiceParam:
    """One of a fixed tuple of values (numbers or strings), in the given order."""

    choices: tuple[Value, ...]

    def __post_init__(self) -> None:
        if not self.choices or len(set(self.choices)) != len(self.choices):
            raise ValueError(f"ChoiceParam{self.choices}: need distinct, non-empty choices")

    @property
    def n_points(self) -> int:
        return len(self.choices)

    def grid(self) -> list[Value]:
        return list(self.choices)

    def from_unit(self, u: float) -> Value:
        return self.choices[_unit_index(u, len(self.choices))]

    def clip(self, value: Any) -> Value:
        return self.check(value)

    def widened(self) -> ChoiceParam:
        """Choices are a list, not a range: nothing to widen."""
        return self

    def check(self, value: Any) -> Value:
        for choice in self.choices:
            if _same_choice(choice, value):
                return choice
        raise ParamError(f"= {value!r} is not one of {list(self.choices)}")

    def describe(self) -> dict[str, Any]:
        return {"type": "choice", "choices": list(self.choices)}


Param = IntParam | FloatParam | ChoiceParam


def _unit_index(u: float, n: int) -> int:
    if not 0.0 <= u <= 1.0:
        raise ValueError(f"unit value must lie in [0, 1), got {u}")
    return min(int(u * n), n - 1)


def _number(value: Any) -> float | int:
    """``value`` as a Python number; numpy scalars are accepted, bools and strings not."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if not isinstance(value, bool | str | bytes) and value is not None:
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise ParamError(f"must be a number, got {value!r}")


def _same_choice(choice: Value, value: Any) -> bool:
    if isinstance(choice, str) or isinstance(value, str):
        return choice == value
    if isinstance(value, bool):
        return False
    try:
        return math.isclose(float(choice), float(value), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------ family
class Rule(NamedTuple):
    """A validity rule over a whole parameter set, e.g. ``("fast < slow", pred)``.

    ``columns``, when given, is the same predicate over columns: parameter name ->
    a numpy array of values (one entry per point), returning a boolean array. A
    sampler's grid table then asks it about every point at once instead of calling
    ``check`` a million times; it must agree with ``check`` point by point, as
    :meth:`less` and :meth:`at_most` do.
    """

    description: str
    check: Callable[[Mapping[str, Any]], bool]
    columns: Callable[[Mapping[str, Any]], Any] | None = None

    @staticmethod
    def less(a: str, b: str) -> Rule:
        """Valid where parameter ``a`` is below parameter ``b`` (fast < slow)."""
        return Rule(f"{a} < {b}", lambda p: p[a] < p[b], lambda c: c[a] < c[b])

    @staticmethod
    def at_most(a: str, b: str) -> Rule:
        """Valid where parameter ``a`` is at most parameter ``b``."""
        return Rule(f"{a} <= {b}", lambda p: p[a] <= p[b], lambda c: c[a] <= c[b])


@dataclass(frozen=True)
class Family:
    """A strategy template: named parameter spaces, validity rules and a builder.

    ``builder`` receives validated, normalized parameters and returns a
    :class:`StrategySpec`; :meth:`build` stamps ``family`` and ``params`` on it.
    """

    name: str
    description: str
    params: dict[str, Param]
    rules: tuple[Rule, ...]
    builder: Callable[[Mapping[str, Any]], StrategySpec] = field(repr=False)

    # ------------------------------------------------------------ checks
    def validate(self, params: Mapping[str, Any]) -> Params:
        """Normalized copy of ``params`` (in declaration order) or :class:`SpecError`.

        The error (code ``SPEC_BAD_PARAMS``) names the family, the parameter and why:
        missing, unknown, not a number, out of range, off the step, or a rule violated.
        """
        if not isinstance(params, Mapping):
            raise self._error(f"parameters must be a mapping, got {type(params).__name__}")
        unknown = sorted(str(k) for k in params if k not in self.params)
        if unknown:
            raise self._error(f"unknown parameter(s) {', '.join(map(repr, unknown))}; "
                              f"expected {', '.join(self.params)}")
        missing = [k for k in self.params if k not in params]
        if missing:
            raise self._error(f"missing parameter(s) {', '.join(map(repr, missing))}")
        out: Params = {}
        for key, space in self.params.items():
            try:
                out[key] = space.check(params[key])
            except ParamError as exc:
                raise self._error(f"parameter {key!r} {exc}") from None
        broken = self.broken_rules(out)
        if broken:
            shown = ", ".join(f"{k}={v!r}" for k, v in out.items())
            raise self._error(f"rule violated: {broken[0]} (got {shown})")
        return out

    def broken_rules(self, params: Mapping[str, Any]) -> list[str]:
        """Descriptions of the rules that ``params`` (already normalized) break."""
        return [rule.description for rule in self.rules if not rule.check(params)]

    def is_valid(self, params: Mapping[str, Any]) -> bool:
        try:
            self.validate(params)
        except SpecError:
            return False
        return True

    def _error(self, message: str) -> SpecError:
        return SpecError(f"{self.name}: {message}", code="SPEC_BAD_PARAMS")

    # ------------------------------------------------------------- build
    def build(self, params: Mapping[str, Any]) -> StrategySpec:
        """Validate ``params`` and build the spec, with ``family`` and ``params`` set."""
        return self.build_valid(self.validate(params))

    def build_valid(self, clean: Params) -> StrategySpec:
        """:meth:`build` for parameters that :meth:`validate` returned (a sampler's)."""
        # the builder's spec is validated already; family and params are informational
        # (not hashed, not parsed), so a copy needs no second validation
        return self.builder(clean).model_copy(update={"family": self.name, "params": clean})

    # ------------------------------------------------------------ spaces
    def grid(self) -> Iterator[Params]:
        """Every valid combination of the parameters' grids, in lexicographic order."""
        names = list(self.params)
        for values in itertools.product(*(self.params[n].grid() for n in names)):
            combo = dict(zip(names, values, strict=True))
            if not self.broken_rules(combo):
                yield combo

    def size(self) -> int:
        """Number of valid grid combinations (SpecError SPEC_NO_GRID if a param has none)."""
        return self._size

    @cached_property
    def _size(self) -> int:
        return sum(1 for _ in self.grid())

    def from_unit(self, point: Sequence[float]) -> Params:
        """A point of the unit cube (one coordinate per parameter) → parameter values.

        The result may still break a rule; callers validate it.
        """
        if len(point) != len(self.params):
            raise ValueError(f"{self.name}: expected {len(self.params)} coordinates, "
                             f"got {len(point)}")
        return {k: space.from_unit(float(u))
                for (k, space), u in zip(self.params.items(), point, strict=True)}

    def __reduce__(self) -> str | tuple[Any, ...]:
        """Registered families pickle by name (their rules and builders are closures),
        so they can be sent to worker processes."""
        if FAMILIES.get(self.name) is self:
            return (get_family, (self.name,))
        return super().__reduce__()

    def widened(self) -> Family | None:
        """Seed 004 §6.2 branch A (MOD-411 range widen): the same family with every
        numeric range grown upwards by its own width, within each parameter's
        ``limit``; None when no range can grow. The grid keeps its points, so what was
        proposed before is still in the space (and still known to the sampler)."""
        params = {k: p.widened() for k, p in self.params.items()}
        if params == self.params:
            return None
        return Family(self.name, self.description, params, self.rules, self.builder)

    def describe(self) -> dict[str, Any]:
        """Plain-data description (for reports and the knowledge base)."""
        return {"name": self.name, "description": self.description,
                "params": {k: p.describe() for k, p in self.params.items()},
                "rules": [r.description for r in self.rules]}


# ---------------------------------------------------------------- builders
def _n(value: Any) -> str:
    """A parameter as expression text: ``10``, ``2.5``, ``-1.5``."""
    return format_number(float(value))


def _spec(entry: str, exit: str, **extra: Any) -> StrategySpec:
    return StrategySpec(entry=entry, exit=exit, **extra)


def _ma_cross(ma: str) -> Callable[[Mapping[str, Any]], StrategySpec]:
    def build(p: Mapping[str, Any]) -> StrategySpec:
        fast, slow = f"{ma}(close, {_n(p['fast'])})", f"{ma}(close, {_n(p['slow'])})"
        return _spec(f"{fast} > {slow}", f"{fast} < {slow}")
    return build


def _rsi_reversion(p: Mapping[str, Any]) -> StrategySpec:
    rsi = f"rsi(close, {_n(p['window'])})"
    return _spec(f"{rsi} < {_n(p['lower'])}", f"{rsi} > {_n(p['upper'])}")


def _donchian(p: Mapping[str, Any]) -> StrategySpec:
    stop = p["stop_loss"]
    risk = {"stop_loss": None if stop == "none" else float(stop)}
    return _spec(f"close > highest(high, {_n(p['entry_window'])})",
                 f"close < lowest(low, {_n(p['exit_window'])})", risk=risk)


def _bollinger(p: Mapping[str, Any]) -> StrategySpec:
    w, k = _n(p["window"]), _n(p["k"])
    return _spec(f"close < sma(close, {w}) - {k} * std(close, {w})", f"close > sma(close, {w})")


def _momentum(p: Mapping[str, Any]) -> StrategySpec:
    roc = f"roc(close, {_n(p['window'])})"
    return _spec(f"{roc} > {_n(p['threshold'])}", f"{roc} < 0")


def _vol_breakout(p: Mapping[str, Any]) -> StrategySpec:
    w, k = _n(p["window"]), _n(p["k"])
    return _spec(f"close > lag(close, 1) + {k} * atr({w})", f"close < sma(close, {w})")


def _zscore(p: Mapping[str, Any]) -> StrategySpec:
    z = f"zscore(close, {_n(p['window'])})"
    return _spec(f"{z} < -{_n(p['entry_z'])}", f"{z} > -{_n(p['exit_z'])}")


def _rank_momentum(p: Mapping[str, Any]) -> StrategySpec:
    rank = f"rank(roc(close, {_n(p['window'])}))"
    cut = _n(round(1.0 - float(p["top"]), _DIGITS))
    return _spec(f"{rank} >= {cut}", f"{rank} < {cut}")


# ------------------------------------------------------- cross-sectional books
# A ranked long-short book (``portfolio: {method: cross_sectional}``): every family
# below holds the top ``fraction`` of the names ranked by its score long and the bottom
# ``fraction`` short, dollar-neutral; a held name stays while it ranks within
# ``fraction + buffer``; the books are chosen afresh every ``rebalance`` bars.
XS_FACTOR_KINDS: dict[str, str] = {
    "roc": "roc(close, {w})",
    "sma_gap": "close / sma(close, {w})",
    "zscore": "zscore(close, {w})",
    "volatility": "std(roc(close, 1), {w})",
    "rsi": "rsi(close, {w})",
}
"""``xs_factor``'s grammar: a template per ``kind`` (``{w}`` is ``window``), times
``sign`` (+1 ranks high values first, -1 low values first)."""


def _xs_book(score: str, p: Mapping[str, Any]) -> StrategySpec:
    fraction, buffer = float(p["fraction"]), float(p["buffer"])
    return StrategySpec.model_validate({"portfolio": {
        "method": "cross_sectional", "score": score, "long": fraction, "short": fraction,
        # a fraction of the ranked names lies in (0, 1]: no buffer is the count 0
        "buffer": buffer if buffer > 0 else 0, "rebalance_every": int(p["rebalance"]),
        "weighting": str(p.get("weighting", "equal"))}})


def _xs_momentum(p: Mapping[str, Any]) -> StrategySpec:
    window, skip = int(p["window"]), int(p["skip"])
    # the return from ``window`` bars ago to ``skip`` bars ago (12-1 momentum: 252, 21)
    score = (f"roc(close, {_n(window)})" if skip == 0
             else f"roc(lag(close, {_n(skip)}), {_n(window - skip)})")
    return _xs_book(score, p)


def _xs_reversal(p: Mapping[str, Any]) -> StrategySpec:
    return _xs_book(f"-roc(close, {_n(p['window'])})", p)


def _xs_low_volatility(p: Mapping[str, Any]) -> StrategySpec:
    return _xs_book(f"-std(roc(close, 1), {_n(p['window'])})", p)


def _xs_factor(p: Mapping[str, Any]) -> StrategySpec:
    body = XS_FACTOR_KINDS[str(p["kind"])].format(w=_n(p["window"]))
    return _xs_book(body if int(p["sign"]) > 0 else f"-({body})", p)


def _xs_params(**params: Param) -> dict[str, Param]:
    """``params`` followed by the book's knobs (long = short = ``fraction`` <= 0.5, so
    the two books never need more than all the names)."""
    return {**params, "fraction": FloatParam(0.1, 0.3, 0.1, limit=0.5),
            "buffer": FloatParam(0.0, 0.2, 0.1, limit=0.5)}


_FAMILY_LIST: tuple[Family, ...] = (
    Family("sma_cross", "long while the fast simple moving average is above the slow one",
           {"fast": IntParam(5, 50, 5), "slow": IntParam(20, 200, 10)},
           (Rule.less("fast", "slow"),), _ma_cross("sma")),
    Family("ema_cross", "long while the fast exponential moving average is above the slow one",
           {"fast": IntParam(5, 50, 5), "slow": IntParam(20, 200, 10)},
           (Rule.less("fast", "slow"),), _ma_cross("ema")),
    Family("rsi_reversion", "buy when RSI is oversold (< lower), sell when overbought (> upper)",
           {"window": IntParam(2, 30, 2), "lower": IntParam(10, 40, 5, limit=100),
            "upper": IntParam(55, 90, 5, limit=100)},
           (Rule.less("lower", "upper"),), _rsi_reversion),
    Family("donchian_breakout", "buy a break above the previous n-bar high, sell a break "
           "below the previous m-bar low; optional stop loss",
           {"entry_window": IntParam(10, 100, 10), "exit_window": IntParam(5, 50, 5),
            "stop_loss": ChoiceParam(("none", 0.02, 0.05, 0.1))},
           (Rule.at_most("exit_window", "entry_window"),), _donchian),
    Family("bollinger_reversion", "buy below the lower Bollinger band (sma - k*std), "
           "sell back above the moving average",
           {"window": IntParam(10, 50, 5), "k": FloatParam(1.0, 3.0, 0.25)},
           (), _bollinger),
    Family("momentum", "long while the n-bar rate of change exceeds a threshold, "
           "out when it turns negative",
           {"window": IntParam(5, 120, 5), "threshold": FloatParam(0.0, 0.1, 0.01)},
           (), _momentum),
    Family("volatility_breakout", "buy a close more than k ATRs above the previous close, "
           "sell below the moving average",
           {"window": IntParam(5, 40, 5), "k": FloatParam(0.5, 3.0, 0.25)},
           (), _vol_breakout),
    Family("zscore_reversion", "buy when the z-score falls below -entry_z, sell when it "
           "recovers above -exit_z",
           {"window": IntParam(10, 60, 5), "entry_z": FloatParam(1.0, 3.0, 0.25),
            "exit_z": FloatParam(0.0, 1.0, 0.25)},
           (Rule.less("exit_z", "entry_z"),), _zscore),
    Family("rank_momentum", "hold the symbols whose n-bar return ranks in the top "
           "fraction of the cross-section",
           {"window": IntParam(20, 250, 10), "top": FloatParam(0.1, 0.5, 0.1, limit=0.9)},
           (), _rank_momentum),
    Family("xs_momentum", "long the top fraction, short the bottom fraction of the names "
           "ranked by their return from window to skip bars ago (dollar-neutral, buffered)",
           {"window": IntParam(20, 260, 20), "skip": ChoiceParam((0, 5, 21)),
            **_xs_params(rebalance=ChoiceParam((1, 5, 21)),
                         weighting=ChoiceParam(("equal", "rank")))},
           (Rule.less("skip", "window"),), _xs_momentum),
    Family("xs_reversal", "long the names that fell most over the last window bars, "
           "short those that rose most (dollar-neutral, buffered)",
           {"window": IntParam(1, 10, 1),
            **_xs_params(rebalance=ChoiceParam((1, 2, 5)),
                         weighting=ChoiceParam(("equal", "rank")))},
           (), _xs_reversal),
    Family("xs_low_volatility", "long the names with the lowest std of daily returns over "
           "window bars, short the highest (dollar-neutral, buffered)",
           {"window": IntParam(20, 260, 20),
            **_xs_params(rebalance=ChoiceParam((5, 21, 63)),
                         weighting=ChoiceParam(("equal", "rank")))},
           (), _xs_low_volatility),
    Family("xs_factor", "a long-short book ranked by sign * one of "
           + ", ".join(XS_FACTOR_KINDS.values()),
           {"kind": ChoiceParam(tuple(XS_FACTOR_KINDS)), "sign": ChoiceParam((1, -1)),
            "window": IntParam(10, 250, 20),
            **_xs_params(rebalance=ChoiceParam((1, 5, 21)))},
           (), _xs_factor),
)

FAMILIES: dict[str, Family] = {f.name: f for f in _FAMILY_LIST}


def get_family(name: str) -> Family:
    """The family called ``name``; SpecError ``SPEC_UNKNOWN_FAMILY`` lists the known ones."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise SpecError(f"unknown family {name!r}; known families: {', '.join(FAMILIES)}",
                        code="SPEC_UNKNOWN_FAMILY") from None
