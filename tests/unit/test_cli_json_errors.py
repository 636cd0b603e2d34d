"""With --json every error is one JSON shape on stdout: ok, and message/fix/exit_code/problems."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from spark_stack.cli import main

ERROR_KEYS = {"message", "fix", "exit_code", "problems", "warnings"}


def _error(out: str) -> dict[str, Any]:
    payload = json.loads(out)
    assert payload["ok"] is False
    error: dict[str, Any] = payload["error"]
    assert set(error) == ERROR_KEYS
    return error


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["plan", "--json", "--bogus", "-s", "demo"], "No such option: --bogus"),
        (["validate", "--json", "extra", "-s", "demo"], "unexpected extra argument"),
        (["bench", "--json", "-n", "0", "-s", "demo"], "Invalid value for '--requests'"),
    ],
)
def test_usage_errors_are_json_with_json(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    error = _error(capsys.readouterr().out)
    assert expected in error["message"]
    assert error["exit_code"] == 2 and error["problems"] == []
    assert error["fix"].startswith("see `spark-stack ") and "--help" in error["fix"]


def test_a_missing_stack_file_has_an_empty_problems_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--json", "-s", str(tmp_path / "nope.yaml")]) == 2
    error = _error(capsys.readouterr().out)
    assert "not found" in error["message"]


def test_a_host_error_has_an_empty_problems_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_home: Path
) -> None:
    with socket.socket() as probe:  # a 127.0.0.1 port nobody listens on: refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stack = tmp_path / "s.yaml"
    stack.write_text(
        f"name: x\nhost: {{address: 127.0.0.1, port: {port}, user: me}}\n"
        "models:\n  - name: m\n    preset: qwen3.6-35b-a3b-nvfp4-redhat\n",
        encoding="utf-8",
    )
    assert main(["up", "--json", "-s", str(stack)]) == 3
    error = _error(capsys.readouterr().out)
    assert error["exit_code"] == 3 and error["problems"] == []
    assert "Connection refused" in error["message"]


def test_without_json_usage_errors_stay_plain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--bogus", "-s", "demo"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "No such option: --bogus" in captured.err
