"""Hostile YAML through the real CLI: an alias bomb, a recursive alias, deep nesting, a NUL byte.

Each is a located problem with a fix and exit 2 (in text and with --json), at once: the work is
bounded by the file's size, never by what its aliases expand to.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from spark_stack.stack.loader import load_stack_text
from tests.helpers import run_cli

SIMULATOR = "models:\n  - name: m\n    kind: simulator\n    port: 8811\n"


def alias_bomb(levels: int) -> str:
    """``levels`` anchors in ``extra_args``, each listing the previous one nine times (the
    fifth, on line 13, is the first to expand past the cap)."""
    lines = ["name: bomb", "models:", "  - name: m", "    kind: container",
             "    image: vllm/vllm-openai:v0.28.0", "    model: Qwen/Qwen3-0.6B",
             "    extra_args:", "      - &a0 [a, a, a, a, a, a, a, a, a]"]
    lines += [f"      - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "host: {address: spark}\n" + "\n".join(lines) + "\n"


CASES = {
    # name: (file text, line, the message's words, the fix's words)
    "alias_bomb": (alias_bomb(8), 13, "expands to more than", "write the values out"),
    "alias_bomb_in_extra_args": (alias_bomb(7), 13, "an alias bomb", "write the values out"),
    "recursive_alias": ("name: r\nmodels: &r\n  - *r\n", 3, "refers to its own anchor &r",
                        "replace *r"),
    "deep_nesting": ("name: d\nmodels: " + "[" * 20_000 + "]" * 20_000 + "\n", 2,
                     "nests deeper than", "flatten"),
    "nul_byte": ("name: n\x00\n" + SIMULATOR, 1, "a NUL byte", "delete it"),
    "control_character": ("name: n\n" + SIMULATOR + "# \x07\n", 6, "U+0007", "delete it"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_hostile_yaml_is_a_located_problem_and_exit_2(
    case: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, line, message, fix = CASES[case]
    path = tmp_path / "stack.yaml"
    path.write_bytes(text.encode())
    started = time.monotonic()
    code, out, err = run_cli(capsys, "-s", str(path), command)
    assert time.monotonic() - started < 5
    assert code == 2, err
    assert "internal error" not in err and "Traceback" not in err
    assert f"{path}:{line}:" in err and message in err and fix in err

    code, out, err = run_cli(capsys, "-s", str(path), command, "--json")
    assert code == 2
    error = json.loads(out)["error"]
    assert error["exit_code"] == 2
    [problem] = error["problems"]
    assert problem["line"] == line and problem["column"] is not None
    assert message in problem["message"] and fix in problem["fix"]


def test_shared_anchors_still_load_and_errors_inside_them_point_at_the_alias() -> None:
    text = (
        "name: shared\n"
        "models:\n"
        "  - name: a\n    kind: simulator\n    port: 8811\n    served_name: &n qwen\n"
        "  - name: b\n    kind: simulator\n    port: 8812\n    served_name: *n\n"
    )
    loaded = load_stack_text(text, lint=False)
    assert [m.served_name for m in loaded.stack.models] == ["qwen", "qwen"]
    # models[1] is located by its own lines, though its served_name is the anchor's node
    assert loaded.positions.of_key(("models", 1, "served_name")).line == 10  # type: ignore[union-attr]

