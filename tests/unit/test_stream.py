"""The streaming state machine, chunk by chunk, by exact equality."""

from __future__ import annotations

from typing import Any

import orjson

from spark_stack.proxy.stream import StreamTranslator, encode_events, map_stop_reason


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          stop_reason: Any = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    if stop_reason is not None:
        choice["stop_reason"] = stop_reason
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [choice]}


USAGE = {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 7}}


def run(chunks: list[dict[str, Any]], done: bool = True) -> list[dict[str, Any]]:
    translator = StreamTranslator("claude-x", "msg_1", 10)
    events = translator.start()
    for item in chunks:
        events += translator.feed(item)
    if done:
        events += translator.finish()
    return events


def tool(index: int, call_id: str | None = None, name: str | None = None,
         args: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index}
    if call_id is not None:
        call["id"] = call_id
        call["type"] = "function"
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if args is not None:
        function["arguments"] = args
    call["function"] = function
    return call


START = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 0},
        },
    },
    {"type": "ping"},
]


def end(stop: str, output: int = 7, sequence: str | None = None) -> list[dict[str, Any]]:
    return [
        {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": sequence},
         "usage": {"output_tokens": output, "input_tokens": 12}},
        {"type": "message_stop"},
    ]


def text_delta(index: int, text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index,
            "delta": {"type": "text_delta", "text": text}}


def test_text_stream_keeps_the_first_delta() -> None:
    events = run([
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        USAGE,
    ])
    assert events == START + [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        text_delta(0, "Hel"),
        text_delta(0, "lo"),
        {"type": "content_block_stop", "index": 0},
    ] + end("end_turn")


def test_reasoning_then_text_with_signature() -> None:
    events = run([
        chunk({"role": "assistant", "reasoning": "think"}),
        chunk({"reasoning_content": "ing"}),
        chunk({"content": "204"}),
        chunk({}, "stop"),
        USAGE,
    ])
    signature = events[5]["delta"]["signature"]
    assert len(signature) == 32
    assert events == START + [
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "think"}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "ing"}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "signature_delta", "signature": signature}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        text_delta(1, "204"),
        {"type": "content_block_stop", "index": 1},
    ] + end("end_turn")


def test_reasoning_field_wins_over_reasoning_content() -> None:
    events = run([chunk({"reasoning": "new", "reasoning_content": "old"}), chunk({}, "stop")])
    assert events[3]["delta"] == {"type": "thinking_delta", "thinking": "new"}


def test_tool_call_header_then_fragments_with_resent_ids() -> None:
    events = run([
        chunk({"content": "Let me run it."}),
        chunk({"tool_calls": [tool(0, "call_a", "Bash", "")]}),
        chunk({"tool_calls": [tool(0, "call_a", None, "{")]}),
        chunk({"tool_calls": [tool(0, "call_a", None, '"command": "ls -la"')]}),
        chunk({"tool_calls": [tool(0, "call_a", None, "}")]}),
        chunk({}, "tool_calls"),
        USAGE,
    ])
    assert events == START + [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        text_delta(0, "Let me run it."),
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "call_a", "name": "Bash", "input": {}}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"command": "ls -la"}'}},
        {"type": "content_block_stop", "index": 1},
    ] + end("tool_use")


def test_parallel_calls_several_indices_in_one_chunk() -> None:
    events = run([
        chunk({"tool_calls": [tool(0, "c0", "Read", '{"path": "a"'),
                              tool(1, "c1", "Read", '{"path": ')]}),
        chunk({"tool_calls": [tool(0, None, None, "}"), tool(1, None, None, '"b"}')]}),
        chunk({}, "tool_calls"),
        USAGE,
    ])
    assert events == START + [
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "c0", "name": "Read", "input": {}}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "input_json_delta", "partial_json": '{"path": "a"}'}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "c1", "name": "Read", "input": {}}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"path": "b"}'}},
        {"type": "content_block_stop", "index": 1},
    ] + end("tool_use")


def test_call_without_arguments_gets_empty_input() -> None:
    events = run([chunk({"tool_calls": [tool(0, "c0", "Now")]}), chunk({}, "tool_calls")])
    assert events[2:4] == [
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "c0", "name": "Now", "input": {}}},
        {"type": "content_block_stop", "index": 0},
    ]


def test_python_literal_arguments_are_repaired() -> None:
    events = run([chunk({"tool_calls": [tool(0, "c0", "Bash", "{'command': 'ls', 'x': True}")]}),
                  chunk({}, "tool_calls")])
    assert events[3]["delta"] == {"type": "input_json_delta",
                                  "partial_json": '{"command":"ls","x":true}'}


def test_unrepairable_arguments_end_in_a_clean_error() -> None:
    events = run([chunk({"tool_calls": [tool(0, "c0", "Bash", '{"command": "rm -rf /tm')]}),
                  chunk({}, "tool_calls"), USAGE])
    assert events[-1] == {"type": "error", "error": {
        "type": "api_error",
        "message": "the model produced invalid JSON arguments for tool 'Bash'"}}
    assert [e["type"] for e in events] == ["message_start", "ping", "content_block_start", "error"]


def test_stop_sequence_reported_with_the_matched_string() -> None:
    events = run([chunk({"content": "a"}), chunk({}, "stop", stop_reason="###"), USAGE])
    assert events[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "###"}


def test_stop_token_id_is_an_ordinary_end_turn() -> None:
    events = run([chunk({"content": "a"}), chunk({}, "stop", stop_reason=151645), USAGE])
    assert events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


def test_length_is_max_tokens_and_usage_fallback_counts_deltas() -> None:
    events = run([chunk({"content": "a"}), chunk({"content": "b"}), chunk({}, "length")])
    assert events[-2] == {"type": "message_delta",
                          "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                          "usage": {"output_tokens": 2}}


def test_upstream_error_chunk_becomes_error_event() -> None:
    events = run([chunk({"content": "a"}), {"error": {"message": "engine dead", "code": 500}}])
    assert events[-1] == {"type": "error",
                          "error": {"type": "api_error", "message": "upstream error: engine dead"}}
    assert events[-2] == text_delta(0, "a")


def test_fail_then_nothing_more() -> None:
    translator = StreamTranslator("m", "msg_1", 1)
    translator.start()
    assert translator.fail("api_error", "gone") == [
        {"type": "error", "error": {"type": "api_error", "message": "gone"}}]
    assert translator.feed(chunk({"content": "late"})) == []
    assert translator.finish() == []


def test_map_stop_reason() -> None:
    assert map_stop_reason("tool_calls", None, False) == ("end_turn", None)
    assert map_stop_reason("stop", None, True) == ("tool_use", None)
    assert map_stop_reason("content_filter", None, False) == ("refusal", None)


def test_encode_events_is_anthropic_sse() -> None:
    assert encode_events([{"type": "ping"}, {"type": "message_stop"}]) == (
        b'event: ping\ndata: {"type":"ping"}\n\nevent: message_stop\ndata: '
        + orjson.dumps({"type": "message_stop"}) + b"\n\n"
    )
