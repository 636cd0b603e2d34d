"""Real Claude Code (the pinned CLI) in a pseudo-terminal, through the launcher `up` wrote: its
`/model` picker lists the stack's models by their names with a description (no Anthropic
model), and a request after choosing one reaches that model through the proxy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.terminal import KEY_DOWN, KEY_ENTER, Terminal


@pytest.fixture
def picker_stack(tmp_path: Path, claude_bin: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    (home / ".claude").mkdir(parents=True)
    # A first interactive start asks for onboarding and whether to trust the folder.
    (home / ".claude.json").write_text(json.dumps({
        "hasCompletedOnboarding": True,
        "projects": {str(work): {"hasTrustDialogAccepted": True}}}))
    stack = tmp_path / "picker.yaml"
    stack.write_text(f"""
name: picker
models:
  - {{name: qwen, kind: simulator, served_name: qwen3.6-35b-a3b, port: {free_port()},
     max_model_len: 131072}}
  - {{name: coder, kind: simulator, served_name: qwen3-coder-30b, port: {free_port()},
     max_model_len: 131072}}
proxy:
  listen: 127.0.0.1:{free_port()}
  routes: {{"*": qwen}}
claude:
  models: {{opus: qwen, sonnet: qwen, haiku: coder}}
""")
    env = {**os.environ, "HOME": str(home), "TERM": "xterm-256color",
           "SPARK_STACK_CLAUDE_BIN": str(claude_bin), "CLAUDE_CODE_MAX_RETRIES": "1"}
    up = subprocess.run([sys.executable, "-m", "spark_stack", "-s", str(stack), "up"], env=env,
                        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert up.returncode == 0, up.stdout + up.stderr
    yield work, env
    subprocess.run([sys.executable, "-m", "spark_stack", "-s", str(stack), "down"], env=env,
                   capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def test_model_lists_the_stacks_models_and_choosing_one_sends_requests_to_it(
    picker_stack: tuple[Path, dict[str, str]]
) -> None:
    work, env = picker_stack
    launcher = Path(env["HOME"]) / ".local" / "bin" / "claude-picker"
    terminal = Terminal([str(launcher)], env, work)
    try:
        terminal.wait_for("Claude Code", timeout=60)
        terminal.send("/model", settle=1.0)
        terminal.send(KEY_ENTER)
        screen = terminal.wait_for("Select model")
        rows = [line.strip() for line in screen.splitlines()]
        assert any("1. Default" in row for row in rows), screen
        qwen = next(row for row in rows if "2. qwen" in row)
        coder = next(row for row in rows if "3. coder" in row)
        assert "qwen3.6-35b-a3b · the simulator on this machine · 131,072-token window" in qwen
        assert "qwen3-coder-30b · the simulator on this machine" in coder
        for anthropic in ("Opus", "Sonnet", "Haiku"):
            assert anthropic not in screen, screen
        terminal.send(KEY_DOWN)
        terminal.send(KEY_DOWN)
        terminal.send(KEY_ENTER)
        terminal.wait_for("Set model to coder")
        started = time.monotonic()
        terminal.send("What is 12*17? Answer with the number.", settle=0.5)
        terminal.send(KEY_ENTER)
        terminal.wait_for("204", timeout=60)
        print(f"\nanswer on screen {time.monotonic() - started:.1f} s after Enter")
    finally:
        terminal.close()
    log = (Path(env["SPARK_STACK_HOME"]) / "stacks" / "picker" / "proxy.log").read_text()
    messages = [line for line in log.splitlines() if "POST /v1/messages " in line]
    assert messages, log
    assert "model='coder'" in messages[-1] and "upstream=coder" in messages[-1], messages
    # Every request (the background model's too) named a model the stack serves.
    assert all("model='qwen'" in m or "model='coder'" in m for m in messages), messages
