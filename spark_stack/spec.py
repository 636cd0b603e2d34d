"""Desired state, rendered: the container spec of each managed model (pure, no I/O).

The argv itself comes from :mod:`spark_stack.stack.argv`.

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

from .stack import ray_argv, schema
from .stack.argv import CONTAINER_PORT, node_argv, served_name, vllm_argv
from .stack.secrets import has_reference, mask

LABEL_PREFIX = "io.spark-stack"
LABEL_MANAGED_BY = f"{LABEL_PREFIX}.managed-by"
LABEL_STACK = f"{LABEL_PREFIX}.stack"
LABEL_MODEL = f"{LABEL_PREFIX}.model"
LABEL_SPEC_HASH = f"{LABEL_PREFIX}.spec-hash"
LABEL_RANK = f"{LABEL_PREFIX}.rank"  # a multi-node model's node (0: the head)
MANAGED_BY = "spark-stack"
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
    # A node of a multi-node model: its rank, on the host's network (NCCL needs the link).
    rank: int | None = None
    network_mode: Literal["host"] | None = None
    # Replaces the image's entrypoint (`vllm serve`): a node of a Ray cluster (`ray`, `sh`).
    entrypoint: tuple[str, ...] | None = None

    @property
    def head(self) -> bool:
        """Serves the API: every single-node container, and rank 0 of a multi-node model."""
        return not self.rank

    def labels(self) -> dict[str, str]:
        labels = {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_STACK: self.stack,
            LABEL_MODEL: self.model,
            LABEL_SPEC_HASH: self.spec_hash,
        }
        if self.rank is not None:
            labels[LABEL_RANK] = str(self.rank)
        return labels

    def canonical(self) -> str:
        """Canonical JSON of the spec without its hash (secret references, never values).

        The multi-node fields are left out while unset, so a single-node container's hash
        stays what it was before they existed (no spurious replace on upgrade)."""
        data = asdict(self)
        data.pop("spec_hash")
        for name in ("rank", "network_mode", "entrypoint"):
            if data[name] is None:
                data.pop(name)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


def container_name(stack: str, model: str, rank: int | None = None) -> str:
    base = f"spark-stack-{stack}-{model}"
    return base if rank is None else f"{base}-{rank}"


def node_env(cluster: schema.ClusterSection, host_key: str, head_key: str) -> dict[str, str]:
    """The environment that pins one node's vLLM, NCCL, GLOO, UCX and MPI to the link (as
    NVIDIA's playbook and vLLM's run_cluster.sh set it): its own link address and interface,
    and the head's address."""
    end, head = cluster.link[host_key], cluster.link[head_key]
    env = {
        "VLLM_HOST_IP": end.address,
        "NCCL_SOCKET_IFNAME": end.interface,
        "GLOO_SOCKET_IFNAME": end.interface,
        "TP_SOCKET_IFNAME": end.interface,
        "UCX_NET_DEVICES": end.interface,
        "OMPI_MCA_btl_tcp_if_include": end.interface,
        "MASTER_ADDR": head.address,
    }
    if cluster.nccl_ib_hca:
        env["NCCL_IB_HCA"] = cluster.nccl_ib_hca
    return env


def render_nodes(stack: schema.Stack, model: schema.ContainerModel) -> list[ContainerSpec]:
    """One container spec per host of a multi-node model, in rank order (0: the head)."""
    assert model.hosts and stack.cluster is not None  # validation: checked before
    head_key = model.hosts[0]
    master = stack.cluster.link[head_key].address
    specs = []
    for rank, host_key in enumerate(model.hosts):
        derived = node_env(stack.cluster, host_key, head_key)
        if stack.cluster.distributed == "ray":
            specs.append(_ray_node(stack, model, rank, master, stack.cluster.link[host_key].address,
                                   {**derived, **ray_argv.RAY_ENV, **model.env}))
            continue
        specs.append(render_container(
            stack, model, rank=rank,
            extra_command=node_argv(rank, len(model.hosts), master, stack.cluster.master_port),
            extra_env={**derived, **model.env}))
    return specs


def _ray_node(stack: schema.Stack, model: schema.ContainerModel, rank: int, head_address: str,
              link_address: str, env: dict[str, str]) -> ContainerSpec:
    """A node of a Ray cluster (:mod:`spark_stack.stack.ray_argv`): the head starts Ray, then
    serves; a worker only joins."""
    if rank == 0:
        script = ray_argv.head_script(link_address, [*vllm_argv(model), *ray_argv.SERVE_FLAGS])
        return render_container(stack, model, rank=rank, extra_env=env,
                                entrypoint=(ray_argv.SHELL,), command=("-c", script))
    return render_container(stack, model, rank=rank, extra_env=env, entrypoint=(ray_argv.RAY,),
                            command=tuple(ray_argv.worker_argv(head_address, link_address)[1:]))


def render_container(stack: schema.Stack, model: schema.ContainerModel, *,
                     rank: int | None = None, extra_command: list[str] | None = None,
                     extra_env: dict[str, str] | None = None,
                     entrypoint: tuple[str, ...] | None = None,
                     command: tuple[str, ...] | None = None) -> ContainerSpec:
    mounts = [
        MountSpec(source, CACHE_TARGETS[kind])
        for kind, source in model.cache.model_dump().items()
        if source is not None
    ]
    mounts += [MountSpec(m.source, m.target, m.read_only) for m in model.mounts]
    env = [EnvVar(name, value)
           for name, value in sorted((model.env if extra_env is None else extra_env).items())]
    gpus: Literal["all", "none"] | int | tuple[int, ...]
    gpus = tuple(model.gpus) if isinstance(model.gpus, list) else model.gpus
    spec = ContainerSpec(
        stack=stack.name,
        model=model.name,
        name=container_name(stack.name, model.name, rank),
        image=model.image or "",
        command=command if command is not None else (*vllm_argv(model), *(extra_command or ())),
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
        container_port=model.port if rank is not None else CONTAINER_PORT,
        rank=rank,
        network_mode="host" if rank is not None else None,
        entrypoint=entrypoint,
    )
    digest = hashlib.sha256(spec.canonical().encode()).hexdigest()[:16]
    return ContainerSpec(**{**spec.__dict__, "spec_hash": digest})


def docker_run_command(spec: ContainerSpec) -> str:
    """The equivalent ``docker run`` line, secrets masked (for people, not for execution)."""
    args = ["docker", "run", "-d", "--name", spec.name]
    if spec.entrypoint:
        args += ["--entrypoint", spec.entrypoint[0]]
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
    if spec.network_mode == "host":
        args += ["--network", "host"]  # vLLM binds the host's port itself (see the argv)
    else:
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
    args += [*(spec.entrypoint or ())[1:], *spec.command]
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
