"""Conformance: the official ``anthropic`` SDK → spark-stack's proxy (a real background
process) → the vLLM simulator, over real loopback sockets."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from spark_stack.errors import ProxyStartError
from spark_stack.proxy.config import ProxyConfig, Route, Upstream
from spark_stack.proxy.daemon import proxy_status, start_background, stop_background
from spark_stack.simulator import start_in_thread
from tests.claude_code_body import claude_code_body
from tests.helpers import free_port

MAX_LEN = 32768
SERVED = "qwen3.6-sim"
TOKEN = "proxy-test-token"


@pytest.fixture(scope="module")
def sim() -> Iterator[Any]:
    argv = ["Qwen/Qwen3.6-35B-A3B", "--port", "0", "--served-model-name", SERVED,
            "--max-model-len", str(MAX_LEN), "--reasoning-parser", "qwen3",
            "--tool-call-parser", "qwen3_coder", "--enable-auto-tool-choice"]
    with start_in_thread(argv, env={"VLLM_SIM_STARTUP_SECONDS": "0"}) as handle:
        yield handle


@pytest.fixture(scope="module")
def proxy(sim: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    state = tmp_path_factory.mktemp("proxy-state")
    base = sim.url.rstrip("/")
    config = ProxyConfig(
        port=free_port(),
        token=TOKEN,
        upstreams={
            "qwen": Upstream("qwen", f"{base}/v1", SERVED, max_model_len=MAX_LEN),
            # Nothing listens on port 9: the "backend down" upstream.
            "down": Upstream("down", "http://127.0.0.1:9/v1", "down-model"),
            # A backend without /tokenize (that path answers 404 under this prefix).
            "notok": Upstream("notok", f"{base}/elsewhere/v1", "notok-model"),
        },
        routes=[Route("claude-*", "qwen"), Route("offline-*", "down"), Route("notok-*", "notok")],
    ).with_own_names()
    start_background(config, state)
    try:
        yield f"http://127.0.0.1:{config.port}", state
    finally:
        stop_background(state)


@pytest.fixture
def client(proxy: tuple[str, Path]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy[0], api_key=TOKEN, max_retries=0, timeout=20)


def ask(text: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude-local", "max_tokens": 512,
                            "messages": [{"role": "user", "content": text}]}
    body.update(extra)
    return body


BASH = {"name": "Bash", "description": "Run a shell command",
        "input_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema",
                         "type": "object", "additionalProperties": False,
                         "properties": {"command": {"type": "string"},
                                        "description": {"type": "string"}},
                         "required": ["command"]}}
READ = {"name": "Read", "description": "Read a file",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}},
                         "required": ["path"]}}


def script(**directive: Any) -> str:
    return "SIM_SCRIPT:" + orjson.dumps(directive).decode()


def test_non_streaming_text_with_thinking(client: anthropic.Anthropic) -> None:
    message = client.messages.create(**ask("What is 12*17?", thinking={"type": "adaptive"}))
    kinds = [block.type for block in message.content]
    assert kinds == ["thinking", "text"]
    assert message.content[1].text == "204"  # type: ignore[union-attr]
    assert message.content[0].signature  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.model == "claude-local"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_streaming_text_and_reasoning(client: anthropic.Anthropic) -> None:
    with client.messages.stream(**ask("What is 12*17?", thinking={"type": "adaptive"})) as s:
        events = [event.type for event in s]
        message = s.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == "204"  # type: ignore[union-attr]
    assert "12*17" in message.content[0].thinking  # type: ignore[union-attr]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert message.usage.output_tokens > 0


def test_thinking_off_gives_no_thinking_block(client: anthropic.Anthropic) -> None:
    message = client.messages.create(**ask("What is 12*17?"))
    assert [b.type for b in message.content] == ["text"]


@pytest.mark.parametrize("stream", [False, True])
def test_single_tool_call(client: anthropic.Anthropic, stream: bool) -> None:
    body = ask("run: ls -la", tools=[BASH])
    if stream:
        with client.messages.stream(**body) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**body)
    calls = [b for b in message.content if b.type == "tool_use"]
    assert message.stop_reason == "tool_use"
    assert len(calls) == 1 and calls[0].name == "Bash"
    assert calls[0].input["command"] == "ls -la"  # type: ignore[index]


@pytest.mark.parametrize("quirk", [{}, {"resend_id": True}, {"multi_index_chunk": True}])
def test_parallel_tool_calls(client: anthropic.Anthropic, quirk: dict[str, Any]) -> None:
    directive = script(tool_calls=[{"name": "Read", "arguments": {"path": "a.txt"}},
                                   {"name": "Read", "arguments": {"path": "b.txt"}},
                                   {"name": "Bash", "arguments": {"command": "wc -l a.txt"}}],
                       **quirk)
    with client.messages.stream(**ask(directive, tools=[BASH, READ])) as s:
        message = s.get_final_message()
    calls = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert calls == [("Read", {"path": "a.txt"}), ("Read", {"path": "b.txt"}),
                     ("Bash", {"command": "wc -l a.txt"})]
    ids = [b.id for b in message.content if b.type == "tool_use"]
    assert len(set(ids)) == 3


def test_tool_result_round_trip(client: anthropic.Anthropic) -> None:
    first = client.messages.create(**ask("run: echo hello", tools=[BASH]))
    call = next(b for b in first.content if b.type == "tool_use")
    second = client.messages.create(
        model="claude-local",
        max_tokens=256,
        tools=[BASH],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "run: echo hello"},
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "hello",
                 "is_error": False}]},
        ],
    )
    assert second.content[-1].text == "The command printed: hello"  # type: ignore[union-attr]
    assert second.stop_reason == "end_turn"


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequence(client: anthropic.Anthropic, stream: bool) -> None:
    body = ask(script(content="alpha beta STOP gamma"), stop_sequences=["STOP"])
    if stream:
        with client.messages.stream(**body) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(**body)
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "STOP"
    assert message.content[-1].text == "alpha beta "  # type: ignore[union-attr]


def test_count_tokens_is_exact_and_matches_the_backend(
    client: anthropic.Anthropic, sim: Any
) -> None:
    body = ask("What is 12*17?", tools=[BASH], system="Be brief.")
    counted = client.messages.count_tokens(
        model=body["model"], messages=body["messages"], tools=body["tools"], system=body["system"]
    )
    direct = httpx.post(
        sim.url.rstrip("/") + "/tokenize",
        json={"model": SERVED, "add_generation_prompt": True,
              "chat_template_kwargs": {"enable_thinking": False},
              "messages": [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "What is 12*17?"}],
              "tools": [{"type": "function", "function": {
                  "name": "Bash", "description": "Run a shell command",
                  "parameters": {k: v for k, v in BASH["input_schema"].items()  # type: ignore[union-attr]
                                 if k != "$schema"}}}]},
    ).json()
    assert counted.input_tokens == direct["count"] > 0
    again = client.messages.count_tokens(  # answered from the proxy's cache
        model=body["model"], messages=body["messages"], tools=body["tools"], system=body["system"]
    )
    assert again.input_tokens == counted.input_tokens


def test_count_tokens_without_tokenizer_is_a_marked_estimate(proxy: tuple[str, Path]) -> None:
    body = {"model": "notok-x", "messages": [{"role": "user", "content": "word " * 400}]}
    response = httpx.post(proxy[0] + "/v1/messages/count_tokens", headers={"x-api-key": TOKEN},
                          json=body)
    assert response.status_code == 200
    assert response.headers["x-spark-stack-token-count"] == "estimate"
    assert response.json()["input_tokens"] >= 400
    unreachable = httpx.post(proxy[0] + "/v1/messages/count_tokens",
                             headers={"x-api-key": TOKEN}, json={**body, "model": "offline-x"})
    assert unreachable.status_code == 529


def test_context_overflow_is_prompt_too_long(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**ask(script(prompt_tokens=100000)))
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert re.fullmatch(r"prompt is too long: \d+ tokens > 32768 maximum", error["message"])


def test_claude_code_sized_max_tokens_is_clamped(client: anthropic.Anthropic) -> None:
    message = client.messages.create(**ask("What is 12*17?", max_tokens=64000))
    assert message.content[-1].text == "204"  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [503, 529])
def test_backend_overloaded_is_529(client: anthropic.Anthropic, status: int) -> None:
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(**ask(script(http_status=status, error_message="busy")))
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_backend_unreachable_is_529(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(**ask("hi", model="offline-model"))
    assert caught.value.status_code == 529
    assert "unreachable" in caught.value.body["error"]["message"]  # type: ignore[index]


def test_other_backend_error_keeps_its_message(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(**ask(script(http_status=500, error_message="kaput")))
    assert caught.value.body["error"] == {"type": "api_error", "message": "kaput"}  # type: ignore[index]


def test_unknown_model_is_404_listing_routes(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(**ask("hi", model="gpt-4o"))
    message = caught.value.body["error"]["message"]  # type: ignore[index]
    assert "'gpt-4o'" in message and "claude-*" in message and SERVED in message


def test_malformed_bodies_name_the_field(proxy: tuple[str, Path]) -> None:
    headers = {"x-api-key": TOKEN}
    bad_json = httpx.post(proxy[0] + "/v1/messages", content=b"{nope", headers=headers)
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["message"].startswith("request body is not valid JSON")
    bad_field = httpx.post(proxy[0] + "/v1/messages?beta=true", headers=headers,
                           json=ask("hi", max_tokens="lots"))
    assert bad_field.status_code == 400
    assert bad_field.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: required, an integer ≥ 1"}}


def test_auth_required(proxy: tuple[str, Path]) -> None:
    url = proxy[0]
    assert httpx.post(url + "/v1/messages", json=ask("hi")).status_code == 401
    bearer = httpx.post(url + "/v1/messages", json=ask("What is 12*17?"),
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200
    assert httpx.head(url + "/").status_code == 200  # Claude Code's probe carries no token


def test_models_health_metrics(proxy: tuple[str, Path], client: anthropic.Anthropic) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids == sorted(["down", "down-model", "notok", "notok-model", "qwen", SERVED])
    headers = {"x-api-key": TOKEN}
    health = httpx.get(proxy[0] + "/health", headers=headers)
    assert health.status_code == 503  # the "down" upstream is down
    report = health.json()
    assert report["upstreams"]["qwen"]["ok"] is True
    assert report["upstreams"]["down"]["ok"] is False
    metrics = httpx.get(proxy[0] + "/metrics", headers=headers).text
    assert re.search(r'spark_proxy_requests_total\{route="[^"]+",upstream="qwen"\} [1-9]', metrics)
    assert re.search(r'spark_proxy_ttft_seconds_bucket\{route="[^"]+",upstream="qwen",le="\+Inf"\}',
                     metrics)


def test_backend_dies_mid_stream_then_proxy_keeps_serving(client: anthropic.Anthropic) -> None:
    directive = script(content="one two three four five six seven eight", die_after_chunks=3)
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(**ask(directive)) as s:
            for _ in s:
                pass
    assert "mid-stream" in str(caught.value) or "before the end" in str(caught.value)
    assert client.messages.create(**ask("What is 12*17?")).content[-1].text == "204"  # type: ignore[union-attr]


def sim_cancelled(sim: Any) -> float:
    text = httpx.get(sim.url.rstrip("/") + "/metrics").text
    found = re.search(r"^vllm_sim_cancelled_requests_total (\S+)$", text, re.M)
    assert found
    return float(found.group(1))


def test_client_disconnect_cancels_upstream(proxy: tuple[str, Path], sim: Any) -> None:
    before = sim_cancelled(sim)
    directive = script(content="word " * 200, delay_ms=50)
    with httpx.stream("POST", proxy[0] + "/v1/messages", headers={"x-api-key": TOKEN},
                      json=ask(directive, stream=True)) as response:
        for line in response.iter_lines():
            if "text_delta" in line:
                break
    deadline = time.monotonic() + 5
    while sim_cancelled(sim) <= before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim_cancelled(sim) == before + 1


def test_claude_code_request_body_streams(proxy: tuple[str, Path]) -> None:
    body = claude_code_body()
    assert len(orjson.dumps(body)) > 70_000
    headers = {"x-api-key": TOKEN, "anthropic-version": "2023-06-01",
               "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"}
    with httpx.stream("POST", proxy[0] + "/v1/messages?beta=true", json=body,
                      headers=headers) as response:
        assert response.status_code == 200
        events = [orjson.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: ")]
    kinds = [event["type"] for event in events]
    assert kinds[:2] == ["message_start", "ping"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert [block["type"] for block in starts] == ["thinking", "tool_use"]
    assert starts[1]["name"] == "Bash"


def test_port_taken_is_a_clear_error(proxy: tuple[str, Path], tmp_path: Path) -> None:
    port = int(proxy[0].rsplit(":", 1)[1])
    with pytest.raises(ProxyStartError, match=f"port {port} on 127.0.0.1 is already in use"):
        start_background(ProxyConfig(port=port), tmp_path)


def test_status_and_files(proxy: tuple[str, Path]) -> None:
    status = proxy_status(proxy[1])
    assert status.running and status.healthy and status.url == proxy[0]
    assert not status.upstreams_healthy  # the "down" upstream
    assert (proxy[1] / "proxy.json").stat().st_mode & 0o777 == 0o600
    log = (proxy[1] / "proxy.log").read_text()
    assert "upstream=qwen" in log and "What is 12*17?" not in log
    assert TOKEN not in log
