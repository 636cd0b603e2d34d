"""The smoke/bench wire clients: SSE parsing and folding streams into results (pure parts)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_stack.smoke.wire import (
    AnthropicStream,
    CallResult,
    anthropic_call,
    openai_stream_call,
    sse_events,
)


def test_sse_events_pairs_names_with_data_and_joins_multiline_data() -> None:
    lines = [
        "event: ping", "data: {}", "",
        ": a comment", "data: {\"a\":", "data: 1}", "",
        "event: message_stop", "data: {\"type\":\"message_stop\"}",
    ]  # fmt: skip
    assert list(sse_events(iter(lines))) == [
        ("ping", "{}"),
        ("message", "{\"a\":\n1}"),
        ("message_stop", "{\"type\":\"message_stop\"}"),
    ]


def _events(*blocks: tuple[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """A well-formed Anthropic event sequence for the given (block type, deltas) list."""
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"message": {"usage": {"input_tokens": 12, "output_tokens": 0}}})
    ]
    for index, (kind, deltas) in enumerate(blocks):
        start: dict[str, Any] = {"type": kind}
        if kind == "tool_use":
            start.update(id=f"toolu_{index}", name="Bash", input={})
        events.append(("content_block_start", {"index": index, "content_block": start}))
        events += [("content_block_delta", {"index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"index": index}))
    events.append(("message_delta", {"delta": {"stop_reason": "tool_use"},
                                     "usage": {"output_tokens": 7}}))
    events.append(("message_stop", {}))
    return events


def _fold(events: list[tuple[str, dict[str, Any]]]) -> CallResult:
    result = CallResult()
    folder = AnthropicStream(result)
    for name, data in events:
        folder.feed(name, data)
    folder.finish()
    return result


def test_stream_folds_thinking_text_and_tool_input() -> None:
    result = _fold(
        _events(
            ("thinking", [{"type": "thinking_delta", "thinking": "hm"},
                          {"type": "signature_delta", "signature": "sig"}]),
            ("text", [{"type": "text_delta", "text": "Run"}, {"type": "text_delta", "text": "!"}]),
            ("tool_use", [{"type": "input_json_delta", "partial_json": "{\"command\": "},
                          {"type": "input_json_delta", "partial_json": "\"ls\"}"}]),
        )
    )
    assert result.thinking == "hm"
    assert result.text == "Run!"
    assert result.tool_calls == [{"id": "toolu_2", "name": "Bash", "input": {"command": "ls"}}]
    assert result.content[0] == {"type": "thinking", "thinking": "hm", "signature": "sig"}
    assert (result.input_tokens, result.output_tokens, result.stop_reason) == (12, 7, "tool_use")
    assert result.token_deltas == 5  # the signature is not a token
    assert result.first_token_at is not None and result.last_token_at is not None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda ev: [e for e in ev if e[0] != "content_block_stop"], "still open"),
        (lambda ev: [e for e in ev if e[0] != "message_stop"], "without message_stop"),
        (lambda ev: [e for e in ev if e[0] != "content_block_start"], "not open"),
        (lambda ev: ev[:2] + ev[1:], "started twice"),
        (lambda ev: ev[:2] + [("error", {"error": {"type": "overloaded_error",
                                                    "message": "busy"}})], "overloaded_error"),
    ],
)
def test_malformed_streams_are_reported(mutate: Any, message: str) -> None:
    events = mutate(_events(("text", [{"type": "text_delta", "text": "x"}])))
    with pytest.raises(ValueError, match=message):
        _fold(events)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=6))
def test_tool_input_split_anywhere_reassembles(pieces: list[str]) -> None:
    raw = json.dumps({"command": "".join(pieces)})
    cut = [raw[i : i + 3] for i in range(0, len(raw), 3)]
    result = _fold(
        _events(("tool_use", [{"type": "input_json_delta", "partial_json": c} for c in cut]))
    )
    assert result.tool_calls[0]["input"] == {"command": "".join(pieces)}


def _sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events).encode()


def test_anthropic_call_sends_version_and_token_and_reads_the_stream() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = _sse(_events(("text", [{"type": "text_delta", "text": "204"}])))
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        result = anthropic_call(client, "http://proxy", "tok", {"model": "m", "stream": True})
    assert result.ok and result.text == "204" and result.status == 200
    assert seen[0].url == "http://proxy/v1/messages"
    assert seen[0].headers["anthropic-version"] == "2023-06-01"
    assert seen[0].headers["x-api-key"] == "tok"
    assert result.ttft_ms is not None and 0 <= result.ttft_ms <= result.latency_ms


def test_error_bodies_become_the_servers_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            529, json={"type": "error", "error": {"type": "overloaded_error", "message": "down"}}
        )

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        result = anthropic_call(client, "http://proxy", None, {"stream": True})
    assert result.error == "HTTP 529 overloaded_error: down"


def test_connection_refused_is_a_result_not_an_exception() -> None:
    with httpx.Client(timeout=2) as client:
        result = openai_stream_call(client, "http://127.0.0.1:9/v1", None, {"model": "m"})
    assert result.error is not None and result.error.startswith(
        "cannot connect to http://127.0.0.1:9/v1/chat/completions"
    )


def test_openai_stream_folds_reasoning_content_tool_calls_and_usage() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"reasoning": "think"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c1", "type": "function",
             "function": {"name": "Bash", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "{\"command\": \"ls\"}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 9}},
    ]  # fmt: skip
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, content=body.encode())

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        result = openai_stream_call(client, "http://vllm/v1", "key", {"model": "m"})
    assert sent[0]["stream"] is True and sent[0]["stream_options"] == {"include_usage": True}
    assert result.ok, result.error
    assert result.thinking == "think" and result.text == ""
    assert result.tool_calls == [{"id": "c1", "name": "Bash", "input": {"command": "ls"}}]
    assert (result.stop_reason, result.input_tokens, result.output_tokens) == ("tool_calls", 30, 9)
    assert result.token_deltas == 2


def test_openai_stream_without_done_is_an_error() -> None:
    body = b'data: {"choices": [{"index": 0, "delta": {"content": "2"}}]}\n\n'
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=body))
    with httpx.Client(transport=transport) as c:
        result = openai_stream_call(c, "http://vllm/v1", None, {"model": "m"})
    assert result.error == "stream ended without [DONE]"


def test_decode_rate_counts_tokens_after_the_first() -> None:
    result = CallResult(started=0.0, first_token_at=1.0, last_token_at=3.0, output_tokens=11)
    assert result.decode_tokens_per_s() == 5.0
    single = CallResult(first_token_at=1.0, last_token_at=1.0, output_tokens=1)
    assert single.decode_tokens_per_s() is None


def test_a_refused_connection_is_said_in_words() -> None:
    """Was `cannot connect to …: [Errno 111] Connection refused` with the library's text."""
    import socket

    from spark_stack.smoke.wire import openai_stream_call

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with httpx.Client(timeout=5) as client:
        call = openai_stream_call(client, f"http://127.0.0.1:{port}/v1", None,
                                  {"model": "m", "messages": []})
    assert call.error == f"cannot connect to http://127.0.0.1:{port}/v1/chat/completions: " \
        "connection refused"
