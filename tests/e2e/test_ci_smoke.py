"""A CI smoke deployment against the stand-in GB10, exactly as a user's pipeline runs it.

Through the real CLI as subprocesses, with a ``HOME`` whose ``~/.ssh`` reaches the host:
``up --smoke --json`` → parse the report, every check passed, exit 0; ``status --json``;
``down``. And the ways it must fail: a model whose container exits at start, and the model
server stopped under a running stack — exit 4, a JSON report naming the failed checks.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.helpers import free_port
from tests.testhost import HostInfo

EXPECTED_CHECKS = [
    "direct_completion", "completion", "tool_round_trip", "count_tokens", "thinking",
]  # fmt: skip
CLI_TIMEOUT_S = 180


@dataclass
class Pipeline:
    """A user's CI job: a stack file, its environment, and the spark-stack CLI."""

    stack_file: Path
    stack_name: str
    env: dict[str, str]
    cwd: Path
    torn_down: bool = False

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "spark_stack", "-s", str(self.stack_file), *args],
            env=self.env, cwd=self.cwd, capture_output=True, text=True,
            timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL,
        )
        if args == ("down",):
            self.torn_down = done.returncode == 0
        return done

    def run_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = self.run(*args, "--json")
        try:
            return done.returncode, json.loads(done.stdout)
        except ValueError:
            raise AssertionError(
                f"not one JSON object (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
            ) from None



def stack_text(name: str, host: HostInfo, port: int, proxy_port: int, env: str = "") -> str:
    return f"""\
name: {name}
host:
  address: {host.ssh_alias}
models:
  - name: qwen
    image: {host.vllm_image}
    model: Qwen/Qwen3.6-35B-A3B
    served_name: qwen3.6-35b-a3b
    port: {port}
    max_model_len: 65536
    gpu_memory_utilization: 0.4
    tool_call_parser: qwen3_coder
    reasoning_parser: qwen3
    gpus: none
    readiness_timeout: 60
{env}proxy:
  listen: 127.0.0.1:{proxy_port}
  routes: {{"claude-*": qwen}}
"""


@pytest.fixture
def make_pipeline(
    testhost: HostInfo, ssh_home: Path, tmp_path: Path
) -> Iterator[Any]:
    made: list[Pipeline] = []

    def make(env_block: str = "") -> Pipeline:
        # Unique names and ports: other test runs may share the stand-in host.
        name = f"ci-smoke-{uuid.uuid4().hex[:8]}"
        stack_file = tmp_path / f"{name}.yaml"
        stack_file.write_text(
            stack_text(name, testhost, random.randint(20000, 29999), free_port(),
                       env_block)
        )
        env = {**os.environ, "HOME": str(ssh_home), "SPARK_STACK_HOME": str(tmp_path / "state")}
        env.pop("SPARK_STACK", None)
        pipeline = Pipeline(stack_file, name, env, tmp_path)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        if not pipeline.torn_down:
            pipeline.run("down")


def _containers(host: HostInfo, stack: str) -> list[str]:
    client = docker.DockerClient(base_url=host.local_docker_url, timeout=30)
    try:
        found = client.containers.list(
            all=True, filters={"label": f"io.spark-stack.stack={stack}"}
        )
        return [c.name for c in found]
    finally:
        client.close()


def test_smoke_deployment_passes_fails_when_the_server_stops_and_tears_down(
    make_pipeline: Any, testhost: HostInfo
) -> None:
    pipeline = make_pipeline()
    code, report = pipeline.run_json("up", "--smoke")
    assert code == 0, report
    assert report["ok"] is True and report["exit_code"] == 0
    assert report["stack"] == pipeline.stack_name
    assert [c["name"] for c in report["checks"]] == EXPECTED_CHECKS
    assert all(c["ok"] and c["latency_ms"] > 0 for c in report["checks"]), report["checks"]
    assert report["failed"] == []
    (model,) = report["models"]
    assert model["served_model"] == "qwen3.6-35b-a3b"
    assert model["endpoint"].startswith(f"http://{testhost.address}:")
    assert model["image"] == testhost.vllm_image and model["image_id"].startswith("sha256:")
    assert model["ttft_ms"]["direct"] > 0 and model["ttft_ms"]["proxy"] > 0
    assert report["timings"]["up_ms"] > 0

    code, status = pipeline.run_json("status")
    assert code == 0, status
    assert status["healthy"] is True and status["proxy"]["running"] is True

    # A second smoke finds the stack up: it checks and leaves it running.
    code, again = pipeline.run_json("smoke")
    assert code == 0 and again["timings"]["up_ms"] is None
    assert _containers(testhost, pipeline.stack_name) == [f"spark-stack-{pipeline.stack_name}-qwen"]

    # The model server stops under the running stack: smoke fails and names the checks.
    client = docker.DockerClient(base_url=testhost.local_docker_url, timeout=30)
    try:
        client.containers.get(f"spark-stack-{pipeline.stack_name}-qwen").stop(timeout=1)
    finally:
        client.close()
    code, report = pipeline.run_json("smoke")
    assert code == 4 and report["ok"] is False and report["exit_code"] == 4
    assert {"qwen/direct_completion", "qwen/completion", "qwen/tool_round_trip",
            "qwen/thinking"} <= set(report["failed"])
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["direct_completion"]["reason"].startswith("cannot connect to ")
    assert by_name["completion"]["reason"].startswith("HTTP 529 overloaded_error")

    done = pipeline.run("down")
    assert done.returncode == 0, done.stderr
    assert _containers(testhost, pipeline.stack_name) == []


def test_model_that_exits_at_start_fails_the_pipeline(make_pipeline: Any) -> None:
    pipeline = make_pipeline("    env: {VLLM_SIM_FAIL: gpu_memory}\n")
    code, report = pipeline.run_json("up", "--smoke")
    assert code == 4
    assert report["ok"] is False and report["exit_code"] == 4
    assert report["failed"] == ["up"]
    (check,) = report["checks"]
    assert check["name"] == "up" and check["via"] == "deploy" and not check["ok"]
    assert "model qwen failed to start" in check["reason"]
    assert "gpu_memory_utilization" in check["reason"]
