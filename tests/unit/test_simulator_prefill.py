"""The simulator's prefill cost (``--sim-prefill-ms-per-1k-tokens``): time to first token grows
with the prompt tokens its prefix cache did not serve, so a repeated prompt answers sooner than a
cold one, and with the default 0 nothing waits."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spark_stack.simulator import (
    UsageError,
    build_config,
    load_spec,
    parse_serve_args,
    start_in_thread,
)
from spark_stack.simulator.generation import prefill_seconds

MODEL = "Qwen/Qwen3-0.6B"
FAST = {"VLLM_SIM_STARTUP_SECONDS": "0"}
MS_PER_1K = 200.0
FLAGS_FILE = (Path(__file__).resolve().parents[2] / "spark_stack" / "vllm" / "data"
              / "vllm-flags-0.33.0.json")


def _argv(*flags: str) -> list[str]:
    return [MODEL, "--host", "127.0.0.1", "--port", "0", "--enable-prompt-tokens-details",
            *flags]


def _body(words: int, tag: str = "") -> dict[str, Any]:
    text = " ".join(f"{tag}word{i}" for i in range(words))
    return {"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": text},
                         {"role": "user", "content": "hello"}]}


def _timed(client: httpx.Client, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """(seconds to the first streamed chunk, the final usage)."""
    start = time.monotonic()
    first: float | None = None
    chunks: list[dict[str, Any]] = []
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                first = time.monotonic() - start if first is None else first
                chunks.append(json.loads(line[6:]))
    assert first is not None
    usage: dict[str, Any] = chunks[-1]["usage"]
    return first, usage


@given(st.integers(0, 500_000), st.integers(0, 500_000), st.floats(0, 10_000))
def test_prefill_is_the_uncached_tokens_times_the_cost(prompt: int, cached: int,
                                                       ms: float) -> None:
    seconds = prefill_seconds(prompt, cached, ms)
    assert seconds == pytest.approx(max(0, prompt - cached) * ms / 1e6)
    assert prefill_seconds(prompt, cached, 0.0) == 0


def test_the_cost_comes_from_the_flag_or_the_environment_and_defaults_to_zero() -> None:
    assert build_config(parse_serve_args([MODEL]), {}).prefill_ms_per_1k == 0
    flag = parse_serve_args([MODEL, "--sim-prefill-ms-per-1k-tokens", "150"])
    assert build_config(flag, {}).prefill_ms_per_1k == 150
    env = {"VLLM_SIM_PREFILL_MS_PER_1K": "75.5"}
    assert build_config(parse_serve_args([MODEL]), env).prefill_ms_per_1k == 75.5
    # A simulator option: accepted whatever vLLM's flag file says, and not one of the
    # "non-default args" vLLM logs.
    spec = load_spec(FLAGS_FILE)
    strict = build_config(parse_serve_args([MODEL, "--sim-prefill-ms-per-1k-tokens", "50"], spec),
                          {})
    assert strict.prefill_ms_per_1k == 50 and strict.non_default_args == {"model_tag": MODEL}
    with pytest.raises(UsageError, match="invalid float value: 'lots'"):
        build_config(parse_serve_args([MODEL, "--sim-prefill-ms-per-1k-tokens", "lots"]), {})


def test_a_repeated_prompt_skips_the_prefill_of_its_cached_prefix() -> None:
    argv = _argv("--sim-prefill-ms-per-1k-tokens", str(MS_PER_1K))
    with start_in_thread(argv, env=FAST) as sim, \
            httpx.Client(base_url=sim.url, timeout=30) as client:
        body = _body(800)
        cold, cold_usage = _timed(client, body)
        warm, warm_usage = _timed(client, body)
    prompt = cold_usage["prompt_tokens"]
    assert prompt > 800 and cold_usage["prompt_tokens_details"]["cached_tokens"] == 0
    cached = warm_usage["prompt_tokens_details"]["cached_tokens"]
    assert cached > prompt - 16
    expected_cold = prompt * MS_PER_1K / 1e6
    saved = cached * MS_PER_1K / 1e6
    assert cold >= expected_cold
    assert warm < cold - saved * 0.8
    assert cold - warm == pytest.approx(saved, abs=0.25)


def test_cold_prompts_are_prefilled_one_at_a_time() -> None:
    argv = _argv("--sim-prefill-ms-per-1k-tokens", str(MS_PER_1K))
    firsts: list[float] = []
    with start_in_thread(argv, env=FAST) as sim:
        def one(tag: str) -> None:
            with httpx.Client(base_url=sim.url, timeout=30) as client:
                firsts.append(_timed(client, _body(800, tag))[0])
        threads = [threading.Thread(target=one, args=(tag,)) for tag in "ab"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # Each prompt alone takes ~0.33 s to prefill; the second waits for the first.
    one_prefill = 800 * MS_PER_1K / 1e6
    assert max(firsts) >= 2 * one_prefill


def test_without_a_cost_a_cold_prompt_does_not_wait() -> None:
    with start_in_thread(_argv(), env=FAST) as sim, \
            httpx.Client(base_url=sim.url, timeout=30) as client:
        cold, usage = _timed(client, _body(800))
    assert usage["prompt_tokens"] > 800
    # At the cost above it would have waited ~0.33 s.
    assert cold < usage["prompt_tokens"] * MS_PER_1K / 1e6
