"""Every Anthropic → OpenAI request rule, by exact equality."""

from __future__ import annotations

from typing import Any

import pytest

from spark_stack.proxy.config import Upstream
from spark_stack.proxy.errors import ProxyError
from spark_stack.proxy.translate_request import (
    clamp_max_tokens,
    clean_schema,
    estimate_tokens,
    translate_for_tokenize,
    translate_request,
)

QWEN = Upstream("qwen", "http://127.0.0.1:8000/v1", "qwen3.6", max_model_len=1000)
PLAIN = Upstream("plain", "http://127.0.0.1:8001/v1", "plain-model", thinking="none")


def req(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }
    body.update(extra)
    return body


def test_minimal_request() -> None:
    assert translate_request(req(), QWEN) == {
        "model": "qwen3.6",
        "messages": [{"role": "user", "content": "hi"}],
        "chat_template_kwargs": {"enable_thinking": False},
        "max_tokens": 100,
    }


def test_non_qwen_upstream_gets_no_template_kwargs() -> None:
    out = translate_request(req(thinking={"type": "enabled", "budget_tokens": 2000}), PLAIN)
    assert "chat_template_kwargs" not in out


@pytest.mark.parametrize(
    ("thinking", "enabled"),
    [
        ({"type": "enabled", "budget_tokens": 31999}, True),
        ({"type": "adaptive"}, True),
        ({"type": "disabled"}, False),
        (None, False),
    ],
)
def test_thinking_switch(thinking: Any, enabled: bool) -> None:
    body = req() if thinking is None else req(thinking=thinking)
    assert translate_request(body, QWEN)["chat_template_kwargs"] == {"enable_thinking": enabled}


def test_stream_sampling_stop_and_user() -> None:
    out = translate_request(
        req(
            stream=True,
            temperature=0.2,
            top_p=0.9,
            top_k=20,
            stop_sequences=["END", "###"],
            metadata={"user_id": '{"device_id":"abc"}'},
        ),
        QWEN,
    )
    assert out == {
        "model": "qwen3.6",
        "messages": [{"role": "user", "content": "hi"}],
        "chat_template_kwargs": {"enable_thinking": False},
        "max_tokens": 100,
        "stream": True,
        "stream_options": {"include_usage": True},
        "stop": ["END", "###"],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 20,
        "user": '{"device_id":"abc"}',
    }


def test_system_blocks_drop_billing_header_and_cache_control() -> None:
    system = [
        {"type": "text",
         "text": "x-anthropic-billing-header: cc_version=2.1.197.abc; cc_entrypoint=cli;"},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
    ]
    out = translate_request(req(system=system), QWEN)
    assert out["messages"][0] == {"role": "system", "content": "You are Claude Code.\n\nBe brief."}


def test_billing_line_inside_a_string_system() -> None:
    system = "x-anthropic-billing-header: cc_version=1;\nYou are helpful."
    out = translate_request(req(system=system), QWEN)
    assert out["messages"][0] == {"role": "system", "content": "You are helpful."}


def test_billing_header_changes_do_not_change_the_prompt() -> None:
    def body(version: str) -> dict[str, Any]:
        return req(system=[
            {"type": "text", "text": f"x-anthropic-billing-header: cc_version={version};"},
            {"type": "text", "text": "Stable system prompt."},
        ])

    assert translate_request(body("1"), QWEN) == translate_request(body("2"), QWEN)


def test_mid_conversation_system_is_carried_in_place() -> None:
    messages = [
        {"role": "user", "content": "a"},
        {"role": "system", "content": "Remember X."},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    out = translate_request(req(system="S", messages=messages), QWEN)
    assert out["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "a"},
        {"role": "user", "content": "<system-reminder>\nRemember X.\n</system-reminder>"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]


def test_leading_system_message_stays_a_system_message() -> None:
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Rules."}]},
        {"role": "user", "content": "a"},
    ]
    out = translate_request(req(messages=messages), QWEN)
    assert out["messages"] == [
        {"role": "system", "content": "Rules."},
        {"role": "user", "content": "a"},
    ]


def test_each_turn_is_a_prefix_of_the_next_so_the_prefix_cache_hits() -> None:
    """The reason mid-conversation system messages are carried, not folded."""
    turns = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "system", "content": "The user changed mode."},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "q3"},
    ]
    earlier = translate_request(req(system="S", messages=turns[:2]), QWEN)["messages"]
    later = translate_request(req(system="S", messages=turns), QWEN)["messages"]
    assert later[: len(earlier)] == earlier


def test_user_blocks_text_and_images() -> None:
    content = [
        {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.invalid/a.png"}},
    ]
    out = translate_request(req(messages=[{"role": "user", "content": content}]), QWEN)
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA="}},
                {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}},
            ],
        }
    ]


def test_text_only_blocks_collapse_to_one_string() -> None:
    content = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    out = translate_request(req(messages=[{"role": "user", "content": content}]), QWEN)
    assert out["messages"] == [{"role": "user", "content": "one\ntwo"}]


def test_tool_round_trip_history() -> None:
    messages = [
        {"role": "user", "content": "list files"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "use ls", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Running."},
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {"path": "a"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a\nb",
                 "is_error": False, "cache_control": {"type": "ephemeral"}},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "no such file"}]},
                {"type": "text", "text": "continue"},
            ],
        },
    ]
    out = translate_request(req(messages=messages), QWEN)
    assert out["messages"] == [
        {"role": "user", "content": "list files"},
        {
            "role": "assistant",
            "content": "Running.",
            "reasoning_content": "use ls",
            "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "Bash", "arguments": '{"command":"ls"}'}},
                {"id": "toolu_2", "type": "function",
                 "function": {"name": "Read", "arguments": '{"path":"a"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "a\nb"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such file"},
        {"role": "user", "content": "continue"},
    ]


def test_tool_result_images_follow_as_a_user_turn() -> None:
    block = {
        "type": "tool_result",
        "tool_use_id": "t",
        "content": [
            {"type": "text", "text": "shot"},
            {"type": "image",
             "source": {"type": "base64", "media_type": "image/jpeg", "data": "Zg=="}},
        ],
    }
    out = translate_request(req(messages=[{"role": "user", "content": [block]}]), QWEN)
    assert out["messages"] == [
        {"role": "tool", "tool_call_id": "t", "content": "shot"},
        {"role": "user",
         "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,Zg=="}}]},
    ]


def test_tools_schema_cleaned_and_choice_mapped() -> None:
    tools = [
        {
            "name": "Bash",
            "description": "run",
            "input_schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {
                    "$schema": {"type": "string"},
                    "command": {"type": "string", "$comment": "x"},
                    "mode": {"anyOf": [{"const": "a"}, {"const": "b", "$id": "m"}]},
                },
                "required": ["command"],
                "additionalProperties": False,
            },
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ]
    out = translate_request(
        req(tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True}), QWEN
    )
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "Bash",
                "description": "run",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "$schema": {"type": "string"},
                        "command": {"type": "string"},
                        "mode": {"anyOf": [{"const": "a"}, {"const": "b"}]},
                    },
                    "required": ["command"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    assert out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("choice", "mapped"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "Bash"}, {"type": "function", "function": {"name": "Bash"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any], mapped: Any) -> None:
    tools = [{"name": "Bash", "input_schema": {"type": "object"}}]
    out = translate_request(req(tools=tools, tool_choice=choice), QWEN)
    assert out["tool_choice"] == mapped
    assert "parallel_tool_calls" not in out


def test_tool_choice_without_tools_is_dropped() -> None:
    assert "tool_choice" not in translate_request(req(tool_choice={"type": "auto"}), QWEN)


def test_schema_data_is_not_rewritten() -> None:
    schema = {"type": "object", "default": {"$schema": "kept"}, "enum": [{"$id": 1}]}
    assert clean_schema(schema) == schema


def test_tokenize_body() -> None:
    tools = [{"name": "Bash", "input_schema": {"type": "object"}}]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": tools,
            "tool_choice": {"type": "auto"}}
    assert translate_for_tokenize(body, QWEN) == {
        "model": "qwen3.6",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [
            {"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}
        ],
        "chat_template_kwargs": {"enable_thinking": False},
        "add_generation_prompt": True,
    }


@pytest.mark.parametrize(
    ("requested", "limit", "prompt", "expected"),
    [(64000, 262144, 1000, 64000), (64000, 32768, 10000, 22768), (32000, None, 10**6, 32000),
     (100, 1000, 5000, 1)],
)
def test_clamp(requested: int, limit: int | None, prompt: int, expected: int) -> None:
    assert clamp_max_tokens(requested, limit, prompt) == expected


def test_estimate_over_counts_plain_text() -> None:
    text = "word " * 3000  # ~3000 tokens for any tokenizer
    assert estimate_tokens({"messages": [{"role": "user", "content": text}]}) >= 3000


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], ""),
        ({"max_tokens": 1, "messages": []}, "model"),
        (req(max_tokens=0), "max_tokens"),
        (req(max_tokens="5"), "max_tokens"),
        (req(messages="hi"), "messages"),
        (req(messages=[{"role": "bot", "content": "x"}]), "messages.0.role"),
        (req(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
        (req(messages=[{"role": "user", "content": [{"type": "video"}]}]),
         "messages.0.content.0.type"),
        (req(messages=[{"role": "user", "content": [{"type": "text"}]}]),
         "messages.0.content.0.text"),
        (req(messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": "x",
                                                          "name": "n", "input": []}]}]),
         "messages.0.content.0.input"),
        (req(system=5), "system"),
        (req(tools=[{"name": "x"}]), "tools.0.input_schema"),
        (req(tool_choice={"type": "sometimes"}), "tool_choice.type"),
        (req(thinking={"type": "maybe"}), "thinking.type"),
        (req(stop_sequences="x"), "stop_sequences"),
        (req(temperature="hot"), "temperature"),
        (req(stream="yes"), "stream"),
    ],
)
def test_invalid_requests_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(ProxyError) as caught:
        translate_request(body, QWEN)
    assert caught.value.status == 400
    assert caught.value.error_type == "invalid_request_error"
    assert caught.value.message.startswith(f"{field}: " if field else "request body")


def test_carrying_keeps_the_prefix_cache_folding_would_not() -> None:
    """Measured on the simulator's Qwen3 ChatML rendering (4 bytes a token): the request that
    first carries a mid-conversation system message shares its whole previous prompt with the
    request before it; folding the same text into the leading system prompt would share only
    the system text, not the tools or the history (all re-prefilled)."""
    from spark_stack.simulator.tokenizer import render_chat

    def common(a: str, b: str) -> int:
        n = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            n += 1
        return n

    tools = [{"name": f"T{i}", "description": "d" * 2000, "input_schema": {"type": "object"}}
             for i in range(10)]
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1 " * 500},
    ]
    before = translate_request(req(system="S", tools=tools, messages=history), QWEN)
    after = translate_request(req(system="S", tools=tools, messages=[
        *history, {"role": "system", "content": "Plan mode."}, {"role": "user", "content": "q2"},
    ]), QWEN)
    folded = [{"role": "system", "content": "S\n\nPlan mode."},
              *[m for m in after["messages"][1:] if "system-reminder" not in str(m["content"])]]
    previous = render_chat(before["messages"], before["tools"], add_generation_prompt=False)
    carried = render_chat(after["messages"], after["tools"])
    refolded = render_chat(folded, after["tools"])
    assert common(previous, carried) == len(previous)
    assert common(previous, refolded) < 0.01 * len(previous)
