"""Preflight: the facts script's output parsed, and every check judged (with its fix)."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from spark_stack.deploy.preflight import (
    FACTS_SCRIPT,
    GIB_KIB,
    HostFacts,
    parse_facts,
    raise_failures,
    run_checks,
    validate_skips,
)
from spark_stack.errors import PreflightError, UsageError
from spark_stack.spec import ContainerSpec, render_container
from spark_stack.stack.loader import load_stack_text

M = "@@spark-stack@@"
SPARK_OUTPUT = f"""{M} home
/home/nvidia
{M} docker
{{"Client":{{"Version":"28.0.1"}},"Server":{{"Version":"28.0.1","ApiVersion":"1.48"}}}}
{M} rc 0
{M} runtimes
{{"io.containerd.runc.v2":{{}},"nvidia":{{"path":"nvidia-ctr"}},"runc":{{}}}} "/var/lib/docker"
{M} arch
aarch64
{M} nvidia
0, NVIDIA GB10, [N/A], [N/A], 0
{M} rc 0
{M} meminfo
MemTotal:       127535460 kB
MemFree:        100000000 kB
MemAvailable:   120000000 kB
{M} df
Filesystem     1024-blocks      Used Available Capacity Mounted on
/dev/nvme0n1p2  3844551928 400000000 3244551928      11% /
/dev/nvme1n1p1  1000000000 999000000    1000000     100% /var/lib/docker
{M} listening
LISTEN 0      4096         0.0.0.0:22        0.0.0.0:*
LISTEN 0      4096               *:8000            *:*
LISTEN 0      4096       127.0.0.1:631     0.0.0.0:*
{M} hftoken
yes
"""


def test_a_sparks_facts_parse() -> None:
    facts = parse_facts(SPARK_OUTPUT)
    assert facts.home == "/home/nvidia"
    assert (facts.docker_ok, facts.server_version, facts.api_version) == (True, "28.0.1", "1.48")
    assert facts.runtimes == ("io.containerd.runc.v2", "nvidia", "runc")
    assert facts.docker_root == "/var/lib/docker"
    assert facts.arch == "aarch64"
    assert facts.nvidia_ok and facts.gpus[0].name == "NVIDIA GB10"
    assert facts.gpus[0].memory_total_mib is None  # unified memory: nvidia-smi says [N/A]
    assert (facts.mem_total_kib, facts.mem_available_kib) == (127535460, 120000000)
    assert facts.listening_ports == frozenset({22, 8000, 631})
    assert facts.free_at("/var/lib/docker/overlay2") == 1000000
    assert facts.free_at("/home/nvidia/.cache/huggingface") == 3244551928
    assert facts.hf_token_on_host is True


def test_the_facts_script_runs_in_a_real_shell_here() -> None:
    done = subprocess.run(["sh", "-c", FACTS_SCRIPT], capture_output=True, text=True,
                          timeout=60)
    facts = parse_facts(done.stdout)
    assert facts.home
    assert facts.arch
    assert facts.mem_total_kib > 0
    assert facts.free_at(facts.home) is not None


def test_missing_docker_and_no_gpu_are_reported() -> None:
    text = SPARK_OUTPUT.replace(
        '{"Client":{"Version":"28.0.1"},"Server":{"Version":"28.0.1","ApiVersion":"1.48"}}\n'
        f"{M} rc 0",
        f"sh: 1: docker: not found\n{M} rc 127").replace(
        f"0, NVIDIA GB10, [N/A], [N/A], 0\n{M} rc 0",
        f"NVIDIA-SMI has failed because it couldn't communicate with the driver\n{M} rc 9")
    facts = parse_facts(text)
    assert not facts.docker_ok and facts.docker_output == "sh: 1: docker: not found"
    assert not facts.nvidia_ok and facts.gpus == ()


STACK = """
name: pf
host: {address: gb10}
models:
  - name: a
    image: vllm/vllm-openai:v0.28.0
    model: Qwen/Qwen3-0.6B
    port: 8000
    gpu_memory_utilization: 0.5
"""


def _spec(text: str = STACK) -> ContainerSpec:
    stack = load_stack_text(text, lint=False).stack
    return render_container(stack, stack.container_models()[0])


def _check(facts: HostFacts, spec: ContainerSpec, **kwargs: object) -> dict[str, tuple[bool, str]]:
    args: dict[str, object] = {"gpu_memory_utilization": {"a": 0.5},
                               "image_archs": {spec.image: "arm64"}, "own_ports": (),
                               "hf_token_in_env": {"a": False}}
    args.update(kwargs)
    results = run_checks(facts, [spec], **args)  # type: ignore[arg-type]
    # The last result per name (two disk checks: images, then the model cache)
    return {r.name: (r.ok, r.message) for r in results}


def test_a_healthy_spark_passes_except_the_busy_port_and_full_disk() -> None:
    facts = parse_facts(SPARK_OUTPUT)
    checks = _check(facts, _spec())
    assert checks["docker"] == (True, "docker 28.0.1 (API 1.48)")
    assert checks["nvidia"][0] and checks["gpus"][0] and checks["arch"][0]
    assert checks["memory"][0]
    assert checks["port"] == (False, "port 8000 on the host is in use (model a)")
    assert checks["disk"] == (True, "3094.2 GiB free for the model cache at "
                                    "/home/nvidia/.cache/huggingface (need 10)")
    disk = [r for r in run_checks(facts, [_spec()], gpu_memory_utilization={}, image_archs={},
                                  own_ports=(), hf_token_in_env={}) if r.name == "disk"]
    assert (disk[0].ok, disk[0].message) == (
        False, "1.0 GiB free for images at /var/lib/docker (need 2)")


def test_our_own_container_holding_the_port_is_not_a_conflict() -> None:
    facts = replace(parse_facts(SPARK_OUTPUT), free_kib={"/": 500 * GIB_KIB})
    checks = _check(facts, _spec(), own_ports={8000})
    assert all(ok for ok, _ in checks.values()), checks


def test_gpu_checks_fail_clearly_without_the_nvidia_runtime() -> None:
    facts = replace(parse_facts(SPARK_OUTPUT), runtimes=("runc",), nvidia_ok=False, gpus=(),
                    nvidia_output="nvidia-smi: command not found")
    checks = _check(facts, _spec())
    assert checks["nvidia"] == (
        False, "NVIDIA container runtime: MISSING (docker runtimes: runc; wanted by a)")
    assert checks["gpus"] == (False, "nvidia-smi finds no GPU on the host: "
                                     "nvidia-smi: command not found")
    no_gpu = _spec(STACK + "    gpus: none\n")
    assert "nvidia" not in _check(facts, no_gpu) and "memory" not in _check(facts, no_gpu)


def test_arch_memory_and_gated_repos() -> None:
    facts = replace(parse_facts(SPARK_OUTPUT), mem_available_kib=10 * GIB_KIB)
    gated = _spec(STACK.replace("Qwen/Qwen3-0.6B", "meta-llama/Llama-3.1-8B-Instruct"))
    checks = _check(replace(facts, hf_token_on_host=False), gated,
                    image_archs={gated.image: "amd64"})
    assert checks["arch"] == (False, "image vllm/vllm-openai:v0.28.0 is amd64; the host is arm64")
    assert checks["memory"][0] is False and "60.8 GiB" in checks["memory"][1]
    assert checks["hf_token"] == (
        False, "meta-llama/Llama-3.1-8B-Instruct is a gated repo; HF token MISSING")
    with_token = _check(replace(facts, hf_token_on_host=False), gated,
                        hf_token_in_env={"a": True})
    assert with_token["hf_token"][0] is True


def test_skipped_checks_are_not_run_and_failures_raise_with_the_skip_hint() -> None:
    facts = parse_facts(SPARK_OUTPUT)
    spec = _spec()
    results = run_checks(facts, [spec], gpu_memory_utilization={}, image_archs={},
                         own_ports=(), hf_token_in_env={}, skip={"port"})
    assert "port" not in {r.name for r in results}
    failing = run_checks(facts, [spec], gpu_memory_utilization={}, image_archs={},
                         own_ports=(), hf_token_in_env={})
    with pytest.raises(PreflightError) as caught:
        raise_failures(failing)
    assert caught.value.message.startswith("preflight disk:")
    assert caught.value.fix is not None and "--skip-preflight disk" in caught.value.fix
    assert caught.value.exit_code == 4
    with pytest.raises(UsageError):
        validate_skips({"prot"})
    assert validate_skips({"port", "disk"}) == frozenset({"port", "disk"})


ENGINES = f"""{M} engines
process 4242 ollama serve
container spark-stack-lab-qwen vllm/vllm-openai:v0.28.0 lab
container other-vllm vllm/vllm-openai:v0.28.0 
container web nginx:latest 
"""


def test_other_inference_engines_are_refused_for_a_gpu_model_only() -> None:
    facts = parse_facts(SPARK_OUTPUT + ENGINES)
    spec = _spec()
    gpu = replace(spec, gpus="all", stack="lab")
    results = run_checks(facts, [gpu], gpu_memory_utilization={}, image_archs={},
                         own_ports=(), hf_token_in_env={})
    (engines,) = [r for r in results if r.name == "engines"]
    assert not engines.ok
    assert "4242 ollama serve" in engines.message and "other-vllm" in engines.message
    assert "spark-stack-lab-qwen" not in engines.message and "nginx" not in engines.message
    assert "sudo systemctl stop ollama" in str(engines.fix)
    cpu = replace(spec, gpus="none", stack="lab")
    assert not [r for r in run_checks(facts, [cpu], gpu_memory_utilization={}, image_archs={},
                                      own_ports=(), hf_token_in_env={}) if r.name == "engines"]
