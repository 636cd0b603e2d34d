"""Small helpers shared by the test modules."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The real CLI in-process: (exit code, stdout, stderr), with the CLI's per-run state reset."""
    from spark_stack.cli import main
    from spark_stack.cli.common import state

    state.exit_code = 0
    state.json = False
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# What every headless Claude Code run in the tests gets: nothing leaves the machine.
CLAUDE_HERMETIC_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
}


def claude_result(stdout: str) -> dict[str, Any]:
    """The result object of ``claude -p … --output-format json`` (its last JSON line)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict):
            return result
    return {}
