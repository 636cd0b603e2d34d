"""The one command, as a newcomer runs it: `spark-stack claude --host ALIAS --preset ./x.yaml
--yes -- -p …` from an empty directory with an empty HOME (only an ~/.ssh/config alias for the
stand-in GB10). The first run writes the stack file, deploys and ends with Claude Code's answer;
the second is a no-op `up` and reaches Claude Code within 3 s; an unreachable host stops before
anything is written, with one line of cause and one of fix.

The stand-in has no GPU and no registry: the preset is a file for its simulator image with
`gpus: none`. A real subprocess (it execs Claude Code), the real pinned Claude Code CLI.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from spark_stack.spec import LABEL_STACK
from tests.helpers import free_port
from tests.testhost import HostInfo

PROMPT = ["-p", "What is 12*17? Answer with the number.", "--output-format", "json",
          "--max-turns", "2"]
REACH_BUDGET = 3.0  # seconds from the command to Claude Code's start, stack already up


@dataclass
class Newcomer:
    home: Path
    work: Path
    env: dict[str, str]
    reached: Path  # the wrapper around Claude Code writes the time it was started here

    def run(self, *args: str, cwd: Path | None = None
            ) -> tuple[subprocess.CompletedProcess[str], float, float | None]:
        """(the run, its wall time, seconds until Claude Code started or None)."""
        self.reached.unlink(missing_ok=True)
        started = time.time()
        done = subprocess.run([sys.executable, "-m", "spark_stack", *args], env=self.env,
                              cwd=cwd or self.work, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
        wall = time.time() - started
        reach = float(self.reached.read_text()) - started if self.reached.exists() else None
        return done, wall, reach


def _standin_preset(testhost: HostInfo) -> str:
    return f"""\
# The stand-in GB10: its vLLM simulator image, no GPU, no registry.
description: the stand-in host's simulator image (tests)
vllm_version: 0.28.0
sources: [tests/testhost]
name: qwen
image: {testhost.sim_image}
model: Qwen/Qwen3-0.6B
max_model_len: 40960
gpus: none
port: {random.randint(20000, 39999)}
readiness_timeout: 60
restart: "no"
cache: {{huggingface: null, vllm: null, flashinfer: null}}
env: {{VLLM_SIM_STARTUP_SECONDS: "0.3"}}
tool_call_parser: qwen3_coder
reasoning_parser: qwen3
"""


@pytest.fixture
def newcomer(testhost: HostInfo, claude_bin: Path, tmp_path: Path) -> Iterator[Newcomer]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    testhost.write_ssh_home(home)
    # Claude Code's first interactive start asks for onboarding; -p does not, but keep it quiet.
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    # The stack is named after the directory: a unique one on the shared stand-in.
    work = tmp_path / f"z{uuid.uuid4().hex[:8]}"
    work.mkdir()
    (work / "standin.yaml").write_text(_standin_preset(testhost))
    reached = tmp_path / "claude-reached"
    wrapper = tmp_path / "claude-wrapper"
    wrapper.write_text(f'#!/bin/sh\ndate +%s.%N > {reached}\nexec {claude_bin} "$@"\n')
    wrapper.chmod(0o755)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
        "SPARK_STACK_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(home / ".config"),
        "SPARK_STACK_CLAUDE_BIN": str(wrapper), "HF_HUB_OFFLINE": "1",
        "SPARK_STACK_OFFLINE": "1", "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    user = Newcomer(home, work, env, reached)
    yield user
    if (work / "spark-stack.yaml").exists():
        subprocess.run([sys.executable, "-m", "spark_stack", "down"], env=env, cwd=work,
                       capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    client = docker.DockerClient(base_url=testhost.local_docker_url, timeout=60)
    for container in client.containers.list(
            all=True, filters={"label": f"{LABEL_STACK}={work.name}"}):
        container.remove(force=True)
    client.close()


def test_the_one_command_from_zero_then_again_within_three_seconds(
    newcomer: Newcomer, testhost: HostInfo
) -> None:
    command = ["claude", "--host", testhost.ssh_alias, "--preset", "./standin.yaml", "--yes",
               "--", *PROMPT]
    first, wall, reach = newcomer.run(*command)
    assert first.returncode == 0, first.stderr
    answer = json.loads(first.stdout)  # stdout is Claude Code's alone
    assert answer["result"] == "204"
    assert list(answer["modelUsage"]) == ["qwen"]
    err = first.stderr
    for said in ("connecting to", "architecture:", "checks:", "ok docker:",
                 "the stack file ./spark-stack.yaml:", "up will:",
                 "wrote ./spark-stack.yaml", "ready"):
        assert said in err, said
    stack_file = newcomer.work / "spark-stack.yaml"
    assert f"address: {testhost.ssh_alias}" in stack_file.read_text()
    assert "preset: ./standin.yaml" in stack_file.read_text()
    print(f"\nfirst run: Claude Code's answer {wall:.2f} s after the command "
          f"(Claude Code started at {reach:.2f} s)")

    second, wall, reach = newcomer.run(*command)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["result"] == "204"
    assert "up to date" in second.stderr
    assert reach is not None and reach <= REACH_BUDGET, (reach, second.stderr)
    print(f"second run: Claude Code started {reach:.2f} s after the command, "
          f"its answer at {wall:.2f} s")

    log = (Path(newcomer.env["SPARK_STACK_HOME"]) / "stacks" / newcomer.work.name
           / "proxy.log").read_text()
    messages = [line for line in log.splitlines() if "POST /v1/messages " in line]
    assert len(messages) == 2 and all("model='qwen'" in m for m in messages), messages

    other, _, _ = newcomer.run("claude", "--host", "somewhere-else", "--", *PROMPT)
    assert other.returncode == 2
    assert "error: spark-stack.yaml is for host" in other.stderr
    assert f"{testhost.ssh_alias}, not somewhere-else" in other.stderr


def test_an_unreachable_host_stops_before_writing_anything(newcomer: Newcomer) -> None:
    port = free_port()  # nothing listens there
    with (newcomer.home / ".ssh" / "config").open("a") as config:
        config.write(f"Host nowhere\n    HostName 127.0.0.1\n    Port {port}\n"
                     "    BatchMode yes\n")
    done, _, reach = newcomer.run("claude", "--host", "nowhere", "--preset", "./standin.yaml",
                                  "--yes", "--", *PROMPT)
    assert done.returncode == 3, done.stderr
    assert reach is None and done.stdout == ""
    lines = [line for line in done.stderr.splitlines() if line.startswith(("error:", "fix:"))]
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("error:") and f"port {port}" in lines[0]
    assert lines[1].startswith("fix:")
    assert sorted(p.name for p in newcomer.work.iterdir()) == ["standin.yaml"]
