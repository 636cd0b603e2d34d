"""What `smoke` and `bench` talk to: the proxy and each model's own OpenAI endpoint.

Built from the resolved deployment and the proxy config ``up`` wrote (it holds each upstream's
URL as this machine reaches it, its key and the proxy token), so the checks go exactly where
Claude Code's traffic goes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..deployment import Deployment
from ..proxy.config import ProxyConfig
from ..proxy.dispatch import rendezvous, session_key

# Tries at finding a session id the proxy sends to a given replica: each try lands on it with
# probability its share of the weights, so 4096 miss a 1-in-100 share with odds below 1e-17.
SESSION_TRIES = 4096


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
    # A replicated model: one target per copy (its own endpoint), checked one by one.
    replicas: tuple[ModelTarget, ...] = ()
    # On a replica's target: the proxy's upstream name for it (``qwen@spark-a``) and a
    # Claude Code session id the proxy routes to it, so the proxy checks reach that copy.
    replica: str | None = None
    session: str | None = None

    def copies(self) -> tuple[ModelTarget, ...]:
        """What to check: each replica, or the model itself."""
        return self.replicas or (self,)

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
        target = ModelTarget(
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
        targets.append(_with_replicas(target, config))
    proxy_url = config.url
    hosts = list(deployment.hosts.values())
    return Endpoints(proxy_url, config.token, tuple(targets),
                     hosts[0].address if hosts else None)


def _with_replicas(target: ModelTarget, config: ProxyConfig) -> ModelTarget:
    """``target`` with one target per replica the proxy spreads its sessions over."""
    names = config.replicas.get(target.name, [])
    copies = []
    for name in names:
        upstream = config.upstreams.get(name)
        if upstream is None:
            continue
        copies.append(replace(target, base_url=upstream.base_url, api_key=upstream.api_key,
                              replica=name, session=session_for(name, names, config.weights)))
    return replace(target, replicas=tuple(copies)) if len(copies) > 1 else target


def session_for(replica: str, replicas: Sequence[str],
                weights: Mapping[str, float]) -> str | None:
    """A session id the proxy's dispatcher sends to ``replica`` while every one of
    ``replicas`` is healthy (the same rendezvous hashing over the same names and weights);
    None for a replica with next to no share (its proxy checks then go where the proxy says)."""
    for n in range(SESSION_TRIES):
        session = f"spark-stack-smoke-{replica}-{n}"
        if rendezvous(session_key(session.encode(), {}), replicas, weights or None) == replica:
            return session
    return None


def running_endpoints(
    deployment: Deployment, images: Mapping[str, ImageInfo] | None = None
) -> Endpoints | None:
    """Endpoints of the stack as its last ``up`` left them; None when ``up`` never ran."""
    from ..paths import proxy_state_dir
    from ..proxy.daemon import read_config

    config = read_config(proxy_state_dir(deployment.stack))
    return None if config is None else endpoints_from_proxy_config(deployment, config, images)
