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


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus page's samples named ``name`` with ``labels`` (0 when none),
    read by the parser ``top`` uses."""
    from spark_stack.top.promtext import parse

    return parse(text).total(name, **labels) or 0.0


def wait_until_ok(url: str, timeout: float) -> None:
    """Poll ``url`` until it answers 200; AssertionError after ``timeout`` seconds."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered")
