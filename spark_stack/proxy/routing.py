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
        self._exact: dict[str, Upstream] = {}
        self._globs: list[tuple[re.Pattern[str], Upstream]] = []
        for route in config.routes:
            upstream = config.upstreams[route.upstream_name]
            if is_glob(route.pattern):
                self._globs.append((re.compile(translate(route.pattern)), upstream))
            else:
                self._exact.setdefault(route.pattern, upstream)
        # A model's own names always reach it, whatever the route table says (a served name
        # shared by two upstreams goes to the first).
        own: dict[str, Upstream] = {}
        for upstream in config.upstreams.values():
            own[upstream.name] = upstream
        for upstream in config.upstreams.values():
            own.setdefault(upstream.served_name, upstream)
        self._exact.update(own)
        self._patterns = [route.pattern for route in config.routes if is_glob(route.pattern)]
        self._cache: dict[str, Upstream] = {}

    def resolve(self, model: str) -> Upstream:
        """The upstream for ``model``; :class:`ProxyError` 404 listing the routable names."""
        found = self._cache.get(model)
        if found is not None:
            return found
        found = self._exact.get(model)
        if found is None:
            for regex, upstream in self._globs:
                if regex.match(model):
                    found = upstream
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
