"""What `smoke` and `bench` talk to: the proxy and each model's own OpenAI endpoint.

Built from the resolved deployment and the proxy config ``up`` wrote (it holds each upstream's
URL as this machine reaches it, its key and the proxy token), so the checks go exactly where
Claude Code's traffic goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..deployment import Deployment
from ..proxy.config import ProxyConfig


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


def endpoints_from_proxy_config(
    deployment: Deployment,
    config: ProxyConfig,
    images: Mapping[str, ImageInfo] | None = None,
) -> Endpoints:
    """Endpoints of a running stack from the proxy config ``up`` wrote for it: the same URLs,
    keys and token Claude Code's traffic uses."""
    images = images or {}
    targets = []
    for model in deployment.models:
        upstream = config.upstreams.get(model.name)
        if upstream is None:
            continue
        info = images.get(model.name, ImageInfo())
        image = info.image or (model.container.image if model.container else None)
        targets.append(
            ModelTarget(
                name=model.name,
                served_name=upstream.served_name,
                base_url=upstream.base_url,
                api_key=upstream.api_key,
                reasoning=model.reasoning,
                tools=model.tools,
                image=image,
                image_digest=info.digest,
                image_id=info.image_id,
                drift_fields=info.drift_fields,
            )
        )
    proxy_url = config.url
    hosts = list(deployment.hosts.values())
    return Endpoints(proxy_url, config.token, tuple(targets),
                     hosts[0].address if hosts else None)


def running_endpoints(
    deployment: Deployment, images: Mapping[str, ImageInfo] | None = None
) -> Endpoints | None:
    """Endpoints of the stack as its last ``up`` left them; None when ``up`` never ran."""
    from ..paths import proxy_state_dir
    from ..proxy.daemon import read_config

    config = read_config(proxy_state_dir(deployment.stack))
    return None if config is None else endpoints_from_proxy_config(deployment, config, images)
