"""StrategySpec: the declarative description of one strategy.

A spec is plain data (JSON/YAML) validated by pydantic::

    family: sma_cross
    entry: "sma(close, 10) > sma(close, 50)"
    exit:  "sma(close, 10) < sma(close, 50)"
    direction: long
    risk: {stop_loss: 0.05}
    sizing: {method: equal_weight}

Semantics (both engines): conditions are evaluated at bar t's close and orders
execute at bar t+1's open.

- ``long``: flat and ``entry`` true (and ``exit`` false) → buy; long and ``exit``
  true → sell.
- ``short``: the same with a short position.
- ``both``: ``entry`` → be long, ``exit`` → be short (stop-and-reverse).

Entries are *levels*, not edges: after a stop, a still-true ``entry`` re-enters at
the next open. Use ``cross_above`` for edge-triggered entries.

Its identity is :attr:`StrategySpec.strategy_id`, the normalizer hash (MOD-412):
sha256 of the canonical form, so specs that mean the same thing share an id.
``family``, ``params`` and ``name`` are informational and not hashed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alphaloop.errors import ExpressionError, SpecError
from alphaloop.strategy.expression import (
    Node,
    canonicalize,
    operators_used,
    parse,
    registered_op_names,
)
from alphaloop.strategy.operators import operator_versions
from alphaloop.yamlio import format_validation_error, read_yaml, validate_mapping

HASH_VERSION = "v1"
PF_VERSION = "pf-v1"  # the cross-sectional portfolio rules of :class:`Portfolio`
_CACHED = ("entry_node", "exit_node", "score_node", "strategy_id")  # cached_property names
# a cross-sectional spec may leave entry/exit out: every listed name with a price is
# eligible, and nothing forces a held name out between rebalances
XS_ENTRY, XS_EXIT = "close > 0", "close < 0"


class Risk(BaseModel):
    """Exits that do not depend on the signal. Fractions of the entry price; None = off.

    - ``stop_loss``: exit when the price moves against the entry by this fraction.
    - ``trailing_stop``: exit when the price falls this fraction below the highest
      high since entry (for shorts: rises above the lowest low), using bars before
      the current one.
    - ``take_profit``: exit when the price moves in favour by this fraction.
    - ``max_bars``: exit at the open after the position has been held this many bars.
    """

    # strict: "0.05" (a string) or ``true`` is an error, not silently converted
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    stop_loss: float | None = Field(default=None, gt=0, lt=1)
    trailing_stop: float | None = Field(default=None, gt=0, lt=1)
    take_profit: float | None = Field(default=None, gt=0, le=100)
    max_bars: int | None = Field(default=None, ge=1, le=100_000)


class Sizing(BaseModel):
    """How much of a symbol's sleeve a position uses.

    Capital is split equally across the symbols of the panel (one sleeve per
    symbol); the sizing method says which fraction ``w`` of its sleeve's equity a new
    position takes, decided at the signal bar:

    - ``equal_weight``: the whole sleeve (``w = 1``).
    - ``fixed_fraction``: a fixed ``fraction`` of the sleeve (``0.5`` keeps half in
      cash; ``2.0`` is a position twice the sleeve, on borrowed cash).
    - ``vol_target``: ``w = target_vol / realized_vol``, capped at ``max_leverage``.
      Realized volatility is annualized and known at the signal bar: with
      ``vol_estimator: std`` the sample std of close-to-close returns over
      ``vol_window`` bars; with ``atr`` the average true range over ``vol_window``
      bars divided by the close (a range-based estimate that also sees gaps).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    method: Literal["equal_weight", "fixed_fraction", "vol_target"] = "equal_weight"
    fraction: float | None = Field(default=None, gt=0, le=10)
    target_vol: float | None = Field(default=None, gt=0, le=5)
    vol_window: int = Field(default=20, ge=2, le=1000)
    vol_estimator: Literal["std", "atr"] = "std"
    max_leverage: float = Field(default=1.0, gt=0, le=10)

    @model_validator(mode="after")
    def _fields_match_method(self) -> Sizing:
        if self.method == "vol_target" and self.target_vol is None:
            raise ValueError("sizing.target_vol is required when method is vol_target")
        if self.method == "fixed_fraction" and self.fraction is None:
            raise ValueError("sizing.fraction is required when method is fixed_fraction")
        if self.method != "fixed_fraction" and self.fraction is not None:
            raise ValueError(f"sizing.fraction is only used by method fixed_fraction, "
                             f"not {self.method}")
        if self.method == "fixed_fraction" and self.fraction is not None \
                and self.fraction > self.max_leverage:
            raise ValueError(f"sizing.fraction {self.fraction:g} is above "
                             f"sizing.max_leverage {self.max_leverage:g}")
        return self


Count = int  # a number of names (>= 1)
Fraction = float  # a share of the names ranked at the bar, in (0, 1]


class Portfolio(BaseModel):
    """How capital is spread over the symbols (the ``pf`` policy of a spec).

    - ``sleeves`` (default): one sleeve per tradable symbol, each trading its own
      entry/exit rule with an equal share of the capital (time-series rules).
    - ``cross_sectional``: at each rebalance bar's close, the symbols tradable at that
      bar whose ``score`` is defined and whose ``entry`` is true are ranked by
      ``score`` (highest first; ties by symbol order). The top ``long`` names are held
      long and the bottom ``short`` names short; ``long``/``short``/``buffer`` are a
      share of the ranked names (a float in (0, 1], at least one name) or a count (an
      int >= 1). A held name stays while its rank is within ``long + buffer`` (its
      book's entry size plus the buffer), so a name hovering around the cut does not
      churn (Qlib's TopkDropout idea); free places go to the best-ranked names not
      held. Weights within a book follow ``weighting``: ``equal``; ``rank`` (the best
      of n selected gets n parts, the worst 1); ``score`` (proportional to the
      distance of the score from the cross-sectional median); ``inverse_vol``
      (1 / the std of close-to-close returns over ``vol_window`` bars up to the
      decision bar; names without one are not ranked). The long book is worth
      ``(gross + net) / 2`` of equity and the short book ``(gross - net) / 2``;
      ``net`` defaults to 0 (dollar-neutral) when there is a short book and to
      ``gross`` when there is none. ``max_weight`` caps any name's |weight|; what a cap
      cuts stays in cash (no redistribution, so a cap never raises another name).
      Targets are set at the decision bar's close and traded at the next open toward
      target weights of the equity at that open (held names are resized too);
      between rebalances positions drift, a name whose ``exit`` turns true is closed
      at the next open, and a name that leaves the universe is closed at its last
      close. Costs are paid from cash.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    method: Literal["sleeves", "cross_sectional"] = "sleeves"
    score: str | None = None
    long: Count | Fraction | None = None
    short: Count | Fraction | None = None
    buffer: Count | Fraction = 0
    weighting: Literal["equal", "rank", "score", "inverse_vol"] = "equal"
    vol_window: int = Field(default=20, ge=2, le=1000)
    gross: float = Field(default=1.0, gt=0, le=10)
    net: float | None = Field(default=None, ge=-10, le=10)
    rebalance_every: int = Field(default=1, ge=1, le=100_000)
    max_weight: float | None = Field(default=None, gt=0, le=10)

    @field_validator("score")
    @classmethod
    def _numeric_score(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse(v, expect="num", where="score")
            except ExpressionError as exc:
                raise ValueError(exc.message.removeprefix("score: ")) from None
        return v

    @field_validator("long", "short", "buffer")
    @classmethod
    def _count_or_fraction(cls, v: int | float | None, info: Any) -> int | float | None:
        if v is None:
            return v
        if isinstance(v, bool):
            raise ValueError("expected a count (an integer >= 1) or a fraction in (0, 1]")
        buffer = info.field_name == "buffer"  # may be empty: 0 names, or 0.0 of them
        if isinstance(v, int):
            if v < (0 if buffer else 1):
                raise ValueError(f"a count of names must be >= {0 if buffer else 1}, got {v}")
        elif not (0 <= v <= 1 if buffer else 0 < v <= 1):
            raise ValueError(f"a fraction of the ranked names must be in "
                             f"{'[0, 1]' if buffer else '(0, 1]'}, got {v:g}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Portfolio:
        if self.method == "sleeves":
            fields = type(self).model_fields
            if any(getattr(self, k) != f.default for k, f in fields.items() if k != "method"):
                raise ValueError("only method cross_sectional takes score, "
                                 "long, short, buffer, weighting, gross, net, "
                                 "rebalance_every or max_weight")
            return self
        if self.score is None:
            raise ValueError("score is required when method is cross_sectional")
        if self.long is None and self.short is None:
            raise ValueError("a cross-sectional portfolio needs long, short "
                             "or both")
        both = [v for v in (self.long, self.short) if isinstance(v, float)]
        if len(both) == 2 and sum(both) > 1:
            raise ValueError(f"long + short = {sum(both):g} is more than all "
                             "the ranked names")
        net = self.net_exposure
        if abs(net) > self.gross + 1e-12:
            raise ValueError(f"net {net:g} is beyond gross "
                             f"{self.gross:g}")
        if self.long is None and net > -self.gross + 1e-12:
            raise ValueError("without a long book net must be -gross")
        if self.short is None and net < self.gross - 1e-12:
            raise ValueError("without a short book net must equal gross "
                             "(set short for a long-short book)")
        return self

    @property
    def net_exposure(self) -> float:
        """``net``, or its default: 0 with both books, +gross long only, -gross short only."""
        if self.net is not None:
            return self.net
        if self.long is not None and self.short is not None:
            return 0.0
        return self.gross if self.short is None else -self.gross

    @property
    def cross_sectional(self) -> bool:
        return self.method == "cross_sectional"


class StrategySpec(BaseModel):
    """A declarative strategy. See the module docstring for the semantics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entry: str
    exit: str
    direction: Literal["long", "short", "both"] = "long"
    risk: Risk = Field(default_factory=Risk)
    sizing: Sizing = Field(default_factory=Sizing)
    portfolio: Portfolio = Field(default_factory=Portfolio)
    family: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _cross_sectional_defaults(cls, data: Any) -> Any:
        # a ranked book needs no entry/exit rule: fill in the always-true eligibility
        # and the never-true exit, so every spec has both strings
        if isinstance(data, Mapping) and isinstance(data.get("portfolio"), Mapping) \
                and data["portfolio"].get("method") == "cross_sectional":
            data = {"entry": XS_ENTRY, "exit": XS_EXIT, **data}
        return data

    @model_validator(mode="after")
    def _cross_sectional_alone(self) -> StrategySpec:
        if not self.portfolio.cross_sectional:
            return self
        if self.direction != "long":
            raise ValueError("direction: a cross-sectional portfolio takes its sides from "
                             "portfolio.long and portfolio.short; leave direction out")
        if self.risk != Risk():
            raise ValueError("risk: stops are per position in sleeves; a cross-sectional "
                             "portfolio exits by rank, by exit, or at a rebalance")
        if self.sizing != Sizing():
            raise ValueError("sizing: a cross-sectional portfolio sizes by "
                             "portfolio.weighting, gross and net")
        return self

    @model_validator(mode="after")
    def _take_profit_reachable(self) -> StrategySpec:
        # a short gains at most 100 %: a larger take-profit could never trigger
        tp = self.risk.take_profit
        if tp is not None and tp >= 1 and self.direction != "long":
            raise ValueError(f"risk.take_profit: {tp:g} can never trigger for a "
                             f"{self.direction} strategy (a short gains at most 100 %); "
                             "use a value below 1")
        return self

    @field_validator("entry", "exit")
    @classmethod
    def _valid_expression(cls, v: str, info: Any) -> str:
        try:
            parse(v, expect="bool", where=info.field_name)
        except ExpressionError as exc:
            # the field name is the location already: do not say it twice
            raise ValueError(exc.message.removeprefix(f"{info.field_name}: ")) from None
        return v

    def model_copy(self, *, update: Mapping[str, Any] | None = None,
                   deep: bool = False) -> StrategySpec:
        """A copy without the cached parse and hash, so ``update`` cannot leave a stale id.

        As in pydantic, ``update`` is not validated; prefer ``model_validate`` for
        untrusted values.
        """
        copy = super().model_copy(update=update, deep=deep)
        for key in _CACHED:
            copy.__dict__.pop(key, None)
        return copy

    # ------------------------------------------------------------- parsed
    @cached_property
    def entry_node(self) -> Node:
        return canonicalize(parse(self.entry, expect="bool", where="entry"))

    @cached_property
    def exit_node(self) -> Node:
        return canonicalize(parse(self.exit, expect="bool", where="exit"))

    @cached_property
    def score_node(self) -> Node | None:
        """The cross-sectional score, canonical; None for a sleeves spec."""
        score = self.portfolio.score
        return None if score is None else canonicalize(parse(score, expect="num",
                                                             where="score"))

    def expression_nodes(self) -> tuple[tuple[str, Node], ...]:
        """Every expression the spec evaluates, labelled: entry, exit (and score)."""
        roots: tuple[tuple[str, Node], ...] = (("entry", self.entry_node),
                                               ("exit", self.exit_node))
        return roots if self.score_node is None else (*roots, ("score", self.score_node))

    # ----------------------------------------------------------- identity
    def canonical(self) -> dict[str, Any]:
        """The canonical form hashed into :attr:`strategy_id` (defaults filled in)."""
        return {
            "hash_version": HASH_VERSION,
            "entry": str(self.entry_node),
            "exit": str(self.exit_node),
            "direction": self.direction,
            "risk": self.risk.model_dump(),
            "sizing": _sizing_canonical(self.sizing),
        } | self._portfolio_canonical() | self._operators_canonical()

    def _operators_canonical(self) -> dict[str, Any]:
        # a registered operator's implementation is part of the identity: another
        # function under the same name must not find this one's results in a knowledge
        # base; specs of built-in operators only keep their ids
        if not registered_op_names():
            return {}
        used = set().union(*(operators_used(root) for _, root in self.expression_nodes()))
        versions = operator_versions(used & registered_op_names())
        return {"operators": versions} if versions else {}

    def _portfolio_canonical(self) -> dict[str, Any]:
        # sleeves is the default and stays out of the hash: ids of existing specs keep
        p = self.portfolio
        if not p.cross_sectional:
            return {}
        # the pf policy's version is part of a book's identity: new rules, new ids
        out: dict[str, Any] = {"pf_version": PF_VERSION}
        out |= p.model_dump(exclude={"score", "net", "vol_window"})
        out["score"] = str(self.score_node)
        out["net"] = p.net_exposure
        if p.weighting == "inverse_vol":
            out["vol_window"] = p.vol_window
        return {"portfolio": out}

    @cached_property
    def strategy_id(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"),
                          allow_nan=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    # -------------------------------------------------------------- I/O
    @classmethod
    def from_dict(cls, data: Any, *, source: str = "spec") -> StrategySpec:
        return validate_mapping(cls, data, source=source, what="a strategy spec",
                                error=SpecError, code="SPEC_INVALID")

    @classmethod
    def from_yaml(cls, path: str | Path) -> StrategySpec:
        data = read_yaml(path, SpecError, what="spec", not_found="SPEC_NOT_FOUND",
                         malformed="SPEC_MALFORMED_YAML")
        return cls.from_dict(data, source=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(exclude_none=True, exclude_defaults=True),
                              sort_keys=False)


def _sizing_canonical(s: Sizing) -> dict[str, Any]:
    # only the fields the method reads are hashed: vol_window means nothing under
    # equal_weight, and the default estimator keeps the ids of existing specs
    if s.method == "equal_weight":
        return {"method": "equal_weight"}
    if s.method == "fixed_fraction":
        return {"method": "fixed_fraction", "fraction": s.fraction}
    out = s.model_dump(exclude={"fraction", "vol_estimator"})
    if s.vol_estimator != "std":
        out["vol_estimator"] = s.vol_estimator
    return out


__all__ = ["Portfolio", "Risk", "Sizing", "StrategySpec", "format_validation_error"]
