"""Prefix caching over a recorded Claude Code session: each turn's upstream prompt extends the
previous one token for token, and the proxy reports to Claude Code exactly what vLLM's (the
simulator's) prefix cache reused — in the stream, in /metrics and in the log line."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from spark_stack.proxy.config import ProxyConfig, Route, Upstream
from spark_stack.proxy.daemon import start_background, stop_background
from spark_stack.proxy.translate_request import translate_request
from spark_stack.simulator import start_in_thread
from spark_stack.smoke.wire import AnthropicStream, CallResult, sse_events
from tests.e2e.conftest import pinned_claude_version
from tests.helpers import free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude_code"
SERVED = "qwen3.6-sim"
MAX_LEN = 262144


def recorded_turns() -> list[dict[str, Any]]:
    folder = FIXTURES / pinned_claude_version()
    paths = sorted(folder.glob("turn*.json"), key=lambda p: int(p.stem[4:]))
    assert len(paths) >= 2
    turns = [orjson.loads(p.read_bytes())["body"] for p in paths]
    for number, body in enumerate(turns):
        # The billing line differs on every real request (the recording scrubbed it).
        body["system"][0]["text"] = body["system"][0]["text"].replace(".000;", f".{number:03x};")
    return turns


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """The proxy's and the simulator's URLs, and the proxy's state dir."""
    argv = ["Qwen/Qwen3.6-35B-A3B", "--port", "0", "--served-model-name", SERVED,
            "--max-model-len", str(MAX_LEN), "--reasoning-parser", "qwen3",
            "--tool-call-parser", "qwen3_coder", "--enable-auto-tool-choice",
            "--enable-prompt-tokens-details"]
    with start_in_thread(argv, env={"VLLM_SIM_STARTUP_SECONDS": "0"}) as sim:
        state = tmp_path_factory.mktemp("prefix-proxy")
        config = ProxyConfig(
            port=free_port(),
            upstreams={"qwen": Upstream("qwen", f"{sim.url.rstrip('/')}/v1", SERVED,
                                        max_model_len=MAX_LEN)},
            routes=[Route("*", "qwen")],
        )
        start_background(config, state)
        try:
            yield f"http://127.0.0.1:{config.port}", sim.url.rstrip("/"), state
        finally:
            stop_background(state)


def prefix_hits(client: httpx.Client, sim: str) -> float:
    for line in client.get(f"{sim}/metrics").text.splitlines():
        if line.startswith("vllm:prefix_cache_hits_total"):
            return float(line.split()[-1])
    raise AssertionError("no vllm:prefix_cache_hits_total")


def upstream_ids(client: httpx.Client, sim: str, body: dict[str, Any]) -> list[int]:
    """The token ids of the prompt the proxy sends upstream for ``body``."""
    upstream = Upstream("qwen", f"{sim}/v1", SERVED, max_model_len=MAX_LEN)
    request = translate_request(copy.deepcopy(body), upstream)
    keys = ("model", "messages", "tools", "chat_template_kwargs")
    tokenize = {key: request[key] for key in keys if key in request}
    ids: list[int] = client.post(f"{sim}/tokenize", json=tokenize).json()["tokens"]
    return ids


def stream(client: httpx.Client, proxy: str, body: dict[str, Any]) -> tuple[CallResult, int]:
    """The answer, and its final ``cache_read_input_tokens``."""
    result = CallResult()
    folder = AnthropicStream(result)
    cached = 0
    with client.stream("POST", f"{proxy}/v1/messages?beta=true", json=body,
                       headers={"anthropic-version": "2023-06-01"}) as response:
        assert response.status_code == 200
        for name, data in sse_events(response.iter_lines()):
            event = orjson.loads(data)
            folder.feed(name, event)
            if name == "message_delta":
                cached = event["usage"].get("cache_read_input_tokens", 0)
                result.input_tokens = event["usage"]["input_tokens"]
    folder.finish()
    return result, cached


def test_each_turn_extends_the_last_and_reuse_is_reported(
    stack: tuple[str, str, Path],
) -> None:
    proxy, sim, state = stack
    turns = recorded_turns()
    with httpx.Client(timeout=30) as client:
        ids = [upstream_ids(client, sim, body) for body in turns]
        for before, after in zip(ids, ids[1:], strict=False):
            # Every token of the previous turn's prompt but its generation prompt
            # ("<|im_start|>assistant\n<think>\n") comes back first, unchanged.
            shared = next((i for i, (a, b) in enumerate(zip(before, after, strict=False))
                           if a != b), min(len(before), len(after)))
            assert shared >= len(before) - 4, (shared, len(before))
        reported = []
        for body in turns:
            hits = prefix_hits(client, sim)
            answer, cached = stream(client, proxy, body)
            reused = prefix_hits(client, sim) - hits
            assert cached == reused
            assert answer.input_tokens is not None
            reported.append((answer.input_tokens + cached, cached))
        assert reported[0][1] == 0  # a cold cache
        assert reported[1][1] > 0.95 * reported[0][0]  # turn 2 reuses nearly all of turn 1
        metrics = client.get(f"{proxy}/metrics").text
    prompt_total = sum(prompt for prompt, _ in reported)
    cached_total = sum(cached for _, cached in reported)
    assert (f'spark_proxy_input_tokens_total{{route="*",upstream="qwen"}} {prompt_total}'
            in metrics)
    assert (f'spark_proxy_cached_input_tokens_total{{route="*",upstream="qwen"}} '
            f"{cached_total}" in metrics)
    log = (state / "proxy.log").read_text()
    for prompt, cached in reported:
        assert f" in={prompt} cached={cached} " in log
