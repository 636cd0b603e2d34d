"""The offline plan: what `up` would run, rendered from the resolved deployment (pure).

:func:`plan_document` returns plain data — per model the container spec as a ``docker run``
line and the vLLM argv, the proxy's routing table, the Claude Code launcher and its
environment, and the lint warnings — which the CLI prints as text or JSON. Secrets appear
only as ``***``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .deployment import Deployment, KeySource, ModelDeployment
from .errors import Problem
from .spec import API_KEY_ENV, docker_run_command
from .stack import schema
from .stack.loaded import LoadedStack
from .stack.secrets import MASK, mask
from .vllm.flags import version_for_image


@dataclass(frozen=True)
class NodePlan:
    """One node of a model across hosts: its host, container and environment."""

    rank: int
    host: str
    role: str  # "head (serves the API)" or "worker (headless)"
    link: str  # "enp1s0f1np1 192.168.100.11"
    container: str
    docker_run: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaPlan:
    """One full copy of a replicated model: its host, the endpoint the proxy dials, and the
    same container as on every other replica."""

    host: str
    upstream: str
    docker_run: str
    weight: float = 1.0  # its share of the sessions, relative to the others'


@dataclass(frozen=True)
class ModelPlan:
    """One model as `up` would run it (container) or reach it (remote, simulator)."""

    name: str
    kind: str
    served_name: str
    upstream: str
    host: str | None = None
    image: str | None = None
    vllm_flags_version: str | None = None
    container: str | None = None
    docker_run: str | None = None
    vllm_argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    api_key: str = "none"
    spec_hash: str | None = None
    nodes: list[NodePlan] = field(default_factory=list)  # a model across hosts
    replicas: list[ReplicaPlan] = field(default_factory=list)  # full copies, one per host


@dataclass(frozen=True)
class RouteRow:
    """A model name Claude Code may send, and where the proxy sends it."""

    pattern: str
    model: str
    served_name: str
    upstream: str
    source: str  # the rule's origin: "route", "model name", "served name" or "catch-all"


@dataclass(frozen=True)
class LauncherPlan:
    path: str
    env: list[tuple[str, str]]


@dataclass(frozen=True)
class PlanDocument:
    stack: str
    file: str
    models: list[ModelPlan]
    proxy_listen: str
    proxy_token: str
    routes: list[RouteRow]
    launcher: LauncherPlan
    warnings: list[Problem]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["launcher"]["env"] = dict(self.launcher.env)
        data["warnings"] = [p.as_json() for p in self.warnings]
        return data




def plan_document(loaded: LoadedStack, deployment: Deployment) -> PlanDocument:
    """The plan of ``deployment`` (resolved from ``loaded``), secrets masked."""
    stack = loaded.stack
    models = [_model_plan(model) for model in deployment.models]
    token = deployment.proxy.token
    return PlanDocument(
        stack=stack.name,
        file=loaded.filename,
        models=models,
        proxy_listen=stack.proxy.listen,
        proxy_token=_secret_mode(token) if token else "none",
        routes=routing_table(deployment),
        launcher=LauncherPlan(str(deployment.launcher_path),
                              [(var.name, var.shown()) for var in deployment.launcher_env]),
        warnings=list(loaded.warnings),
    )


def routing_table(deployment: Deployment) -> list[RouteRow]:
    """Every rule the proxy applies, in the order it tries them (spark_stack.routing)."""
    by_name = {m.name: m for m in deployment.models}
    return [
        RouteRow(rule.pattern, rule.model, by_name[rule.model].served_name,
                 by_name[rule.model].endpoint, rule.origin)
        for rule in deployment.routes
    ]


def _model_plan(model: ModelDeployment) -> ModelPlan:
    if model.kind == "remote":
        return ModelPlan(name=model.name, kind=model.kind, served_name=model.served_name,
                         upstream=model.endpoint, api_key=_key_text(model.key))
    if model.kind == "simulator":
        return ModelPlan(name=model.name, kind=model.kind, served_name=model.served_name,
                         upstream=model.endpoint,
                         host="this machine (built-in vLLM simulator)")
    spec = model.container
    assert spec is not None
    upstream = model.endpoint
    if model.via_tunnel:
        upstream = f"{upstream} on the host, through an SSH tunnel (bind: loopback)"
    return ModelPlan(
        name=model.name,
        kind=model.kind,
        served_name=model.served_name,
        upstream=upstream,
        host=_host_text(model.host),
        image=spec.image,
        vllm_flags_version=version_for_image(spec.image).version,
        container=spec.name,
        docker_run=docker_run_command(spec),
        vllm_argv=list(spec.command),
        env={var.name: var.shown() for var in spec.env},
        api_key=_container_key(model.key),
        spec_hash=spec.spec_hash,
        nodes=[
            NodePlan(
                rank=node.rank,
                host=f"{node.host_key} ({_host_text(node.host)})",
                role="head (serves the API)" if node.head else "worker (headless)",
                link=f"{node.interface} {node.link_address}",
                container=node.container.name,
                docker_run=docker_run_command(node.container),
                env={var.name: var.shown() for var in node.container.env},
            )
            for node in model.nodes
        ],
        replicas=[
            ReplicaPlan(f"{replica.host_key} ({_host_text(replica.host)})", replica.endpoint,
                        docker_run_command(spec), replica.weight)
            for replica in model.replicas
        ] if len(model.replicas) > 1 else [],
    )


def _host_text(host: schema.HostConfig | None) -> str | None:
    if host is None:
        return None
    text = f"{host.user}@{host.address}" if host.user else host.address
    return f"{text}:{host.port}" if host.port else text


def _key_text(key: KeySource) -> str:
    if key.mode == "none":
        return "none"
    return _secret_mode(key.reference or key.mode)


def _container_key(key: KeySource) -> str:
    if key.mode == "none":
        return "none (no key: anyone who reaches the port can use it)"
    return f"{_key_text(key)}, passed as {API_KEY_ENV} (never in argv)"


def _secret_mode(value: str) -> str:
    if value == "auto":
        return "auto (generated, kept 0600 under spark-stack's state directory)"
    if value == "none":
        return "none"
    # Only ``${NAME}`` references get past the schema: show the name, never the value.
    return f"{MASK} (from {value})" if mask(value) == MASK else MASK
