"""``distributed: ray``: the plan each node runs (pure), the wait for ``ray status``, and ``up``
/``status``/``down`` of a Ray cluster on two fake Sparks."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spark_stack.deploy.down import down
from spark_stack.deploy.ray_cluster import wait_ray_gpus
from spark_stack.deploy.status import status
from spark_stack.deployment import resolve
from spark_stack.errors import NotHealthy
from spark_stack.simulator.config import build_config
from spark_stack.simulator.flags import parse_serve_args
from spark_stack.spec import docker_run_command
from spark_stack.stack import schema
from spark_stack.stack.loader import load_stack_text
from spark_stack.stack.ray_argv import ray_gpus
from tests.fakes.host import FakeHosts, two_sparks, up_actions

IMAGE = "vllm/vllm-openai:v0.28.0"
LINK = {"a": {"interface": "enp1s0f1np1", "address": "192.168.100.10"},
        "b": {"interface": "enp1s0f1np1", "address": "192.168.100.11"}}


def _stack(**model: object) -> schema.Stack:
    big = {"name": "big", "image": IMAGE, "model": "org/big", "hosts": ["a", "b"],
           "port": 8000, "max_model_len": 65536, "gpu_memory_utilization": 0.5, **model}
    text = yaml.safe_dump({
        "name": "duo",
        "hosts": {"a": {"address": "spark-a"}, "b": {"address": "spark-b"}},
        "cluster": {"distributed": "ray", "link": LINK},
        "models": [big]})
    return load_stack_text(text, lint=False).stack


def test_ray_validates_now() -> None:
    assert _stack().cluster is not None and _stack().cluster.distributed == "ray"  # type: ignore[union-attr]


def test_the_head_starts_ray_on_its_link_address_then_serves_with_the_ray_executor() -> None:
    model = resolve(_stack()).model("big")
    head, worker = (n.container for n in model.nodes)
    assert model.distributed == "ray"
    assert head.entrypoint == ("/bin/sh",) and head.command[0] == "-c"
    start, serve = head.command[1].split(" && exec ")
    assert shlex.split(start) == [
        "ray", "start", "--head", "--port", "6379", "--node-ip-address", "192.168.100.10",
        "--num-gpus", "1", "--include-dashboard=false", "--disable-usage-stats"]
    argv = shlex.split(serve)
    assert argv[:3] == ["vllm", "serve", "org/big"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[-2:] == ["--distributed-executor-backend", "ray"]
    assert "--nnodes" not in argv and "--headless" not in argv
    assert worker.entrypoint == ("ray",)
    assert worker.command == ("start", "--address", "192.168.100.10:6379", "--node-ip-address",
                              "192.168.100.11", "--num-gpus", "1", "--disable-usage-stats",
                              "--block")
    for spec, own in ((head, "192.168.100.10"), (worker, "192.168.100.11")):
        env = {e.name: e.value for e in spec.env}
        assert env["VLLM_HOST_IP"] == own and env["MASTER_ADDR"] == "192.168.100.10"
        assert env["NCCL_SOCKET_IFNAME"] == env["GLOO_SOCKET_IFNAME"] == "enp1s0f1np1"
        assert env["RAY_USAGE_STATS_ENABLED"] == "0"
        assert env["RAY_memory_monitor_refresh_ms"] == "0"
        assert spec.network_mode == "host"


def test_the_docker_run_line_names_the_entrypoint() -> None:
    worker = resolve(_stack()).model("big").nodes[1].container
    line = docker_run_command(worker)
    assert line.startswith("docker run -d --name spark-stack-duo-big-1 --entrypoint ray ")
    assert line.endswith(f"{IMAGE} start --address 192.168.100.10:6379 --node-ip-address "
                         "192.168.100.11 --num-gpus 1 --disable-usage-stats --block")


def test_native_and_ray_nodes_hash_differently_and_single_node_hashes_keep_no_entrypoint(
) -> None:
    ray = resolve(_stack()).model("big").nodes[0].container
    assert '"entrypoint"' in ray.canonical()
    text = yaml.safe_dump({"name": "one", "host": {"address": "h"}, "models": [
        {"name": "m", "image": IMAGE, "model": "org/m", "max_model_len": 65536,
         "gpu_memory_utilization": 0.5}]})
    single = resolve(load_stack_text(text, lint=False).stack).model("m").container
    assert single is not None and '"entrypoint"' not in single.canonical()


@pytest.mark.parametrize(("output", "expected"), [
    ("Resources\n---\nTotal Usage:\n 0.0/4.0 CPU\n 0.0/2.0 GPU\n 0B/32.80GiB memory\n",
     (0.0, 2.0)),
    ("Usage:\n 1.0/1.0 GPU\n", (1.0, 1.0)),
    ("ConnectionError: Could not find any running Ray instance.", None),
])
def test_ray_status_gpus(output: str, expected: tuple[float, float] | None) -> None:
    assert ray_gpus(output) == expected


def test_the_wait_ends_when_every_gpu_is_counted_and_names_the_count_otherwise() -> None:
    answers = iter([(1, "ConnectionError: no GCS"), (0, " 0.0/1.0 GPU"), (0, " 0.0/2.0 GPU")])
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    assert wait_ray_gpus(lambda argv: next(answers), lambda: True, 2, model="big", timeout=10,
                         clock=lambda: now[0], sleep=sleep) is None
    assert now[0] == 2.0
    failed = wait_ray_gpus(lambda argv: (0, " 0.0/1.0 GPU"), lambda: True, 2, model="big",
                           timeout=3, clock=lambda: now[0], sleep=sleep)
    assert failed is not None and failed.diagnosis.key == "ray_workers_missing"
    assert "`ray status` in the head shows 1 of 2 GPUs" in failed.diagnosis.message
    # A head that stopped: the API wait reads its exit and log.
    assert wait_ray_gpus(lambda argv: (1, ""), lambda: False, 2, model="big", timeout=3) is None


@pytest.fixture
def sparks(tmp_path: Path, spark_stack_home: Path) -> FakeHosts:
    return two_sparks(tmp_path, IMAGE)



def test_up_waits_for_ray_status_then_serves_status_shows_both_and_down_removes_both(
    sparks: FakeHosts,
) -> None:
    stack = _stack()
    assert up_actions(stack, sparks) == [("create", "big"), ("create", "big")]
    a, b = sparks.hosts["a"], sparks.hosts["b"]
    assert a.docker.calls == ["create big", "exec ray status"]
    assert b.docker.calls == ["create big"]
    report = status(resolve(stack), connect=sparks.connect, probe=sparks.probe)
    nodes = sorted((m["host"], m["rank"], m["joined"], m["healthy"]) for m in report["models"])
    assert nodes == [("a", 0, True, True), ("b", 1, True, True)]
    result = down(stack, connect=sparks.connect)
    assert sorted(result.removed) == ["spark-stack-duo-big-0", "spark-stack-duo-big-1"]


def test_a_worker_that_never_joins_fails_up_with_the_gpu_count(sparks: FakeHosts) -> None:
    sparks.never_join.add("b")
    with pytest.raises(NotHealthy) as caught:
        up_actions(_stack(readiness_timeout=1), sparks, timeout=1.0)
    assert "`ray status` in the head shows 1 of 2 GPUs" in caught.value.message


def test_the_simulator_without_ray_fails_like_vllm_and_one_gpu_needs_no_ray() -> None:
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "VLLM_SIM_STARTUP_SECONDS": "0.05",
           "VLLM_SIM_FLAGS_FILE": str(repo / "spark_stack/vllm/data/vllm-flags-0.28.0.json")}
    argv = [sys.executable, "-m", "spark_stack.simulator", "serve", "Qwen/Qwen3-0.6B",
            "--port", "0", "--tensor-parallel-size", "2", "--distributed-executor-backend", "ray"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Failed to import Ray" in done.stderr and "pip install ray" in done.stderr
    config = build_config(parse_serve_args(argv[4:], None), {})
    assert config.ray_world and config.pg_timeout == 1800.0
    single = build_config(parse_serve_args(
        ["Qwen/Qwen3-0.6B", "--distributed-executor-backend", "ray"], None), {})
    assert not single.ray_world
