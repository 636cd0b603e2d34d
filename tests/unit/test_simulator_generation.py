"""Pure parts of the simulator: tokenizer, scripts, generation and vLLM's chunk shapes."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_stack.simulator.generation import Delta, Settings, ToolDelta, generate
from spark_stack.simulator.script import (
    Plan,
    ScriptError,
    ToolCallPlan,
    apply_tool_choice,
    bench_plan,
    parse_script,
    plan_for,
)
from spark_stack.simulator.tokenizer import count_tokens, render_chat, token_ids
from spark_stack.simulator.wire import (
    StreamContext,
    completion_body,
    context_overflow_message,
    stream_events,
)

BASH = [{"type": "function", "function": {"name": "Bash", "parameters": {}}}]
CTX = StreamContext(request_id="chatcmpl-x", created=1, model="m", prompt_tokens=10)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def events(ctx: StreamContext, plan: Plan, s: Settings | None = None) -> list[Any]:
    outcome = generate(plan, s or Settings(), ids=["chatcmpl-tool-1", "chatcmpl-tool-2"])
    out: list[Any] = []
    for event in stream_events(outcome, ctx):
        assert event.startswith("data: ") and event.endswith("\n\n")
        payload = event[len("data: ") : -2]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def deltas(evs: list[Any]) -> list[Any]:
    return [e["choices"][0]["delta"] for e in evs if isinstance(e, dict) and e["choices"]]


# tokenizer


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=200), st.text(min_size=1, max_size=50))
def test_token_count_is_deterministic_and_monotonic(a: str, b: str) -> None:
    assert count_tokens(a) == count_tokens(a) == len(token_ids(a))
    assert count_tokens(a + b) >= count_tokens(a)
    assert token_ids(a) == token_ids(a)


def test_rendering_counts_tools_and_thinking() -> None:
    messages = [{"role": "system", "content": "be brief"}, user("hi")]
    plain = render_chat(messages)
    with_tools = render_chat(messages, BASH)
    assert plain.startswith("<|im_start|>system\nbe brief<|im_end|>\n")
    assert plain.endswith("<|im_start|>assistant\n<think>\n")
    assert '"name": "Bash"' in with_tools
    assert count_tokens(with_tools) > count_tokens(plain)
    assert render_chat(messages, enable_thinking=False).endswith("<think>\n\n</think>\n\n")
    assert not render_chat(messages, add_generation_prompt=False).endswith("assistant\n<think>\n")


def test_rendering_accepts_content_parts_tool_calls_and_results() -> None:
    text = render_chat(
        [
            {"role": "user", "content": [{"type": "text", "text": "part one"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "Bash", "arguments": '{"command": "ls"}'}}],
            },
            {"role": "tool", "content": "a.txt"},
        ]
    )
    assert "part one" in text
    assert "<function=Bash>\n<parameter=command>\nls\n</parameter>" in text
    assert "<tool_response>\na.txt\n</tool_response>" in text


# scripts


def test_scripted_rules() -> None:
    assert (
        plan_for({"messages": [user("What is 12*17? Answer with the number.")]}, "m").content
        == "204"
    )
    run = plan_for({"messages": [user("Use the Bash tool to run: echo hi")], "tools": BASH}, "m")
    assert run.tool_calls[0].name == "Bash"
    assert run.tool_calls[0].arguments["command"] == "echo hi"
    other = plan_for(
        {
            "messages": [user("run: ls -la")],
            "tools": [{"type": "function", "function": {"name": "Shell"}}],
        },
        "m",
    )
    assert other.tool_calls[0].name == "Shell"
    no_tools = plan_for({"messages": [user("run: ls")]}, "m")
    assert no_tools.tool_calls == ()
    assert no_tools.content == "Hello from the vLLM simulator (m). Your message had 2 words."
    after = plan_for(
        {"messages": [user("run: echo hi"), {"role": "tool", "content": "hi\n"}], "tools": BASH},
        "m",
    )
    assert after.content == "The command printed: hi"


def test_sim_script_parses_every_key() -> None:
    plan = parse_script(
        'please SIM_SCRIPT: {"reasoning": "r", "content": "c", "tool_calls": [{"name": "Read",'
        ' "arguments": {"file_path": "/a"}}], "chunk_chars": 3, "delay_ms": 5,'
        ' "die_after_chunks": 2, "http_status": 503, "error_message": "down",'
        ' "resend_id": true, "multi_index_chunk": false, "prompt_tokens": 99} trailing text'
    )
    assert plan == Plan(
        reasoning="r",
        content="c",
        tool_calls=(ToolCallPlan("Read", {"file_path": "/a"}),),
        chunk_chars=3,
        delay_ms=5.0,
        die_after_chunks=2,
        http_status=503,
        error_message="down",
        resend_id=True,
        multi_index_chunk=False,
        prompt_tokens=99,
    )


@pytest.mark.parametrize(
    "text",
    [
        "SIM_SCRIPT: not json",
        'SIM_SCRIPT: {"chunk_chars": "3"}',
        'SIM_SCRIPT: {"tool_calls": [{"arguments": {}}]}',
        'SIM_SCRIPT: {"resend_id": 1}',
        'SIM_SCRIPT: {"delay_ms": -1}',
    ],
)
def test_bad_scripts_are_refused(text: str) -> None:
    with pytest.raises(ScriptError):
        parse_script(text)


def test_after_tool_script() -> None:
    request = {
        "messages": [
            user(
                'SIM_SCRIPT: {"tool_calls": [{"name": "Bash"}], "after_tool": {"content": "done"}}'
            ),
            {"role": "tool", "content": "x"},
        ]
    }
    assert plan_for(request, "m").content == "done"


def test_tool_choice_none_named_and_required() -> None:
    plan = Plan(content="c", tool_calls=(ToolCallPlan("Bash", {"command": "ls"}),))
    assert apply_tool_choice(plan, "none", BASH).tool_calls == ()
    named = apply_tool_choice(
        Plan(content="c"), {"type": "function", "function": {"name": "X"}}, BASH
    )
    assert named.tool_calls == (ToolCallPlan("X", {}),)
    assert apply_tool_choice(Plan(content="c"), "required", BASH).tool_calls[0].name == "Bash"
    assert apply_tool_choice(plan, "auto", BASH) == plan


# stream shapes


def test_text_stream_shape_matches_vllm() -> None:
    evs = events(CTX, Plan(reasoning="abcd", content="hello!", chunk_chars=4))
    assert evs[0] == {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        "prompt_token_ids": None,
        "prompt_text": None,
    }
    assert evs[1]["choices"] == [
        {
            "index": 0,
            "delta": {"reasoning": "abcd"},
            "logprobs": None,
            "finish_reason": None,
            "token_ids": None,
        }
    ]
    assert deltas(evs)[1:] == [{"reasoning": "abcd"}, {"content": "hell"}, {"content": "o!"}, {}]
    assert evs[-2]["choices"][0]["finish_reason"] == "stop"
    assert evs[-2]["choices"][0]["stop_reason"] is None
    assert evs[-1] == "[DONE]"


def test_tool_call_stream_is_qwen3_coder_shaped() -> None:
    plan = Plan(tool_calls=(ToolCallPlan("Bash", {"command": "echo hi", "timeout": 5}),))
    evs = events(CTX, plan)
    assert deltas(evs)[1:] == [
        {
            "tool_calls": [
                {
                    "id": "chatcmpl-tool-1",
                    "type": "function",
                    "index": 0,
                    # vLLM 0.32 (qwen3_coder and hermes): no `arguments` in the header.
                    "function": {"name": "Bash"},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"command": "echo hi"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ', "timeout": 5'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]},
        {},
    ]
    assert evs[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_parallel_tool_calls_quirks() -> None:
    plan = Plan(tool_calls=(ToolCallPlan("A", {}), ToolCallPlan("B", {"x": 1})))
    plain = deltas(events(CTX, plan))
    assert [d["tool_calls"][0]["index"] for d in plain[1:-1]] == [0, 0, 0, 1, 1, 1, 1]
    merged = deltas(events(CTX, plan, Settings(multi_index_chunk=True)))
    assert merged[3] == {
        "tool_calls": [
            {"index": 0, "function": {"arguments": "}"}},
            {
                "id": "chatcmpl-tool-2",
                "type": "function",
                "index": 1,
                "function": {"name": "B"},
            },
        ]
    }
    resend = deltas(events(StreamContext("c", 1, "m", 1, resend_id=True), plan))
    assert resend[2] == {
        "tool_calls": [
            {
                "id": "chatcmpl-tool-1",
                "type": "function",
                "index": 0,
                "function": {"arguments": "{"},
            }
        ]
    }


def test_reasoning_content_field_and_no_reasoning_parser() -> None:
    ctx = StreamContext("c", 1, "m", 1, reasoning_field="reasoning_content")
    assert deltas(events(ctx, Plan(reasoning="r", content="c")))[1] == {"reasoning_content": "r"}
    inline = generate(
        Plan(reasoning="think", content="ok", chunk_chars=100), Settings(reasoning_parser=False)
    )
    assert inline.content == "think\n</think>\n\nok"
    assert inline.reasoning is None
    off = generate(Plan(reasoning="think", content="ok"), Settings(thinking=False))
    assert off.reasoning is None and off.content == "ok"


def test_max_tokens_cuts_with_length_on_the_last_token() -> None:
    outcome = generate(Plan(content="abcdefgh", chunk_chars=2), Settings(max_tokens=3))
    assert outcome.finish_reason == "length"
    assert outcome.content == "abcdef"
    assert outcome.completion_tokens == 3
    evs = events(CTX, Plan(content="abcdefgh", chunk_chars=2), Settings(max_tokens=3))
    last = evs[-2]["choices"][0]
    assert last["delta"] == {"content": "ef"}
    assert last["finish_reason"] == "length"


def test_stop_string_cuts_before_the_match() -> None:
    s = Settings(stop=("END", "zz"))
    outcome = generate(Plan(content="one two END three", chunk_chars=4), s)
    assert (outcome.content, outcome.finish_reason, outcome.stop_reason) == (
        "one two ",
        "stop",
        "END",
    )
    last = events(CTX, Plan(content="one two END three", chunk_chars=4), s)[-2]["choices"][0]
    assert last["finish_reason"] == "stop" and last["stop_reason"] == "END"
    assert last["delta"] == {"content": "two "}


def test_usage_chunks() -> None:
    ctx = StreamContext("c", 1, "m", 7, include_usage=True, reasoning_details=True)
    evs = events(ctx, Plan(reasoning="rr", content="cc", chunk_chars=1))
    assert evs[-2] == {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {
            "prompt_tokens": 7,
            "total_tokens": 12,
            "completion_tokens": 5,
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }
    continuous = StreamContext("c", 1, "m", 7, include_usage=True, continuous_usage=True)
    evs = events(continuous, Plan(content="ab", chunk_chars=1))
    used = [e["usage"]["completion_tokens"] for e in evs if isinstance(e, dict)]
    assert used == [0, 1, 2, 3, 3]


def test_non_stream_body() -> None:
    plan = Plan(reasoning="r", tool_calls=(ToolCallPlan("Bash", {"command": "ls"}),))
    body = completion_body(generate(plan, Settings(), ids=["chatcmpl-tool-1"]), CTX)
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": [
            {
                "id": "chatcmpl-tool-1",
                "type": "function",
                "function": {"name": "Bash", "arguments": '{"command": "ls"}'},
            }
        ],
        "reasoning": "r",
    }
    assert (choice["finish_reason"], choice["stop_reason"]) == ("tool_calls", None)
    assert body["usage"]["total_tokens"] == 10 + body["usage"]["completion_tokens"]
    text = completion_body(generate(Plan(content="hi"), Settings()), CTX)
    assert "tool_calls" not in text["choices"][0]["message"]


def test_bench_plan_has_exact_chunk_count() -> None:
    outcome = generate(bench_plan(5), Settings())
    assert [d for d in outcome.deltas] == [Delta(content="bench ")] * 5


def test_tool_delta_arguments_join_to_json() -> None:
    args = {"a": "ü", "b": [1, 2], "c": None}
    outcome = generate(Plan(tool_calls=(ToolCallPlan("T", args),)), Settings())
    assert json.loads(outcome.tool_calls[0][2]) == args
    assert outcome.deltas[0].tool_calls[0] == ToolDelta(0, "", outcome.tool_calls[0][0], "T")


def test_overflow_wording() -> None:
    # vLLM 0.32's own words (vllm/renderers/params.py), checked by tests/realvllm/conformance.
    assert context_overflow_message(100, 101, True) == (
        "This model's maximum context length is 100 tokens. However, your prompt contains at "
        "least 101 input tokens, which exceeds this limit even without any output tokens. "
        "Please reduce the length of the input prompt."
    )
    assert "contains 150 input tokens" in context_overflow_message(100, 150, False)


def test_hermes_tool_call_deltas_are_shaped_like_vllms() -> None:
    """hermes (vLLM 0.32): the header names the function without `arguments`, and every
    tool-call delta carries `content: null`."""
    plan = Plan(tool_calls=(ToolCallPlan("Bash", {"command": "ls"}),))
    evs = events(StreamContext("c", 1, "m", 1, tool_parser="hermes"), plan)
    assert deltas(evs)[1:3] == [
        {"content": None, "tool_calls": [{"id": "chatcmpl-tool-1", "type": "function",
                                          "index": 0, "function": {"name": "Bash"}}]},
        {"content": None, "tool_calls": [{"index": 0, "function": {"arguments": "{"}}]},
    ]


def test_usage_and_fingerprint_as_vllm_sends_them() -> None:
    """--enable-prompt-tokens-details: details always (zeros too), without nulls in the
    stream; system_fingerprint on the last chunk: the usage chunk, else the finish chunk."""
    ctx = StreamContext("c", 1, "m", 7, include_usage=True, prompt_tokens_details=True,
                        cached_tokens=0, created_cache_tokens=16,
                        system_fingerprint="vllm-0.32.0-x")
    evs = events(ctx, Plan(content="hi"))
    assert evs[-2]["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 0, "created_cache_tokens": 16}
    assert evs[-2]["system_fingerprint"] == "vllm-0.32.0-x"
    assert all("system_fingerprint" not in e for e in evs[:-2])
    bare = events(replace(ctx, include_usage=False), Plan(content="hi"))
    assert bare[-2]["choices"][0]["finish_reason"] == "stop"
    assert bare[-2]["system_fingerprint"] == "vllm-0.32.0-x"
    body = completion_body(generate(Plan(content="hi"), Settings()), ctx)
    assert body["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 0, "created_cache_tokens": 16, "multimodal_tokens": None}
    assert body["system_fingerprint"] == "vllm-0.32.0-x"
    assert body["choices"][0]["routed_experts"] is None
    assert [k for k in body if k not in ("id", "created")][-4:] == [
        "prompt_text", "kv_transfer_params", "ec_transfer_params", "metrics"]


def test_a_call_forced_by_name_has_empty_text_not_null() -> None:
    plan = Plan(tool_calls=(ToolCallPlan("Bash", {}),))
    assert generate(plan, Settings(named_tool_choice=True)).content == ""
    assert generate(plan, Settings()).content is None


def test_a_task_of_several_commands_survives_a_compaction() -> None:
    from spark_stack.simulator.script import plan_for

    tools = [{"type": "function", "function": {"name": "Bash", "parameters": {}}}]
    task = {"role": "user", "content": "run each: echo a | echo b | echo c"}
    call = {"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}
    result = {"role": "tool", "tool_call_id": "1", "content": "a"}
    first = plan_for({"messages": [task], "tools": tools}, "m")
    assert first.tool_calls[0].arguments["command"] == "echo a"
    second = plan_for({"messages": [task, call, result], "tools": tools}, "m")
    assert second.tool_calls[0].arguments["command"] == "echo b"
    summary = plan_for({"messages": [task, call, result, {
        "role": "user", "content": "Your task is to create a detailed summary of the "
        "conversation so far"}]}, "m")
    assert "[sim-progress 1]" in summary.content and "run each: echo a | echo b" in \
        summary.content
    resumed = [{"role": "user", "content": "This session is being continued from a previous "
                "conversation that ran out of context. " + summary.content}]
    third = plan_for({"messages": resumed, "tools": tools}, "m")
    assert third.tool_calls[0].arguments["command"] == "echo b"
    done = plan_for({"messages": [*resumed, call, result, call, result], "tools": tools}, "m")
    assert done.content == "All 3 commands ran. TASK DONE"
