"""The pure core of `spark-stack top`: Prometheus text → samples, counter deltas and rates,
histogram quantiles from bucket deltas, and the figures built from two reads."""

from __future__ import annotations

import io
import math
from bisect import bisect_left

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from rich.console import Console

from spark_stack.cli.top_view import History, render
from spark_stack.host_facts import HostFacts
from spark_stack.simulator.metrics import Metrics
from spark_stack.top.figures import (
    Inputs,
    ModelSource,
    ProxySource,
    Reading,
    bucket_deltas,
    counter_delta,
    errors_by_type,
    figures,
    histogram_quantile,
)
from spark_stack.top.promtext import INF, parse

BOUNDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


def cumulative(values: list[float], bounds: tuple[float, ...] = BOUNDS) -> dict[float, float]:
    counts = [0.0] * (len(bounds) + 1)
    for value in values:
        counts[bisect_left(bounds, value)] += 1
    out, running = {}, 0.0
    for bound, count in zip((*bounds, INF), counts, strict=True):
        running += count
        out[bound] = running
    return out


def test_a_counter_delta_is_the_growth_or_all_of_it_after_a_reset() -> None:
    assert counter_delta(10, 25) == 15
    assert counter_delta(25, 4) == 4  # restarted: 4 since
    assert counter_delta(None, 7) == 7
    assert counter_delta(3, None) is None


@given(st.floats(0, 1e9), st.floats(0, 1e9))
def test_a_counter_delta_is_never_negative_and_never_more_than_the_counter(
        before: float, after: float) -> None:
    delta = counter_delta(before, after)
    assert delta is not None and 0 <= delta <= after


def test_quantiles_interpolate_inside_the_bucket_as_prometheus_does() -> None:
    buckets = {0.1: 10.0, 0.5: 30.0, 1.0: 40.0, INF: 40.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (20 - 10) / 20)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.5 + 0.5 * (38 - 30) / 10)
    # In +Inf: the highest finite bound.
    assert histogram_quantile(0.99, {0.1: 1.0, INF: 10.0}) == 0.1
    assert histogram_quantile(0.5, {0.1: 0.0, INF: 0.0}) is None
    assert histogram_quantile(0.5, {}) is None


@given(st.lists(st.floats(0.001, 20), min_size=1, max_size=200), st.floats(0.01, 1))
def test_a_quantile_lies_in_the_bucket_of_the_true_one(values: list[float], q: float) -> None:
    estimate = histogram_quantile(q, cumulative(values))
    assert estimate is not None
    ordered = sorted(values)
    true = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
    index = bisect_left(BOUNDS, true)
    lower = BOUNDS[index - 1] if index > 0 else 0.0
    upper = BOUNDS[index] if index < len(BOUNDS) else BOUNDS[-1]
    assert lower - 1e-9 <= estimate <= upper + 1e-9


@given(st.lists(st.floats(0.001, 20), max_size=50), st.lists(st.floats(0.001, 20), max_size=50))
def test_bucket_deltas_are_the_histogram_of_what_came_in_between(
        old: list[float], new: list[float]) -> None:
    assert bucket_deltas(cumulative(old), cumulative(old + new)) == cumulative(new)


@given(st.lists(st.floats(0.001, 20), min_size=1, max_size=50),
       st.lists(st.floats(0.001, 20), max_size=50))
def test_a_histogram_that_went_back_was_reset(old: list[float], new: list[float]) -> None:
    before = cumulative(old + old + [1.0])
    assume(len(new) < 2 * len(old) + 1)  # fewer observations than before: a restart
    assert bucket_deltas(before, cumulative(new)) == cumulative(new)


@given(st.lists(st.floats(0.001, 20), min_size=1, max_size=100))
def test_quantiles_grow_with_q(values: list[float]) -> None:
    buckets = cumulative(values)
    p50, p95 = histogram_quantile(0.5, buckets), histogram_quantile(0.95, buckets)
    assert p50 is not None and p95 is not None and p50 <= p95


def sim_scrape(metrics: Metrics, at: float) -> Reading:
    return Reading(at, parse(metrics.render()))


def test_figures_from_two_reads_of_vllm_and_the_proxy() -> None:
    engine = Metrics("qwen", spec_tokens=3)
    prompt = b"x" * 4 * 100
    engine.admitted(prompt, 100, 100)
    engine.finish("stop", 30)
    engine.ttft.observe(0.02)
    first = sim_scrape(engine, 10.0)
    engine.running = 2
    engine.admitted(prompt, 100, 100)  # 6 full blocks cached: 96 tokens hit
    engine.admitted(b"y" * 400, 100, 100)
    engine.finish("stop", 60)
    engine.finish("length", 60)
    for ttft in (0.3, 0.3, 0.7):
        engine.ttft.observe(ttft)
    second = sim_scrape(engine, 12.0)
    proxy_text = "\n".join([
        "# TYPE spark_proxy_requests_total counter",
        'spark_proxy_requests_total{route="*",upstream="qwen"} 7',
        "# TYPE spark_proxy_errors_total counter",
        'spark_proxy_errors_total{route="*",upstream="qwen"} 3',
        "# TYPE spark_proxy_http_requests_total counter",
        'spark_proxy_http_requests_total{endpoint="/v1/messages",status="200"} 5',
        'spark_proxy_http_requests_total{endpoint="/v1/messages",status="529"} 1',
        'spark_proxy_http_requests_total{endpoint="/v1/messages",status="400"} 1',
        'spark_proxy_http_requests_total{endpoint="/metrics",status="401"} 4',
        "# TYPE spark_proxy_ttft_seconds histogram",
        'spark_proxy_ttft_seconds_bucket{route="*",upstream="qwen",le="1.0"} 4',
        'spark_proxy_ttft_seconds_bucket{route="*",upstream="qwen",le="+Inf"} 4',
        'spark_proxy_ttft_seconds_sum{route="*",upstream="qwen"} 1.4',
        'spark_proxy_ttft_seconds_count{route="*",upstream="qwen"} 4',
        "# TYPE spark_proxy_key_requests_total counter",
        'spark_proxy_key_requests_total{key="ann"} 9',
        "# TYPE spark_proxy_key_output_tokens_total counter",
        'spark_proxy_key_output_tokens_total{key="ann"} 900',
        "# TYPE spark_proxy_key_running gauge",
        'spark_proxy_key_running{key="ann"} 4',
        'spark_proxy_key_running{key="owner"} 0',
        "# TYPE spark_proxy_key_queued gauge",
        'spark_proxy_key_queued{key="ann"} 12',
        'spark_proxy_key_queued{key="owner"} 0',
    ]) + "\n"
    proxy_before = proxy_text.replace("} 7", "} 3").replace("1.4", "0.03").replace(
        "} 4\n", "} 1\n").replace("} 900", "} 500").replace("} 9\n", "} 8\n")
    model = ModelSource("qwen", "qwen3.6", "simulator", None, "http://x/metrics", second, first)
    proxy = ProxySource("http://p", True, Reading(12.0, parse(proxy_text)),
                        Reading(10.0, parse(proxy_before)))
    host = HostFacts("default", "spark", True, None, 128 * 2**30, 32 * 2**30)
    out = figures(Inputs("lab", [model], proxy, [host]))
    qwen = out["models"][0]
    assert qwen["state"] == "serving" and qwen["requests_running"] == 2
    assert qwen["prompt_tokens_per_s"] == 100.0  # 200 tokens in 2 s
    assert qwen["generation_tokens_per_s"] == 60.0
    assert qwen["prefix_cache_hit_rate"] == {"recent": 96 / 200, "since_start": 96 / 300}
    assert qwen["ttft_seconds"]["p50"] == pytest.approx(0.25 + 0.25 * (1.5 - 0) / 2)
    assert qwen["totals"] == {"requests": 3, "prompt_tokens": 300, "generation_tokens": 150,
                              "prefix_cache_queries": 300, "prefix_cache_hits": 96}
    spec = qwen["spec_decode"]
    assert spec["acceptance_rate"]["since_start"] == pytest.approx(
        engine.accepted_tokens / engine.draft_tokens)
    assert spec["mean_acceptance_length"]["since_start"] == pytest.approx(
        1 + engine.accepted_tokens / engine.drafts)
    p = out["proxy"]
    assert p["requests_per_s"] == 2.0 and p["requests_total"] == 7
    # The owner, idle and without requests, is left out.
    assert p["keys"] == [{"name": "ann", "running": 4, "queued": 12, "requests_per_s": 0.5,
                          "output_tokens_per_s": 200.0}]
    assert p["errors_by_type"] == {"invalid_request_error": 1, "overloaded_error": 1,
                                   "stream_error": 1}
    # The proxy's 3 new requests averaged (1.4 - 0.03) / 3 s; vLLM's 3 new ones 1.3 / 3 s.
    assert p["added_ttft_ms"]["qwen"]["recent"] == pytest.approx((1.37 - 1.3) / 3 * 1000)
    assert out["hosts"][0]["memory"]["available_fraction"] == 0.25
    screen = Console(width=80, record=True, file=io.StringIO())
    screen.print(render(out, History(), 0, 80))
    assert "keys ann 4 run 12 queued 200 tok/s" in screen.export_text()


def test_what_cannot_be_read_is_said_not_guessed() -> None:
    down = ModelSource("qwen", "q", "container", "default", "http://x/metrics",
                       Reading(1.0, error="connection refused"))
    cut_off = ModelSource("other", "o", "container", "default", "http://y/metrics",
                          Reading(1.0, error="host unreachable"), unreachable_host=True)
    proxy = ProxySource("http://p", False, Reading(1.0, error="connection refused"))
    out = figures(Inputs("lab", [down, cut_off], proxy, []))
    assert [(m["state"], m["error"]) for m in out["models"]] == [
        ("down", "connection refused"), ("host unreachable", "host unreachable")]
    assert out["models"][0]["prompt_tokens_per_s"] is None
    assert out["proxy"]["state"] == "not running"
    # One read only: gauges and totals, no rates yet.
    engine = Metrics("q")
    only = ModelSource("q", "q", "simulator", None, "u", sim_scrape(engine, 1.0))
    alone = figures(Inputs("lab", [only], proxy, []))["models"][0]
    assert alone["requests_running"] == 0 and alone["prompt_tokens_per_s"] is None


def test_errors_by_type_prefers_the_proxys_own_type_label() -> None:
    scrape = parse('spark_proxy_errors_total{route="a",upstream="m",type="overloaded_error"} 2\n'
                   'spark_proxy_errors_total{route="b",upstream="m",type="overloaded_error"} 1\n')
    assert errors_by_type(scrape) == {"overloaded_error": 3}
    assert errors_by_type(parse('spark_proxy_errors_total{route="a",upstream="m"} 2\n')) == {
        "error": 2}
