"""Lint: each known-bad setting warns (with its fix and source) and the stack still validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_stack.cli import main
from spark_stack.stack.loader import load_stack_text

HEAD = "name: t\nhost: {address: 127.0.0.1}\nmodels:\n  - name: m\n"
GOOD = (
    "    image: vllm/vllm-openai:v0.28.0\n"
    "    model: RedHatAI/Qwen3.6-35B-A3B-NVFP4\n"
    "    gpu_memory_utilization: 0.5\n"
    "    reasoning_parser: qwen3\n"
)


def warnings_for(extra: str, body: str = GOOD) -> list[tuple[str, str, str, int | None]]:
    loaded = load_stack_text(HEAD + body + extra, filename="s.yaml")
    return [(p.key_path, p.message, p.fix or "", p.line) for p in loaded.warnings]


def test_a_good_stack_has_no_warnings() -> None:
    assert warnings_for("") == []


@pytest.mark.parametrize(
    ("body", "key_path", "line", "message", "fix"),
    [
        (GOOD.replace("v0.28.0", "cu130-nightly"), "models[0].image", 5,
         "'cu130-nightly' is stale", "vllm/vllm-openai:v0.28.0"),
        (GOOD.replace("0.5", "0.7"), "models[0].gpu_memory_utilization", 7,
         "#46307", "0.4–0.5"),
        (GOOD + "    env: {VLLM_FLASHINFER_MOE_BACKEND: throughput}\n",
         "models[0].env.VLLM_FLASHINFER_MOE_BACKEND", 9, "deprecated", "set 'moe_backend'"),
        (GOOD + "    env: {VLLM_USE_FLASHINFER_MOE_FP4: '1'}\n",
         "models[0].env.VLLM_USE_FLASHINFER_MOE_FP4", 9, "silently ignored", "moe_backend"),
        (GOOD + "    env: {VLLM_ATTENTION_BACKEND: FLASHINFER}\n",
         "models[0].env.VLLM_ATTENTION_BACKEND", 9, "deprecated", "set 'attention_backend'"),
        (GOOD + "    ipc: host\n    shm_size: 64gb\n", "models[0].shm_size", 10,
         "no effect with ipc: host", "remove shm_size"),
        (GOOD + "    served_name: Intel/Qwen3.6-35B-A3B-int4-AutoRound\n",
         "models[0].served_name", 9, "names a different checkpoint", "short alias"),
        (GOOD.replace("RedHatAI", "nvidia") + "    moe_backend: flashinfer_cutlass\n",
         "models[0].moe_backend", 9, "FLASHINFER_CUTLASS", "marlin"),
        (GOOD + "    api_key: none\n", "models[0].api_key", 9, "no API key",
         "api_key: auto"),
        (GOOD + "    ulimits: {memlock: -1}\n", "models[0].ulimits.memlock", 9,
         "CAP_SYS_RESOURCE", "remove the memlock ulimit"),
        (GOOD.replace("    gpu_memory_utilization: 0.5\n", ""), "models[0]", 4,
         "vLLM takes its default 0.9", "gpu_memory_utilization: 0.5"),
        (GOOD + "    max_model_len: 300000\n", "models[0].max_model_len", 9,
         "more than RedHatAI/Qwen3.6-35B-A3B-NVFP4 supports (262144", "at most 262144"),
        (GOOD + "    extra_args: [--trust-remote]\n", "models[0].extra_args[0]", 9,
         "abbreviation", "--trust-remote-code"),
        (GOOD.replace("vllm/vllm-openai:v0.28.0", "nvcr.io/nvidia/vllm:25.09-py3"),
         "models[0].image", 5, "checked against vLLM 0.33.0", "pin an upstream release"),
    ],
)
def test_lint_warns(body: str, key_path: str, line: int, message: str, fix: str) -> None:
    found = [w for w in warnings_for("", body) if w[0] == key_path and message in w[1]]
    assert found, warnings_for("", body)
    assert fix in found[0][2]
    assert found[0][3] == line
    assert "source: " in found[0][1]


def test_a_qwen3_checkpoint_without_reasoning_parser_warns_at_the_model() -> None:
    body = GOOD.replace("    reasoning_parser: qwen3\n", "")
    found = [w for w in warnings_for("", body) if "</think>" in w[1]]
    assert [(w[0], w[3], w[2]) for w in found] == [
        ("models[0].model", 6, "set reasoning_parser: qwen3")
    ]
    for checkpoint in ("Qwen/Qwen3-8B", "Qwen/Qwen3.5-27B", "Qwen/Qwen3.6-35B-A3B"):
        assert any("</think>" in w[1] for w in warnings_for(
            "", body.replace("RedHatAI/Qwen3.6-35B-A3B-NVFP4", checkpoint)))
    # Lines that never reason, and other families, are left alone.
    for checkpoint in ("Qwen/Qwen3-30B-A3B-Instruct-2507", "Qwen/Qwen3-Coder-30B-A3B-Instruct",
                       "meta-llama/Llama-3.1-8B-Instruct"):
        assert not any("</think>" in w[1] for w in warnings_for(
            "", body.replace("RedHatAI/Qwen3.6-35B-A3B-NVFP4", checkpoint)))


def test_preset_values_warn_at_the_preset() -> None:
    body = "    preset: qwen3.6-35b-a3b-nvfp4-nvidia\n    moe_backend: flashinfer_cutlass\n"
    found = warnings_for("", body)
    assert [(w[0], w[3]) for w in found] == [("models[0].moe_backend", 6)]


def test_warnings_exit_0_and_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text(HEAD + GOOD.replace("0.5", "0.9"))
    assert main(["-s", str(stack), "validate"]) == 0
    out = capsys.readouterr().out
    assert "1 warning" in out
    assert f"warning: {stack}:7:29: models[0].gpu_memory_utilization" in out


def test_a_fixed_kv_cache_needs_no_memory_share_and_renders_its_flag() -> None:
    from spark_stack.deployment import resolve

    body = GOOD.replace("    gpu_memory_utilization: 0.5\n", "    kv_cache_memory_bytes: 20GiB\n")
    loaded = load_stack_text(HEAD + body)
    assert loaded.warnings == []
    spec = resolve(loaded.stack).models[0].container
    assert spec is not None
    assert "--kv-cache-memory-bytes" in spec.command
    assert spec.command[spec.command.index("--kv-cache-memory-bytes") + 1] == str(20 * 2**30)


def test_an_older_pinned_vllm_for_nvfp4_is_an_error_with_the_fix() -> None:
    from spark_stack.errors import StackFileError

    with pytest.raises(StackFileError) as caught:
        load_stack_text(HEAD + GOOD.replace("v0.28.0", "v0.24.0"), filename="s.yaml")
    (problem,) = caught.value.problems
    assert (problem.key_path, problem.line) == ("models[0].image", 5)
    assert "needs vLLM 0.28.0 or newer" in problem.message
    assert problem.fix == "use image: vllm/vllm-openai:v0.28.0 or newer"
    # A moving tag only guesses its version: that is the stale-tag warning, not this error.
    assert load_stack_text(HEAD + GOOD.replace("v0.28.0", "cu130-nightly")).warnings
