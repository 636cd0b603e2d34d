"""Tool-call arguments that are not valid JSON: repaired when the fix is unambiguous.

Safe repairs only: empty arguments → ``{}``; a JSON object encoded twice; a Python-literal
dict (single quotes, ``True``/``None`` — qwen3-coder does this); output cut off right after a
complete value (closing brackets appended, a dangling comma dropped). Anything else is
reported instead of guessed.
"""

from __future__ import annotations

from typing import Any

import orjson

_CLOSERS = {"{": "}", "[": "]"}
_COMPLETE_ENDINGS = ('"', "}", "]", "true", "false", "null")


def repair_arguments(text: str) -> str | None:
    """A JSON object text equivalent to ``text``, or None when no safe repair exists."""
    stripped = text.strip()
    if not stripped:
        return "{}"
    value = _loads(stripped)
    if isinstance(value, dict):
        return stripped
    if isinstance(value, str):
        inner = _loads(value)
        return orjson.dumps(inner).decode() if isinstance(inner, dict) else None
    if value is not None:
        return None
    literal = _python_literal(stripped)
    if literal is not None:
        return literal
    closed = _close_truncated(stripped)
    if closed is not None and isinstance(_loads(closed), dict):
        return closed
    return None


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _python_literal(text: str) -> str | None:
    if not text.startswith("{"):
        return None
    import ast  # only on this rare path: keeps the proxy's start-up small
    import warnings

    try:
        # Model output may hold escapes Python deprecates ("\ "): that is the model's text,
        # not our code, so the compiler's warning would only be noise in the proxy's log.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
            value = ast.literal_eval(text)
    # TypeError: a literal that cannot be built, such as a list as a dict key (`{[]}`).
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return None


def _close_truncated(text: str) -> str | None:
    """Close the brackets a cut-off JSON object left open, only when the cut fell right after
    a complete value: a cut inside a string or number could change its meaning (a truncated
    shell command is still a command)."""
    if not text.startswith("{"):
        return None
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return None
    if in_string:
        return None
    tail = text.rstrip()
    if tail.endswith(","):
        tail = tail[:-1].rstrip()
    if not tail.endswith(_COMPLETE_ENDINGS):
        return None
    return tail + "".join(reversed(stack))
