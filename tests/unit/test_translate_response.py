"""Non-streaming completion → Anthropic message, by exact equality."""

from __future__ import annotations

from typing import Any

import pytest

from spark_stack.proxy.errors import ProxyError
from spark_stack.proxy.translate_response import translate_response


def completion(
    message: dict[str, Any], finish: str = "stop", stop_reason: Any = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish,
                     "stop_reason": stop_reason}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    }


def test_reasoning_text_and_tool_calls() -> None:
    out = translate_response(
        completion(
            {
                "role": "assistant",
                "reasoning": "hmm",
                "content": "Running.",
                "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "Bash", "arguments": '{"command": "ls"}'}},
                    {"id": "", "type": "function", "function": {"name": "Now", "arguments": ""}},
                ],
            },
            finish="tool_calls",
        ),
        "claude-x",
        "msg_abcdefabcdef",
        3,
    ).message
    signature = out["content"][0]["signature"]
    assert out == {
        "id": "msg_abcdefabcdef",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": signature},
            {"type": "text", "text": "Running."},
            {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}},
            {"type": "tool_use", "id": "toolu_abcdefabcdef01", "name": "Now", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": 5},
    }


def test_stop_sequence() -> None:
    out = translate_response(
        completion({"content": "a"}, stop_reason="END"), "m", "msg_1", 1).message
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", "END")
    assert out["content"] == [{"type": "text", "text": "a"}]


def test_length() -> None:
    out = translate_response(
        completion({"content": "a"}, finish="length"), "m", "msg_1", 1).message
    assert out["stop_reason"] == "max_tokens"


@pytest.mark.parametrize(
    "body",
    [None, {}, {"choices": []}, {"choices": [{"message": 1}]},
     completion({"tool_calls": [{"function": {"name": "x", "arguments": "{oops"}}]}),
     completion({"tool_calls": [{"function": {"arguments": "{}"}}]})],
)
def test_malformed_is_502_api_error(body: Any) -> None:
    with pytest.raises(ProxyError) as caught:
        translate_response(body, "m", "msg_1", 1)
    assert (caught.value.status, caught.value.error_type) == (502, "api_error")
