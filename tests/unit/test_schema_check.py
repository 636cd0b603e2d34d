"""The JSON Schema subset check the soak judges tool arguments with."""

from __future__ import annotations

from spark_stack.smoke.schema_check import schema_problems
from spark_stack.smoke.soak import STEPS, claude_code_tools


def test_every_soak_step_is_valid_for_claude_codes_tools() -> None:
    schemas = {tool["name"]: tool["input_schema"] for tool in claude_code_tools()}
    for tool, arguments in STEPS:
        assert schema_problems(arguments, schemas[tool]) == []


def test_problems_name_the_path() -> None:
    read = next(t for t in claude_code_tools() if t["name"] == "Read")["input_schema"]
    assert schema_problems({"file_path": "/x", "limit": 0, "extra": 1}, read) == [
        "$.limit: 0 breaks exclusiveMinimum 0", "$: unexpected property 'extra'"]
    assert schema_problems({"offset": "1"}, read) == [
        "$: missing required 'file_path'", "$.offset: expected integer, got str"]
    assert schema_problems(True, {"type": "number"}) == ["$: expected number, got bool"]


def test_the_packaged_tools_are_the_recorded_ones() -> None:
    import json
    from pathlib import Path

    from tests.e2e.conftest import pinned_claude_version

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "claude_code"
    turn = json.loads((fixture / pinned_claude_version() / "turn1.json").read_text())
    assert claude_code_tools() == turn["body"]["tools"]
