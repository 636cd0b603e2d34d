"""The proxy's router: the stack's routing table (:mod:`spark_stack.routing`) → upstreams."""

from __future__ import annotations

from spark_stack.proxy.config import ProxyConfig, Upstream
from spark_stack.proxy.errors import ProxyError
from spark_stack.routing import RouteTable, Rule

# Distinct model names memoised; names are bounded in length before they reach the router.
_CACHE_ENTRIES = 1024


class Router:
    """Resolves the ``model`` of a request to an upstream; results are memoised."""

    def __init__(self, config: ProxyConfig) -> None:
        self._upstreams = config.upstreams
        self._table = RouteTable(
            Rule(route.pattern, route.upstream_name, route.origin) for route in config.routes
        )
        self._cache: dict[str, tuple[Upstream, str]] = {}

    def resolve(self, model: str) -> Upstream:
        """The upstream for ``model``; :class:`ProxyError` 404 listing the routable names."""
        return self.resolve_route(model)[0]

    def resolve_route(self, model: str) -> tuple[Upstream, str]:
        """The upstream for ``model`` and the route (name or pattern) that matched it."""
        found = self._cache.get(model)
        if found is not None:
            return found
        rule = self._table.match(model)
        if rule is None:
            raise ProxyError(
                404,
                "not_found_error",
                f"model: {model!r} is not routable; routable models: "
                + ", ".join(self.routable_names()),
            )
        found = (self._upstreams[rule.model], rule.pattern)
        if len(self._cache) < _CACHE_ENTRIES:
            self._cache[model] = found
        return found

    def exact_names(self) -> list[str]:
        return self._table.exact_names()

    def routable_names(self) -> list[str]:
        return self._table.routable_names()
