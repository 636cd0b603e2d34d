"""The stack as a LiteLLM proxy config, for users who keep LiteLLM (pure, no I/O).

The source document's ``litellm_config.yaml``, made correct for current LiteLLM:

- ``hosted_vllm/<served name>``: with a plain ``openai/`` prefix LiteLLM sends Anthropic
  ``/v1/messages`` traffic to the upstream's ``/v1/responses`` (vLLM's is incomplete) and
  answers count_tokens with 404; ``hosted_vllm/`` uses chat completions and a local estimate.
- ``api_base`` per model: one vLLM server serves one model, each on its own port.
- Keys only as ``os.environ/NAME`` references (LiteLLM resolves them at start), never values.
- A master key, by reference: LiteLLM's proxy refuses to start without one.
- One entry per name the spark-stack proxy routes: each route (LiteLLM matches ``*`` wildcards
  in ``model_name``) and each model's own names, which the Claude aliases point at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import UsageError
from .launcher import proxy_base_url
from .spec import served_name
from .stack import schema
from .stack.secrets import is_reference, referenced_names

MASTER_KEY_ENV = "LITELLM_MASTER_KEY"
PREFIX = "hosted_vllm/"


# Maps a host address as written in the stack file to the name LiteLLM should dial.
HostName = Callable[[str], str]


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


def _env_reference(value: str) -> str:
    return f"os.environ/{referenced_names(value)[0]}"


def as_written(address: str) -> str:
    return address


def litellm_model(
    stack: schema.Stack, model: schema.ModelConfig, hostname: HostName = as_written
) -> LiteLLMModel:
    """The LiteLLM view of one model: its served name, endpoint and key reference."""
    if isinstance(model, schema.RemoteModel):
        key = "none" if model.api_key in (None, "none") else _env_reference(model.api_key)
        return LiteLLMModel(model.name, model.served_name or model.name, model.url, key)
    served = served_name(model)
    if isinstance(model, schema.SimulatorModel):
        return LiteLLMModel(model.name, served, f"http://127.0.0.1:{model.port}/v1", "none")
    if model.api_key == "none":
        key = "none"
    elif model.api_key == "auto":
        key = f"os.environ/{api_key_env_name(model.name)}"
    else:
        key = _env_reference(model.api_key)
    host = stack.host_for(model)
    if model.bind == "loopback" or host is None:
        # Bound to the host's loopback: LiteLLM reaches it through an SSH tunnel.
        target = host.address if host else "the host"
        note = f"tunnel: ssh -N -L {model.port}:127.0.0.1:{model.port} {target}"
        return LiteLLMModel(
            model.name, served, f"http://127.0.0.1:{model.port}/v1", key, note
        )
    # An ~/.ssh/config alias means nothing to LiteLLM: dial the HostName it stands for.
    resolved = hostname(host.address)
    address = f"[{resolved}]" if ":" in resolved else resolved
    return LiteLLMModel(model.name, served, f"http://{address}:{model.port}/v1", key)


def _check_pattern(pattern: str) -> None:
    if "?" in pattern or "[" in pattern:
        raise UsageError(
            f"route '{pattern}' uses '?' or '[...]', which LiteLLM's model_name cannot match",
            fix="use only '*' wildcards in proxy.routes when exporting to LiteLLM",
        )


def model_names(stack: schema.Stack) -> list[tuple[str, str]]:
    """(model_name for LiteLLM, stack model) pairs: routes first, then each model's own names."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(name: str, target: str) -> None:
        if name not in seen:
            seen.add(name)
            pairs.append((name, target))

    for pattern, target in stack.proxy.routes.items():
        _check_pattern(pattern)
        add(pattern, target)
    for model in stack.models:
        add(model.name, model.name)
        add(litellm_model(stack, model).served_name, model.name)
    return pairs


def litellm_config(stack: schema.Stack, hostname: HostName = as_written) -> dict[str, Any]:
    """The ``litellm_config.yaml`` content as plain data (``hostname`` maps host addresses)."""
    by_name = {m.name: litellm_model(stack, m, hostname) for m in stack.models}
    entries = []
    for model_name, target in model_names(stack):
        model = by_name[target]
        entries.append(
            {
                "model_name": model_name,
                "litellm_params": {
                    "model": PREFIX + model.served_name,
                    "api_base": model.api_base,
                    "api_key": model.api_key,
                },
            }
        )
    token = stack.proxy.token
    master = referenced_names(token)[0] if token and is_reference(token) else MASTER_KEY_ENV
    return {
        "model_list": entries,
        "litellm_settings": {"drop_params": True},
        "general_settings": {"master_key": f"os.environ/{master}"},
    }


def _header(stack: schema.Stack, config: dict[str, Any], config_path: str) -> list[str]:
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
        f"# {m.name}: {note}"
        for m in stack.models
        if (note := litellm_model(stack, m).note) is not None
    ]
    lines += notes
    lines.append(f"# Claude Code: ANTHROPIC_BASE_URL={proxy_base_url(stack)}")
    return lines


def render_litellm_config(
    stack: schema.Stack,
    hostname: HostName = as_written,
    config_path: str = "litellm_config.yaml",
) -> str:
    """The YAML text of the config, with a header saying how to run it from ``config_path``."""
    config = litellm_config(stack, hostname)
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=100)
    return "\n".join(_header(stack, config, config_path)) + "\n" + body
