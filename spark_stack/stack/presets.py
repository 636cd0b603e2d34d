"""Model presets: the right vLLM settings for known checkpoints on a DGX Spark.

A model with ``preset: NAME`` starts from the preset's settings; every key the user writes wins
(``extra_args`` and ``env`` are merged, the user's entries last). Sources for each value:
``/work/shared/research/vllm-on-spark.md`` (vllm-project/recipes, NVIDIA dgx-spark-playbooks).
"""

from __future__ import annotations

from typing import Any

# Pinned, multi-arch CUDA 13 upstream image; NVFP4 on the GB10 needs vLLM >= 0.28.0
# (vllm-project/recipes Qwen3.6-35B-A3B: FlashInfer's SM120 decode kernel is selected from 0.28).
RECOMMENDED_IMAGE = "vllm/vllm-openai:v0.28.0"

_QWEN_TOOLS: dict[str, Any] = {
    "tool_call_parser": "qwen3_coder",
    "reasoning_parser": "qwen3",
    "enable_auto_tool_choice": True,
}
_SPARK_SERVING: list[str] = [
    "--enable-prefix-caching",
    "--enable-chunked-prefill",
    "--async-scheduling",
    "--max-num-batched-tokens",
    "8192",
]

PRESETS: dict[str, dict[str, Any]] = {
    # NVIDIA's checkpoint: its NVFP4 MoE needs marlin (flashinfer_cutlass refuses it).
    # Settings follow NVIDIA's own Spark command (util 0.4, fp8 KV, MTP with a triton draft MoE).
    "qwen3.6-35b-a3b-nvfp4-nvidia": {
        "image": RECOMMENDED_IMAGE,
        "model": "nvidia/Qwen3.6-35B-A3B-NVFP4",
        "served_name": "qwen3.6-35b-a3b",
        "max_model_len": 262144,
        "gpu_memory_utilization": 0.4,
        "moe_backend": "marlin",
        "attention_backend": "flashinfer",
        "kv_cache_dtype": "fp8",
        "load_format": "fastsafetensors",
        "speculative": {"method": "mtp", "num_tokens": 3, "moe_backend": "triton"},
        "ipc": "host",
        **_QWEN_TOOLS,
        "extra_args": ["--trust-remote-code", "--max-num-seqs", "4", *_SPARK_SERVING],
    },
    # vllm-project/recipes Qwen3.6-35B-A3B on GB10 (2026-09): fp8 KV, FlashInfer attention,
    # marlin MoE, util 0.5, 262144 tokens, 8 sequences, 8192 batched tokens, chunked prefill,
    # async scheduling, prefix caching, fastsafetensors, MTP 3 with a triton draft MoE.
    # VLLM_MARLIN_USE_ATOMIC_ADD=1 from eugr's Spark recipe (faster marlin reductions).
    "qwen3.6-35b-a3b-nvfp4-redhat": {
        "image": RECOMMENDED_IMAGE,
        "model": "RedHatAI/Qwen3.6-35B-A3B-NVFP4",
        "served_name": "qwen3.6-35b-a3b",
        "max_model_len": 262144,
        "gpu_memory_utilization": 0.5,
        "moe_backend": "marlin",
        "attention_backend": "flashinfer",
        "kv_cache_dtype": "fp8",
        "load_format": "fastsafetensors",
        "speculative": {"method": "mtp", "num_tokens": 3, "moe_backend": "triton"},
        "ipc": "host",
        "env": {"VLLM_MARLIN_USE_ATOMIC_ADD": "1"},
        **_QWEN_TOOLS,
        "extra_args": ["--max-num-seqs", "8", *_SPARK_SERVING],
    },
    # Dense 27B (int4 AutoRound): no MoE backend to choose.
    "qwen3.5-27b": {
        "image": RECOMMENDED_IMAGE,
        "model": "Intel/Qwen3.5-27B-int4-AutoRound",
        "served_name": "qwen3.5-27b",
        "max_model_len": 131072,
        "gpu_memory_utilization": 0.4,
        "attention_backend": "flashinfer",
        "ipc": "host",
        **_QWEN_TOOLS,
        "extra_args": ["--max-num-seqs", "4", *_SPARK_SERVING],
    },
    # Any OpenAI-compatible vLLM model: only what Claude Code needs (tool calls); JSON tool
    # calls (Qwen2.5/Qwen3 originals, Hermes-style templates) use the hermes parser.
    "openai-compatible": {
        "image": RECOMMENDED_IMAGE,
        "max_model_len": 65536,
        "gpu_memory_utilization": 0.5,
        "ipc": "host",
        "tool_call_parser": "hermes",
        "enable_auto_tool_choice": True,
    },
}


def apply_preset(preset: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """The preset's settings overlaid by the user's (lists and env merged, the user's last)."""
    merged = {**preset, **user}
    if "extra_args" in preset and "extra_args" in user and isinstance(user["extra_args"], list):
        merged["extra_args"] = [*preset["extra_args"], *user["extra_args"]]
    if "env" in preset and isinstance(user.get("env"), dict):
        merged["env"] = {**preset["env"], **user["env"]}
    if isinstance(preset.get("speculative"), dict) and isinstance(user.get("speculative"), dict):
        merged["speculative"] = {**preset["speculative"], **user["speculative"]}
    return merged
