"""Desired state, rendered: the container spec of each managed model (pure, no I/O).

``render_container`` turns a validated :class:`~spark_stack.stack.schema.ContainerModel` into a
:class:`ContainerSpec`: image, the vLLM argv (what follows the image's ``vllm serve``
entrypoint), environment (secrets by reference only), ports, mounts, labels and a hash of the
whole spec. ``up`` creates containers from it; ``plan`` prints it as a ``docker run`` line.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict, dataclass, field
from typing import Literal

from .stack import schema
from .stack.secrets import has_reference, mask
from .vllm.flags import dedupe, flag_set_for_image

LABEL_PREFIX = "io.spark-stack"
LABEL_MANAGED_BY = f"{LABEL_PREFIX}.managed-by"
LABEL_STACK = f"{LABEL_PREFIX}.stack"
LABEL_MODEL = f"{LABEL_PREFIX}.model"
LABEL_SPEC_HASH = f"{LABEL_PREFIX}.spec-hash"
MANAGED_BY = "spark-stack"
CONTAINER_PORT = 8000
API_KEY_ENV = "VLLM_API_KEY"  # vLLM reads its API key from here: keeps it out of argv
CACHE_TARGETS = {
    "huggingface": "/root/.cache/huggingface",
    "vllm": "/root/.cache/vllm",
    "flashinfer": "/root/.cache/flashinfer",
}


@dataclass(frozen=True)
class EnvVar:
    """One environment variable; ``value`` may hold ``${NAME}`` references (resolved at use)."""

    name: str
    value: str

    @property
    def is_secret(self) -> bool:
        return has_reference(self.value)

    def shown(self) -> str:
        return mask(self.value)


@dataclass(frozen=True)
class MountSpec:
    source: str  # on the host; may start with ~ (the remote user's home)
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one model's container, and nothing secret."""

    stack: str
    model: str
    name: str
    image: str
    command: tuple[str, ...]
    env: tuple[EnvVar, ...]
    host_port: int
    bind_address: str
    mounts: tuple[MountSpec, ...]
    ipc: str | None
    shm_size: str | None
    ulimits: tuple[tuple[str, int, int], ...]
    gpus: Literal["all", "none"] | int | tuple[int, ...]
    restart: str
    api_key: str  # "auto" (generated, kept locally), "none", or a ${NAME} reference
    served_name: str
    container_port: int = CONTAINER_PORT
    spec_hash: str = field(default="", compare=False)

    def labels(self) -> dict[str, str]:
        return {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_STACK: self.stack,
            LABEL_MODEL: self.model,
            LABEL_SPEC_HASH: self.spec_hash,
        }

    def canonical(self) -> str:
        """Canonical JSON of the spec without its hash (secret references, never values)."""
        data = asdict(self)
        data.pop("spec_hash")
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


def container_name(stack: str, model: str) -> str:
    return f"spark-stack-{stack}-{model}"


def served_name(model: schema.ContainerModel | schema.SimulatorModel) -> str:
    return model.served_name or model.model or model.name


@dataclass(frozen=True)
class ArgSource:
    """Where one argv token comes from: a model field, or item ``item`` of ``extra_args``."""

    field: str
    item: int | None = None


# Flags spark-stack renders from a dedicated field; in extra_args they are refused.
FIELD_FLAGS = {
    "--model": "model",
    "--served-model-name": "served_name",
    "--host": "bind",
    "--port": "port",
    "--dtype": "dtype",
    "--gpu-memory-utilization": "gpu_memory_utilization",
    "--max-model-len": "max_model_len",
    "--enable-auto-tool-choice": "enable_auto_tool_choice",
    "--tool-call-parser": "tool_call_parser",
    "--reasoning-parser": "reasoning_parser",
    "--moe-backend": "moe_backend",
    "--attention-backend": "attention_backend",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--load-format": "load_format",
    "--speculative-config": "speculative",
}


def vllm_argv_sources(model: schema.ContainerModel) -> list[tuple[str, ArgSource]]:
    """The arguments after ``vllm serve``, each with its source, before de-duplication.

    The order follows the common recipes (and the source document's command).
    """
    if model.model is None:
        raise ValueError(f"model {model.name!r} has no 'model' (HF repo)")
    out: list[tuple[str, ArgSource]] = []

    def add(field_name: str, *tokens: str) -> None:
        out.extend((token, ArgSource(field_name)) for token in tokens)

    add("model", model.model)
    add("served_name", "--served-model-name", served_name(model))
    add("bind", "--host", "0.0.0.0")
    add("port", "--port", str(CONTAINER_PORT))
    if model.dtype:
        add("dtype", "--dtype", model.dtype)
    if model.gpu_memory_utilization is not None:
        add("gpu_memory_utilization", "--gpu-memory-utilization",
            _number(model.gpu_memory_utilization))
    if model.max_model_len is not None:
        add("max_model_len", "--max-model-len", str(model.max_model_len))
    auto_tools = model.enable_auto_tool_choice
    if auto_tools or (auto_tools is None and model.tool_call_parser):
        add("enable_auto_tool_choice", "--enable-auto-tool-choice")
    for field_name in ("tool_call_parser", "reasoning_parser", "moe_backend",
                       "attention_backend", "kv_cache_dtype", "load_format"):
        value = getattr(model, field_name)
        if value:
            add(field_name, "--" + field_name.replace("_", "-"), value)
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


def render_container(stack: schema.Stack, model: schema.ContainerModel) -> ContainerSpec:
    mounts = [
        MountSpec(source, CACHE_TARGETS[kind])
        for kind, source in model.cache.model_dump().items()
        if source is not None
    ]
    mounts += [MountSpec(m.source, m.target, m.read_only) for m in model.mounts]
    env = [EnvVar(name, value) for name, value in sorted(model.env.items())]
    gpus: Literal["all", "none"] | int | tuple[int, ...]
    gpus = tuple(model.gpus) if isinstance(model.gpus, list) else model.gpus
    spec = ContainerSpec(
        stack=stack.name,
        model=model.name,
        name=container_name(stack.name, model.name),
        image=model.image or "",
        command=tuple(vllm_argv(model)),
        env=tuple(env),
        host_port=model.port,
        bind_address="127.0.0.1" if model.bind == "loopback" else "0.0.0.0",
        mounts=tuple(mounts),
        ipc=model.ipc,
        shm_size=model.shm_size,
        ulimits=tuple(_ulimit(name, value) for name, value in sorted(model.ulimits.items())),
        gpus=gpus,
        restart=model.restart,
        api_key=model.api_key,
        served_name=served_name(model),
    )
    digest = hashlib.sha256(spec.canonical().encode()).hexdigest()[:16]
    return ContainerSpec(**{**spec.__dict__, "spec_hash": digest})


def render_containers(stack: schema.Stack) -> list[ContainerSpec]:
    return [render_container(stack, m) for m in stack.container_models()]


def docker_run_command(spec: ContainerSpec) -> str:
    """The equivalent ``docker run`` line, secrets masked (for people, not for execution)."""
    args = ["docker", "run", "-d", "--name", spec.name]
    if spec.restart != "no":
        args += ["--restart", spec.restart]
    if spec.gpus == "all":
        args += ["--gpus", "all"]
    elif isinstance(spec.gpus, int):
        args += ["--gpus", str(spec.gpus)]
    elif isinstance(spec.gpus, tuple):
        args += ["--gpus", f'"device={",".join(str(g) for g in spec.gpus)}"']
    if spec.ipc:
        args += ["--ipc", spec.ipc]
    if spec.shm_size:
        args += ["--shm-size", spec.shm_size]
    for name, soft, hard in spec.ulimits:
        args += ["--ulimit", f"{name}={soft}" if soft == hard else f"{name}={soft}:{hard}"]
    bind = "" if spec.bind_address == "0.0.0.0" else f"{spec.bind_address}:"
    args += ["-p", f"{bind}{spec.host_port}:{spec.container_port}"]
    for mount in spec.mounts:
        args += ["-v", f"{mount.source}:{mount.target}{':ro' if mount.read_only else ''}"]
    for var in spec.env:
        # A secret is passed by name, as `docker run -e NAME` does: its value never shows.
        args += ["-e", var.name if var.is_secret else f"{var.name}={var.value}"]
    if spec.api_key != "none":
        args += ["-e", API_KEY_ENV]
    for key, value in spec.labels().items():
        args += ["--label", f"{key}={value}"]
    args.append(spec.image)
    args += spec.command
    return " ".join(_shell_word(a) for a in args)


def _shell_word(arg: str) -> str:
    """Quote for a POSIX shell, leaving a leading ``~/`` bare so the shell still expands it."""
    if arg.startswith('"device='):
        return arg
    if arg.startswith("~/"):
        return "~/" + shlex.quote(arg[2:])
    return shlex.quote(arg)


def _ulimit(name: str, value: int | str) -> tuple[str, int, int]:
    if isinstance(value, int):
        return (name, value, value)
    soft, _, hard = value.partition(":")
    return (name, int(soft), int(hard or soft))


def _number(value: float) -> str:
    return repr(value) if value != int(value) else str(int(value))
