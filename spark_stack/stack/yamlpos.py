"""YAML parsing that keeps where each key and value stands, for error messages.

PyYAML's ``safe_load`` forgets positions and silently accepts duplicate keys; composing the node
tree ourselves keeps both: every key path maps to the line/column of its key and its value.

A stack file is untrusted input, and YAML's aliases let a few hundred bytes stand for billions of
values (an "alias bomb"), or for themselves (``&r [*r]``). Before anything is composed, one pass
over the parser's events (:func:`_bounds_problem`, linear in the file's size) refuses a
recursive alias, nesting deeper than :data:`MAX_DEPTH` and an expansion beyond
:data:`MAX_EXPANDED_VALUES`; the position walk then visits each node once, however often it is
referred to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import Problem

KeyPath = tuple[str | int, ...]

# A real stack file nests about six levels deep and holds a few hundred values.
MAX_DEPTH = 64
MAX_EXPANDED_VALUES = 10_000
_ALIAS_FIX = "write the values out, or refer to an anchor only where a few copies are meant"


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
    try:
        bounds = _bounds_problem(text, filename)
    except yaml.MarkedYAMLError:
        bounds = None  # the composing parse below reports it, located
    except yaml.reader.ReaderError as exc:
        return None, Positions(), [_unprintable(text, exc, filename)]
    if bounds is not None:
        return None, Positions(), [bounds]
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
        _walk(node, (), positions, problems, filename, set())
    return data, positions, problems


def _bounds_problem(text: str, filename: str) -> Problem | None:
    """The first place where the document nests too deeply, refers to itself or expands too far.

    Each anchor's expanded size is counted once, when its node ends; an alias adds that count
    to its parent. So the pass is linear in the text, whatever the aliases expand to.
    """
    open_anchors: list[str | None] = []  # the anchor of each collection being read
    counts: list[int] = []  # the expanded size of each collection being read
    sizes: dict[str, int] = {}  # the expanded size of each anchor read so far
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        where = event.start_mark
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_anchors) >= MAX_DEPTH:
                return _located(
                    f"the YAML nests deeper than {MAX_DEPTH} levels", where, filename,
                    "a stack file needs a few levels: flatten the structure (check for "
                    "unclosed '[' or '{')",
                )
            open_anchors.append(event.anchor)
            counts.append(1)
            total += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = open_anchors.pop(), counts.pop()
            if anchor is not None:
                sizes[anchor] = size
            if counts:
                counts[-1] += size
        elif isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
            if isinstance(event, yaml.AliasEvent) and event.anchor in open_anchors:
                return _located(
                    f"the alias *{event.anchor} refers to its own anchor &{event.anchor} "
                    "(a value cannot contain itself)", where, filename,
                    f"replace *{event.anchor} with the values it should hold",
                )
            size = sizes.get(str(event.anchor), 1) if isinstance(event, yaml.AliasEvent) else 1
            if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
                sizes[event.anchor] = 1
            if counts:
                counts[-1] += size
            total += size
            if total > MAX_EXPANDED_VALUES:
                return _located(
                    f"through its aliases the YAML expands to more than "
                    f"{MAX_EXPANDED_VALUES:,} values (an alias bomb?)", where, filename,
                    _ALIAS_FIX,
                )
    return None


def _located(message: str, mark: Any, filename: str, fix: str) -> Problem:
    """A problem at a parser mark (typed loosely: PyYAML's stubs name two Mark classes)."""
    return Problem(
        message, file=filename, line=mark.line + 1 if mark else None,
        column=mark.column + 1 if mark else None, fix=fix,
    )


def _unprintable(text: str, exc: yaml.reader.ReaderError, filename: str) -> Problem:
    before = text[: exc.position]
    line = before.count("\n") + 1
    column = exc.position - (before.rfind("\n") + 1) + 1
    character = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
    what = "a NUL byte" if character == "\0" else f"the control character U+{ord(character):04X}"
    return Problem(
        f"the stack file contains {what}, which YAML does not allow",
        file=filename, line=line, column=column,
        fix="delete it (a stack file is plain UTF-8 text; was it saved by a binary tool?)",
    )


def _walk(
    node: yaml.Node, path: KeyPath, positions: Positions, problems: list[Problem], filename: str,
    walked: set[int],
) -> None:
    positions.values.setdefault(path, _mark(node.start_mark))
    if id(node) in walked:
        return  # an alias's node: its inside is located once, where its anchor stands
    walked.add(id(node))
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
            _walk(value_node, child, positions, problems, filename, walked)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), positions, problems, filename, walked)


def render_path(path: KeyPath) -> str:
    """``('models', 0, 'port')`` → ``models[0].port``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text
