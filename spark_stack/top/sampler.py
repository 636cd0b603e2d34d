"""Reading the stack for ``top`` (the I/O edge): each model's and the proxy's ``/metrics`` over
HTTP, and each host's facts over SSH (:class:`~spark_stack.deploy.host_stats.HostWatch`).

Where to read comes from the one resolved :class:`~spark_stack.deployment.Deployment` and the
proxy config the last ``up`` wrote (its upstream URLs are what this machine dials — a
tunnel's local end for a ``bind: loopback`` model — with their keys and the proxy's token).
Nothing read here raises: what cannot be reached is reported as such in the figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from ..deploy.host_stats import (
    CONNECTING,
    HostWatch,
    OpenConnection,
    open_ssh,
    read_local_facts,
)
from ..deploy.keys import READ, model_key
from ..deployment import Deployment, ModelDeployment, replica_upstream
from ..host_facts import HostFacts
from ..paths import proxy_state_dir
from ..proxy.daemon import proxy_process, read_config
from .figures import Inputs, ModelSource, ProxySource, Reading, figures
from .promtext import parse

HTTP_TIMEOUT_S = 2.0


def metrics_url(base_url: str) -> str:
    """vLLM's ``/metrics`` next to its OpenAI base URL (``…/v1``)."""
    return base_url.rstrip("/").removesuffix("/v1") + "/metrics"


@dataclass(frozen=True)
class _Target:
    model: ModelDeployment  # a replica's view (its host) for a model with replicas
    url: str
    key: str | None
    name: str  # the model's name, or a replica's upstream name (``qwen@spark-a``)


class Sampler:
    """Reads the stack; each :meth:`read` returns the figures since the previous read."""

    def __init__(self, deployment: Deployment, *, trust_host_key: bool = False,
                 interval: float = 1.0, client: httpx.Client | None = None,
                 open_connection: OpenConnection = open_ssh) -> None:
        self.deployment = deployment
        stack = deployment.stack
        self._state_dir = proxy_state_dir(stack)
        config = read_config(self._state_dir)
        upstreams = config.upstreams if config is not None else {}
        self._targets = []
        for model in deployment.models:
            # A model with replicas: each copy's own figures, named as the proxy's metrics
            # name it (its upstream), so the proxy's figures for it match.
            views = [(replica_upstream(model.name, r.host_key), model.on_replica(r))
                     for r in model.replicas] if len(model.replicas) > 1 else []
            for name, view in views or [(model.name, model)]:
                upstream = upstreams.get(name)
                base = upstream.base_url if upstream is not None else view.endpoint
                key = upstream.api_key if upstream is not None else model_key(stack, model,
                                                                              READ)
                self._targets.append(_Target(view, metrics_url(base), key, name))
        if config is not None:
            self.proxy_url = config.url
            self._proxy_token = config.token
        else:
            self.proxy_url, self._proxy_token = deployment.proxy.url, None
        self._client = client or httpx.Client(timeout=HTTP_TIMEOUT_S)
        self._watches = [
            HostWatch(key, deployment.hosts[key], trust_host_key=trust_host_key,
                      interval=interval, open_connection=open_connection).start()
            for key in deployment.containers_by_host()
        ]
        self._previous: dict[str, Reading] = {}

    def wait_for_hosts(self, timeout: float) -> None:
        """Give every host up to ``timeout`` s in all for its first answer."""
        deadline = time.monotonic() + timeout
        for watch in self._watches:
            watch.wait_first(max(0.0, deadline - time.monotonic()))

    def read(self) -> dict[str, Any]:
        """The figures now (rates over the time since the previous read)."""
        hosts = self._hosts()
        unreachable = {h.name for h in hosts if not h.reachable and h.error != CONNECTING}
        models = []
        for target in self._targets:
            after = self._scrape(target.url, target.key)
            models.append(ModelSource(
                name=target.name, served_name=target.model.served_name,
                kind=target.model.kind, host=target.model.host_key, metrics_url=target.url,
                after=after, before=self._previous.get(target.name),
                unreachable_host=target.model.host_key in unreachable,
            ))
            self._previous[target.name] = after
        proxy_after = self._scrape(self.proxy_url + "/metrics", self._proxy_token)
        proxy = ProxySource(self.proxy_url, proxy_process(self._state_dir).running_pid()
                            is not None, proxy_after, self._previous.get(" proxy"))
        self._previous[" proxy"] = proxy_after  # a key no model name can take
        return figures(Inputs(self.deployment.stack, models, proxy, hosts))

    def _hosts(self) -> list[HostFacts]:
        if not self._watches:
            return [read_local_facts()]
        return [watch.latest() for watch in self._watches]

    def _scrape(self, url: str, key: str | None) -> Reading:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        try:
            response = self._client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            return Reading(time.monotonic(), error=_http_error(exc))
        at = time.monotonic()
        if response.status_code != 200:
            return Reading(at, error=f"HTTP {response.status_code} from {url}")
        try:
            return Reading(at, parse(response.text))
        except ValueError as exc:
            return Reading(at, error=f"{url} is not Prometheus text: {exc}")

    def close(self) -> None:
        for watch in self._watches:
            watch.stop()
        self._client.close()

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _http_error(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused" if "refused" in str(exc).lower() else f"cannot connect: {exc}"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {HTTP_TIMEOUT_S:g} s"
    return f"{type(exc).__name__}: {exc}"


def once(deployment: Deployment, *, interval: float = 1.0, trust_host_key: bool = False,
         open_connection: OpenConnection = open_ssh) -> dict[str, Any]:
    """One snapshot for scripts: two reads ``interval`` s apart, so rates exist."""
    with Sampler(deployment, trust_host_key=trust_host_key, interval=interval,
                 open_connection=open_connection) as sampler:
        sampler.wait_for_hosts(15.0)
        sampler.read()
        time.sleep(interval)
        return sampler.read()
