"""Ctrl-C ends `logs -f` and `status --watch` the same way: exit 0, as the README says."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import free_port, run_cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", [["logs", "-f"],
                                     ["status", "--watch", "--interval", "0.2", "--json"]])
def test_ctrl_c_ends_a_following_command_with_exit_0(
    command: list[str], tmp_path: Path, spark_stack_home: Path, fake_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text(f"name: ctrlc\nmodels:\n  - name: sim\n    kind: simulator\n"
                     f"    port: {free_port()}\n    startup_seconds: 0.1\n")
    assert run_cli(capsys, "-s", str(stack), "up", "--no-proxy")[0] == 0
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "spark_stack", "-s", str(stack), *command],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "SPARK_STACK_HOME": str(spark_stack_home), "COLUMNS": "100"})
        assert process.stdout is not None
        process.stdout.readline()  # it runs and prints
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "Traceback" not in err
    finally:
        run_cli(capsys, "-s", str(stack), "down")


def test_the_readme_says_so() -> None:
    readme = re.sub(r"\s+", " ", README)
    assert ("until Ctrl-C (exit 0, as for `logs -f` and `top`: Ctrl-C is how they end; any other "
            "command interrupted exits 130)") in readme
