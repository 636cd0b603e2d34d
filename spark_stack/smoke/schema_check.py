"""A JSON Schema check for tool arguments: the subset Claude Code's tool schemas use (pure).

``type`` (one or a list), ``properties``, ``required``, ``additionalProperties`` (false or a
schema), ``enum``, ``const``, ``anyOf``, ``items``, ``minimum`` / ``maximum`` /
``exclusiveMinimum`` / ``exclusiveMaximum``, ``minLength`` / ``maxLength``, ``minItems`` /
``maxItems`` and ``pattern``; annotations (``description``, ``default``, ``$schema``) are
ignored. Returns every problem, each with its path, so a failed check says what was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_problems(value: Any, schema: Any, path: str = "$") -> list[str]:
    """What in ``value`` breaks ``schema`` (empty: it is valid)."""
    if not isinstance(schema, Mapping):
        return []
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, name) for name in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(value).__name__}"]
    problems: list[str] = []
    if "const" in schema and value != schema["const"]:
        problems.append(f"{path}: must be {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "anyOf" in schema and all(schema_problems(value, option, path)
                                 for option in schema["anyOf"]):
        problems.append(f"{path}: matches none of anyOf")
    if isinstance(value, dict):
        problems += _object_problems(value, schema, path)
    elif isinstance(value, list):
        problems += _bounds(len(value), schema, path, "minItems", "maxItems", "items")
        for index, item in enumerate(value):
            problems += schema_problems(item, schema.get("items"), f"{path}[{index}]")
    elif isinstance(value, str):
        problems += _bounds(len(value), schema, path, "minLength", "maxLength", "characters")
        pattern = schema.get("pattern")
        if isinstance(pattern, str) and re.search(pattern, value) is None:
            problems.append(f"{path}: does not match {pattern!r}")
    elif _is(value, "number"):
        problems += _number_problems(value, schema, path)
    return problems


def _is(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("number", "integer"):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, (object,)))


def _object_problems(value: dict[str, Any], schema: Mapping[str, Any], path: str) -> list[str]:
    problems = [f"{path}: missing required {key!r}" for key in schema.get("required", ())
                if key not in value]
    properties = schema.get("properties") or {}
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            problems += schema_problems(item, properties[key], f"{path}.{key}")
        elif extra is False:
            problems.append(f"{path}: unexpected property {key!r}")
        elif isinstance(extra, Mapping):
            problems += schema_problems(item, extra, f"{path}.{key}")
    return problems


def _bounds(size: int, schema: Mapping[str, Any], path: str, low: str, high: str,
            unit: str) -> list[str]:
    problems = []
    if isinstance(schema.get(low), int) and size < schema[low]:
        problems.append(f"{path}: fewer than {schema[low]} {unit}")
    if isinstance(schema.get(high), int) and size > schema[high]:
        problems.append(f"{path}: more than {schema[high]} {unit}")
    return problems


def _number_problems(value: float, schema: Mapping[str, Any], path: str) -> list[str]:
    checks = (("minimum", value < schema.get("minimum", value)),
              ("maximum", value > schema.get("maximum", value)),
              ("exclusiveMinimum", "exclusiveMinimum" in schema
               and value <= schema["exclusiveMinimum"]),
              ("exclusiveMaximum", "exclusiveMaximum" in schema
               and value >= schema["exclusiveMaximum"]))
    return [f"{path}: {value} breaks {name} {schema[name]}" for name, broken in checks if broken]
