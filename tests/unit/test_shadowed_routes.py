"""A glob route an earlier one always wins over is a warning naming the winner; the demo stack
(which had `"*"` above `claude-*`) has none."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spark_stack.routing import RouteTable, Rule
from spark_stack.stack.checks import _covers
from tests.helpers import run_cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def _stack(tmp_path: Path, routes: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text("name: r\nmodels:\n  - {name: a, kind: simulator, port: 8811}\n"
                    "  - {name: b, kind: simulator, port: 8812, served_name: other}\n"
                    f"proxy:\n  routes:\n{routes}")
    return path


def test_a_shadowed_route_is_a_warning_naming_the_rule_that_wins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = _stack(tmp_path, '    "*": a\n    claude-*: b\n    claude-*haiku*: a\n')
    code, out, err = run_cli(capsys, "-s", str(stack), "validate")
    assert code == 0
    assert re.search(r":8:\d+: proxy.routes.claude-\*: route 'claude-\*' → 'b' never applies: "
                     r"the earlier route '\*' → 'a'", out), out
    assert "route 'claude-*haiku*' → 'a' never applies: the earlier route '*'" in out
    # and the router agrees: '*' answers for a claude-* name
    table = RouteTable([Rule("*", "a"), Rule("claude-*", "b")])
    assert table.match("claude-opus-4") == Rule("*", "a")


def test_routes_in_a_useful_order_give_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = _stack(tmp_path, '    claude-*haiku*: a\n    claude-*: b\n    "*": a\n')
    code, out, err = run_cli(capsys, "-s", str(stack), "validate")
    assert code == 0 and "0 warnings" in out, out


@pytest.mark.parametrize(("earlier", "later", "covers"), [
    ("*", "claude-*", True), ("claude-*", "claude-opus-*", True), ("claude-*", "claude-x", True),
    ("claude-*", "*opus*", False), ("claude-?", "claude-*", False), ("*haiku*", "claude-*", False),
    ("claude-*haiku*", "claude-*", False),
])
def test_covers_only_what_it_can_prove(earlier: str, later: str, covers: bool) -> None:
    assert _covers(earlier, later) is covers


def test_the_demo_stack_has_no_shadowed_route(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "-s", "demo", "validate")
    assert code == 0 and "0 warnings" in out, out


def test_the_readme_lists_the_warning() -> None:
    assert "a glob route that an earlier route always wins over" in re.sub(r"\s+", " ", README)
