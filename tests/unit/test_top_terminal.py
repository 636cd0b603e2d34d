"""The live `spark-stack top` view in a real pseudo-terminal (tmux) at 80×24 and 160×48:
its labels all visible and whole, the model keys, a stopped model shown as down, q quits."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import spark_stack
from spark_stack.deploy import local
from spark_stack.deploy.down import down
from spark_stack.deploy.report import QuietReporter
from spark_stack.deploy.up import UpOptions, up
from spark_stack.stack.loader import load_stack_text
from tests.helpers import free_port

REPO = Path(spark_stack.__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


@pytest.fixture
def two_models(tmp_path: Path, fake_home: Path, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[tuple[Path, int]]:
    """A stack of two simulators and the proxy, the second simulator stopped."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    proxy_port = free_port()
    text = f"""
name: toptty
models:
  - name: first
    kind: simulator
    port: {free_port()}
    startup_seconds: 0
  - name: second
    kind: simulator
    port: {free_port()}
    startup_seconds: 0
proxy:
  listen: 127.0.0.1:{proxy_port}
"""
    path = tmp_path / "spark-stack.yaml"
    path.write_text(text)
    stack = load_stack_text(text, lint=False).stack
    up(stack, UpOptions(), QuietReporter())
    assert local.simulator_process("toptty", "second").stop()
    try:
        yield path, proxy_port
    finally:
        down(stack)


class Tmux:
    """One private tmux server (its own socket) running one command in a pane."""

    def __init__(self, width: int, height: int, command: str) -> None:
        self.socket = f"spark-top-{uuid.uuid4().hex[:8]}"
        self._tmux("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height),
                   command)

    def _tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=10)

    def screen(self) -> list[str]:
        return self._tmux("capture-pane", "-p", "-t", "top").stdout.splitlines()

    def wait_for(self, text: str, timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.screen()
            if any(text in line for line in lines):
                return lines
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never showed:\n" + "\n".join(self.screen()))

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "top", *keys)

    def alive(self) -> bool:
        return self._tmux("has-session", "-t", "top").returncode == 0

    def close(self) -> None:
        self._tmux("kill-server")


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 48)])
def test_the_live_view_is_readable_and_answers_its_keys(
        two_models: tuple[Path, int], width: int, height: int) -> None:
    path, proxy_port = two_models
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in os.environ.items()
                   if k in ("PATH", "HOME", "SPARK_STACK_HOME", "PYTHONPATH"))
    command = (f"env {env} TERM=xterm-256color {shlex.quote(sys.executable)} -m spark_stack "
               f"-s {shlex.quote(str(path))} top --interval 0.5")
    tmux = Tmux(width, height, command)
    try:
        lines = tmux.wait_for("since start")
        text = "\n".join(lines)
        for label in ("spark-stack top · toptty", "q quit · ←/→ model", "this machine:",
                      "model", "state", "run", "wait", "KV", "prefix", "prompt t/s",
                      "gen t/s", "TTFT p50/p95", "›first", "serving", "second",
                      "down", f"proxy http://127.0.0.1:{proxy_port} running",
                      "prompt tok/s", "gen tok/s", "proxy req/s", "prefix hits",
                      "KV cache", "since start"):
            assert label in text, f"{label!r} not on the {width}×{height} screen:\n{text}"
        assert len(lines) <= height and all(len(line) <= width for line in lines)
        tmux.keys("Right")
        text = "\n".join(tmux.wait_for("›second"))
        assert "down: connection refused" in text  # its detail says what is wrong
        tmux.keys("q")
        deadline = time.monotonic() + 10
        while tmux.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not tmux.alive(), "q did not quit"
    finally:
        tmux.close()
