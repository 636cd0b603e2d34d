"""A stack file that passed the schema: the stack, where it came from, and how to point at a
place in it (:meth:`LoadedStack.problem`). Checks and lint take it; the loader makes it."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Problem
from . import schema
from .presets import Preset
from .yamlpos import KeyPath, Positions, render_path


@dataclass
class LoadedStack:
    """A valid stack with where it came from and the lint warnings it raised."""

    stack: schema.Stack
    path: Path
    positions: Positions
    warnings: list[Problem] = field(default_factory=list)
    presets: dict[str, Preset] = field(default_factory=dict)  # by the `preset:` value

    @property
    def filename(self) -> str:
        return str(self.path)

    def problem(self, message: str, key_path: KeyPath, *, fix: str | None = None) -> Problem:
        """A problem located at ``key_path`` in this stack's file."""
        return located(message, key_path, self.positions, self.filename, fix=fix)


# Checks run on a schema-valid stack; each returns its problems (errors) — see checks.py.
Check = Callable[[LoadedStack], list[Problem]]


def located(
    message: str, key_path: KeyPath, positions: Positions, filename: str, *, fix: str | None = None,
    at_key: bool = False,
) -> Problem:
    pos = positions.of_key(key_path) if at_key else positions.of_value(key_path)
    return Problem(
        message,
        file=filename,
        line=pos.line if pos else None,
        column=pos.column if pos else None,
        key_path=render_path(key_path),
        fix=fix,
    )



def did_you_mean(word: str, options: list[str], what: str) -> str:
    """A fix naming the closest option, else listing them."""
    unique = sorted(set(options))
    close = difflib.get_close_matches(word, unique, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if unique:
        return f"remove it; known {what}s: {', '.join(unique)}"
    return "remove it"
