"""Model name → upstream: exact names first, then globs in file order."""

from __future__ import annotations

import re
from fnmatch import translate

from spark_stack.proxy.config import ProxyConfig, Upstream
from spark_stack.proxy.errors import ProxyError

_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in pattern)


class Router:
    """Resolves the ``model`` of a request to an upstream; results are memoised."""

    def __init__(self, config: ProxyConfig) -> None:
        # Each target is (upstream, route): the route is the table entry that matched, for the
        # per-request log line and the metrics' `route` label.
        self._exact: dict[str, tuple[Upstream, str]] = {}
        self._globs: list[tuple[re.Pattern[str], Upstream, str]] = []
        for route in config.routes:
            upstream = config.upstreams[route.upstream_name]
            if is_glob(route.pattern):
                self._globs.append((re.compile(translate(route.pattern)), upstream, route.pattern))
            else:
                self._exact.setdefault(route.pattern, (upstream, route.pattern))
        # A model's own names always reach it, whatever the route table says (a served name
        # shared by two upstreams goes to the first).
        own: dict[str, tuple[Upstream, str]] = {}
        for upstream in config.upstreams.values():
            own[upstream.name] = (upstream, upstream.name)
        for upstream in config.upstreams.values():
            own.setdefault(upstream.served_name, (upstream, upstream.served_name))
        self._exact.update(own)
        self._patterns = [route.pattern for route in config.routes if is_glob(route.pattern)]
        self._cache: dict[str, tuple[Upstream, str]] = {}

    def resolve(self, model: str) -> Upstream:
        """The upstream for ``model``; :class:`ProxyError` 404 listing the routable names."""
        return self.resolve_route(model)[0]

    def resolve_route(self, model: str) -> tuple[Upstream, str]:
        """The upstream for ``model`` and the route (name or pattern) that matched it."""
        found = self._cache.get(model)
        if found is not None:
            return found
        found = self._exact.get(model)
        if found is None:
            for regex, upstream, pattern in self._globs:
                if regex.match(model):
                    found = (upstream, pattern)
                    break
        if found is None:
            raise ProxyError(
                404,
                "not_found_error",
                f"model: {model!r} is not routable; routable models: "
                + ", ".join(self.routable_names()),
            )
        if len(self._cache) < 1024:
            self._cache[model] = found
        return found

    def exact_names(self) -> list[str]:
        return sorted(self._exact)

    def routable_names(self) -> list[str]:
        """Exact names, then the glob patterns in file order."""
        return self.exact_names() + self._patterns
