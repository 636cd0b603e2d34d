"""`smoke` names the checks it skips and says when what runs differs from the stack file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from spark_stack.cli import main
from spark_stack.smoke.report import DRIFT_HINT
from tests.helpers import free_port


def _write(path: Path, ports: tuple[int, int], extra: str = "") -> None:
    path.write_text(
        "name: skipdrift\n"
        "models:\n"
        f"  - {{name: sim, kind: simulator, port: {ports[0]}, startup_seconds: 0{extra}}}\n"
        f"proxy: {{listen: '127.0.0.1:{ports[1]}'}}\n"
    )


@pytest.fixture
def stack_file(tmp_path: Path, fake_home: Path) -> Iterator[Path]:
    path = tmp_path / "spark-stack.yaml"
    _write(path, (free_port(), free_port()))
    yield path
    main(["-s", str(path), "down"])


def test_checks_without_a_parser_are_reported_as_skipped(
    tmp_path: Path, fake_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain.yaml"
    _write(path, (free_port(), free_port()),
           ", tool_call_parser: null, reasoning_parser: null")
    try:
        assert main(["-s", str(path), "smoke", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        by = {c["name"]: c for c in report["checks"]}
        assert list(by) == ["direct_completion", "completion", "tool_round_trip",
                            "count_tokens", "thinking"]
        assert by["tool_round_trip"]["status"] == "skipped"
        assert "no tool_call_parser" in by["tool_round_trip"]["reason"]
        assert by["thinking"]["status"] == "skipped"
        assert "no reasoning_parser" in by["thinking"]["reason"]
        assert by["completion"]["status"] == "passed"
        assert report["ok"] is True and report["failed"] == []

        assert main(["-s", str(path), "smoke"]) == 0
        out = capsys.readouterr().out
        assert "skipped sim/tool_round_trip (proxy)" in out
        assert "skipped sim/thinking (proxy)" in out
        assert "smoke passed: 3/3 checks in" in out and ", 2 skipped" in out
    finally:
        main(["-s", str(path), "down"])


def test_drift_is_named_with_the_up_hint(
    stack_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-s", str(stack_file), "up"]) == 0
    capsys.readouterr()
    assert main(["-s", str(stack_file), "smoke", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["models"][0]["drift"] is False and report["hint"] is None

    text = stack_file.read_text().replace("startup_seconds: 0", "startup_seconds: 0.01")
    stack_file.write_text(text)  # edited, but no `up` since
    main(["-s", str(stack_file), "smoke", "--json"])
    report = json.loads(capsys.readouterr().out)
    [model] = report["models"]
    assert model["drift"] is True and model["drift_fields"] == ["startup_seconds"]
    assert report["hint"] == DRIFT_HINT

    main(["-s", str(stack_file), "smoke"])
    out = capsys.readouterr().out
    assert "sim: drift in startup_seconds" in out
    assert f"hint: {DRIFT_HINT}" in out


def test_a_remote_model_without_tools_skips_the_tool_round_trip() -> None:
    from spark_stack.deployment import resolve
    from spark_stack.smoke.checks import checks_for
    from spark_stack.smoke.endpoints import ModelTarget
    from spark_stack.stack.loader import load_stack_text

    loaded = load_stack_text("name: r\nmodels:\n  - {name: far, url: 'http://127.0.0.1:9/v1', "
                             "tools: false, thinking: none}\n")
    model = resolve(loaded.stack).models[0]
    assert (model.tools, model.reasoning) == (False, False)
    target = ModelTarget("far", "far", model.endpoint, None, reasoning=False, tools=model.tools)
    names = [check.__name__ for check in checks_for(target)]
    assert "tool_round_trip" not in names and "thinking" not in names
