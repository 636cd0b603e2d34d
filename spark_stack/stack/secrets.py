"""Secrets by reference: ``${NAME}`` in the stack file, resolved from the environment at use time.

A reference is never stored resolved and never printed: :func:`mask` shows ``***`` in its place.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from ..errors import MissingSecret

REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MASK = "***"


def is_reference(value: str) -> bool:
    """True when ``value`` is exactly one ``${NAME}`` reference."""
    return REFERENCE.fullmatch(value) is not None


def referenced_names(value: str) -> list[str]:
    """The environment variable names ``value`` refers to, in order."""
    return REFERENCE.findall(value)


def has_reference(value: str) -> bool:
    return REFERENCE.search(value) is not None


def mask(value: str) -> str:
    """``value`` with every reference shown as ``***`` (safe to print)."""
    return REFERENCE.sub(MASK, value)


def resolve(value: str, environ: Mapping[str, str] | None = None, *, where: str = "") -> str:
    """Replace every ``${NAME}`` in ``value`` with the environment's value.

    Raises :class:`MissingSecret` (exit 2) naming the variable (never its value) when one is unset
    or empty.
    """
    env = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            place = f" (used by {where})" if where else ""
            raise MissingSecret(
                f"environment variable {name} is not set{place}",
                fix=f"export {name}=... before running spark-stack",
            )
        if env[name] == "":
            place = f" (used by {where})" if where else ""
            raise MissingSecret(
                f"environment variable {name} is empty{place}: an empty secret is refused "
                "(as a token it would turn authentication off)",
                fix=f"export {name} with the secret's value",
            )
        return env[name]

    return REFERENCE.sub(substitute, value)
