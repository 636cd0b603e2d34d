"""`spark-stack smoke --soak` on a local simulator stack: passes when healthy, names the failing
turn and reason under each injected tool-call failure (VLLM_SIM_QUIRKS), --json included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port


@pytest.mark.parametrize("quirk,reason", [
    ("", None),
    ("leak_markup", "turn 1/20 (Bash): raw tool-call markup in the text (stop_reason end_turn)"),
    ("wrong_tool", "turn 1/20 (Bash): called 'Agent', expected 'Bash'"),
])
def test_soak(tmp_path: Path, fake_home: Path, quirk: str, reason: str | None) -> None:
    stack = tmp_path / "soak.yaml"
    stack.write_text(
        f"name: soak\nmodels:\n  - name: qwen\n    kind: simulator\n    port: {free_port()}\n"
        f"proxy:\n  listen: 127.0.0.1:{free_port()}\n"
        f"claude:\n  launcher: {tmp_path / 'claude-soak'}\n")
    env = {**os.environ, "SPARK_STACK_HOME": str(tmp_path / "state"), "VLLM_SIM_QUIRKS": quirk}
    done = subprocess.run(
        [sys.executable, "-m", "spark_stack", "-s", str(stack), "smoke", "--soak", "--json"],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    report = json.loads(done.stdout)
    soak = next(c for c in report["checks"] if c["name"] == "tool_soak")
    if reason is None:
        assert done.returncode == 0 and report["ok"], done.stdout
        assert soak["status"] == "passed" and soak["reason"].startswith("20 turns")
    else:
        assert done.returncode == 4
        assert "qwen/tool_soak" in report["failed"]
        assert soak["status"] == "failed" and soak["reason"].startswith(reason)
