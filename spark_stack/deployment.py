"""Stack file → the one resolved :class:`Deployment` every command reads (pure, no I/O).

Per model: its kind, host, served name, the endpoint the proxy dials, where its API key comes
from, and what runs (the container spec, or the simulator's argv). For the stack: the routing
table (every rule with its origin, :mod:`spark_stack.routing`), the proxy's settings and the
Claude Code launcher's environment. ``plan`` prints it; ``up``, ``status``, ``smoke``,
``bench``, ``export litellm``, ``claude`` and the proxy's config are built from it, so no two of
them can disagree about where a name goes or how a model is reached.

The one input that is not in the stack file is how an address is dialled (an ``~/.ssh/config``
alias stands for its ``HostName``): the caller passes that mapping in (:data:`DialName`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Literal

from .claude_context import (
    ALIAS_IDS,
    ClaudeContext,
    LauncherVar,
    PickerRow,
    claude_context,
    claude_variables,
    default_launcher_path,
    picker_description,
)
from .proxy.config import ProxyConfig, Route, ThinkingFamily, Upstream, listen_url, url_host
from .routing import CATCH_ALL, RouteTable, Rule, is_glob
from .spec import ContainerSpec, render_container, render_nodes
from .stack import schema
from .stack.argv import max_num_seqs_of, served_name, simulator_argv
from .stack.secrets import referenced_names

ModelKind = Literal["container", "remote", "simulator"]
# An address as written in the stack file → the host name to dial (ssh-config aliases).
DialName = Callable[[str], str]
NO_FALLBACK = "none"
ALIASES = ("opus", "sonnet", "haiku")


def as_written(address: str) -> str:
    return address


@dataclass(frozen=True)
class KeySource:
    """Where a model's API key comes from: nowhere, generated (``auto``), or ``${VAR}``."""

    mode: Literal["none", "auto", "env"]
    reference: str | None = None  # the ``${VAR}`` text when mode is "env"

    @property
    def env_name(self) -> str | None:
        return referenced_names(self.reference)[0] if self.reference else None

    @classmethod
    def of(cls, setting: str | None) -> KeySource:
        if setting in (None, "none"):
            return cls("none")
        if setting == "auto":
            return cls("auto")
        return cls("env", setting)


@dataclass(frozen=True)
class Node:
    """One host's part of a multi-node model: its rank, container and end of the link."""

    rank: int
    host_key: str
    host: schema.HostConfig
    container: ContainerSpec
    link_address: str
    interface: str

    @property
    def head(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Replica:
    """One full copy of a model on its own host: a single-host container model there."""

    host_key: str
    host: schema.HostConfig
    endpoint: str  # OpenAI base URL ending in /v1, as this machine dials it
    weight: float = 1.0  # its share of the sessions, relative to the others'


def replica_upstream(model: str, host_key: str) -> str:
    """The proxy's upstream name of ``model``'s replica on ``host_key``."""
    return f"{model}@{host_key}"


@dataclass(frozen=True)
class ModelDeployment:
    """One model as the stack deploys (container, simulator) or reaches (remote) it."""

    name: str
    kind: ModelKind
    served_name: str
    endpoint: str  # OpenAI base URL ending in /v1, as this machine dials it
    key: KeySource
    thinking: ThinkingFamily
    tools: bool
    max_model_len: int | None = None
    host_key: str | None = None
    host: schema.HostConfig | None = None
    container: ContainerSpec | None = None
    simulator_argv: tuple[str, ...] | None = None
    via_tunnel: bool = False  # bound to the host's loopback: `up` dials it through SSH
    readiness_timeout: float = 900.0
    gpu_memory_utilization: float | None = None
    # A model across several hosts: every node (rank order). The model's own host_key, host
    # and container are its head's (rank 0), which serves the API at ``endpoint``.
    nodes: tuple[Node, ...] = ()
    rank: int | None = None  # set on a per-node view (:meth:`on_node`)
    # How the nodes form one engine: vLLM's own multi-node mode, or a Ray cluster.
    distributed: Literal["native", "ray"] | None = None
    max_num_seqs: int | None = None  # requests run at once; None: unknown (vLLM's default)
    # Full copies of the model, one per host (the same container on each): the proxy sends
    # each session to one. The model's own host_key, host and endpoint are the first's.
    replicas: tuple[Replica, ...] = ()

    @property
    def multi_node(self) -> bool:
        return bool(self.nodes)

    def on_replica(self, replica: Replica) -> ModelDeployment:
        """This model as one replica runs it: that host, and that host's endpoint."""
        return replace(self, host_key=replica.host_key, host=replica.host,
                       endpoint=replica.endpoint)

    def views(self) -> list[ModelDeployment]:
        """What runs on each host: one view per node or replica, else the model itself."""
        if self.nodes:
            return [self.on_node(n) for n in self.nodes]
        return [self.on_replica(r) for r in self.replicas] or [self]

    def on_node(self, node: Node) -> ModelDeployment:
        """This model as one node runs it: that node's host and container (the endpoint
        stays the head's)."""
        return replace(self, host_key=node.host_key, host=node.host, container=node.container,
                       rank=node.rank)

    @property
    def reasoning(self) -> bool:
        return self.thinking == "qwen3"

    @property
    def port(self) -> int | None:
        return self.container.host_port if self.container else None


@dataclass(frozen=True)
class ProxySettings:
    host: str
    port: int
    token: str | None  # the setting: None, "auto" or a ${VAR} reference — never a value
    log_prompts: bool
    limits: Mapping[str, int | float] = field(default_factory=dict)  # the ones the file sets
    repair_tool_markup: bool = False

    @property
    def url(self) -> str:
        """Where clients reach the proxy (a wildcard bind is reached on loopback)."""
        return listen_url(self.host, self.port)


@dataclass(frozen=True)
class Deployment:
    """The whole desired state of a stack."""

    stack: str
    hosts: Mapping[str, schema.HostConfig]
    models: tuple[ModelDeployment, ...]
    routes: tuple[Rule, ...]
    proxy: ProxySettings
    launcher_path: Path
    launcher_env: tuple[LauncherVar, ...] = field(default=())
    claude_models: tuple[str, ...] = ()  # the models Claude Code's requests can reach
    claude_context: ClaudeContext | None = None  # None: none of them declares its window
    # Claude Code's /model rows: the models its requests can reach (claude_models).
    model_picker: tuple[PickerRow, ...] = ()

    @cached_property
    def route_table(self) -> RouteTable:
        return RouteTable(self.routes)

    def route(self, name: str) -> Rule | None:
        """The rule the proxy applies to a request for ``name`` (None: 404)."""
        return self.route_table.match(name)

    def model(self, name: str) -> ModelDeployment:
        return next(m for m in self.models if m.name == name)

    def of_kind(self, kind: ModelKind) -> list[ModelDeployment]:
        return [m for m in self.models if m.kind == kind]

    def containers_by_host(self) -> dict[str, list[ModelDeployment]]:
        """Per host, the containers it runs: a multi-node model appears on each of its hosts
        as that node's view (:meth:`ModelDeployment.on_node`), a replicated one as that
        replica's (:meth:`ModelDeployment.on_replica`)."""
        grouped: dict[str, list[ModelDeployment]] = {}
        for model in self.of_kind("container"):
            for view in model.views():
                assert view.host_key is not None  # validation: every container has a host
                grouped.setdefault(view.host_key, []).append(view)
        return grouped

    def proxy_config(self, keys: Mapping[str, str | None], token: str | None,
                     endpoints: Mapping[str, str] | None = None) -> ProxyConfig:
        """The proxy's config: ``keys`` and ``token`` resolved by the caller; ``endpoints``
        replaces a model's endpoint (a tunnel's local end)."""
        endpoints = endpoints or {}
        upstreams = {}
        replicas: dict[str, list[str]] = {}
        weights: dict[str, float] = {}
        for m in self.models:
            upstream = Upstream(
                name=m.name,
                base_url=endpoints.get(m.name, m.endpoint),
                served_name=m.served_name,
                api_key=keys.get(m.name),
                max_model_len=m.max_model_len,
                thinking=m.thinking,
                max_num_seqs=m.max_num_seqs,
            )
            upstreams[m.name] = upstream
            if len(m.replicas) > 1:  # one upstream per copy; each session goes to one
                names = [replica_upstream(m.name, r.host_key) for r in m.replicas]
                for name, replica in zip(names, m.replicas, strict=True):
                    upstreams[name] = replace(upstream, name=name, base_url=replica.endpoint)
                    if replica.weight != 1.0:
                        weights[name] = replica.weight
                replicas[m.name] = names
        return ProxyConfig(
            host=self.proxy.host,
            port=self.proxy.port,
            token=token,
            upstreams=upstreams,
            routes=[Route(r.pattern, r.model, r.origin) for r in self.routes],
            replicas=replicas,
            weights=weights,
            log_prompts=self.proxy.log_prompts,
            repair_tool_markup=self.proxy.repair_tool_markup,
            **self.proxy.limits,  # type: ignore[arg-type]
        )


def resolve(stack: schema.Stack, dial: DialName = as_written) -> Deployment:
    """The deployment a validated stack describes (see the module doc)."""
    hosts = stack.all_hosts()
    models = tuple(_model(stack, model, hosts, dial) for model in stack.models)
    rules = routing_rules(stack, models)
    proxy = ProxySettings(stack.proxy.host, stack.proxy.port, stack.proxy.token,
                          stack.proxy.log_prompts, stack.proxy.limits.set_values(),
                          stack.proxy.repair_tool_markup)
    table = RouteTable(rules)
    aliases = alias_targets(stack, table)
    reached = claude_reach(stack, aliases, table)
    context = context_of([m for m in models if m.name in reached])
    return Deployment(
        stack=stack.name,
        hosts=hosts,
        models=models,
        routes=rules,
        proxy=proxy,
        launcher_path=default_launcher_path(stack),
        launcher_env=tuple(claude_variables(stack, proxy.url, context, aliases)),
        claude_models=tuple(m.name for m in models if m.name in reached),
        claude_context=context,
        model_picker=tuple(_picker_row(m) for m in models if m.name in reached),
    )


def alias_targets(stack: schema.Stack, table: RouteTable) -> dict[str, str]:
    """What each of Claude Code's aliases is set to: ``claude.models``, else the model the
    proxy routes Claude Code's own id for that alias to — so sub-agents and the background
    (haiku) model ask for a model the stack serves by its name, never for a Haiku. An alias
    nothing answers (``fallback: none``, no matching route) stays unset."""
    targets: dict[str, str] = {str(k): v for k, v in stack.claude.models.items()}
    for alias in ALIASES:
        if alias not in targets and (rule := table.match(ALIAS_IDS[alias])) is not None:
            targets[alias] = rule.model
    return targets


def claude_reach(stack: schema.Stack, aliases: Mapping[str, str], table: RouteTable
                 ) -> set[str]:
    """The models Claude Code's requests can reach, through the routing table.

    The names it sends are the alias targets (:func:`alias_targets`) and
    ``claude.default_model``; for an alias still unset it sends its own model id
    (``claude-…``), which only a glob rule can match, so every model a glob rule points to
    counts then.
    """
    names = [*aliases.values()]
    if stack.claude.default_model:
        names.append(stack.claude.default_model)
    reached = {rule.model for name in names if (rule := table.match(name)) is not None}
    if set(aliases) != set(ALIASES):
        reached |= {rule.model for rule in table.rules if is_glob(rule.pattern)}
    return reached


def _picker_row(model: ModelDeployment) -> PickerRow:
    if model.kind == "container":
        where = f"vLLM on {model.host.address if model.host else 'the host'}"
    elif model.kind == "simulator":
        where = "the simulator on this machine"
    else:
        where = f"at {model.endpoint}"
    return PickerRow(model.name, picker_description(model.served_name, where,
                                                    model.max_model_len))


def context_of(models: list[ModelDeployment]) -> ClaudeContext | None:
    """The context contract for the smallest declared window among ``models``.

    A model without ``max_model_len`` serves its checkpoint's own (at least as large as any
    window a stack file sets in practice), so only declared windows bind.
    """
    windows = [m.max_model_len for m in models if m.max_model_len is not None]
    return claude_context(min(windows)) if windows else None


def routing_rules(stack: schema.Stack, models: tuple[ModelDeployment, ...]) -> tuple[Rule, ...]:
    """Routes in file order, every model's name, the served names, then the catch-all."""
    rules = [Rule(pattern, target, "route") for pattern, target in stack.proxy.routes.items()]
    rules += [Rule(model.name, model.name, "model name") for model in models]
    # A served name another model already answers to stays with the first (a lint says so).
    claimed = {model.name for model in models}
    for model in models:
        if model.served_name not in claimed:
            claimed.add(model.served_name)
            rules.append(Rule(model.served_name, model.name, "served name"))
    fallback = fallback_model(stack)
    if fallback is not None and CATCH_ALL not in stack.proxy.routes:
        rules.append(Rule(CATCH_ALL, fallback, "catch-all"))
    return tuple(rules)


def fallback_model(stack: schema.Stack) -> str | None:
    """The catch-all's model: ``proxy.fallback``, else the first model; None for ``none``."""
    setting = stack.proxy.fallback
    if setting == NO_FALLBACK:
        return None
    return setting or stack.models[0].name


def host_key_of(stack: schema.Stack, model: schema.ContainerModel) -> str | None:
    host = stack.host_for(model)
    return next((k for k, h in stack.all_hosts().items() if h is host), None)


def _model(stack: schema.Stack, model: schema.ModelConfig,
           hosts: Mapping[str, schema.HostConfig], dial: DialName) -> ModelDeployment:
    name = served_name(model)
    if isinstance(model, schema.RemoteModel):
        return ModelDeployment(
            name=model.name, kind="remote", served_name=name, endpoint=model.url.rstrip("/"),
            key=KeySource.of(model.api_key), thinking=model.thinking, tools=model.tools,
            max_model_len=model.max_model_len, max_num_seqs=model.max_num_seqs,
        )
    thinking: ThinkingFamily = "qwen3" if model.reasoning_parser else "none"
    if isinstance(model, schema.SimulatorModel):
        return ModelDeployment(
            name=model.name, kind="simulator", served_name=name,
            endpoint=f"http://127.0.0.1:{model.port}/v1", key=KeySource("none"),
            thinking=thinking, tools=model.tool_call_parser is not None,
            max_model_len=model.max_model_len, simulator_argv=tuple(simulator_argv(model)),
            readiness_timeout=max(30.0, model.startup_seconds * 4 + 10),
            max_num_seqs=model.max_num_seqs,
        )
    key = host_key_of(stack, model)
    host = hosts.get(key) if key else None
    nodes = _nodes(stack, model, hosts) if model.multi_node else ()
    spec = nodes[0].container if nodes else render_container(stack, model)
    loopback = model.bind == "loopback"

    def endpoint(host: schema.HostConfig | None) -> str:
        address = "127.0.0.1" if loopback or host is None else url_host(dial(host.address))
        return f"http://{address}:{spec.host_port}/v1"

    replicas = tuple(Replica(r.host, hosts[r.host], endpoint(hosts[r.host]), r.weight)
                     for r in model.replicas or ())
    return ModelDeployment(
        name=model.name, kind="container", served_name=name,
        endpoint=endpoint(host), key=KeySource.of(model.api_key),
        thinking=thinking, tools=model.tool_call_parser is not None,
        max_model_len=model.max_model_len, host_key=key, host=host, container=spec,
        via_tunnel=loopback, readiness_timeout=model.readiness_timeout,
        gpu_memory_utilization=model.gpu_memory_utilization, nodes=nodes,
        distributed=stack.cluster.distributed if nodes and stack.cluster else None,
        max_num_seqs=max_num_seqs_of(spec.command), replicas=replicas,
    )


def _nodes(stack: schema.Stack, model: schema.ContainerModel,
           hosts: Mapping[str, schema.HostConfig]) -> tuple[Node, ...]:
    assert model.hosts and stack.cluster is not None  # validation: checked before
    return tuple(
        Node(rank, key, hosts[key], spec, stack.cluster.link[key].address,
             stack.cluster.link[key].interface)
        for rank, (key, spec) in enumerate(zip(model.hosts, render_nodes(stack, model),
                                               strict=True)))
