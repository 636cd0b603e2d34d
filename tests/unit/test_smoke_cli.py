"""`spark-stack smoke` and `up --smoke` through the real CLI on a simulator stack (no host)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from spark_stack.cli import main
from spark_stack.deploy.local import stop_simulator
from spark_stack.smoke.pipeline import stack_is_up
from spark_stack.stack.loader import load_stack
from tests.helpers import free_port

CHECKS = ["direct_completion", "completion", "tool_round_trip", "count_tokens", "thinking"]


@pytest.fixture
def stack_file(tmp_path: Path, fake_home: Path) -> Iterator[Path]:
    path = tmp_path / "spark-stack.yaml"
    path.write_text(
        "name: clismoke\n"
        "models:\n"
        f"  - {{name: sim, kind: simulator, port: {free_port()}, startup_seconds: 0}}\n"
        f"proxy: {{listen: '127.0.0.1:{free_port()}'}}\n"
    )
    yield path
    main(["-s", str(path), "down"])


def test_smoke_brings_the_stack_up_checks_and_tears_down(
    stack_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = load_stack(stack_file).stack
    assert main(["-s", str(stack_file), "smoke", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["exit_code"] == 0
    assert [c["name"] for c in report["checks"]] == CHECKS
    assert report["timings"]["up_ms"] > 0
    assert not stack_is_up(stack)


def test_up_smoke_leaves_it_up_and_a_failure_prints_fail_lines(
    stack_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = load_stack(stack_file).stack
    assert main(["-s", str(stack_file), "up", "--smoke"]) == 0
    out = capsys.readouterr().out
    for check in CHECKS:
        assert f"PASS sim/{check} (" in out
    assert "smoke passed: 5/5 checks" in out
    assert "sim: TTFT direct " in out and "(proxy adds " in out
    assert stack_is_up(stack)

    assert stop_simulator(stack.name, "sim")
    assert main(["-s", str(stack_file), "smoke"]) == 4
    out = capsys.readouterr().out
    assert "FAIL sim/direct_completion (direct)" in out
    assert "FAIL sim/completion (proxy)" in out and "HTTP 529 overloaded_error" in out
    assert "smoke failed:" in out
    # A stack that was already up stays up, even when its checks fail.
    assert stack_is_up(stack)
