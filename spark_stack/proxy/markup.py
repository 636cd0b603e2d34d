"""Tool calls that leaked into the text as qwen3_coder markup, found and parsed back (pure).

On the Spark, vLLM's tool-call parser sometimes misses a call (MTP with prefix caching): the
answer ends with ``finish_reason: stop`` and the call is left in the text as
``<tool_call><function=NAME><parameter=KEY>VALUE</parameter></function></tool_call>``. Claude
Code then sees prose and stops. A leak is counted (and, with ``proxy.repair_tool_markup``,
turned back into ``tool_use`` blocks) only when everything from the first marker to the end of
the text is well-formed calls and the marker is outside any Markdown code span or fence (an odd
number of backticks before it): prose that merely shows the syntax is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

MARKERS = ("<tool_call>", "<function=")
# The longest a marker's beginning can be when a delta ends in the middle of it.
LONGEST_MARKER = max(len(marker) for marker in MARKERS)
_CALL = re.compile(
    r"\s*(?:<tool_call>\s*)?<function=([^>\s]+)>((?:\s*<parameter=[^>\s]+>.*?</parameter>)*)"
    r"\s*</function>\s*(?:</tool_call>)?",
    re.DOTALL,
)
_PARAMETER = re.compile(r"<parameter=([^>\s]+)>\n?(.*?)\n?</parameter>", re.DOTALL)


@dataclass(frozen=True)
class LeakedCall:
    """One call recovered from the text: the tool's name and its arguments as JSON."""

    name: str
    arguments: str


def marker_index(text: str) -> int:
    """Where the first marker starts in ``text`` (-1: none)."""
    found = [i for i in (text.find(marker) for marker in MARKERS) if i >= 0]
    return min(found) if found else -1


def partial_marker(text: str) -> int:
    """How many characters at the end of ``text`` could begin a marker (0: none)."""
    start = text.rfind("<", -LONGEST_MARKER)
    if start < 0:
        return 0
    rest = text[start:]
    return len(rest) if any(marker.startswith(rest) for marker in MARKERS) else 0


def in_code(before: str) -> bool:
    """Whether text following ``before`` is inside a Markdown code span or fence."""
    return before.count("`") % 2 == 1


def parse_calls(tail: str, tools: Sequence[Any] | None) -> list[LeakedCall] | None:
    """The calls ``tail`` consists of (whitespace between them allowed), or None when any of it
    is not a well-formed call."""
    calls: list[LeakedCall] = []
    position = 0
    types = _parameter_types(tools)
    while position < len(tail):
        match = _CALL.match(tail, position)
        if match is None or match.end() == position:
            return None if tail[position:].strip() else calls or None
        name = match.group(1)
        known = types.get(name, {})
        arguments = {key: _value(value, known.get(key))
                     for key, value in _PARAMETER.findall(match.group(2))}
        calls.append(LeakedCall(name, orjson.dumps(arguments).decode()))
        position = match.end()
    return calls or None


def split_leaked_calls(
    text: str, tools: Sequence[Any] | None
) -> tuple[str, list[LeakedCall]] | None:
    """``text`` as the prose before the leaked calls and the calls, or None when it has none."""
    start = marker_index(text)
    if start < 0 or in_code(text[:start]):
        return None
    calls = parse_calls(text[start:], tools)
    return None if calls is None else (text[:start].rstrip(), calls)


def _parameter_types(tools: Sequence[Any] | None) -> dict[str, dict[str, Any]]:
    """Each tool's parameters → their JSON schema ``type`` (Anthropic or OpenAI tool shape)."""
    types: dict[str, dict[str, Any]] = {}
    for tool in tools or ():
        if not isinstance(tool, Mapping):
            continue
        inner = tool.get("function")
        function: Mapping[str, Any] = inner if isinstance(inner, Mapping) else tool
        schema = function.get("input_schema") or function.get("parameters") or {}
        properties = schema.get("properties") if isinstance(schema, Mapping) else None
        if isinstance(function.get("name"), str) and isinstance(properties, Mapping):
            types[function["name"]] = {
                key: spec.get("type") if isinstance(spec, Mapping) else None
                for key, spec in properties.items()
            }
    return types


def _value(raw: str, kind: Any) -> Any:
    """A parameter's text as its schema says (qwen3_coder's rule): strings stay text, anything
    else is read as JSON when it parses."""
    if kind == "string" or (isinstance(kind, list) and "string" in kind):
        return raw
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
