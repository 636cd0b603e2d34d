"""The real Claude Code CLI through the generated launcher → spark-stack's proxy → the vLLM
simulator in a container that `spark-stack up` deployed on the stand-in GB10 over SSH.

One stack is deployed for the module (`up` is the expensive part); each test runs Claude Code
headless with a fresh HOME, CLAUDE_CODE_MAX_RETRIES=1 and a loopback base URL only.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml

from spark_stack.claude_run import prepare_home
from spark_stack.spec import LABEL_STACK
from tests.helpers import CLAUDE_HERMETIC_ENV, claude_result
from tests.testhost import HostInfo

# What every Claude Code run gets: nothing leaves the machine, one retry at most.
HERMETIC = {**CLAUDE_HERMETIC_ENV, "CLAUDE_CODE_MAX_RETRIES": "1"}
CLAUDE_TIMEOUT = 120


def _free_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Deployed:
    """A stack `spark-stack up` deployed on the stand-in host, and how to drive it."""

    name: str
    stack_file: Path
    launcher: Path
    state_home: Path
    ssh_home: Path
    claude_bin: Path
    proxy_port: int
    root: Path

    def base_env(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.ssh_home),
            "SPARK_STACK_HOME": str(self.state_home),
            "SPARK_STACK_CLAUDE_BIN": str(self.claude_bin),
        }

    def spark_stack(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spark_stack", "-s", str(self.stack_file), *args],
            env=self.base_env(), capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def claude_home(self) -> Path:
        """A fresh HOME in which Claude Code starts without onboarding or network checks."""
        return prepare_home(self.root / f"claude-home-{uuid.uuid4().hex[:8]}")

    def claude_env(self, home: Path) -> dict[str, str]:
        return {**self.base_env(), **HERMETIC, "HOME": str(home)}

    def headless(
        self, command: list[str], prompt: str, *, cwd: Path | None = None
    ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], float]:
        """Run `command -p PROMPT --output-format json …`; its result object and wall time."""
        home = self.claude_home()
        args = ["-p", prompt, "--output-format", "json", "--max-turns", "3",
                "--allowedTools", "Bash"]
        started = time.monotonic()
        done = subprocess.run(
            [*command, *args], env=self.claude_env(home), cwd=cwd or home, capture_output=True,
            text=True, timeout=CLAUDE_TIMEOUT, stdin=subprocess.DEVNULL,
        )
        elapsed = time.monotonic() - started
        return done, claude_result(done.stdout), elapsed

    def proxy_state(self) -> Path:
        return self.state_home / "stacks" / self.name


def stack_document(name: str, host: HostInfo, port: int, proxy_port: int,
                   launcher: Path) -> dict[str, Any]:
    return {
        "name": name,
        "host": {"address": host.ssh_alias},
        "models": [{
            "name": "qwen",
            "image": host.sim_image,
            "model": "Qwen/Qwen3-0.6B",
            "served_name": "qwen3-test",
            "gpus": "none",
            "port": port,
            "max_model_len": 65536,
            "tool_call_parser": "qwen3_coder",
            "reasoning_parser": "qwen3",
            "enable_auto_tool_choice": True,
            "readiness_timeout": 60,
            "restart": "no",
            "cache": {"huggingface": None, "vllm": None, "flashinfer": None},
            "env": {"VLLM_SIM_STARTUP_SECONDS": "0.3"},
        }],
        # A token, so the launcher's read-the-0600-file path is what runs.
        "proxy": {"listen": f"127.0.0.1:{proxy_port}", "token": "auto"},
        "claude": {
            "launcher": str(launcher),
            "models": {"opus": "qwen", "sonnet": "qwen", "haiku": "qwen"},
        },
    }


@pytest.fixture(scope="module")
def deployed(
    testhost: HostInfo, claude_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("claude-e2e")
    ssh_home = root / "home"
    ssh_home.mkdir(mode=0o700)
    testhost.write_ssh_home(ssh_home)
    name = f"cc{uuid.uuid4().hex[:8]}"
    stack_file = root / "stack.yaml"
    d = Deployed(
        name=name, stack_file=stack_file, launcher=root / "bin" / f"claude-{name}",
        state_home=root / "state", ssh_home=ssh_home, claude_bin=claude_bin,
        proxy_port=_free_local_port(), root=root,
    )
    document = stack_document(name, testhost, random.randint(20000, 39999), d.proxy_port,
                              d.launcher)
    stack_file.write_text(yaml.safe_dump(document, sort_keys=False))
    up = d.spark_stack("up")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield d
    finally:
        d.spark_stack("down")
        client = docker.DockerClient(base_url=testhost.local_docker_url, timeout=60)
        for container in client.containers.list(all=True,
                                                filters={"label": f"{LABEL_STACK}={name}"}):
            container.remove(force=True)
        client.close()


def test_up_wrote_an_executable_launcher_without_the_token(deployed: Deployed) -> None:
    text = deployed.launcher.read_text()
    token_file = deployed.proxy_state() / "secrets" / "proxy-token"
    token = token_file.read_text().strip()
    assert deployed.launcher.stat().st_mode & 0o777 == 0o755
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token and token not in text
    assert f"export ANTHROPIC_BASE_URL=http://127.0.0.1:{deployed.proxy_port}\n" in text


def test_plain_prompt_returns_the_simulators_answer(deployed: Deployed) -> None:
    done, result, elapsed = deployed.headless([str(deployed.launcher)], "What is 12*17?")
    assert done.returncode == 0, done.stderr
    assert result["is_error"] is False
    assert result["result"] == "204"
    assert elapsed < 60


def test_tool_round_trip_runs_bash_and_reports_its_output(deployed: Deployed,
                                                          tmp_path: Path) -> None:
    marker = f"spark-{uuid.uuid4().hex[:8]}"
    prompt = f"run: touch ran.flag && echo {marker}"
    done, result, _ = deployed.headless([str(deployed.launcher)], prompt, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ran.flag").exists()  # Claude Code really ran the Bash tool here
    assert result["result"] == f"The command printed: {marker}"
    assert result["num_turns"] == 2


def test_context_overflow_is_reported_as_prompt_too_long(deployed: Deployed) -> None:
    # The simulator reports a prompt bigger than max_model_len; vLLM's 400 becomes Anthropic's
    # "prompt is too long: N tokens > M maximum", which Claude Code parses.
    prompt = 'SIM_SCRIPT:{"prompt_tokens": 400000}'
    done, result, elapsed = deployed.headless([str(deployed.launcher)], prompt)
    assert done.returncode == 1
    assert result["is_error"] is True
    assert result["result"].startswith("Prompt is too long")
    assert result.get("api_error_status") == 400
    assert elapsed < 60


def test_spark_stack_claude_starts_a_stopped_proxy_and_passes_arguments(
    deployed: Deployed,
) -> None:
    from spark_stack.proxy import daemon

    assert daemon.stop_background(deployed.proxy_state())
    with pytest.raises(httpx.HTTPError):
        httpx.head(f"http://127.0.0.1:{deployed.proxy_port}/", timeout=2)
    command = [sys.executable, "-m", "spark_stack", "-s", str(deployed.stack_file), "claude"]
    done, result, _ = deployed.headless(command, "What is 12*17?")
    assert done.returncode == 0, done.stderr
    assert result["result"] == "204"
    assert daemon.proxy_status(deployed.proxy_state()).healthy
    # `--` hands claude's own options to it untouched.
    version = deployed.spark_stack("claude", "--", "--version", timeout=60)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().endswith("(Claude Code)")


def test_print_env_and_write_settings_drive_a_bare_claude(deployed: Deployed,
                                                        tmp_path: Path) -> None:
    args = ["-p", "What is 12*17?", "--output-format", "json", "--max-turns", "2"]
    # eval "$(spark-stack claude --print-env)" in a shell, then plain `claude`.
    script = (
        f'eval "$({sys.executable} -m spark_stack -s {deployed.stack_file} claude --print-env)"'
        f' && exec {deployed.claude_bin} "$@"'
    )
    env = deployed.claude_env(deployed.claude_home())
    done = subprocess.run(["/bin/bash", "-c", script, "sh", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=CLAUDE_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == "204"
    # A project's .claude/settings.json (token through apiKeyHelper) with no ANTHROPIC_* env.
    project = tmp_path / "project"
    project.mkdir()
    wrote = subprocess.run(
        [sys.executable, "-m", "spark_stack", "-s", str(deployed.stack_file), "claude",
         "--write-settings"], env=deployed.base_env(), cwd=project, capture_output=True,
        text=True, timeout=60,
    )
    assert wrote.returncode == 0, wrote.stderr
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    assert "ANTHROPIC_AUTH_TOKEN" not in settings["env"]
    env = {k: v for k, v in deployed.claude_env(deployed.claude_home()).items()
           if not k.startswith("ANTHROPIC_")}
    done = subprocess.run([str(deployed.claude_bin), *args], env=env, cwd=project,
                          capture_output=True, text=True, timeout=CLAUDE_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["result"] == "204"


def test_spark_stack_claude_without_claude_says_how_to_install(deployed: Deployed) -> None:
    env = {**deployed.base_env(), "PATH": "/usr/bin:/bin"}
    env.pop("SPARK_STACK_CLAUDE_BIN")
    done = subprocess.run(
        [sys.executable, "-m", "spark_stack", "-s", str(deployed.stack_file), "claude", "-p",
         "hi"], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1
    assert "npm install -g @anthropic-ai/claude-code" in done.stderr


def test_backend_down_fails_fast_naming_the_model_and_the_fix(
    deployed: Deployed, testhost: HostInfo
) -> None:
    """The model's container stopped: the launcher asks the proxy's /health first and stops
    within 2 s naming the model and `spark-stack up` (was minutes of Claude Code retries)."""
    client = docker.DockerClient(base_url=testhost.local_docker_url, timeout=60)
    try:
        label = f"{LABEL_STACK}={deployed.name}"
        (container,) = client.containers.list(filters={"label": label})
        container.stop(timeout=2)
        done, _, elapsed = deployed.headless([str(deployed.launcher)], "What is 12*17?")
        assert done.returncode == 1
        assert "model qwen is not serving" in done.stderr, done.stderr
        assert "spark-stack" in done.stderr and " up" in done.stderr
        assert elapsed < 2
    finally:
        client.close()
        # Converge again so the module leaves a working stack behind for `down`.
        again = deployed.spark_stack("up")
        assert again.returncode == 0, again.stdout + again.stderr
