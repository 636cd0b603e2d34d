"""Lint: settings that validate but are known to go wrong on a DGX Spark (warnings, exit 0).

Every warning says what to do and where the fact comes from; the facts are collected in
the project's research notes on vLLM on the Spark (vllm-project/recipes, NVIDIA's
dgx-spark-playbooks, vLLM issues).
"""

from __future__ import annotations

import re

from ..errors import Problem
from ..vllm.flags import STALE_TAGS, image_vllm_version, split_image
from . import schema
from .loaded import LoadedStack
from .presets import RECOMMENDED_IMAGE
from .vllm_check import field_path

# Above this share of the GB10's unified memory (shared with the OS) vLLM fails or freezes.
SPARK_MAX_GPU_MEMORY_UTILIZATION = 0.6
DEPRECATED_ENV = {
    "VLLM_FLASHINFER_MOE_BACKEND": "moe_backend",
    "VLLM_USE_FLASHINFER_MOE_FP4": "moe_backend",
    "VLLM_ATTENTION_BACKEND": "attention_backend",
}
# Context each checkpoint family supports natively (max_position_embeddings of its config.json):
# (pattern, tokens, source).
_CHECKPOINT_CONTEXT: tuple[tuple[re.Pattern[str], int, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), tokens, source)
    for pattern, tokens, source in (
        (r"qwen3\.[56]", 262144, "the checkpoint's config.json; vllm-project/recipes"),
        (r"qwen3-coder", 262144, "the checkpoint's config.json"),
        (r"qwen3-.*-2507", 262144, "the checkpoint's config.json"),
    )
)
_QWEN3 = re.compile(r"qwen3", re.IGNORECASE)
# Qwen3 lines that never reason (e.g. Qwen3-30B-A3B-Instruct-2507, Qwen3-Coder-*).
_QWEN3_NO_THINKING = re.compile(r"instruct|coder", re.IGNORECASE)


def checkpoint_context(checkpoint: str) -> tuple[int, str] | None:
    """(tokens, source) a known checkpoint supports, or None for one we do not know."""
    for pattern, tokens, source in _CHECKPOINT_CONTEXT:
        if pattern.search(checkpoint):
            return tokens, source
    return None


def _models(loaded: LoadedStack) -> list[tuple[int, schema.ContainerModel]]:
    return [
        (i, m) for i, m in enumerate(loaded.stack.models) if isinstance(m, schema.ContainerModel)
    ]


def stale_image_tag(loaded: LoadedStack) -> list[Problem]:
    problems = []
    for index, model in _models(loaded):
        tag = split_image(model.image or "")[1]
        if tag in STALE_TAGS:
            problems.append(loaded.problem(
                f"image tag '{tag}' is stale: it stopped at vLLM {STALE_TAGS[tag][:4]}.x "
                "(source: vllm issue #42738; since v0.20 the plain tags are CUDA 13 and arm64)",
                field_path(loaded, index, model, "image"),
                fix=f"pin a release: image: {RECOMMENDED_IMAGE}",
            ))
    return problems


def user_preset_replaces_builtin(loaded: LoadedStack) -> list[Problem]:
    """A preset of the user's with a built-in one's name wins: say so where it is used."""
    return [
        loaded.problem(
            f"preset '{model.preset}' is your {preset.file.path}, not the built-in one",
            ("models", index, "preset"),
            fix="rename your file to keep both; `spark-stack presets` lists where each comes from",
        )
        for index, model in _models(loaded)
        if (preset := loaded.presets.get(model.preset or "")) and preset.file.replaces_builtin
    ]


def gpu_memory_on_spark(loaded: LoadedStack) -> list[Problem]:
    problems = []
    for index, model in _models(loaded):
        share = model.gpu_memory_utilization
        if model.gpus == "none" or share is None or share <= SPARK_MAX_GPU_MEMORY_UTILIZATION:
            continue
        problems.append(loaded.problem(
            f"gpu_memory_utilization {share} is above {SPARK_MAX_GPU_MEMORY_UTILIZATION}: the "
            "GB10's memory is shared with the OS, and vLLM fails at startup with \"Free memory "
            "on device … is less than desired GPU memory utilization\" (0.7 has frozen a "
            "machine; source: vllm issues #46307, #56824)",
            field_path(loaded, index, model, "gpu_memory_utilization"),
            fix="use 0.4–0.5, as NVIDIA's Spark playbooks do",
        ))
    return problems


def deprecated_env(loaded: LoadedStack) -> list[Problem]:
    problems = []
    for index, model in _models(loaded):
        for name in model.env:
            field = DEPRECATED_ENV.get(name)
            if field is None:
                continue
            problems.append(loaded.problem(
                f"{name} is deprecated and silently ignored by recent vLLM (\"Unknown vLLM "
                "environment variable detected\"; source: vLLM's --moe-backend/"
                "--attention-backend flags, vllm PR #33807)",
                ("models", index, "env", name),
                fix=f"remove it and set '{field}' instead",
            ))
    return problems


def shm_size_with_ipc_host(loaded: LoadedStack) -> list[Problem]:
    return [
        loaded.problem(
            f"shm_size {model.shm_size} has no effect with ipc: host (the container uses the "
            "host's /dev/shm; source: docker run reference)",
            field_path(loaded, index, model, "shm_size"),
            fix="remove shm_size",
        )
        for index, model in _models(loaded)
        if model.shm_size and model.ipc == "host"
    ]


def served_name_mislabels(loaded: LoadedStack) -> list[Problem]:
    problems = []
    for index, model in _models(loaded):
        name, checkpoint = model.served_name, model.model
        if not name or not checkpoint or "/" not in name or name.lower() == checkpoint.lower():
            continue
        problems.append(loaded.problem(
            f"served_name '{name}' names a different checkpoint than the one served "
            f"('{checkpoint}'): /v1/models, logs and clients will mislabel it (source: vLLM "
            "reports --served-model-name as the model's id)",
            field_path(loaded, index, model, "served_name"),
            fix="use a short alias such as 'qwen3.6-35b-a3b', or the checkpoint's own name, "
            "and point routes at it",
        ))
    return problems


def nvidia_checkpoint_moe_backend(loaded: LoadedStack) -> list[Problem]:
    problems = []
    for index, model in _models(loaded):
        backend = (model.moe_backend or "").lower().replace("-", "_")
        if (model.model or "").lower().startswith("nvidia/") and backend == "flashinfer_cutlass":
            problems.append(loaded.problem(
                "NVIDIA's NVFP4 checkpoints are refused by the flashinfer_cutlass MoE backend "
                "(\"NvFp4 MoE backend 'FLASHINFER_CUTLASS' does not support the deployment "
                "configuration\"; source: NVIDIA dgx-spark-playbooks)",
                field_path(loaded, index, model, "moe_backend"),
                fix="use moe_backend: marlin (or preset qwen3.6-35b-a3b-nvfp4-nvidia)",
            ))
    return problems


def open_on_lan(loaded: LoadedStack) -> list[Problem]:
    problems = []
    for index, model in _models(loaded):
        if model.bind == "lan" and model.api_key == "none":
            problems.append(loaded.problem(
                f"model '{model.name}' listens on every interface of its host with no API key: "
                "anyone on the network can use (and overload) it (source: vLLM checks no key "
                "unless --api-key or VLLM_API_KEY is set)",
                field_path(loaded, index, model, "api_key"),
                fix="set api_key: auto (spark-stack generates and keeps one), or bind: loopback",
            ))
    return problems


def memlock_ulimit(loaded: LoadedStack) -> list[Problem]:
    return [
        loaded.problem(
            "ulimit memlock needs CAP_SYS_RESOURCE: where the docker daemon lacks it (rootless "
            "docker, hardened hosts) the container fails to start (source: NVIDIA's playbooks "
            "add --ulimit memlock=-1 by habit; vLLM on one Spark does not need it)",
            ("models", index, "ulimits", "memlock"),
            fix="remove the memlock ulimit unless the daemon runs as root",
        )
        for index, model in _models(loaded)
        if "memlock" in model.ulimits
    ]


# NVFP4 checkpoints need this vLLM on the GB10 (source: vllm-project/recipes Qwen3.6-35B-A3B:
# "0.24.0 loads the checkpoint, but FlashInfer only selects its XQA decode kernel on SM120 GPUs
# from 0.28.0").
NVFP4_MIN_VLLM = (0, 28, 0)


def nvfp4_version_problems(loaded: LoadedStack) -> list[tuple[Problem, bool]]:
    """(problem, the image is a pinned release) for NVFP4 checkpoints on an older vLLM."""
    found = []
    for index, model in _models(loaded):
        if "nvfp4" not in (model.model or "").lower():
            continue
        version = image_vllm_version(model.image or "")
        if version is None or version >= NVFP4_MIN_VLLM:
            continue
        moving = split_image(model.image or "")[1] in STALE_TAGS
        shown = ".".join(str(part) for part in version[: 2 if moving else 3])
        found.append((loaded.problem(
            f"{model.model} needs vLLM 0.28.0 or newer on the GB10; image {model.image} runs "
            f"vLLM {shown}{'.x' if moving else ''} (source: vllm-project/recipes: FlashInfer "
            "selects its SM120 decode kernel from 0.28.0)",
            field_path(loaded, index, model, "image"),
            fix=f"use image: {RECOMMENDED_IMAGE} or newer",
        ), not moving))
    return found


def nvfp4_on_a_moving_tag(loaded: LoadedStack) -> list[Problem]:
    return [problem for problem, pinned in nvfp4_version_problems(loaded) if not pinned]


def gpu_memory_left_at_default(loaded: LoadedStack) -> list[Problem]:
    """No share and no KV-cache size: vLLM takes 0.9 of the GPU — all of a Spark's memory."""
    return [
        loaded.problem(
            "gpu_memory_utilization is not set, so vLLM takes its default 0.9 of the GPU's "
            "memory — on the GB10 that memory is the whole machine's, and 0.9 has frozen it "
            "(source: vllm issues #46307, #56824; NVIDIA's playbooks use 0.4–0.5)",
            ("models", index),
            fix="set gpu_memory_utilization: 0.5 (or kv_cache_memory_bytes), or use a preset",
        )
        for index, model in _models(loaded)
        if model.gpus != "none" and model.gpu_memory_utilization is None
        and model.kv_cache_memory_bytes is None
    ]


def max_model_len_beyond_checkpoint(loaded: LoadedStack) -> list[Problem]:
    problems = []
    for index, model in _models(loaded):
        limit = checkpoint_context(model.model or "")
        if model.max_model_len is None or limit is None or model.max_model_len <= limit[0]:
            continue
        problems.append(loaded.problem(
            f"max_model_len {model.max_model_len} is more than {model.model} supports "
            f"({limit[0]} tokens; source: {limit[1]}): vLLM refuses to start, or answers "
            "badly past it",
            field_path(loaded, index, model, "max_model_len"),
            fix=f"use at most {limit[0]}",
        ))
    return problems


def qwen3_without_reasoning_parser(loaded: LoadedStack) -> list[Problem]:
    return [
        loaded.problem(
            f"'{model.model}' is a Qwen3 checkpoint and no reasoning_parser is set: the reply "
            "text will contain the model's reasoning and a stray </think> (source: vLLM splits "
            "reasoning out of the content only with --reasoning-parser)",
            field_path(loaded, index, model, "model"),
            fix="set reasoning_parser: qwen3",
        )
        for index, model in _models(loaded)
        if _QWEN3.search(model.model or "") and not _QWEN3_NO_THINKING.search(model.model or "")
        and not model.reasoning_parser
    ]


LINTS = [
    user_preset_replaces_builtin,
    stale_image_tag,
    gpu_memory_on_spark,
    deprecated_env,
    shm_size_with_ipc_host,
    served_name_mislabels,
    nvidia_checkpoint_moe_backend,
    open_on_lan,
    memlock_ulimit,
    nvfp4_on_a_moving_tag,
    gpu_memory_left_at_default,
    max_model_len_beyond_checkpoint,
    qwen3_without_reasoning_parser,
]
