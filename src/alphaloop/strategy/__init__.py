"""Strategy language, specs, template families and samplers."""

from alphaloop.strategy.constraints import (
    Clause,
    Constraint,
    ConstraintLike,
    constraint_id,
    forbidden_by,
)
from alphaloop.strategy.expression import canonical_text, canonicalize, parse
from alphaloop.strategy.samplers import SAMPLER_KINDS, Sampler, make_sampler
from alphaloop.strategy.spec import Risk, Sizing, StrategySpec
from alphaloop.strategy.templates import (
    FAMILIES,
    ChoiceParam,
    Family,
    FloatParam,
    IntParam,
    Rule,
    get_family,
)

__all__ = [
    "FAMILIES",
    "SAMPLER_KINDS",
    "ChoiceParam",
    "Clause",
    "Constraint",
    "ConstraintLike",
    "Family",
    "FloatParam",
    "IntParam",
    "Risk",
    "Rule",
    "Sampler",
    "Sizing",
    "StrategySpec",
    "canonical_text",
    "canonicalize",
    "constraint_id",
    "forbidden_by",
    "get_family",
    "make_sampler",
    "parse",
]
