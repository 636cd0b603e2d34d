"""Presets: every preset renders flags every known vLLM accepts; user values win."""

from __future__ import annotations

from typing import Any

import pytest

from spark_stack.stack import schema
from spark_stack.stack.loader import load_preset, load_stack_text
from spark_stack.stack.presets import RECOMMENDED_IMAGE, apply_preset, available
from spark_stack.vllm.flags import KNOWN_VERSIONS

PRESETS: dict[str, dict[str, Any]] = {
    name: load_preset(name).settings for name, f in available().items() if f.origin == "built-in"
}


@pytest.mark.parametrize("version", KNOWN_VERSIONS)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_is_valid_for_every_known_vllm(preset: str, version: str) -> None:
    text = (
        "name: t\nhost: {address: 127.0.0.1}\nmodels:\n  - name: m\n"
        f"    preset: {preset}\n    image: vllm/vllm-openai:v{version}\n"
        "    model: Qwen/Qwen3-8B\n    reasoning_parser: qwen3\n"
    )
    loaded = load_stack_text(text, filename="s.yaml")
    assert loaded.warnings == []
    model = loaded.stack.models[0]
    assert isinstance(model, schema.ContainerModel)
    assert model.tool_call_parser in ("qwen3_coder", "hermes")


def test_presets_cover_the_issue_list() -> None:
    checkpoints = {p.get("model") for p in PRESETS.values()}
    assert {"nvidia/Qwen3.6-35B-A3B-NVFP4", "RedHatAI/Qwen3.6-35B-A3B-NVFP4"} <= checkpoints
    assert any("Qwen3.5-27B" in str(c) for c in checkpoints)
    assert "openai-compatible" in PRESETS
    # vllm-project/recipes (2026-09) runs both NVFP4 checkpoints with marlin on the GB10.
    assert PRESETS["qwen3.6-35b-a3b-nvfp4-nvidia"]["moe_backend"] == "marlin"
    assert PRESETS["qwen3.6-35b-a3b-nvfp4-redhat"]["moe_backend"] == "marlin"


def test_the_recommended_preset_is_the_gb10_recipe() -> None:
    """vllm-project/recipes Qwen3.6-35B-A3B.yaml, GB10 variant (research notes, late 2026)."""
    from spark_stack.deployment import resolve
    from spark_stack.stack.loader import load_stack_text

    loaded = load_stack_text("name: r\nhost: {address: spark}\nmodels:\n"
                             "  - {name: q, preset: qwen3.6-35b-a3b-nvfp4-redhat}\n")
    spec = resolve(loaded.stack).models[0].container
    assert spec is not None
    argv = " ".join(spec.command)
    for flags in ("--kv-cache-dtype fp8", "--attention-backend flashinfer", "--moe-backend marlin",
                  "--gpu-memory-utilization 0.5", "--max-model-len 262144", "--max-num-seqs 8",
                  "--max-num-batched-tokens 8192", "--enable-chunked-prefill",
                  "--async-scheduling", "--enable-prefix-caching",
                  "--load-format fastsafetensors",
                  '--speculative-config {"method":"mtp","num_speculative_tokens":3,'
                  '"moe_backend":"triton"}', "--tool-call-parser qwen3_coder"):
        assert flags in argv, flags
    assert loaded.warnings == []
    assert all(p["gpu_memory_utilization"] <= 0.5 for p in PRESETS.values())


def test_apply_preset_merges_lists_env_and_speculative_user_last() -> None:
    preset = {
        "extra_args": ["--a"], "env": {"X": "1", "Y": "1"},
        "speculative": {"method": "mtp", "num_tokens": 3}, "port": 1,
    }
    user = {"extra_args": ["--b"], "env": {"Y": "2"}, "speculative": {"num_tokens": 2}, "port": 2}
    assert apply_preset(preset, user) == {
        "extra_args": ["--a", "--b"], "env": {"X": "1", "Y": "2"},
        "speculative": {"method": "mtp", "num_tokens": 2}, "port": 2,
    }


def test_every_built_in_preset_describes_itself_and_pins_the_recommended_image() -> None:
    for name in PRESETS:
        preset = load_preset(name)
        assert preset.description and preset.vllm_version == "0.28.0" and preset.sources
        assert preset.settings["image"] == RECOMMENDED_IMAGE
