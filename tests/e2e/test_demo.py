"""`spark-stack demo`, the README's first command, run as a user would: a real subprocess with a
fresh HOME and state dir, the built-in demo stack (simulator + proxy on this machine) and the
real Claude Code CLI when it is installed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from spark_stack.stack.loader import builtin_stack_path
from tests.helpers import free_port

DEMO_PROXY = "http://127.0.0.1:4111"
INSTALL = "npm install -g @anthropic-ai/claude-code"


def path_without_claude() -> str:
    """The test's PATH minus every directory that holds a `claude`."""
    dirs = os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if not shutil.which("claude", path=d))


@pytest.fixture
def demo_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = {
        "PATH": path_without_claude(),
        "HOME": str(home),
        "SPARK_STACK_HOME": str(tmp_path / "state"),
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "1",
    }
    yield env
    spark_stack(env, "-s", "demo", "down")


@pytest.fixture
def demo_copy(tmp_path: Path) -> tuple[Path, int]:
    """The built-in demo stack on free ports (for the tests that need not hold 4111/8811)."""
    source = builtin_stack_path("demo")
    assert source is not None
    document = yaml.safe_load(source.read_text())
    proxy_port = free_port()
    document["models"][0]["port"] = free_port()
    document["proxy"]["listen"] = f"127.0.0.1:{proxy_port}"
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path, proxy_port


def spark_stack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spark_stack", *args], env=env, capture_output=True, text=True,
        timeout=300, stdin=subprocess.DEVNULL,
    )


def proxy_answers(url: str = DEMO_PROXY) -> bool:
    try:
        httpx.head(url + "/", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def test_demo_ends_with_a_real_claude_code_answer_and_keeps_running(
    demo_env: dict[str, str], demo_copy: tuple[Path, int], claude_bin: Path
) -> None:
    # The demo stack on free ports: a demo left running by the README's first command (on
    # 4111/8811) must not make the test command fail.
    stack_file, proxy_port = demo_copy
    env = {**demo_env, "SPARK_STACK_CLAUDE_BIN": str(claude_bin)}
    done = spark_stack(env, "demo", "--stack", str(stack_file))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for step in range(1, 6):
        assert f"[{step}/5]" in out
    assert "answer: 204" in out  # the Anthropic-format request through the proxy
    assert "Claude Code answered: The command printed: hello from Claude Code" in out
    assert f"spark-stack -s {stack_file} status" in out
    assert f"spark-stack -s {stack_file} down" in out
    # It keeps running: the launcher it wrote works from a fresh shell, and status is healthy.
    launcher = Path(demo_env["HOME"]) / ".local" / "bin" / "claude-demo"
    assert str(launcher) in out
    home = Path(demo_env["HOME"]) / "claude-run"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    again = subprocess.run(
        [str(launcher), "-p", "What is 12*17?", "--output-format", "json", "--max-turns", "2"],
        env={**env, "HOME": str(home)}, cwd=home, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["result"] == "204"
    status = spark_stack(env, "-s", str(stack_file), "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    down = spark_stack(env, "-s", str(stack_file), "down")
    assert down.returncode == 0
    assert not proxy_answers(f"http://127.0.0.1:{proxy_port}")


def test_demo_without_claude_says_how_to_install_and_down_stops_it(
    demo_env: dict[str, str], demo_copy: tuple[Path, int]
) -> None:
    stack_file, proxy_port = demo_copy
    done = spark_stack(demo_env, "demo", "--stack", str(stack_file), "--down")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "answer: 204" in done.stdout
    assert "Claude Code is not installed" in done.stdout
    assert INSTALL in done.stdout
    assert "stopped: qwen3.6-sim, proxy" in done.stdout
    assert not proxy_answers(f"http://127.0.0.1:{proxy_port}")


def test_demo_fails_non_zero_when_a_step_fails_and_cleans_up(
    demo_env: dict[str, str], demo_copy: tuple[Path, int]
) -> None:
    stack_file, proxy_port = demo_copy
    # Something else holds the proxy's port: `up` cannot start the proxy.
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", proxy_port))
        squatter.listen()
        done = spark_stack(demo_env, "demo", "--stack", str(stack_file), "--down")
    assert done.returncode != 0
    assert "error:" in done.stderr
    assert "the demo works" not in done.stdout
    assert "stopped: qwen3.6-sim" in done.stdout  # --down still tore the simulator down
