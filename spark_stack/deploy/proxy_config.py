"""Stack + live endpoints + secrets → the proxy's :class:`ProxyConfig` (pure).

Routes: the user's ``proxy.routes`` first, then every model's served name and its stack
name, then ``*`` to the first model so any Claude Code model name gets an answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..proxy.config import ProxyConfig, Route, ThinkingFamily, Upstream
from ..spec import served_name
from ..stack import schema


@dataclass(frozen=True)
class Endpoint:
    """Where one model serves, as the proxy reaches it."""

    base_url: str  # ends in /v1
    api_key: str | None


def thinking_of(model: schema.ModelConfig) -> str:
    if isinstance(model, schema.RemoteModel):
        return model.thinking
    return "qwen3" if model.reasoning_parser else "none"


def build_proxy_config(
    stack: schema.Stack, endpoints: Mapping[str, Endpoint], token: str | None
) -> ProxyConfig:
    """The proxy's config; models without an endpoint are left out of it."""
    upstreams: dict[str, Upstream] = {}
    for model in stack.models:
        endpoint = endpoints.get(model.name)
        if endpoint is None:
            continue
        thinking: ThinkingFamily = "qwen3" if thinking_of(model) == "qwen3" else "none"
        upstreams[model.name] = Upstream(
            name=model.name,
            base_url=endpoint.base_url,
            served_name=served_name(model) if not isinstance(model, schema.RemoteModel)
            else (model.served_name or model.name),
            api_key=endpoint.api_key,
            max_model_len=model.max_model_len,
            thinking=thinking,
        )
    routes: list[Route] = []
    seen: set[str] = set()

    def route(pattern: str, upstream: str) -> None:
        if pattern not in seen and upstream in upstreams:
            seen.add(pattern)
            routes.append(Route(pattern, upstream))

    for pattern, target in stack.proxy.routes.items():
        route(pattern, target)
    for name, upstream in upstreams.items():
        route(upstream.served_name, name)
        route(name, name)
    if upstreams:
        route("*", next(iter(upstreams)))
    return ProxyConfig(
        host=stack.proxy.host,
        port=stack.proxy.port,
        token=token,
        upstreams=upstreams,
        routes=routes,
        log_prompts=stack.proxy.log_prompts,
    )
