"""Container spec rendering: argv order and de-duplication, docker run line, hash, secrets."""

from __future__ import annotations

import shlex

from spark_stack.spec import docker_run_command, render_container, vllm_argv
from spark_stack.stack import schema
from spark_stack.stack.loader import load_stack_text

HEAD = "name: t\nhost: {address: 127.0.0.1}\nmodels:\n  - name: m\n"


def model_of(body: str) -> tuple[schema.Stack, schema.ContainerModel]:
    stack = load_stack_text(HEAD + body, filename="s.yaml").stack
    model = stack.models[0]
    assert isinstance(model, schema.ContainerModel)
    return stack, model


def test_user_extra_args_win_over_the_presets() -> None:
    _, model = model_of(
        "    preset: qwen3.5-27b\n"
        "    extra_args: [--max-num-seqs, '2', --no-enable-prefix-caching]\n"
    )
    argv = vllm_argv(model)
    assert argv.count("--max-num-seqs") == 1
    assert argv[argv.index("--max-num-seqs") + 1] == "2"
    assert "--enable-prefix-caching" not in argv and "--no-enable-prefix-caching" in argv


def test_user_fields_win_over_the_preset() -> None:
    _, model = model_of(
        "    preset: qwen3.6-35b-a3b-nvfp4-nvidia\n"
        "    gpu_memory_utilization: 0.45\n"
        "    speculative: {num_tokens: 2}\n"
    )
    argv = vllm_argv(model)
    assert argv[0] == "nvidia/Qwen3.6-35B-A3B-NVFP4"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.45"
    assert argv[argv.index("--moe-backend") + 1] == "marlin"
    spec = argv[argv.index("--speculative-config") + 1]
    assert spec == '{"method":"mtp","num_speculative_tokens":2,"moe_backend":"triton"}'


def test_docker_run_line_passes_secrets_by_name_and_keeps_tilde_expandable() -> None:
    stack, model = model_of(
        "    image: vllm/vllm-openai:v0.28.0\n"
        "    model: Qwen/Qwen3-8B\n"
        "    env: {HF_TOKEN: '${HF_TOKEN}', PLAIN: 'a b'}\n"
        "    bind: loopback\n"
        "    ulimits: {nofile: '1024:4096'}\n"
        "    gpus: [0]\n"
    )
    line = docker_run_command(render_container(stack, model))
    assert " -e HF_TOKEN " in line and "${HF_TOKEN}" not in line
    assert " -e 'PLAIN=a b' " in line
    assert " -e VLLM_API_KEY " in line  # api_key auto: the key never in argv
    assert " -p 127.0.0.1:8000:8000 " in line
    assert " -v ~/.cache/huggingface:/root/.cache/huggingface " in line
    assert " --ulimit nofile=1024:4096 " in line
    assert ' --gpus "device=0" ' in line
    tokens = shlex.split(line)
    assert tokens[tokens.index("vllm/vllm-openai:v0.28.0") + 1] == "Qwen/Qwen3-8B"


def test_spec_hash_follows_the_spec_only() -> None:
    body = "    image: vllm/vllm-openai:v0.28.0\n    model: Qwen/Qwen3-8B\n"
    first = render_container(*model_of(body))
    assert render_container(*model_of(body)).spec_hash == first.spec_hash
    changed = render_container(*model_of(body + "    max_model_len: 65536\n"))
    assert changed.spec_hash != first.spec_hash
    assert first.labels()["io.spark-stack.spec-hash"] == first.spec_hash
