"""What `smoke` and `bench` talk to: the proxy and each model's own OpenAI endpoint.

Built from the stack file and the proxy config ``up`` wrote (it already holds each upstream's
URL as this machine reaches it, its key and the proxy token), so the checks go exactly where
Claude Code's traffic goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..proxy.config import ProxyConfig, dial_host
from ..stack import schema


@dataclass(frozen=True)
class ModelTarget:
    """One model: its names, its OpenAI endpoint and what it can do."""

    name: str
    served_name: str
    base_url: str  # OpenAI base URL, ending in /v1
    api_key: str | None
    reasoning: bool  # served with a reasoning parser: thinking comes back as thinking blocks
    tools: bool  # served with a tool-call parser
    image: str | None = None
    image_digest: str | None = None
    image_id: str | None = None
    drift_fields: tuple[str, ...] = ()  # how what runs differs from the stack file

    def direct_chat_body(self, text: str, max_tokens: int) -> dict[str, Any]:
        """An OpenAI chat request straight to vLLM, comparable with one through the proxy."""
        body: dict[str, Any] = {
            "model": self.served_name,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        if self.reasoning:
            # The proxy turns thinking off when the client does not ask for it: match it.
            body["chat_template_kwargs"] = {"enable_thinking": False}
        return body


@dataclass(frozen=True)
class Endpoints:
    """The proxy (Anthropic wire format) and the models behind it."""

    proxy_url: str
    proxy_token: str | None
    models: tuple[ModelTarget, ...]
    host: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    """What runs for a model, as the deploy engine reports it."""

    image: str | None = None
    digest: str | None = None  # the registry digest; None for a locally built image
    image_id: str | None = None
    drift_fields: tuple[str, ...] = ()  # from `status`: how what runs differs from the file


def model_abilities(model: schema.ModelConfig) -> tuple[bool, bool]:
    """(reasoning, tools) of a model as the stack serves it."""
    if isinstance(model, schema.RemoteModel):
        return model.thinking == "qwen3", True
    return model.reasoning_parser is not None, model.tool_call_parser is not None


def stack_host(stack: schema.Stack) -> str | None:
    """The address of the host the stack deploys to (the first, when there are several)."""
    hosts = stack.all_hosts()
    return next(iter(hosts.values())).address if hosts else None


def endpoints_from_proxy_config(
    stack: schema.Stack,
    config: ProxyConfig,
    images: Mapping[str, ImageInfo] | None = None,
) -> Endpoints:
    """Endpoints of a running stack from the proxy config ``up`` wrote for it."""
    images = images or {}
    targets = []
    for model in stack.models:
        upstream = config.upstreams.get(model.name)
        if upstream is None:
            continue
        reasoning, tools = model_abilities(model)
        info = images.get(model.name, ImageInfo())
        image = info.image or (model.image if isinstance(model, schema.ContainerModel) else None)
        targets.append(
            ModelTarget(
                name=model.name,
                served_name=upstream.served_name,
                base_url=upstream.base_url,
                api_key=upstream.api_key,
                reasoning=reasoning,
                tools=tools,
                image=image,
                image_digest=info.digest,
                image_id=info.image_id,
                drift_fields=info.drift_fields,
            )
        )
    proxy_url = f"http://{dial_host(config.host)}:{config.port}"
    return Endpoints(proxy_url, config.token, tuple(targets), stack_host(stack))


def running_endpoints(
    stack: schema.Stack, images: Mapping[str, ImageInfo] | None = None
) -> Endpoints | None:
    """Endpoints of the stack as its last ``up`` left them; None when ``up`` never ran."""
    from ..paths import proxy_state_dir
    from ..proxy.config import ConfigError
    from ..proxy.daemon import CONFIG_FILE

    try:
        config = ProxyConfig.from_json((proxy_state_dir(stack.name) / CONFIG_FILE).read_bytes())
    except (FileNotFoundError, ConfigError):
        return None
    return endpoints_from_proxy_config(stack, config, images)
