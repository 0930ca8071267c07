"""Reading YAML the strict way, for every file a user writes (specs, policies, configs).

PyYAML's SafeLoader silently keeps the last of two equal keys, reads ``1e-3`` as
a string and ``yes``/``on`` as true (YAML 1.1). :class:`StrictLoader` rejects duplicate
keys with their lines and reads exponent floats and booleans as YAML 1.2 does. :func:`read_yaml` turns every
failure into the caller's error class with the file, line and column.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from alphaloop.errors import AlphaloopError

M = TypeVar("M", bound=BaseModel)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, reads ``1e-3`` as a float and only
    ``true``/``false`` as booleans (YAML 1.2: ``yes``, ``no``, ``on`` and ``off`` stay
    words, so a strict boolean such as a policy's ``allow_live`` refuses them), and a
    document whose aliases expand past :data:`MAX_EXPANDED_NODES` values."""

    def construct_document(self, node: yaml.Node) -> Any:
        _expanded(node, {})
        return super().construct_document(node)


_BOOL = "tag:yaml.org,2002:bool"
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
StrictLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable key: construct_mapping reports it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first defined at line {first})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

MAX_EXPANDED_NODES = 100_000
"""The most values a document may hold once its aliases are written out: 40 nested
anchors each used twice (a few hundred bytes) would otherwise be 2^40 values for
whatever walks the result (a server would spin on a policy body)."""


def _expanded(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values ``node`` holds with every alias written out (a DAG walked once)."""
    key = id(node)
    if key in memo:
        if memo[key] < 0:  # reached again while inside it: a collection inside itself
            raise yaml.constructor.ConstructorError(
                None, None, "an alias (*name) is used inside the collection it names: the "
                "value would never end", node.start_mark)
        return memo[key]
    memo[key] = -1  # being walked
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded(k, memo) + _expanded(v, memo) for k, v in node.value)
    else:
        size = 1
    if size > MAX_EXPANDED_NODES:
        raise yaml.constructor.ConstructorError(
            None, None, f"the document holds more than {MAX_EXPANDED_NODES:,} values once "
            "its aliases (*name) are expanded", node.start_mark)
    memo[key] = size
    return size

StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str, error: type[AlphaloopError], code: str) -> Any:
    """Parse ``text``; a malformed document raises ``error(code)`` with line and column."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and cmark is not None and (mark is None or cmark.line != mark.line):
            problem += f" ({context} started at line {cmark.line + 1}, column {cmark.column + 1})"
        raise error(f"{source}: malformed YAML{where}: {problem}", code=code) from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise error(f"{source}: malformed YAML: nested too deeply", code=code) from None


def read_yaml(path: str | Path, error: type[AlphaloopError], *, what: str,
              not_found: str, malformed: str) -> Any:
    """Read and parse a YAML file; a missing, unreadable, non-UTF-8 or malformed file
    raises ``error`` with ``not_found`` / ``malformed`` codes naming the file."""
    p = Path(path)
    if p.is_dir():
        raise error(f"{what} file {p} is a folder, not a file", code=not_found)
    if not p.is_file():
        raise error(f"{what} file not found: {p}", code=not_found)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{p}: not a UTF-8 text file (byte {exc.start}): {exc.reason}",
                    code=malformed) from None
    except OSError as exc:
        raise error(f"{p}: cannot read {what} file: {exc.strerror or exc}",
                    code=not_found) from None
    return parse_yaml(text, str(p), error, malformed)


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field.path: reason``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "spec"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def validate_mapping(model: type[M], data: Any, *, source: str, what: str,
                     error: type[AlphaloopError], code: str) -> M:
    """``model`` from a parsed YAML/JSON mapping; anything else, or a field that
    fails validation, raises ``error(code)`` naming ``source`` and the field."""
    if not isinstance(data, dict):
        raise error(f"{source}: {what} must be a mapping, got {type(data).__name__}",
                    code=code)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{source}: {format_validation_error(exc)}", code=code) from None
