"""Strategy language, specs, template families and samplers."""

from alphaloop.strategy.expression import canonical_text, canonicalize, parse
from alphaloop.strategy.spec import Risk, Sizing, StrategySpec

__all__ = ["Risk", "Sizing", "StrategySpec", "canonical_text", "canonicalize", "parse"]
