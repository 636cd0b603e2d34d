"""The offline plan: what `up` would run, derived from the stack alone (pure, no I/O).

:func:`plan_document` returns plain data — per model the container spec as a ``docker run``
line and the vLLM argv, the proxy's routing table, the Claude Code launcher and its
environment, and the lint warnings — which the CLI prints as text or JSON. Secrets appear
only as ``***``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import Problem
from .launcher import default_launcher_path, launcher_environment
from .spec import API_KEY_ENV, docker_run_command, render_container
from .stack import schema
from .stack.loader import LoadedStack
from .stack.secrets import MASK, mask
from .vllm.flags import version_for_image


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


@dataclass(frozen=True)
class RouteRow:
    """A model name Claude Code may send, and where the proxy sends it."""

    pattern: str
    model: str
    served_name: str
    upstream: str
    source: str  # "route", "model name" or "served name"


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
        data["warnings"] = [problem_json(p) for p in self.warnings]
        return data


def problem_json(problem: Problem) -> dict[str, Any]:
    return {
        "location": problem.location(),
        "line": problem.line,
        "column": problem.column,
        "key_path": problem.key_path,
        "message": problem.message,
        "fix": problem.fix,
    }


def plan_document(loaded: LoadedStack) -> PlanDocument:
    stack = loaded.stack
    models = [_model_plan(stack, model) for model in stack.models]
    token = stack.proxy.token
    launcher = LauncherPlan(
        str(default_launcher_path(stack)),
        [(var.name, var.shown()) for var in launcher_environment(stack)],
    )
    return PlanDocument(
        stack=stack.name,
        file=loaded.filename,
        models=models,
        proxy_listen=stack.proxy.listen,
        proxy_token=_secret_mode(token) if token else "none",
        routes=routing_table(stack, models),
        launcher=launcher,
        warnings=list(loaded.warnings),
    )


def routing_table(stack: schema.Stack, models: list[ModelPlan]) -> list[RouteRow]:
    """Explicit routes in file order, then each model's own name and served name."""
    by_name = {plan.name: plan for plan in models}
    rows = [
        _row(pattern, by_name[target], "route")
        for pattern, target in stack.proxy.routes.items()
        if target in by_name
    ]
    for plan in models:
        rows.append(_row(plan.name, plan, "model name"))
        if plan.served_name != plan.name:
            rows.append(_row(plan.served_name, plan, "served name"))
    return rows


def _row(pattern: str, plan: ModelPlan, source: str) -> RouteRow:
    return RouteRow(pattern, plan.name, plan.served_name, plan.upstream, source)


def _model_plan(stack: schema.Stack, model: schema.ModelConfig) -> ModelPlan:
    if isinstance(model, schema.RemoteModel):
        return ModelPlan(
            name=model.name,
            kind=model.kind,
            served_name=model.served_name or model.name,
            upstream=model.url,
            api_key=_secret_mode(model.api_key) if model.api_key else "none",
        )
    if isinstance(model, schema.SimulatorModel):
        return ModelPlan(
            name=model.name,
            kind=model.kind,
            served_name=model.served_name or model.model,
            upstream=f"http://127.0.0.1:{model.port}/v1",
            host="this machine (built-in vLLM simulator)",
        )
    host = stack.host_for(model)
    spec = render_container(stack, model)
    address = host.address if host else "?"
    return ModelPlan(
        name=model.name,
        kind=model.kind,
        served_name=spec.served_name,
        upstream=f"http://{address}:{spec.host_port}/v1",
        host=_host_text(host),
        image=spec.image,
        vllm_flags_version=version_for_image(spec.image).version,
        container=spec.name,
        docker_run=docker_run_command(spec),
        vllm_argv=list(spec.command),
        env={var.name: var.shown() for var in spec.env},
        api_key=_container_key(spec.api_key),
        spec_hash=spec.spec_hash,
    )


def _host_text(host: schema.HostConfig | None) -> str | None:
    if host is None:
        return None
    text = f"{host.user}@{host.address}" if host.user else host.address
    return f"{text}:{host.port}" if host.port else text


def _container_key(api_key: str) -> str:
    if api_key == "none":
        return "none (no key: anyone who reaches the port can use it)"
    return f"{_secret_mode(api_key)}, passed as {API_KEY_ENV} (never in argv)"


def _secret_mode(value: str) -> str:
    if value == "auto":
        return "auto (generated, kept 0600 under spark-stack's state directory)"
    if value == "none":
        return "none"
    # Only ``${NAME}`` references get past the schema: show the name, never the value.
    return f"{MASK} (from {value})" if mask(value) == MASK else MASK
