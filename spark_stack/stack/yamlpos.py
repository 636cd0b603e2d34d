"""YAML parsing that keeps where each key and value stands, for error messages.

PyYAML's ``safe_load`` forgets positions and silently accepts duplicate keys; composing the node
tree ourselves keeps both: every key path maps to the line/column of its key and its value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import Problem

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    line: int
    column: int


@dataclass
class Positions:
    """Line/column of each key path's key (for unknown keys) and value (for bad values)."""

    keys: dict[KeyPath, Position] = field(default_factory=dict)
    values: dict[KeyPath, Position] = field(default_factory=dict)

    def of_value(self, path: KeyPath) -> Position | None:
        """The value's position, else the nearest enclosing one that is known."""
        for cut in range(len(path), -1, -1):
            prefix = path[:cut]
            found = self.values.get(prefix) if cut == len(path) else None
            found = found or self.keys.get(prefix) or self.values.get(prefix)
            if found:
                return found
        return None

    def of_key(self, path: KeyPath) -> Position | None:
        return self.keys.get(path) or self.of_value(path)


def _mark(mark: yaml.Mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def parse(text: str, filename: str) -> tuple[Any, Positions, list[Problem]]:
    """Parse YAML text; returns (data, positions, problems). Data is None on a syntax error."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "invalid YAML"
        start = exc.context_mark
        if exc.context and start is not None and mark is not None and start.line != mark.line:
            # e.g. an unclosed quote: the parser fails at the end, the cause is where it began
            reason += f" ({exc.context} at line {start.line + 1}, column {start.column + 1})"
        problem = Problem(
            f"YAML syntax error: {reason}",
            file=filename,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
            fix="check indentation, quoting and the ':' after each key near this line",
        )
        return None, Positions(), [problem]
    except yaml.YAMLError as exc:
        return None, Positions(), [Problem(f"YAML error: {exc}", file=filename)]
    finally:
        loader.dispose()
    positions = Positions()
    problems: list[Problem] = []
    if node is not None:
        _walk(node, (), positions, problems, filename)
    return data, positions, problems


def _walk(
    node: yaml.Node, path: KeyPath, positions: Positions, problems: list[Problem], filename: str
) -> None:
    positions.values.setdefault(path, _mark(node.start_mark))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, Position] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            key_pos = _mark(key_node.start_mark)
            if key in seen:
                problems.append(
                    Problem(
                        f"duplicate key '{key}' (first defined at line {seen[key].line})",
                        file=filename,
                        line=key_pos.line,
                        column=key_pos.column,
                        key_path=render_path(path),
                        fix="keep one of the two entries",
                    )
                )
                continue
            seen[key] = key_pos
            child = (*path, key)
            positions.keys[child] = key_pos
            _walk(value_node, child, positions, problems, filename)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), positions, problems, filename)


def render_path(path: KeyPath) -> str:
    """``('models', 0, 'port')`` → ``models[0].port``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text
