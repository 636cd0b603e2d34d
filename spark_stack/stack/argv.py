"""The vLLM command line a model's fields render to, and the name it serves (pure).

One table (:data:`VALUE_FIELDS`) says which stack field sets which ``vllm serve`` flag; the
container's argv, the simulator's argv, the ``extra_args`` duplicate check and the positions
that validation errors point at all read it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ..vllm.flags import dedupe, flag_set_for_image, group_args
from . import schema

# The port vLLM listens on inside its container (the host port is the model's `port`).
CONTAINER_PORT = 8000

# Always on: usage then says how many prompt tokens vLLM's prefix cache served, which the proxy
# reports to Claude Code as cache_read_input_tokens.
PROMPT_TOKENS_DETAILS = "--enable-prompt-tokens-details"
# Fields rendered as ``--flag value`` when set, in the common recipes' order.
VALUE_FIELDS: tuple[tuple[str, str], ...] = (
    ("tool_call_parser", "--tool-call-parser"),
    ("reasoning_parser", "--reasoning-parser"),
    ("moe_backend", "--moe-backend"),
    ("attention_backend", "--attention-backend"),
    ("kv_cache_dtype", "--kv-cache-dtype"),
    ("load_format", "--load-format"),
)
# Every flag spark-stack renders from a dedicated field; in extra_args they are refused.
FIELD_FLAGS: dict[str, str] = {
    "--model": "model",
    "--served-model-name": "served_name",
    "--host": "bind",
    "--port": "port",
    "--dtype": "dtype",
    "--gpu-memory-utilization": "gpu_memory_utilization",
    "--max-model-len": "max_model_len",
    "--kv-cache-memory-bytes": "kv_cache_memory_bytes",
    "--enable-auto-tool-choice": "enable_auto_tool_choice",
    "--speculative-config": "speculative",
    "--tensor-parallel-size": "tensor_parallel_size",
    # A multi-node model's own flags (rendered per node from `hosts` and `cluster`).
    "--nnodes": "hosts",
    "--node-rank": "hosts",
    "--headless": "hosts",
    "--master-addr": "cluster",
    "--master-port": "cluster",
    "--distributed-executor-backend": "cluster",
    **{flag: field for field, flag in VALUE_FIELDS},
}
# The flags vLLM's native multi-node mode needs (eugr/spark-vllm-docker, vllm recipes #713).
NODE_FLAGS = ("--nnodes", "--node-rank", "--master-addr", "--master-port", "--headless")


def served_name(model: schema.ModelConfig) -> str:
    """The model name the server answers to (``/v1/models``, the ``model`` of a request)."""
    if isinstance(model, schema.RemoteModel):
        return model.served_name or model.name
    return model.served_name or model.model or model.name


@dataclass(frozen=True)
class ArgSource:
    """Where one argv token comes from: a model field, or item ``item`` of ``extra_args``."""

    field: str
    item: int | None = None


def vllm_argv_sources(model: schema.ContainerModel) -> list[tuple[str, ArgSource]]:
    """The arguments after ``vllm serve``, each with its source, before de-duplication."""
    if model.model is None:
        raise ValueError(f"model {model.name!r} has no 'model' (HF repo)")
    out: list[tuple[str, ArgSource]] = []

    def add(field_name: str, *tokens: str) -> None:
        out.extend((token, ArgSource(field_name)) for token in tokens)

    add("model", model.model)
    add("served_name", "--served-model-name", served_name(model))
    if model.multi_node:
        # Host networking (NCCL needs the link): vLLM binds the host's own port and address.
        add("bind", "--host", "127.0.0.1" if model.bind == "loopback" else "0.0.0.0")
        add("port", "--port", str(model.port))
    else:
        add("bind", "--host", "0.0.0.0")
        add("port", "--port", str(CONTAINER_PORT))
    if model.tp_size is not None:
        add("tensor_parallel_size", "--tensor-parallel-size", str(model.tp_size))
    if model.dtype:
        add("dtype", "--dtype", model.dtype)
    if model.gpu_memory_utilization is not None:
        add("gpu_memory_utilization", "--gpu-memory-utilization",
            _number(model.gpu_memory_utilization))
    if model.max_model_len is not None:
        add("max_model_len", "--max-model-len", str(model.max_model_len))
    if model.kv_cache_memory_bytes is not None:
        add("kv_cache_memory_bytes", "--kv-cache-memory-bytes", str(model.kv_cache_memory_bytes))
    auto_tools = model.enable_auto_tool_choice
    if auto_tools or (auto_tools is None and model.tool_call_parser):
        add("enable_auto_tool_choice", "--enable-auto-tool-choice")
    add("model", PROMPT_TOKENS_DETAILS)
    for field_name, flag in VALUE_FIELDS:
        value = getattr(model, field_name)
        if value:
            add(field_name, flag, value)
    if model.speculative is not None:
        config: dict[str, object] = {
            "method": model.speculative.method,
            "num_speculative_tokens": model.speculative.num_tokens,
        }
        if model.speculative.moe_backend:
            config["moe_backend"] = model.speculative.moe_backend
        add("speculative", "--speculative-config", json.dumps(config, separators=(",", ":")))
    out += [(arg, ArgSource("extra_args", i)) for i, arg in enumerate(model.extra_args)]
    return out


def vllm_argv(model: schema.ContainerModel) -> list[str]:
    """The arguments after ``vllm serve``; a flag given twice keeps its last occurrence."""
    tokens = [token for token, _ in vllm_argv_sources(model)]
    return dedupe(tokens, flag_set_for_image(model.image))


def node_argv(rank: int, nnodes: int, master_addr: str, master_port: int) -> list[str]:
    """What follows a multi-node model's argv on node ``rank`` (vLLM's native mode): every
    node names the world and the head's link address; the others run without the API."""
    argv = ["--nnodes", str(nnodes), "--node-rank", str(rank),
            "--master-addr", master_addr, "--master-port", str(master_port)]
    return [*argv, "--headless"] if rank > 0 else argv


def simulator_argv(model: schema.SimulatorModel) -> list[str]:
    """The simulator process's command line: the same flags vLLM would get, plus its own."""
    argv = [sys.executable, "-m", "spark_stack.simulator", "serve", model.model,
            "--host", "127.0.0.1", "--port", str(model.port),
            "--served-model-name", served_name(model),
            "--sim-startup-seconds", f"{model.startup_seconds:g}"]
    if model.max_model_len is not None:
        argv += ["--max-model-len", str(model.max_model_len)]
    if model.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(model.max_num_seqs)]
    if model.tool_call_parser:
        argv.append("--enable-auto-tool-choice")
    argv.append(PROMPT_TOKENS_DETAILS)
    for field_name, flag in VALUE_FIELDS:
        value = getattr(model, field_name, None)
        if value:
            argv += [flag, value]
    return argv


def max_num_seqs_of(argv: Sequence[str]) -> int | None:
    """The ``--max-num-seqs`` a vLLM command line sets (its last occurrence; None: unset,
    vLLM's default): how many requests the engine runs at once, the proxy's admission cap."""
    groups, _ = group_args(argv)
    found = [g.values for g in groups if g.flag in ("--max-num-seqs", "--max_num_seqs")]
    if not found or len(found[-1]) != 1 or not found[-1][0].isdigit():
        return None
    return int(found[-1][0]) or None


def argv_changes(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """The stack fields (or, for ``extra_args``, the flags) whose value differs between two
    rendered argvs: what `plan --diff`, drift and `up` name instead of "command"."""
    def options(argv: Sequence[str]) -> dict[str, tuple[str, ...]]:
        groups, strays = group_args(argv)
        found = {g.flag: g.values for g in groups}
        found["--model"] = tuple(argv[i] for i in strays)  # the positional model
        return found

    before, after = options(old), options(new)
    changed = []
    for flag in sorted(set(before) | set(after), key=lambda f: (f not in FIELD_FLAGS, f)):
        if before.get(flag) != after.get(flag):
            changed.append(FIELD_FLAGS.get(flag, flag))
    return list(dict.fromkeys(changed))


def _number(value: float) -> str:
    return repr(value) if value != int(value) else str(int(value))
