"""Two reads of the stack's metrics → the figures ``spark-stack top`` shows (pure).

Inputs are :class:`Reading` s of each model's vLLM ``/metrics`` and of the proxy's, taken an
interval apart, plus the hosts' facts. Gauges are read from the later one; rates are counter
deltas over the time between the two reads (a counter that went down was reset — the server
restarted — and counts from zero, as Prometheus' ``rate`` does); "recent" quantiles come from
the histogram's bucket deltas over the same interval, "since start" ones from its totals.
Quantiles interpolate linearly inside a bucket, as Prometheus' ``histogram_quantile`` does.

The output is plain JSON-ready data (the ``top --once --json`` schema in the README).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..host_facts import HostFacts
from .promtext import INF, Scrape

VERSION = 1

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # new name, pre-0.9 one
PREFIX_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
PREFIX_HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
REQUESTS_DONE = "vllm:request_success_total"
TTFT = "vllm:time_to_first_token_seconds"
SPEC_DRAFTS = "vllm:spec_decode_num_drafts_total"
SPEC_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens_total"
SPEC_ACCEPTED = "vllm:spec_decode_num_accepted_tokens_total"

PROXY_REQUESTS = "spark_proxy_requests_total"
PROXY_ERRORS = "spark_proxy_errors_total"
PROXY_HTTP = "spark_proxy_http_requests_total"
PROXY_TTFT = "spark_proxy_ttft_seconds"
KEY_RUNNING = "spark_proxy_key_running"
KEY_QUEUED = "spark_proxy_key_queued"
KEY_REQUESTS = "spark_proxy_key_requests_total"
KEY_OUTPUT = "spark_proxy_key_output_tokens_total"

# The error type Anthropic's API (and so the proxy) answers with each status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
STREAM_ERROR = "stream_error"  # a 200 whose stream ended in an `error` event


@dataclass(frozen=True)
class Reading:
    """One read of a ``/metrics`` page at monotonic time ``at``: its samples, or why not."""

    at: float
    scrape: Scrape | None = None
    error: str | None = None


@dataclass(frozen=True)
class ModelSource:
    """One model and its two reads (``before`` is None on the very first read)."""

    name: str
    served_name: str
    kind: str
    host: str | None
    metrics_url: str
    after: Reading
    before: Reading | None = None
    unreachable_host: bool = False  # its host's SSH failed: say so rather than "down"


@dataclass(frozen=True)
class ProxySource:
    url: str
    running: bool  # its process runs (a pid file with a live pid)
    after: Reading
    before: Reading | None = None


@dataclass(frozen=True)
class Inputs:
    stack: str
    models: Sequence[ModelSource]
    proxy: ProxySource
    hosts: Sequence[HostFacts] = field(default=())


# -- the arithmetic -------------------------------------------------------------------------


def counter_delta(before: float | None, after: float | None) -> float | None:
    """How much a counter grew; a counter that went down restarted from zero."""
    if after is None:
        return None
    if before is None or after < before:
        return after
    return after - before


def ratio(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return part / whole


def bucket_deltas(before: Mapping[float, float], after: Mapping[float, float]
                  ) -> dict[float, float]:
    """The observations between two reads of a histogram, per bucket; all of ``after`` when
    it was reset in between."""
    if not before or after.get(INF, 0.0) < before.get(INF, 0.0) or any(
        after.get(bound, 0.0) < count for bound, count in before.items()
    ):
        return dict(after)
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q``-quantile of cumulative ``buckets`` (upper bound → count), interpolated
    linearly inside its bucket; the highest finite bound when it falls in ``+Inf``; None
    without observations."""
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != INF:
        return None
    total = buckets[INF]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank and count > below:
            if bound == INF:
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, max(below, count)
    return lower


def quantiles(buckets: Mapping[float, float]) -> dict[str, float | None]:
    return {"p50": histogram_quantile(0.5, buckets), "p95": histogram_quantile(0.95, buckets)}


def histogram_mean(before: Scrape | None, after: Scrape, name: str, **match: str
                   ) -> float | None:
    """Mean of the observations between two reads (``_sum`` and ``_count`` deltas)."""
    total = counter_delta(_total(before, f"{name}_sum", **match),
                          after.total(f"{name}_sum", **match))
    count = counter_delta(_total(before, f"{name}_count", **match),
                          after.total(f"{name}_count", **match))
    return ratio(total, count)


def _total(scrape: Scrape | None, name: str, **match: str) -> float | None:
    return None if scrape is None else scrape.total(name, **match)


def _first(scrape: Scrape | None, names: Sequence[str], missing: float | None = None
           ) -> float | None:
    if scrape is None:
        return None
    for name in names:
        value = scrape.total(name)
        if value is not None:
            return value
    return missing


class _Window:
    """A source's two reads: values, deltas and rates."""

    def __init__(self, after: Scrape, before: Reading | None, seconds: float | None,
                 missing: float | None) -> None:
        self.after = after
        self.before = before.scrape if before is not None else None
        self.seconds = seconds
        self.missing = missing  # a series not exported (yet): unknown, or zero

    def now(self, *names: str) -> float | None:
        return _first(self.after, names, self.missing)

    def delta(self, *names: str) -> float | None:
        if self.before is None:
            return None
        return counter_delta(_first(self.before, names, self.missing),
                             _first(self.after, names, self.missing))

    def rate(self, *names: str) -> float | None:
        delta = self.delta(*names)
        if delta is None or not self.seconds:
            return None
        return delta / self.seconds

    def recent_buckets(self, name: str, **match: str) -> dict[float, float]:
        if self.before is None:
            return {}
        return bucket_deltas(self.before.buckets(name, **match), self.after.buckets(name, **match))


def _window(after: Reading, before: Reading | None, missing: float | None = None
            ) -> _Window | None:
    """``missing``: what a series absent from a page counts as (the proxy exports a route's
    counters only once it served a request: absent there means zero)."""
    if after.scrape is None:
        return None
    seconds = after.at - before.at if before is not None and before.scrape is not None else None
    usable = before if before is not None and before.scrape is not None else None
    return _Window(after.scrape, usable, seconds if seconds and seconds > 0 else None, missing)


# -- the figures ------------------------------------------------------------------------------


def figures(inputs: Inputs) -> dict[str, Any]:
    """Everything ``top`` shows, as JSON-ready data (see the module doc)."""
    models = [model_figures(m) for m in inputs.models]
    seconds = [m["interval_seconds"] for m in models if m["interval_seconds"]]
    return {
        "version": VERSION,
        "stack": inputs.stack,
        "interval_seconds": max(seconds) if seconds else None,
        "models": models,
        "proxy": proxy_figures(inputs.proxy, inputs.models),
        "hosts": [host_figures(h) for h in inputs.hosts],
    }


def model_figures(source: ModelSource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": source.name, "served_name": source.served_name, "kind": source.kind,
        "host": source.host, "metrics_url": source.metrics_url, "state": "serving",
        "error": None, "interval_seconds": None, "requests_running": None,
        "requests_waiting": None, "kv_cache_usage": None,
        "prefix_cache_hit_rate": {"recent": None, "since_start": None},
        "prompt_tokens_per_s": None, "generation_tokens_per_s": None,
        "ttft_seconds": {"p50": None, "p95": None},
        "ttft_seconds_since_start": {"p50": None, "p95": None},
        "spec_decode": None,
        "totals": {"requests": None, "prompt_tokens": None, "generation_tokens": None,
                   "prefix_cache_queries": None, "prefix_cache_hits": None},
    }
    window = _window(source.after, source.before)
    if window is None:
        entry["state"] = "host unreachable" if source.unreachable_host else "down"
        entry["error"] = source.after.error
        return entry
    entry["interval_seconds"] = window.seconds
    entry["requests_running"] = window.now(RUNNING)
    entry["requests_waiting"] = window.now(WAITING)
    entry["kv_cache_usage"] = window.now(*KV_USAGE)
    entry["prefix_cache_hit_rate"] = {
        "recent": ratio(window.delta(*PREFIX_HITS), window.delta(*PREFIX_QUERIES)),
        "since_start": ratio(window.now(*PREFIX_HITS), window.now(*PREFIX_QUERIES)),
    }
    entry["prompt_tokens_per_s"] = window.rate(PROMPT_TOKENS)
    entry["generation_tokens_per_s"] = window.rate(GENERATION_TOKENS)
    entry["ttft_seconds"] = quantiles(window.recent_buckets(TTFT))
    entry["ttft_seconds_since_start"] = quantiles(window.after.buckets(TTFT))
    if window.after.has(SPEC_DRAFT_TOKENS):
        entry["spec_decode"] = {
            "acceptance_rate": {
                "recent": ratio(window.delta(SPEC_ACCEPTED), window.delta(SPEC_DRAFT_TOKENS)),
                "since_start": ratio(window.now(SPEC_ACCEPTED), window.now(SPEC_DRAFT_TOKENS)),
            },
            # Tokens per decoding step: the accepted drafts plus the token the step makes.
            "mean_acceptance_length": {
                "recent": _plus_one(ratio(window.delta(SPEC_ACCEPTED), window.delta(SPEC_DRAFTS))),
                "since_start": _plus_one(ratio(window.now(SPEC_ACCEPTED), window.now(SPEC_DRAFTS))),
            },
        }
    entry["totals"] = {
        "requests": window.now(REQUESTS_DONE),
        "prompt_tokens": window.now(PROMPT_TOKENS),
        "generation_tokens": window.now(GENERATION_TOKENS),
        "prefix_cache_queries": window.now(*PREFIX_QUERIES),
        "prefix_cache_hits": window.now(*PREFIX_HITS),
    }
    return entry


def _plus_one(value: float | None) -> float | None:
    return None if value is None else 1.0 + value


def proxy_figures(source: ProxySource, models: Sequence[ModelSource]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "url": source.url, "state": "running", "error": None, "requests_per_s": None,
        "errors_per_s": None, "requests_total": None, "errors_total": None,
        "errors_by_type": {}, "ttft_seconds": {"p50": None, "p95": None},
        "added_ttft_ms": {}, "keys": [],
    }
    window = _window(source.after, source.before, missing=0.0)
    if window is None:
        entry["state"] = "not answering" if source.running else "not running"
        entry["error"] = source.after.error
        return entry
    entry["requests_per_s"] = window.rate(PROXY_REQUESTS)
    entry["errors_per_s"] = window.rate(PROXY_ERRORS)
    entry["requests_total"] = window.now(PROXY_REQUESTS)
    entry["errors_total"] = window.now(PROXY_ERRORS)
    entry["errors_by_type"] = errors_by_type(window.after)
    entry["ttft_seconds"] = quantiles(window.recent_buckets(PROXY_TTFT))
    entry["added_ttft_ms"] = {m.name: added_ttft_ms(window, m) for m in models}
    entry["keys"] = key_figures(window)
    return entry


def key_figures(window: _Window) -> list[dict[str, Any]]:
    """Per key the proxy reports (``other`` sums the keys beyond its limit): requests running
    and queued now, requests/s and generated tokens/s; keys with nothing to show are left out."""
    names = sorted({s.labels["key"] for name in (KEY_RUNNING, KEY_REQUESTS)
                    for s in window.after.select(name) if "key" in s.labels})
    out = []
    for key in names:
        figures = {
            "name": key,
            "running": window.after.total(KEY_RUNNING, key=key) or 0.0,
            "queued": window.after.total(KEY_QUEUED, key=key) or 0.0,
            "requests_per_s": _key_rate(window, KEY_REQUESTS, key),
            "output_tokens_per_s": _key_rate(window, KEY_OUTPUT, key),
        }
        if figures["running"] or figures["queued"] or figures["requests_per_s"] or (
                window.after.total(KEY_REQUESTS, key=key)):
            out.append(figures)
    return out


def _key_rate(window: _Window, name: str, key: str) -> float | None:
    if window.before is None or not window.seconds:
        return None
    delta = counter_delta(window.before.total(name, key=key) or 0.0,
                          window.after.total(name, key=key) or 0.0)
    return None if delta is None else delta / window.seconds


def errors_by_type(scrape: Scrape) -> dict[str, float]:
    """Errors of ``POST /v1/messages`` since start by Anthropic error type: the proxy's own
    ``type`` label when it has one, else from the HTTP status it answered; errors it counted
    that no status explains (a stream ended by an ``error`` event) as ``stream_error``."""
    out: dict[str, float] = {}
    typed = [s for s in scrape.select(PROXY_ERRORS) if "type" in s.labels]
    if typed:
        for sample in typed:
            out[sample.labels["type"]] = out.get(sample.labels["type"], 0.0) + sample.value
        return {k: v for k, v in sorted(out.items()) if v}
    for sample in scrape.select(PROXY_HTTP, endpoint="/v1/messages"):
        try:
            status = int(sample.labels.get("status", ""))
        except ValueError:
            continue
        if status >= 400 and sample.value:
            kind = ERROR_TYPES.get(status, f"http_{status}")
            out[kind] = out.get(kind, 0.0) + sample.value
    unexplained = (scrape.total(PROXY_ERRORS) or 0.0) - math.fsum(out.values())
    if unexplained > 0:
        out[STREAM_ERROR if scrape.has(PROXY_HTTP) else "error"] = unexplained
    return dict(sorted(out.items()))


def added_ttft_ms(proxy: _Window, model: ModelSource) -> dict[str, float | None]:
    """What the proxy adds to time-to-first-token for ``model``: the mean TTFT the proxy saw
    for requests it sent there minus the mean vLLM itself measured, recently and since start
    (an estimate: the two count slightly different first tokens)."""
    own = _window(model.after, model.before)
    if own is None:
        return {"recent": None, "since_start": None}
    recent_proxy = histogram_mean(proxy.before, proxy.after, PROXY_TTFT, upstream=model.name)
    recent_vllm = histogram_mean(own.before, own.after, TTFT)
    total_proxy = histogram_mean(None, proxy.after, PROXY_TTFT, upstream=model.name)
    total_vllm = histogram_mean(None, own.after, TTFT)
    return {"recent": _difference_ms(recent_proxy, recent_vllm),
            "since_start": _difference_ms(total_proxy, total_vllm)}


def _difference_ms(proxy: float | None, engine: float | None) -> float | None:
    if proxy is None or engine is None:
        return None
    return (proxy - engine) * 1000.0


def host_figures(host: HostFacts) -> dict[str, Any]:
    total, available = host.memory_total_bytes, host.memory_available_bytes
    return {
        "name": host.name, "address": host.address, "reachable": host.reachable,
        "error": host.error,
        "memory": {"total_bytes": total, "available_bytes": available,
                   "available_fraction": ratio(available, total)},
        "gpus": [{"index": g.index, "name": g.name, "utilization_percent":
                  g.utilization_percent, "temperature_c": g.temperature_c} for g in host.gpus],
    }
