"""Turn a parsed command line plus environment into the simulator's settings (pure)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .flags import ServeArgs, UsageError

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
DEFAULT_MAX_MODEL_LEN = 262144
VLLM_VERSION = "0.28.0"

QUIRKS = frozenset(
    {"resend_id", "multi_index_chunk", "reasoning_content", "leak_markup", "wrong_tool"}
)
FAILURES = frozenset({"gpu_memory", "kv_cache", "oom", "no_kernel", "gated", "engine_dead", "hang"})


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulated server needs to know."""

    model: str = DEFAULT_MODEL
    served_model_names: tuple[str, ...] = (DEFAULT_MODEL,)
    host: str = "0.0.0.0"
    port: int = 8000
    max_model_len: int = DEFAULT_MAX_MODEL_LEN
    api_keys: tuple[str, ...] = ()
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    enable_auto_tool_choice: bool = False
    # vLLM's --enable-prompt-tokens-details: usage carries the prefix cache's cached_tokens.
    enable_prompt_tokens_details: bool = False
    default_chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    gpu_memory_utilization: float = 0.9
    startup_seconds: float = 0.3
    # Prefill time per 1000 prompt tokens the prefix cache did not serve (0: none), so a
    # session that lands where its prefix is not cached answers later.
    prefill_ms_per_1k: float = 0.0
    fail: str | None = None
    bench_chunks: int | None = None
    quirks: frozenset[str] = frozenset()
    version: str = VLLM_VERSION
    max_num_seqs: int = 256
    kv_cache_tokens: int = 4 * DEFAULT_MAX_MODEL_LEN
    num_speculative_tokens: int | None = None
    # A first start that downloads the weights: bytes written into the HF cache over seconds.
    download_bytes: int = 0
    download_seconds: float = 0.0
    non_default_args: Mapping[str, Any] = field(default_factory=dict)
    # vLLM's native multi-node mode (see .distributed): one simulator per node.
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29501
    headless: bool = False
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    enable_expert_parallel: bool = False
    distributed_executor_backend: str | None = None
    # torch.distributed's store timeout (600 s) unless VLLM_SIM_DIST_TIMEOUT says otherwise.
    dist_timeout: float = 600.0
    # vLLM's wait for a Ray placement group (PG_WAIT_TIMEOUT, 1800 s) unless
    # VLLM_SIM_PG_TIMEOUT says otherwise.
    pg_timeout: float = 1800.0

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def multi_node(self) -> bool:
        return self.nnodes > 1

    @property
    def ray_world(self) -> bool:
        """Ranks placed by a running Ray cluster (``--distributed-executor-backend ray``)."""
        return self.distributed_executor_backend == "ray" and self.world_size > 1

    @property
    def display_host(self) -> str:
        return self.host or "0.0.0.0"

    @property
    def primary_name(self) -> str:
        return self.served_model_names[0]

    @property
    def thinking_default(self) -> bool:
        return bool(self.default_chat_template_kwargs.get("enable_thinking", True))


_HUMAN_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([kKmMgG]?)$")
_HUMAN_FACTORS = {
    "": 1,
    "k": 1000,
    "K": 1024,
    "m": 1000**2,
    "M": 1024**2,
    "g": 1000**3,
    "G": 1024**3,
}


def parse_human_int(option: str, raw: str) -> int:
    """vLLM accepts sizes like `32k` (×1000) or `32K` (×1024) for --max-model-len."""
    match = _HUMAN_SIZE.match(raw.strip())
    if not match:
        raise UsageError(f"argument {option}: invalid value: '{raw}'")
    return int(float(match.group(1)) * _HUMAN_FACTORS[match.group(2)])


def _int(option: str, raw: str | None, default: int) -> int:
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise UsageError(f"argument {option}: invalid int value: '{raw}'") from exc


def _float(option: str, raw: str | None, default: float) -> float:
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise UsageError(f"argument {option}: invalid float value: '{raw}'") from exc


def _json_object(option: str, raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"argument {option}: invalid loads value: '{raw}'") from exc
    if not isinstance(value, dict):
        raise UsageError(f"argument {option}: invalid loads value: '{raw}'")
    return value


def _quirks(*sources: str | None) -> frozenset[str]:
    names = {q.strip() for src in sources if src for q in src.split(",") if q.strip()}
    unknown = names - QUIRKS
    if unknown:
        raise UsageError(f"unknown simulator quirk(s): {', '.join(sorted(unknown))}")
    return frozenset(names)


def _parser_name(raw: str | None) -> str | None:
    return None if raw in (None, "", "none") else raw


def build_config(args: ServeArgs, env: Mapping[str, str]) -> SimConfig:
    """Combine the command line with the simulator's environment variables."""
    model = args.model or DEFAULT_MODEL
    names = args.values("--served-model-name") or (model,)
    api_keys = args.values("--api-key")
    if not api_keys and env.get("VLLM_API_KEY"):
        api_keys = (env["VLLM_API_KEY"],)
    max_len_raw = args.value("--max-model-len")
    max_len = (
        parse_human_int("--max-model-len", max_len_raw) if max_len_raw else DEFAULT_MAX_MODEL_LEN
    )
    startup_raw = args.value("--sim-startup-seconds") or env.get("VLLM_SIM_STARTUP_SECONDS")
    prefill_raw = (args.value("--sim-prefill-ms-per-1k-tokens")
                   or env.get("VLLM_SIM_PREFILL_MS_PER_1K"))
    fail = env.get("VLLM_SIM_FAIL") or None
    if fail is not None and fail not in FAILURES:
        raise UsageError(f"unknown VLLM_SIM_FAIL value: {fail}")
    bench_raw = env.get("VLLM_SIM_BENCH_CHUNKS")
    quirks = _quirks(args.value("--sim-quirks"), env.get("VLLM_SIM_QUIRKS"))
    if args.value("--sim-reasoning-content") == "true":
        quirks |= {"reasoning_content"}
    non_default: dict[str, Any] = {"model_tag": model}
    for option, values in args.options.items():
        if option.startswith("--sim-"):
            continue
        key = option.lstrip("-").replace("-", "_")
        non_default[key] = (
            "***" if option == "--api-key" else (values[0] if len(values) == 1 else list(values))
        )
    speculative = _json_object("--speculative-config", args.value("--speculative-config"))
    spec_tokens = speculative.get("num_speculative_tokens")
    kv_tokens = _int("VLLM_SIM_KV_CACHE_TOKENS", env.get("VLLM_SIM_KV_CACHE_TOKENS"), 4 * max_len)
    nnodes = _int("--nnodes", args.value("--nnodes"), 1)
    node_rank = _int("--node-rank", args.value("--node-rank"), 0)
    tp = _int("--tensor-parallel-size", args.value("--tensor-parallel-size"), 1)
    pp = _int("--pipeline-parallel-size", args.value("--pipeline-parallel-size"), 1)
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        raise UsageError(f"argument --node-rank: node_rank ({node_rank}) must be in "
                         f"[0, nnodes) with nnodes={nnodes}")
    if (tp * pp) % nnodes:
        raise UsageError(f"world_size ({tp * pp}) = tensor_parallel_size ({tp}) x "
                         f"pipeline_parallel_size ({pp}) must be a multiple of nnodes ({nnodes})")
    return SimConfig(
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=args.value("--master-addr") or "127.0.0.1",
        master_port=_int("--master-port", args.value("--master-port"), 29501),
        headless=args.value("--headless") == "true",
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        enable_expert_parallel=args.value("--enable-expert-parallel") == "true",
        distributed_executor_backend=args.value("--distributed-executor-backend"),
        dist_timeout=max(0.1, _float("VLLM_SIM_DIST_TIMEOUT", env.get("VLLM_SIM_DIST_TIMEOUT"),
                                     600.0)),
        pg_timeout=max(0.1, _float("VLLM_SIM_PG_TIMEOUT", env.get("VLLM_SIM_PG_TIMEOUT"),
                                   1800.0)),
        model=model,
        served_model_names=tuple(names),
        host=args.value("--host") or "0.0.0.0",
        port=_int("--port", args.value("--port"), 8000),
        max_model_len=max_len,
        api_keys=tuple(api_keys),
        reasoning_parser=_parser_name(args.value("--reasoning-parser")),
        tool_call_parser=_parser_name(args.value("--tool-call-parser")),
        enable_auto_tool_choice=args.value("--enable-auto-tool-choice") == "true",
        enable_prompt_tokens_details=args.value("--enable-prompt-tokens-details") == "true",
        default_chat_template_kwargs=_json_object(
            "--default-chat-template-kwargs", args.value("--default-chat-template-kwargs")
        ),
        gpu_memory_utilization=_float(
            "--gpu-memory-utilization", args.value("--gpu-memory-utilization"), 0.9
        ),
        startup_seconds=max(0.0, _float("VLLM_SIM_STARTUP_SECONDS", startup_raw, 0.3)),
        prefill_ms_per_1k=max(0.0, _float("VLLM_SIM_PREFILL_MS_PER_1K", prefill_raw, 0.0)),
        fail=fail,
        bench_chunks=_int("VLLM_SIM_BENCH_CHUNKS", bench_raw, 0) or None,
        quirks=quirks,
        non_default_args=non_default,
        max_num_seqs=max(1, _int("--max-num-seqs", args.value("--max-num-seqs"), 256)),
        kv_cache_tokens=max(1, kv_tokens),
        num_speculative_tokens=spec_tokens if isinstance(spec_tokens, int) and spec_tokens > 0
        else None,
        download_bytes=max(0, _int("VLLM_SIM_DOWNLOAD_BYTES",
                                   env.get("VLLM_SIM_DOWNLOAD_BYTES"), 0)),
        download_seconds=max(0.0, _float("VLLM_SIM_DOWNLOAD_SECONDS",
                                         env.get("VLLM_SIM_DOWNLOAD_SECONDS"), 0.0)),
    )
