"""The stack as a LiteLLM proxy config, for users who keep LiteLLM (pure, no I/O).

The source document's ``litellm_config.yaml``, made correct for current LiteLLM:

- ``hosted_vllm/<served name>``: with a plain ``openai/`` prefix LiteLLM sends Anthropic
  ``/v1/messages`` traffic to the upstream's ``/v1/responses`` (vLLM's is incomplete) and
  answers count_tokens with 404; ``hosted_vllm/`` uses chat completions and a local estimate.
- ``api_base`` per model: one vLLM server serves one model, each on its own port.
- Keys only as ``os.environ/NAME`` references (LiteLLM resolves them at start), never values.
- A master key, by reference: LiteLLM's proxy refuses to start without one.
- One entry per rule of the deployment's routing table, in the proxy's order: routes (LiteLLM
  matches ``*`` wildcards in ``model_name``), each model's own names, the catch-all ``*``.
- A model with replicas: one entry per replica under the same ``model_name``, which LiteLLM
  load-balances between (without keeping a session on one: the header says so).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from .deployment import Deployment, ModelDeployment
from .errors import UsageError
from .routing import Rule, is_glob
from .stack import schema
from .stack.secrets import is_reference, referenced_names

MASTER_KEY_ENV = "LITELLM_MASTER_KEY"
PREFIX = "hosted_vllm/"


@dataclass(frozen=True)
class LiteLLMModel:
    """Where one stack model is reached from the machine that runs LiteLLM."""

    name: str
    served_name: str
    api_base: str
    api_key: str  # an ``os.environ/NAME`` reference or the literal "none"
    note: str | None = None


def api_key_env_name(model_name: str) -> str:
    """The variable a generated (``auto``) key is expected in: ``SPARK_STACK_KEY_<MODEL>``."""
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in model_name.upper())
    return f"SPARK_STACK_KEY_{cleaned}"


def _key_reference(model: ModelDeployment) -> str:
    if model.key.mode == "none":
        return "none"
    if model.key.mode == "auto":
        return f"os.environ/{api_key_env_name(model.name)}"
    return f"os.environ/{model.key.env_name}"


def litellm_models(deployment: Deployment) -> dict[str, LiteLLMModel]:
    """The LiteLLM view of each model; models behind SSH tunnels get distinct local ports."""
    used: set[int] = set()
    out: dict[str, LiteLLMModel] = {}
    for model in deployment.models:
        key = _key_reference(model)
        if not model.via_tunnel:
            out[model.name] = LiteLLMModel(model.name, model.served_name, model.endpoint, key)
            continue
        assert model.host is not None and model.port is not None
        local = model.port
        while local in used:
            local += 1
        used.add(local)
        note = f"tunnel: {tunnel_command(model.host, local, model.port)}"
        out[model.name] = LiteLLMModel(model.name, model.served_name,
                                       f"http://127.0.0.1:{local}/v1", key, note)
    return out


def tunnel_command(host: schema.HostConfig, local_port: int, remote_port: int) -> str:
    """The ``ssh -L`` line that reaches a loopback-bound model (user and port kept)."""
    target = f"{host.user}@{host.address}" if host.user else host.address
    port = f" -p {host.port}" if host.port else ""
    return f"ssh -N{port} -L {local_port}:127.0.0.1:{remote_port} {shlex.quote(target)}"


def _check_pattern(pattern: str) -> None:
    if "?" in pattern or "[" in pattern:
        raise UsageError(
            f"route '{pattern}' uses '?' or '[...]', which LiteLLM's model_name cannot match",
            fix="use only '*' wildcards in proxy.routes when exporting to LiteLLM",
        )


def litellm_specificity(pattern: str) -> tuple[int, int]:
    """How LiteLLM ranks wildcard ``model_name``s: longer, then more complex, first
    (``PatternUtils.calculate_pattern_specificity``)."""
    return len(pattern), sum(pattern.count(ch) for ch in "*+?\\^$|()")


def _check_glob_order(rules: list[Rule]) -> None:
    """LiteLLM tries wildcards most specific first, spark-stack in file order: refuse a file
    whose order LiteLLM would change between two patterns that route to different models."""
    globs = [r for r in rules if is_glob(r.pattern)]
    for index, earlier in enumerate(globs):
        for later in globs[index + 1:]:
            if later.model != earlier.model and \
                    litellm_specificity(later.pattern) > litellm_specificity(earlier.pattern):
                raise UsageError(
                    f"LiteLLM would try route '{later.pattern}' before '{earlier.pattern}' "
                    "(it orders wildcards by length), spark-stack tries them in file order",
                    fix=f"move '{later.pattern}' above '{earlier.pattern}' in proxy.routes",
                )


def litellm_config(deployment: Deployment) -> dict[str, Any]:
    """The ``litellm_config.yaml`` content as plain data: one entry per routing rule, in the
    order the spark-stack proxy tries them (spark_stack.routing)."""
    by_name = litellm_models(deployment)
    _check_glob_order(list(deployment.routes))
    entries = []
    for rule in deployment.routes:
        _check_pattern(rule.pattern)
        model = by_name[rule.model]
        copies = deployment.model(rule.model).replicas
        for api_base in [r.endpoint for r in copies] if len(copies) > 1 else [model.api_base]:
            entries.append(
                {
                    "model_name": rule.pattern,
                    "litellm_params": {
                        "model": PREFIX + model.served_name,
                        "api_base": api_base,
                        "api_key": model.api_key,
                    },
                }
            )
    token = deployment.proxy.token
    master = referenced_names(token)[0] if token and is_reference(token) else MASTER_KEY_ENV
    return {
        "model_list": entries,
        "litellm_settings": {"drop_params": True},
        "general_settings": {"master_key": f"os.environ/{master}"},
    }


def _header(stack: schema.Stack, deployment: Deployment, config: dict[str, Any],
            config_path: str) -> list[str]:
    master = str(config["general_settings"]["master_key"]).removeprefix("os.environ/")
    keys = sorted(
        {
            str(entry["litellm_params"]["api_key"]).removeprefix("os.environ/")
            for entry in config["model_list"]
            if entry["litellm_params"]["api_key"] != "none"
        }
    )
    lines = [
        f"# LiteLLM proxy config for the spark-stack stack '{stack.name}'.",
        "# Generated by `spark-stack export litellm`; spark-stack's own proxy needs none of this.",
        f"# Run: litellm --config {config_path} --port {stack.proxy.port}",
        f"# Export first: {master} (must start with 'sk-'; Claude Code sends it as its token)",
    ]
    if keys:
        lines.append(f"#   and the vLLM API keys: {', '.join(keys)}")
    auto = [m.name for m in stack.container_models() if m.api_key == "auto"]
    if auto:
        lines.append(
            "#   (SPARK_STACK_KEY_* hold the keys `spark-stack up` generated for the models: "
            + ", ".join(auto)
            + ")"
        )
    notes = [
        f"# {m.name}: {m.note}" for m in litellm_models(deployment).values() if m.note is not None
    ]
    lines += notes
    lines += [f"# {m.name}: {len(m.replicas)} replicas, one entry each; LiteLLM load-balances "
              "between them but does not keep a session on one (its prefix cache misses)"
              for m in deployment.models if len(m.replicas) > 1]
    lines.append(f"# Claude Code: ANTHROPIC_BASE_URL={deployment.proxy.url}")
    return lines


def render_litellm_config(
    stack: schema.Stack, deployment: Deployment, config_path: str = "litellm_config.yaml"
) -> str:
    """The YAML text of the config, with a header saying how to run it from ``config_path``."""
    config = litellm_config(deployment)
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=100)
    return "\n".join(_header(stack, deployment, config, config_path)) + "\n" + body
