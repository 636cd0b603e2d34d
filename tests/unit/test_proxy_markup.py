"""Prefix-cache usage and leaked tool-call markup in the proxy's translation (pure parts)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spark_stack.proxy.markup import split_leaked_calls
from spark_stack.proxy.stream import StreamTranslator
from spark_stack.proxy.translate_response import translate_response

MARKUP = ("<tool_call>\n<function=Bash>\n<parameter=command>\necho hi\n</parameter>\n"
          "<parameter=timeout>\n5000\n</parameter>\n</function>\n</tool_call>")
TOOLS: list[Any] = [{"name": "Bash", "input_schema": {"type": "object", "properties": {
    "command": {"type": "string"}, "timeout": {"type": "number"}}}}]
CODE_SPAN = "Qwen writes calls as `<function=NAME>` blocks; see the template."
CODE_FENCE = f"The format looks like this:\n\n```\n{MARKUP}\n```\n"


def chunk(content: str | None = None, finish: str | None = None,
          usage: dict[str, Any] | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    out: dict[str, Any] = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        out = {"choices": [], "usage": usage}
    return out


def run(pieces: list[str], *, repair: bool,
        usage: dict[str, Any] | None = None) -> tuple[StreamTranslator, list[dict[str, Any]]]:
    translator = StreamTranslator("m", "msg_0123456789abcdef", 7, repair_markup=repair,
                                  tools=TOOLS)
    events = translator.start()
    for piece in pieces:
        events += translator.feed(chunk(piece))
    events += translator.feed(chunk(finish="stop"))
    events += translator.feed(chunk(usage=usage or {"prompt_tokens": 100,
                                                    "completion_tokens": 9}))
    events += translator.finish()
    return translator, events


def blocks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The content blocks the events build, as a client assembles them."""
    out: dict[int, dict[str, Any]] = {}
    for event in events:
        if event["type"] == "content_block_start":
            out[event["index"]] = dict(event["content_block"])
        elif event["type"] == "content_block_delta":
            block, delta = out[event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "input_json_delta":
                block["input"] = json.loads(delta["partial_json"])
    return [out[i] for i in sorted(out)]


def stop_reason(events: list[dict[str, Any]]) -> str:
    return str(next(e for e in events if e["type"] == "message_delta")["delta"]["stop_reason"])


def split(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 3, 4, 11, 1000])
def test_streamed_markup_is_detected_and_repaired(size: int) -> None:
    text = "I will run it.\n\n" + MARKUP
    kept, events = run(split(text, size), repair=False)
    assert kept.leaked_calls == 1
    assert blocks(events) == [{"type": "text", "text": text}]
    assert stop_reason(events) == "end_turn"
    repaired, events = run(split(text, size), repair=True)
    assert repaired.leaked_calls == 1
    assert blocks(events) == [
        {"type": "text", "text": "I will run it.\n\n"},
        {"type": "tool_use", "id": "toolu_456789abcdefm00", "name": "Bash",
         "input": {"command": "echo hi", "timeout": 5000}},
    ]
    assert stop_reason(events) == "tool_use"


def test_markup_alone_and_without_the_tool_call_wrapper() -> None:
    bare = "<function=Bash>\n<parameter=command>\nls\n</parameter>\n</function>"
    translator, events = run(split(bare, 5), repair=True)
    assert translator.leaked_calls == 1
    assert blocks(events) == [{"type": "tool_use", "id": "toolu_456789abcdefm00",
                               "name": "Bash", "input": {"command": "ls"}}]


@pytest.mark.parametrize("text", [
    CODE_SPAN, CODE_FENCE, "Use <function=NAME> then a parameter list.",
    f"{MARKUP} and then some prose", "a < b, and <tool", "<tool_call>",
])
@pytest.mark.parametrize("repair", [False, True])
def test_prose_about_markup_is_untouched(text: str, repair: bool) -> None:
    for size in (1, 4, 1000):
        translator, events = run(split(text, size), repair=repair)
        assert translator.leaked_calls == 0
        assert blocks(events) == [{"type": "text", "text": text}]
        assert stop_reason(events) == "end_turn"


@given(st.text(alphabet="ab`<>/=_ \nfunctiolcp", max_size=60), st.integers(1, 8))
def test_repair_never_loses_or_changes_text_without_calls(text: str, size: int) -> None:
    translator, events = run(split(text, size), repair=True)
    if translator.leaked_calls == 0:
        got = "".join(b.get("text", "") for b in blocks(events))
        assert got == text


def test_cached_tokens_become_cache_read_input_tokens() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 9,
             "prompt_tokens_details": {"cached_tokens": 64}}
    translator, events = run(["hello"], repair=False, usage=usage)
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["usage"] == {"input_tokens": 36, "cache_read_input_tokens": 64,
                              "output_tokens": 9}
    assert (translator.prompt_tokens, translator.cached_tokens) == (100, 64)
    _, events = run(["hello"], repair=False)  # vLLM leaves the field out when nothing hit
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["usage"] == {"input_tokens": 100, "output_tokens": 9}


def completion(content: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {"choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": usage}


def test_non_streamed_usage_and_markup() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 9,
             "prompt_tokens_details": {"cached_tokens": 96}}
    out = translate_response(completion("Running.\n" + MARKUP, usage), "m", "msg_x", 1,
                             tools=TOOLS)
    assert out.leaked_calls == 1
    assert out.message["usage"] == {"input_tokens": 4, "cache_creation_input_tokens": 0,
                                    "cache_read_input_tokens": 96, "output_tokens": 9}
    assert out.message["content"] == [{"type": "text", "text": "Running.\n" + MARKUP}]
    assert out.message["stop_reason"] == "end_turn"
    fixed = translate_response(completion("Running.\n" + MARKUP, usage), "m", "msg_x", 1,
                               repair_markup=True, tools=TOOLS)
    assert fixed.message["content"] == [
        {"type": "text", "text": "Running."},
        {"type": "tool_use", "id": "toolu_msg_xm00", "name": "Bash",
         "input": {"command": "echo hi", "timeout": 5000}},
    ]
    assert fixed.message["stop_reason"] == "tool_use"
    for prose in (CODE_SPAN, CODE_FENCE):
        same = translate_response(completion(prose, usage), "m", "msg_x", 1,
                                  repair_markup=True, tools=TOOLS)
        assert same.leaked_calls == 0
        assert same.message["content"] == [{"type": "text", "text": prose}]


def test_split_leaked_calls_reads_values_by_schema() -> None:
    found = split_leaked_calls(MARKUP, None)
    assert found is not None
    assert json.loads(found[1][0].arguments) == {"command": "echo hi", "timeout": 5000}
    text = MARKUP.replace("5000", "'5 s'")
    found = split_leaked_calls(text, TOOLS)
    assert found is not None and json.loads(found[1][0].arguments)["timeout"] == "'5 s'"
