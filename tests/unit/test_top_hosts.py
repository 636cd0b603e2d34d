"""Host facts for `top`: /proc/meminfo and nvidia-smi parsed as a GB10 answers them, read over
a (fake) SSH connection, and an unreachable host reported as such with its models."""

from __future__ import annotations

from typing import Any

from spark_stack.deploy.connector import Completed
from spark_stack.deploy.host_stats import SCRIPT, facts_from_output, parse_meminfo
from spark_stack.deployment import resolve
from spark_stack.errors import HostUnreachable
from spark_stack.host_facts import GpuFacts
from spark_stack.stack import schema
from spark_stack.stack.loader import load_stack_text
from spark_stack.top.sampler import Sampler, once
from tests.helpers import free_port

GB10 = """MemTotal:       127535896 kB
MemFree:         3300000 kB
MemAvailable:   41943040 kB
Buffers:           10000 kB
--- nvidia-smi
0, NVIDIA GB10, 87, 61
"""


def test_meminfo_and_nvidia_smi_as_a_gb10_answers() -> None:
    assert parse_meminfo(GB10) == (127535896 * 1024, 41943040 * 1024)
    facts = facts_from_output("default", "spark", GB10)
    assert facts.reachable and facts.memory_available_bytes == 40 * 2**30
    assert facts.gpus == (GpuFacts("0", "NVIDIA GB10", 87.0, 61.0),)
    no_reading = facts_from_output("default", "spark", "MemTotal: 1 kB\n--- nvidia-smi\n"
                                   "0, NVIDIA GB10, [N/A], [N/A]\n")
    assert no_reading.memory_available_bytes is None
    assert no_reading.gpus == (GpuFacts("0", "NVIDIA GB10", None, None),)


class FakeConnection:
    display = "ubuntu@spark:22"
    hostname = "spark"

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.closed = False

    def run_script(self, script: str, **_: Any) -> Completed:
        self.scripts.append(script)
        return Completed((script,), 0, GB10, "")

    def close(self) -> None:
        self.closed = True


def container_stack(port: int) -> str:
    return f"""
name: remote-top
host: {{address: 127.0.0.1}}
models:
  - name: qwen
    image: vllm/vllm-openai:v0.28.0
    model: Qwen/Qwen3.6-35B-A3B
    port: {port}
    gpus: none
    api_key: none
"""


def test_a_reachable_host_reports_memory_and_gpu_over_one_connection() -> None:
    deployment = resolve(load_stack_text(container_stack(free_port()), lint=False).stack)
    opened: list[FakeConnection] = []

    def open_connection(host: schema.HostConfig, trust: bool) -> FakeConnection:
        opened.append(FakeConnection())
        return opened[-1]

    report = once(deployment, interval=0.3, open_connection=open_connection)  # type: ignore[arg-type]
    host = report["hosts"][0]
    assert (host["name"], host["reachable"], host["error"]) == ("default", True, None)
    assert host["memory"]["available_bytes"] == 40 * 2**30
    assert host["gpus"] == [{"index": "0", "name": "NVIDIA GB10", "utilization_percent": 87.0,
                             "temperature_c": 61.0}]
    assert len(opened) == 1 and opened[0].scripts[0] == SCRIPT and opened[0].closed
    # The model's port is closed: vLLM is down on a reachable host.
    assert report["models"][0]["state"] == "down"


def test_an_unreachable_host_is_said_for_it_and_its_models() -> None:
    deployment = resolve(load_stack_text(container_stack(free_port()), lint=False).stack)

    def refuse(host: schema.HostConfig, trust: bool) -> FakeConnection:
        raise HostUnreachable("Connection refused on port 22 of 127.0.0.1")

    with Sampler(deployment, open_connection=refuse) as sampler:  # type: ignore[arg-type]
        sampler.wait_for_hosts(5)
        report = sampler.read()
    host = report["hosts"][0]
    assert host["reachable"] is False
    assert host["error"] == "Connection refused on port 22 of 127.0.0.1"
    assert report["models"][0]["state"] == "host unreachable"
