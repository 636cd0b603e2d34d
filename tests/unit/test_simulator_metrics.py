"""The simulator's /metrics: vLLM's names and types, counted from what it serves — a queue
under --max-num-seqs, KV-cache use while requests run, prefix hits, spec-decode acceptance."""

from __future__ import annotations

import threading
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from spark_stack.simulator import start_in_thread
from spark_stack.simulator.metrics import PrefixCache, SpecDecode
from spark_stack.top.promtext import parse

FAST = {"VLLM_SIM_STARTUP_SECONDS": "0"}
SLOW = 'SIM_SCRIPT: {"content": "' + "word " * 40 + '", "delay_ms": 25}'


def chat(url: str, text: str, stream: bool = False) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=30, json={
        "model": "m", "stream": stream, "messages": [{"role": "user", "content": text}]})


def test_families_have_vllms_names_and_types() -> None:
    with start_in_thread(["m", "--host", "127.0.0.1", "--port", "0", "--speculative-config",
                          '{"method": "mtp", "num_speculative_tokens": 3}'], env=FAST) as sim:
        chat(sim.url, "hello")
        text = httpx.get(sim.url + "/metrics").text
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["vllm:num_requests_running"] == "gauge"
    assert types["vllm:num_requests_waiting"] == "gauge"
    assert types["vllm:kv_cache_usage_perc"] == "gauge"
    for counter in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits", "vllm:prompt_tokens",
                    "vllm:generation_tokens", "vllm:request_success",
                    "vllm:spec_decode_num_drafts", "vllm:spec_decode_num_draft_tokens",
                    "vllm:spec_decode_num_accepted_tokens"):
        assert types[counter] == "counter", counter
    assert types["vllm:time_to_first_token_seconds"] == "histogram"
    scrape = parse(text)
    assert scrape.total("vllm:request_success_total", finished_reason="stop") == 1
    # Every reason vLLM 0.32 exports, at 0 until it happens.
    assert {s.labels["finished_reason"] for s in scrape.select("vllm:request_success_total")} == {
        "stop", "length", "abort", "error", "repetition"}
    assert next(scrape.select("vllm:prompt_tokens_total")).labels == {
        "engine": "0", "model_name": "m"}


def test_requests_beyond_max_num_seqs_wait_and_running_ones_hold_kv_cache() -> None:
    with start_in_thread(["m", "--host", "127.0.0.1", "--port", "0", "--max-num-seqs", "1"],
                         env={**FAST, "VLLM_SIM_KV_CACHE_TOKENS": "1024"}) as sim:
        threads = [threading.Thread(target=chat, args=(sim.url, SLOW, True)) for _ in range(3)]
        for thread in threads:
            thread.start()
        seen = set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (1.0, 2.0) not in seen:
            scrape = parse(httpx.get(sim.url + "/metrics").text)
            running = scrape.total("vllm:num_requests_running")
            waiting = scrape.total("vllm:num_requests_waiting")
            seen.add((running, waiting))
            if running:
                assert (scrape.total("vllm:kv_cache_usage_perc") or 0) > 0
        for thread in threads:
            thread.join()
        assert (1.0, 2.0) in seen
        scrape = parse(httpx.get(sim.url + "/metrics").text)
    assert scrape.total("vllm:num_requests_running") == 0
    assert scrape.total("vllm:kv_cache_usage_perc") == 0
    # The queued requests waited for the first: their TTFT is at least its run time.
    assert scrape.total("vllm:time_to_first_token_seconds_sum") > 1.0


def test_prefix_cache_hits_full_blocks_of_a_repeated_prefix() -> None:
    cache = PrefixCache(capacity_blocks=100)
    prompt = b"a" * 64 * 5 + b"tail"  # 5 full blocks of 16 tokens, 81 tokens
    assert cache.lookup_and_fill(prompt, 81) == 0
    assert cache.lookup_and_fill(prompt, 81) == 80
    assert cache.lookup_and_fill(b"a" * 64 * 5, 80) == 64  # the last token is computed
    assert cache.lookup_and_fill(b"b" + prompt[1:], 81) == 0  # chained: a changed first block
    small = PrefixCache(capacity_blocks=2)
    small.lookup_and_fill(prompt, 81)
    assert small.lookup_and_fill(prompt, 81) == 0  # evicted


def test_prefix_cache_counts_the_blocks_a_prompt_adds() -> None:
    """vLLM's created_cache_tokens: the full blocks a prompt put into the cache."""
    cache = PrefixCache(capacity_blocks=100)
    prompt = b"a" * 64 * 5 + b"tail"
    assert cache.lookup_fill(prompt, 81) == (0, 80)
    assert cache.lookup_fill(prompt, 81) == (80, 0)
    assert cache.lookup_fill(prompt + b"b" * 64, 97) == (80, 16)


def test_spec_decode_accepts_two_of_three_drafts() -> None:
    assert SpecDecode.of(30, 3) == SpecDecode(drafts=10, draft_tokens=30, accepted=20)
    assert SpecDecode.of(0, 3) == SpecDecode(0, 0, 0)
    assert SpecDecode.of(1, 3) == SpecDecode(1, 3, 0)
