"""Engine B's execution model: what a broker and the market would charge and allow.

Each part is a small typed config with conservative defaults; together they are an
:class:`ExecutionModel`, read from YAML (``alphaloop verify --costs costs.yaml``)::

    initial_capital: 1000000      # account currency
    commission: {bps: 10, per_share: 0.0, minimum: 0.0}
    spread: {model: fixed, bps: 10}          # or {model: range, range_fraction: 0.1}
    impact: {k: 1.0, vol_window: 20}
    volume: {max_participation: 0.1, order_ttl_bars: null, adv_window: 20}
    lot_size: 1                   # integer shares; 0 = fractional
    borrow_bps: 50                # annual short borrow fee
    max_leverage: 2.0             # gross exposure / equity after an order
    rebalance: {every_bars: 0, threshold: 0.1}

What each one means, per fill of ``q`` shares at reference price ``p`` (the open
for market orders, the level for a stop or take-profit, the open when a gap
jumps the level). Nothing here reads the fill bar's high, low, close or volume:
at the open they are not known yet (DESIGN §4), so range, σ and volume all come
from the bars before:

- **spread**: every fill crosses half the quoted spread: a buy pays
  ``p·(1 + s/2)``, a sell gets ``p·(1 - s/2)``. ``fixed``: ``s = bps/1e4``;
  ``range``: ``s = range_fraction · (high - low) / close`` of the symbol's last bar
  before the fill's bar (a high-low spread estimate, cf. Corwin & Schultz 2012;
  ``s = range_fraction`` before there is one).
- **impact** (square-root law, Almgren et al. 2005; Tóth et al. 2011 measure a
  prefactor of order 1): the price moves against the order by ``k · σ ·
  sqrt(q / V)``, with ``σ`` the sample std (ddof = 1) of the last ``vol_window``
  bar returns *before* the fill's bar (no impact until that many exist; the
  estimator vol-target sizing uses) and ``V`` the ADV: the mean volume of the bars
  the symbol printed among the last ``adv_window`` bars before the fill's bar (no
  ADV counts as participation 1).
- **commission**: ``max(bps/1e4 · q · price + per_share · q, minimum)`` per fill
  (a partial fill on a later bar is a new execution and pays its own minimum).
- **volume**: a fill takes at most ``max_participation · ADV`` shares in a bar (no
  ADV: none; a model with a cap or impact trades a symbol only from its first bar
  with volume, see :mod:`alphaloop.engines.universe`);
  the rest of the order is carried to the next bars' opens until filled, replaced
  by a new decision, or it has had ``order_ttl_bars`` bars to fill (then it is
  cancelled at that bar's close). A cancelled remainder is reported as unfilled,
  valued at the close where it was cancelled. ``null`` = unlimited volume. An
  order's size is fixed in shares when it first fills, so with no leverage cap a
  rising price (or a second minimum commission) can take cash below zero.
- **lot_size**: positions stay in whole lots (0 = fractional shares). A sleeve's
  orders are rounded down to whole lots; a ranked book's share targets are rounded
  toward zero to whole lots, so a reduction may sell up to one lot more than the
  exact target asks (target 10.7 shares with 12 held, lot 1: sell 2).
- **borrow_bps**: a short held over a bar boundary pays ``borrow_bps/1e4 ·
  days/365 · |q| · previous close`` (ACT/365 calendar days).
- **max_leverage**: an order that adds exposure is cut so that portfolio gross
  exposure stays within ``max_leverage × equity`` at the fill bar's open; cash
  can therefore go negative only when ``max_leverage > 1`` (by at most
  ``(max_leverage - 1) × equity``). ``null`` = no cap.
- **rebalance**: every ``every_bars`` bars a held position is resized to its
  sizing target when it drifted by more than ``threshold`` (relative); 0 = never.

Defaults: 10 bps commission and a 10 bps spread match engine A's default 10 bps
fee + 5 bps slippage per side; on top come impact (k = 1), a 10 % participation
cap, whole shares, 50 bps/yr borrow and Reg-T-like 2× gross leverage.
:meth:`ExecutionModel.frictionless` turns every friction off (the parity setting)
and :meth:`ExecutionModel.from_cost_model` reproduces engine A's cost model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from alphaloop.engines.costs import CostModel
from alphaloop.errors import ExecutionConfigError
from alphaloop.yamlio import read_yaml, validate_mapping

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Commission(BaseModel):
    """Broker commission per fill: a rate on notional plus a per-share fee, floored."""

    model_config = _STRICT
    bps: float = Field(default=10.0, ge=0, le=1000)
    per_share: float = Field(default=0.0, ge=0, le=100)
    minimum: float = Field(default=0.0, ge=0)


class Spread(BaseModel):
    """The quoted bid-ask spread; each fill pays half of it."""

    model_config = _STRICT
    model: Literal["fixed", "range"] = "fixed"
    bps: float = Field(default=10.0, ge=0, le=2000)
    range_fraction: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _range_needs_fraction(self) -> Spread:
        if self.model == "range" and self.range_fraction is None:
            raise ValueError("spread.range_fraction is required when model is range")
        if self.model == "fixed" and self.range_fraction is not None:
            raise ValueError("spread.range_fraction is only used when model is range")
        return self


class Impact(BaseModel):
    """Square-root market impact ``k · σ · sqrt(participation)``."""

    model_config = _STRICT
    k: float = Field(default=1.0, ge=0, le=100)
    vol_window: int = Field(default=20, ge=2, le=1000)


class Volume(BaseModel):
    """Liquidity limits: participation cap per bar, order lifetime, ADV window."""

    model_config = _STRICT
    max_participation: float | None = Field(default=0.1, gt=0, le=1)
    order_ttl_bars: int | None = Field(default=None, ge=1, le=100_000)
    adv_window: int = Field(default=20, ge=1, le=1000)


class Rebalance(BaseModel):
    """Resize held positions to their sizing target every ``every_bars`` bars."""

    model_config = _STRICT
    every_bars: int = Field(default=0, ge=0, le=100_000)
    threshold: float = Field(default=0.1, ge=0, le=10)


class ExecutionModel(BaseModel):
    """Every cost and execution rule engine B applies. See the module docstring."""

    model_config = _STRICT
    initial_capital: float = Field(default=1_000_000.0, gt=0, le=1e15)
    commission: Commission = Field(default_factory=Commission)
    spread: Spread = Field(default_factory=Spread)
    impact: Impact = Field(default_factory=Impact)
    volume: Volume = Field(default_factory=Volume)
    lot_size: float = Field(default=1.0, ge=0, le=1e6)
    borrow_bps: float = Field(default=50.0, ge=0, le=100_000)
    max_leverage: float | None = Field(default=2.0, gt=0, le=100)
    rebalance: Rebalance = Field(default_factory=Rebalance)

    # ----------------------------------------------------------- presets
    @classmethod
    def frictionless(cls, initial_capital: float = 1.0) -> ExecutionModel:
        """Every friction off: no costs, unlimited volume, fractional shares, no caps."""
        return cls(initial_capital=initial_capital,
                   commission=Commission(bps=0.0), spread=Spread(bps=0.0),
                   impact=Impact(k=0.0), volume=Volume(max_participation=None),
                   lot_size=0.0, borrow_bps=0.0, max_leverage=None)

    @classmethod
    def from_cost_model(cls, costs: CostModel, initial_capital: float = 1.0) -> ExecutionModel:
        """Engine A's cost model: commission on notional and slippage as half-spread,
        nothing else (so engine B then reproduces engine A)."""
        return cls.frictionless(initial_capital).model_copy(update={
            "commission": Commission(bps=costs.fees_bps),
            "spread": Spread(bps=2.0 * costs.slippage_bps)})

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "execution model") -> ExecutionModel:
        return validate_mapping(cls, {} if data is None else data, source=source,
                                what="an execution model", error=ExecutionConfigError,
                                code="EXEC_CONFIG_INVALID")

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExecutionModel:
        data = read_yaml(path, ExecutionConfigError, what="execution model",
                         not_found="EXEC_CONFIG_NOT_FOUND",
                         malformed="EXEC_CONFIG_MALFORMED_YAML")
        return cls.from_dict(data, source=str(path))

    @property
    def needs_volume(self) -> bool:
        """Whether fills depend on bar volume (a participation cap or impact): then a
        bar without positive volume cannot be traded."""
        return self.volume.max_participation is not None or self.impact.k > 0

    # --------------------------------------------------------- for kernels
    @property
    def version(self) -> str:
        """A short stable id of every setting (recorded with each verification)."""
        import hashlib
        import json
        blob = json.dumps(self.model_dump(), sort_keys=True)
        return "exec-v1:" + hashlib.sha256(blob.encode()).hexdigest()[:12]

    def kernel_params(self) -> np.ndarray:
        """The float vector :mod:`kernel_b` reads (indices ``P_*`` there)."""
        from alphaloop.engines import kernel_b as kb
        p = np.zeros(kb.N_PARAMS)
        p[kb.P_COMM] = self.commission.bps / 1e4
        p[kb.P_PER_SHARE] = self.commission.per_share
        p[kb.P_MIN_COMM] = self.commission.minimum
        if self.spread.model == "fixed":
            p[kb.P_SPREAD_MODEL], p[kb.P_SPREAD] = 0.0, self.spread.bps / 1e4 / 2.0
        else:
            p[kb.P_SPREAD_MODEL], p[kb.P_SPREAD] = 1.0, float(self.spread.range_fraction or 0)
        p[kb.P_IMPACT_K] = self.impact.k
        mp = self.volume.max_participation
        p[kb.P_MAX_PART] = math.inf if mp is None else mp
        p[kb.P_TTL] = float(self.volume.order_ttl_bars or 0)
        p[kb.P_LOT] = self.lot_size
        p[kb.P_BORROW] = self.borrow_bps / 1e4
        p[kb.P_MAX_LEV] = math.inf if self.max_leverage is None else self.max_leverage
        p[kb.P_REB_EVERY] = float(self.rebalance.every_bars)
        p[kb.P_REB_THRESH] = self.rebalance.threshold
        return p
