"""Cost model shared by the engines.

Fees are always on unless a caller sets them to zero explicitly: the defaults are
10 bps commission per side and 5 bps slippage per side, both charged on traded
notional. Slippage moves the fill price against the trader (buy higher, sell
lower); the commission is charged on the filled notional.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_FEES_BPS = 10.0
DEFAULT_SLIPPAGE_BPS = 5.0


class CostModel(BaseModel):
    """Per-side commission and slippage in basis points of traded notional."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    fees_bps: float = Field(default=DEFAULT_FEES_BPS, ge=0, le=1000)
    slippage_bps: float = Field(default=DEFAULT_SLIPPAGE_BPS, ge=0, le=1000)

    @property
    def fee(self) -> float:
        return self.fees_bps / 1e4

    @property
    def slippage(self) -> float:
        return self.slippage_bps / 1e4

    @property
    def policy_version(self) -> str:
        return f"cost-v1:fees={self.fees_bps:g}bps,slip={self.slippage_bps:g}bps"
