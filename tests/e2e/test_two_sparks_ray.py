"""``distributed: ray`` on the two stand-in Sparks: a real Ray cluster across the namespaces.

The head container runs ``ray start --head`` on its link address and then the simulator as
``vllm serve … --distributed-executor-backend ray``, which places a STRICT_SPREAD group of one
GPU per host on the cluster; the worker container runs ``ray start --address … --block``.
The Ray image (``spark-stack/vllm-sim-ray:test``) is built only for these tests.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml

from spark_stack.spec import LABEL_STACK
from tests.helpers import free_port, run_cli
from tests.testhost import HostPair
from tests.testhost.ray_image import RAY_IMAGE, ensure_ray_image


@pytest.fixture(scope="session")
def ray_image(host_pair: HostPair) -> str:
    return ensure_ray_image()


class RayStack:
    def __init__(self, tmp: Path, pair: HostPair, capsys: pytest.CaptureFixture[str]) -> None:
        self.name = f"ray{uuid.uuid4().hex[:8]}"
        self.path = tmp / "stack.yaml"
        self.pair = pair
        self.capsys = capsys
        self.port = random.randint(20000, 29000)
        head, worker = pair.head, pair.worker
        self.path.write_text(yaml.safe_dump({
            "name": self.name,
            "hosts": {"a": {"address": head.ssh_alias}, "b": {"address": worker.ssh_alias}},
            "cluster": {"distributed": "ray", "link": {
                "a": {"interface": pair.link_interface(head), "address": pair.link_address(head)},
                "b": {"interface": pair.link_interface(worker),
                      "address": pair.link_address(worker)}}},
            "models": [{
                "name": "big", "image": RAY_IMAGE, "model": "Qwen/Qwen3-0.6B", "hosts": ["a", "b"],
                "gpus": "none", "port": self.port, "api_key": "none", "readiness_timeout": 120,
                "cache": {"huggingface": None, "vllm": None, "flashinfer": None},
                "env": {"VLLM_SIM_STARTUP_SECONDS": "0.3", "VLLM_SIM_PG_TIMEOUT": "90"},
            }],
            "proxy": {"listen": f"127.0.0.1:{free_port()}"},
        }, sort_keys=False))

    def run(self, *args: str) -> tuple[int, str, str]:
        return run_cli(self.capsys, "-s", str(self.path), *args)


@pytest.fixture
def ray_stack(tmp_path: Path, host_pair: HostPair, ray_image: str, fake_home: Path,
              capsys: pytest.CaptureFixture[str]) -> Iterator[RayStack]:
    host_pair.write_ssh_home(fake_home)
    stack = RayStack(tmp_path, host_pair, capsys)
    yield stack
    stack.run("down")
    for host in host_pair.hosts:
        client = docker.DockerClient(base_url=host.local_docker_url, timeout=60)
        for container in client.containers.list(
                all=True, filters={"label": f"{LABEL_STACK}={stack.name}"}):
            container.remove(force=True)
        client.close()


def _containers(url: str, stack: str) -> list[Any]:
    client = docker.DockerClient(base_url=url, timeout=60)
    try:
        return list(client.containers.list(all=True, filters={"label": f"{LABEL_STACK}={stack}"}))
    finally:
        client.close()


def test_a_ray_cluster_across_the_two_hosts_serves_through_the_head(ray_stack: RayStack) -> None:
    pair = ray_stack.pair
    code, out, err = ray_stack.run("up")
    assert code == 0, out + err

    answer = httpx.get(f"http://{pair.head.address}:{ray_stack.port}/v1/models", timeout=10)
    assert answer.status_code == 200
    assert [m["id"] for m in answer.json()["data"]] == ["Qwen/Qwen3-0.6B"]

    (head,) = _containers(pair.head.local_docker_url, ray_stack.name)
    (worker,) = _containers(pair.worker.local_docker_url, ray_stack.name)
    head_log = head.logs().decode(errors="replace")
    # Ray placed one rank on each host, over the link.
    assert f"ip={pair.link_address(pair.head)}) " in head_log
    assert f"ip={pair.link_address(pair.worker)}) " in head_log
    assert "rank 1 in world size 2 is assigned as" in head_log
    assert "Ray runtime started." in worker.logs().decode(errors="replace")
    code, status = head.exec_run(["ray", "status"])
    assert code == 0 and "/2.0 GPU" in status.decode(), status.decode()

    # Through the proxy, as Claude Code reaches it.
    listen = yaml.safe_load(ray_stack.path.read_text())["proxy"]["listen"]
    reply = httpx.post(
        f"http://{listen}/v1/messages",
        headers={"anthropic-version": "2023-06-01", "x-api-key": "spark-stack-local"},
        json={"model": "big", "max_tokens": 64, "messages": [
            {"role": "user", "content": "What is 12*17? Answer with the number."}]},
        timeout=30)
    assert reply.status_code == 200, reply.text
    assert "204" in "".join(b.get("text", "") for b in reply.json()["content"])

    code, out, err = ray_stack.run("up", "--json")  # again: nothing to do
    assert code == 0, out + err
    assert [a["action"] for a in json.loads(out)["actions"]] == ["keep", "keep"]

    code, out, err = ray_stack.run("status", "--json")
    assert code == 0, out + err
    report = json.loads(out)
    nodes = sorted((m["host"], m["rank"], m["joined"], m["healthy"])
                   for m in report["models"] if m["name"] == "big")
    assert nodes == [("a", 0, True, True), ("b", 1, True, True)], report

    code, out, err = ray_stack.run("down")
    assert code == 0, out + err
    assert _containers(pair.head.local_docker_url, ray_stack.name) == []
    assert _containers(pair.worker.local_docker_url, ray_stack.name) == []
