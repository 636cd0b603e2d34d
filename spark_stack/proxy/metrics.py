"""Prometheus text metrics, kept cheap: plain counters and fixed-bucket histograms.

Rendered in the text exposition format 0.0.4 as Prometheus defines it: each family's
``# HELP``, ``# TYPE`` and all its samples together, counters named ``…_total``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

# Seconds. TTFT on a warm Spark ranges from tens of ms to minutes for a cold 200K prefill.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# The endpoints counted by name; any other path is counted as "other", so a client cannot
# grow the label set.
ENDPOINTS = frozenset(
    {"/v1/messages", "/v1/messages/count_tokens", "/v1/models", "/", "/health", "/metrics"}
)


class Histogram:
    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.count += 1

    def render(self, name: str, labels: str) -> list[str]:
        lines = []
        running = 0
        for bound, count in zip(BUCKETS, self.counts, strict=False):
            running += count
            lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {running}')
        lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum{{{labels}}} {self.total:.6f}")
        lines.append(f"{name}_count{{{labels}}} {self.count}")
        return lines


class RouteMetrics:
    __slots__ = ("requests", "errors", "ttft", "duration", "input_tokens", "cached_tokens",
                 "output_tokens", "leaked_tool_markup")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.ttft = Histogram()
        self.duration = Histogram()
        self.input_tokens = 0
        self.cached_tokens = 0
        self.output_tokens = 0
        self.leaked_tool_markup = 0


_ROUTE_COUNTERS = (
    ("spark_proxy_requests_total", "requests", "POST /v1/messages requests by route"),
    ("spark_proxy_errors_total", "errors",
     "POST /v1/messages requests answered with an error status or ended by a stream error"),
    ("spark_proxy_input_tokens_total", "input_tokens", "prompt tokens"),
    ("spark_proxy_cached_input_tokens_total", "cached_tokens",
     "prompt tokens vLLM's prefix cache served (part of spark_proxy_input_tokens_total)"),
    ("spark_proxy_output_tokens_total", "output_tokens", "generated tokens"),
    ("spark_proxy_leaked_tool_markup_total", "leaked_tool_markup",
     "answers whose text held tool calls as markup instead of tool calls"),
)
_ROUTE_HISTOGRAMS = (
    ("spark_proxy_ttft_seconds", "ttft", "time to the first content token"),
    ("spark_proxy_duration_seconds", "duration", "time to the end of the answer"),
)


class KeyMetrics:
    __slots__ = ("requests", "errors", "rate_limited", "input_tokens", "cached_tokens",
                 "output_tokens", "wait_seconds")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.rate_limited = 0
        self.input_tokens = 0
        self.cached_tokens = 0
        self.output_tokens = 0
        self.wait_seconds = 0.0


OTHER_KEYS = "other"
_KEY_COUNTERS = (
    ("spark_proxy_key_requests_total", "requests", "POST /v1/messages requests by key"),
    ("spark_proxy_key_errors_total", "errors", "requests answered with an error, by key"),
    ("spark_proxy_key_rate_limited_total", "rate_limited",
     "requests refused with 429 for a key's limit"),
    ("spark_proxy_key_input_tokens_total", "input_tokens", "prompt tokens by key"),
    ("spark_proxy_key_cached_input_tokens_total", "cached_tokens",
     "prompt tokens vLLM's prefix cache served, by key"),
    ("spark_proxy_key_output_tokens_total", "output_tokens", "generated tokens by key"),
    ("spark_proxy_key_queue_wait_seconds_total", "wait_seconds",
     "time requests waited in the proxy's queue for a slot, by key"),
)


class Metrics:
    """Per-route request, error and token counters; TTFT and duration histograms; every
    HTTP request by endpoint and status (rejected and malformed ones included); per-key
    counters and load, and per-upstream slots.

    A route is the routing-table entry that matched (a model name or a glob such as
    ``claude-*``), labelled with the upstream it sends to. Keys get their own series up to
    ``max_keys`` names (in order of first use); the others are summed as ``other``.
    """

    def __init__(self, max_keys: int = 20) -> None:
        self.routes: dict[tuple[str, str], RouteMetrics] = {}
        self.http: dict[tuple[str, int], int] = {}
        self.keys: dict[str, KeyMetrics] = {}
        self.max_keys = max_keys
        # Set by the server: per key (name, running, queued); per upstream (name, capacity,
        # in flight, queued).
        self.key_load: Callable[[], Iterable[tuple[str, int, int]]] = tuple
        self.slots: Callable[[], Iterable[tuple[str, int, int, int]]] = tuple

    def key_label(self, name: str) -> str:
        """The label ``name`` is counted under (bounded: at most ``max_keys`` + other)."""
        if name in self.keys or len(self.keys) < self.max_keys:
            return name
        return OTHER_KEYS

    def key(self, name: str) -> KeyMetrics:
        label = self.key_label(name)
        found = self.keys.get(label)
        if found is None:
            found = self.keys[label] = KeyMetrics()
        return found

    def route(self, name: str, upstream: str) -> RouteMetrics:
        key = (name, upstream)
        found = self.routes.get(key)
        if found is None:
            found = self.routes[key] = RouteMetrics()
        return found

    def count_http(self, path: str, status: int) -> None:
        key = (path if path in ENDPOINTS else "other", status)
        self.http[key] = self.http.get(key, 0) + 1

    def render(self) -> str:
        lines = [
            "# HELP spark_proxy_http_requests_total HTTP requests by endpoint and status",
            "# TYPE spark_proxy_http_requests_total counter",
        ]
        for (path, status), count in sorted(self.http.items()):
            labels = f'endpoint="{_escape(path)}",status="{status}"'
            lines.append(f"spark_proxy_http_requests_total{{{labels}}} {count}")
        routes = [
            (f'route="{_escape(name)}",upstream="{_escape(upstream)}"', route)
            for (name, upstream), route in sorted(self.routes.items())
        ]
        for name, attribute, help_text in _ROUTE_COUNTERS:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} counter")
            lines.extend(f"{name}{{{labels}}} {getattr(route, attribute)}"
                         for labels, route in routes)
        for name, attribute, help_text in _ROUTE_HISTOGRAMS:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} histogram")
            for labels, route in routes:
                lines.extend(getattr(route, attribute).render(name, labels))
        lines += self._render_keys()
        return "\n".join(lines) + "\n"

    def _render_keys(self) -> list[str]:
        lines: list[str] = []
        keys = sorted(self.keys.items())
        for name, attribute, help_text in _KEY_COUNTERS:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} counter")
            lines.extend(f'{name}{{key="{_escape(key)}"}} {_number(getattr(counts, attribute))}'
                         for key, counts in keys)
        load: dict[str, list[int]] = {}
        for key, running, queued in self.key_load():
            entry = load.setdefault(self.key_label(key), [0, 0])
            entry[0] += running
            entry[1] += queued
        for index, (name, help_text) in enumerate((
                ("spark_proxy_key_running", "requests of a key holding a slot now"),
                ("spark_proxy_key_queued", "requests of a key waiting in the proxy's queue"))):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
            lines.extend(f'{name}{{key="{_escape(key)}"}} {values[index]}'
                         for key, values in sorted(load.items()))
        slots = list(self.slots())
        for index, (name, help_text) in enumerate((
                ("spark_proxy_upstream_capacity", "requests the proxy lets run at once"),
                ("spark_proxy_upstream_in_flight", "requests running on the upstream"),
                ("spark_proxy_upstream_queued", "requests waiting for a slot on it")), 1):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} gauge")
            lines.extend(f'{name}{{upstream="{_escape(slot[0])}"}} {slot[index]}'
                         for slot in slots)
        return lines


def _number(value: float) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
