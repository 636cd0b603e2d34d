"""Prometheus text metrics, kept cheap: plain counters and fixed-bucket histograms."""

from __future__ import annotations

from bisect import bisect_left

# Seconds. TTFT on a warm Spark ranges from tens of ms to minutes for a cold 200K prefill.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


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
    __slots__ = ("requests", "errors", "ttft", "duration", "input_tokens", "output_tokens")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.ttft = Histogram()
        self.duration = Histogram()
        self.input_tokens = 0
        self.output_tokens = 0


class Metrics:
    """Per-route request, error and token counters; TTFT and duration histograms.

    A route is the routing-table entry that matched (a model name or a glob such as
    ``claude-*``), labelled with the upstream it sends to.
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], RouteMetrics] = {}

    def route(self, name: str, upstream: str) -> RouteMetrics:
        key = (name, upstream)
        found = self.routes.get(key)
        if found is None:
            found = self.routes[key] = RouteMetrics()
        return found

    def render(self) -> str:
        lines = [
            "# TYPE spark_proxy_requests_total counter",
            "# TYPE spark_proxy_errors_total counter",
            "# TYPE spark_proxy_input_tokens_total counter",
            "# TYPE spark_proxy_output_tokens_total counter",
            "# TYPE spark_proxy_ttft_seconds histogram",
            "# TYPE spark_proxy_duration_seconds histogram",
        ]
        for (name, upstream), route in sorted(self.routes.items()):
            labels = f'route="{_escape(name)}",upstream="{_escape(upstream)}"'
            lines.append(f"spark_proxy_requests_total{{{labels}}} {route.requests}")
            lines.append(f"spark_proxy_errors_total{{{labels}}} {route.errors}")
            lines.append(f"spark_proxy_input_tokens_total{{{labels}}} {route.input_tokens}")
            lines.append(f"spark_proxy_output_tokens_total{{{labels}}} {route.output_tokens}")
            lines.extend(route.ttft.render("spark_proxy_ttft_seconds", labels))
            lines.extend(route.duration.render("spark_proxy_duration_seconds", labels))
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
