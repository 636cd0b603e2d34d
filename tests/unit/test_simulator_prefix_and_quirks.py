"""The simulator's prefix-cache usage (vLLM's --enable-prompt-tokens-details) and its tool-call
failure injections (VLLM_SIM_QUIRKS leak_markup, wrong_tool)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from spark_stack.simulator import start_in_thread
from spark_stack.simulator.metrics import BLOCK_TOKENS

MODEL = "Qwen/Qwen3.6-35B-A3B"
FLAGS = ["--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_coder",
         "--enable-auto-tool-choice"]
FAST = {"VLLM_SIM_STARTUP_SECONDS": "0"}
TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("Bash", "Read")
]


def _argv(*flags: str) -> list[str]:
    return [MODEL, "--host", "127.0.0.1", "--port", "0", *FLAGS, *flags]


def _final_usage(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=stream) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: {")]
    usage: dict[str, Any] = chunks[-1]["usage"]
    return usage


def test_cached_tokens_are_the_prefix_caches_hits_when_asked() -> None:
    system = {"role": "system", "content": "You are a careful assistant. " * 40}
    first = {"model": MODEL, "messages": [system, {"role": "user", "content": "hello there"}]}
    longer = {"model": MODEL, "messages": [
        system, {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "again"}]}
    with start_in_thread(_argv("--enable-prompt-tokens-details"), env=FAST) as sim, \
            httpx.Client(base_url=sim.url, timeout=5) as client:
        cold = _final_usage(client, first)
        # Nothing cached yet: vLLM 0.32 says 0, and counts the full blocks it added.
        assert cold["prompt_tokens_details"] == {
            "cached_tokens": 0,
            "created_cache_tokens": cold["prompt_tokens"] // BLOCK_TOKENS * BLOCK_TOKENS}
        warm = _final_usage(client, longer)
        cached = warm["prompt_tokens_details"]["cached_tokens"]
        # The first prompt's full blocks, less the generation prompt it ended with.
        assert 0 < cached < cold["prompt_tokens"]
        assert cached % BLOCK_TOKENS == 0
        same = client.post("/v1/chat/completions", json=longer).json()["usage"]
        # The same prompt again: every full block but the one holding the last token.
        assert same["prompt_tokens_details"] == {
            "cached_tokens": (same["prompt_tokens"] - 1) // BLOCK_TOKENS * BLOCK_TOKENS,
            "created_cache_tokens": 0, "multimodal_tokens": None}
        hits = [line for line in client.get("/metrics").text.splitlines()
                if line.startswith("vllm:prefix_cache_hits_total")]
        assert hits and float(hits[0].split()[-1]) == cached + same[
            "prompt_tokens_details"]["cached_tokens"]


def test_without_the_flag_usage_has_no_details() -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello " * 100}]}
    with start_in_thread(_argv(), env=FAST) as sim, \
            httpx.Client(base_url=sim.url, timeout=5) as client:
        _final_usage(client, body)
        assert "prompt_tokens_details" not in _final_usage(client, body)
        usage = client.post("/v1/chat/completions", json=body).json()["usage"]
        assert usage["prompt_tokens_details"] is None


def _call(client: httpx.Client, text: str) -> dict[str, Any]:
    body = {"model": MODEL, "tools": TOOLS, "messages": [{"role": "user", "content": text}]}
    choice: dict[str, Any] = client.post("/v1/chat/completions", json=body).json()["choices"][0]
    return choice


def test_call_the_named_tool_with_given_arguments() -> None:
    with start_in_thread(_argv(), env=FAST) as sim, \
            httpx.Client(base_url=sim.url, timeout=5) as client:
        choice = _call(client, 'Call the Read tool with the arguments {"file_path": "/etc/x"}')
    assert choice["finish_reason"] == "tool_calls"
    function = choice["message"]["tool_calls"][0]["function"]
    assert function["name"] == "Read"
    assert json.loads(function["arguments"]) == {"file_path": "/etc/x"}


def test_leak_markup_puts_the_call_in_the_text_and_stops() -> None:
    env = {**FAST, "VLLM_SIM_QUIRKS": "leak_markup"}
    with start_in_thread(_argv(), env=env) as sim, \
            httpx.Client(base_url=sim.url, timeout=5) as client:
        choice = _call(client, "run: echo hi")
    assert choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]
    assert choice["message"]["content"] == (
        "<tool_call>\n<function=Bash>\n<parameter=command>\necho hi\n</parameter>\n"
        "<parameter=description>\nRun the command: echo hi\n</parameter>\n</function>\n"
        "</tool_call>")


def test_wrong_tool_calls_another_offered_tool() -> None:
    env = {**FAST, "VLLM_SIM_QUIRKS": "wrong_tool"}
    with start_in_thread(_argv(), env=env) as sim, \
            httpx.Client(base_url=sim.url, timeout=5) as client:
        choice = _call(client, "run: echo hi")
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "Read"
