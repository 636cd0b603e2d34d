"""The comparison logic of tests/realvllm/conformance.py, on answers made here (no servers)."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from spark_stack.simulator.script import parse_script
from tests.realvllm import conformance as conf
from tests.realvllm import scripts
from tests.realvllm.conformance import Accepted, Answer, Case, Difference

CHAT = Case("chat")


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
          ) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "logprobs": None,
                              "finish_reason": finish}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [choice], **extra}


USAGE = {"prompt_tokens": 10, "total_tokens": 15, "completion_tokens": 5,
         "prompt_tokens_details": {"cached_tokens": 0}}


def tool_stream() -> list[Any]:
    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning": "Let me"}),
        chunk({"reasoning": " think."}),
        chunk({"content": None, "tool_calls": [
            {"id": "call-1", "type": "function", "index": 0, "function": {"name": "Bash"}}]}),
        chunk({"content": None, "tool_calls": [
            {"index": 0, "function": {"arguments": '{"command": '}}]}),
        chunk({"content": None, "tool_calls": [
            {"index": 0, "function": {"arguments": '"ls"}'}}]}),
        chunk({}, "tool_calls"),
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [], "usage": USAGE},
        "[DONE]",
    ]


def streamed(events: list[Any]) -> Answer:
    return Answer(200, "text/event-stream; charset=utf-8", None, tuple(events))


def body(content: Any = "Hello.", finish: str = "stop", **usage: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content,
                                                  "reasoning": None},
                         "finish_reason": finish, "stop_reason": None}],
            "usage": {**USAGE, **usage}}


def test_shape_names_every_path_and_merges_list_items() -> None:
    assert conf.shape({"a": {"b": None, "c": [1, "x"]}, "d": []}) == {
        "$": "object", "a": "object", "a.b": "null", "a.c": "list", "a.c[*]": "number|string",
        "d": "list"}


def test_a_missing_object_is_one_difference_not_one_per_field() -> None:
    sim = conf.shape({"usage": {"details": None}})
    real = conf.shape({"usage": {"details": {"cached_tokens": 1, "created": 0}}})
    assert conf.shape_differences("c", "body.", sim, real) == [
        Difference("c", "body.usage.details", "null", "object")]


def test_the_events_of_a_tool_call_stream_in_order() -> None:
    assert conf.event_order(tool_stream()) == [
        "role", "reasoning", "tool_header", "tool_args", "finish:tool_calls", "usage", "done"]
    folded = conf.fold_stream(tool_stream())
    assert (folded.reasoning, folded.content, folded.finish_reason) == (
        "Let me think.", None, "tool_calls")
    assert folded.tool_calls == [{"name": "Bash", "arguments": '{"command": "ls"}',
                                  "id": "call-1"}]


def test_the_same_answer_has_no_difference() -> None:
    assert conf.compare_answers(CHAT, streamed(tool_stream()), streamed(tool_stream())) == []
    assert conf.compare_answers(CHAT, Answer(200, "application/json", body()),
                                Answer(200, "application/json", body())) == []


def test_a_missing_usage_chunk_names_the_event_order() -> None:
    events = tool_stream()
    without = events[:-2] + events[-1:]
    diffs = conf.compare_answers(CHAT, streamed(without), streamed(events))
    where = {d.where: d for d in diffs}
    assert where["events"].sim.endswith("finish:tool_calls → done")
    assert where["events"].real.endswith("finish:tool_calls → usage → done")
    assert where["usage"] == Difference("chat", "usage", "absent", "present")


def test_a_chunk_field_the_engine_sends_names_the_chunk_kind_and_path() -> None:
    sim = tool_stream()
    del sim[3]["choices"][0]["delta"]["content"]  # the header without `content: null`
    sim[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] = ""
    diffs = conf.compare_answers(CHAT, streamed(sim), streamed(tool_stream()))
    assert {str(d) for d in diffs} == {
        "chat: chunk[tool_header].choices[*].delta.content: simulator absent, real vLLM null",
        "chat: chunk[tool_header].choices[*].delta.tool_calls[*].function.arguments: "
        "simulator string, real vLLM absent",
    }


def test_finish_reason_tool_arguments_and_text_kinds_are_compared() -> None:
    other = tool_stream()
    other[5]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] = '"pwd"}'
    other[6]["choices"][0]["finish_reason"] = "stop"
    diffs = {d.where: d for d in conf.compare_answers(CHAT, streamed(other),
                                                      streamed(tool_stream()))}
    assert diffs["finish_reason"].sim == "'stop'"
    assert json.loads(diffs["tool_calls"].real) == [["Bash", {"command": "ls"}, True]]
    empty = conf.compare_answers(CHAT, Answer(200, "application/json", body(content=None)),
                                 Answer(200, "application/json", body(content="")))
    assert [d.where for d in empty] == ["content", "body.choices[*].message.content"]


def test_usage_is_checked_on_each_side() -> None:
    length = Case("length", completion_tokens=5)
    wrong = Answer(200, "application/json", body(total_tokens=99, completion_tokens=4))
    diffs = {d.where: d for d in conf.compare_answers(
        length, wrong, Answer(200, "application/json", body()))}
    assert diffs["usage.total_tokens = prompt + completion"].real == "yes"
    assert diffs["usage.completion_tokens"] == Difference("length", "usage.completion_tokens",
                                                          "4", "5")
    repeat = Case("again", repeat=True)
    cold = Answer(200, "application/json", body())
    warm = Answer(200, "application/json", body(prompt_tokens_details={"cached_tokens": 128}))
    assert [d.where for d in conf.compare_answers(repeat, cold, warm)] == [
        "usage.prompt_tokens_details.cached_tokens > 0 on a repeat"]


def error(message: str, status: int = 400, kind: str = "BadRequestError",
          param: str | None = None) -> Answer:
    return Answer(status, "application/json", {"error": {
        "message": message, "type": kind, "param": param, "code": status}})


def test_errors_compare_status_fields_wording_and_what_the_proxy_makes_of_them() -> None:
    real = error("This model's maximum context length is 32768 tokens. However, your prompt "
                 "contains at least 32769 input tokens, which exceeds this limit even without "
                 "any output tokens. Please reduce the length of the input prompt. "
                 "(parameter=input_tokens, value=32769)", param="input_tokens")
    facts = conf.error_facts(real)
    assert facts["proxy answers"] == "400 invalid_request_error 'prompt is too long'"
    same_numbers_aside = error(real.body["error"]["message"].replace("32769", "62515"),
                               param="input_tokens")
    assert conf.compare_answers(CHAT, same_numbers_aside, real) == []
    other = error("max_tokens must be at least 1, got 0.", param="max_tokens")
    diffs = {d.where for d in conf.compare_answers(CHAT, other, real)}
    assert {"proxy answers", "error.param", "error.message"} <= diffs
    assert [d.where for d in conf.compare_answers(
        CHAT, error("x", 404, "NotFoundError"), error("x"))] == [
        "status", "proxy answers", "error.type", "error.code"]


def test_accepted_differences_carry_their_reason() -> None:
    table = (Accepted("tool*", "*content", "the model's choice"),)
    diffs = [Difference("tool none", "body.content", "null", "string"),
             Difference("tool none", "finish_reason", "'stop'", "'length'")]
    failures, known = conf.classify(diffs, table)
    assert failures == [diffs[1]]
    assert known[0].reason == "the model's choice" and "[accepted: the model" in str(known[0])


def test_every_accepted_rule_still_matches_a_case() -> None:
    names = [c.name for parser in conf.TOOL_PARSERS for c in conf.cases("m", 4096, parser)]
    names += ["metrics", "consistency"]
    for rule in conf.ACCEPTED:
        assert any(Accepted(rule.case, "*", "").matches(Difference(n, "x", "", ""))
                   for n in names), rule


def test_tokenize_counts_are_held_to_the_chats_prompt_tokens() -> None:
    cases = [Case("text"), Case("tokenize", path="/tokenize", same_prompt_as="text")]
    chat = Answer(200, "application/json", body())
    right = {"text": chat, "tokenize": Answer(200, "application/json", {"count": 10})}
    wrong = {"text": chat, "tokenize": Answer(200, "application/json", {"count": 12})}
    diffs = conf.compare_results(cases, wrong, right, "", "")
    assert [d for d in diffs if d.case == "consistency"] == [Difference(
        "consistency", "'tokenize' count = 'text' usage.prompt_tokens", "no: 12 and 10", "yes")]


METRICS = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 0.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 0.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.0
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100.0
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 16.0
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 100.0
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="m"} 10.0
# TYPE vllm:request_success counter
vllm:request_success_total{engine="0",model_name="m",finished_reason="stop"} 2.0
vllm:request_success_total{engine="0",model_name="m",finished_reason="length"} 0.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",model_name="m",le="0.1"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="0",model_name="m",le="+Inf"} 2.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 2.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 0.1
"""


def test_metrics_top_reads_and_none_invented() -> None:
    assert conf.compare_metrics(METRICS, METRICS) == []
    missing = METRICS.replace("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
    invented = METRICS + "# TYPE vllm:made_up gauge\nvllm:made_up 1.0\n"
    fewer_reasons = METRICS.replace('finished_reason="length"', 'finished_reason="stop"')
    labels = METRICS.replace('vllm:num_requests_running{engine="0",model_name="m"}',
                             'vllm:num_requests_running{model_name="m"}')
    assert [str(d) for d in conf.compare_metrics(missing, METRICS)] == [
        "metrics: vllm:kv_cache_usage_perc labels: simulator absent, real vLLM engine,model_name",
        "metrics: vllm:gpu_cache_usage_perc: simulator present, real vLLM absent",
    ]
    assert [d.where for d in conf.compare_metrics(invented, METRICS)] == ["vllm:made_up"]
    assert [d.where for d in conf.compare_metrics(fewer_reasons, METRICS)] == [
        "vllm:request_success_total finished_reason values"]
    assert [d.where for d in conf.compare_metrics(labels, METRICS)] == [
        "vllm:num_requests_running labels"]
    assert conf.compare_metrics("not { prometheus", METRICS)[0].real.startswith("not Prometheus")


def _chosen_script(text: str, thinking: bool) -> str:
    """The tiny model's choice for a one-message turn, as its chat template makes it."""
    for script in scripts.SCRIPTS:
        if script.after_tool or (script.thinking_only and not thinking):
            continue
        if all(phrase in "\n" + text for phrase in script.phrases):
            return script.name
    raise AssertionError(text)


def test_every_chat_case_asks_both_models_for_the_same_kind_of_answer() -> None:
    """The simulator's script parses, and the tiny model's trigger picks the script of the
    same name (no phrase of another script sneaks into the SIM_SCRIPT text)."""
    expected = {"[text]": "text", "[think]": "think", "[tool]": "tool", "[leak]": "leak",
                "[long]": "long"}
    # Which answer the simulator must make a call of, under each parser (the tiny model
    # writes hermes JSON for [tool] and qwen3_coder markup for [leak]).
    calls = {"hermes": "tool", "qwen3_coder": "leak"}
    for parser in conf.TOOL_PARSERS:
        chats = [c for c in conf.cases("m", tool_parser=parser)
                 if c.path == "/v1/chat/completions" and isinstance(c.body, dict)
                 and isinstance(c.body.get("messages"), list) and c.body["messages"]
                 and isinstance(c.body["messages"][0].get("content"), str)]
        assert len(chats) > 20
        for case in chats:
            text = case.body["messages"][0]["content"]
            if not text.startswith("SIM_SCRIPT:"):
                continue
            plan = parse_script(text)
            trigger = next(t for t in expected if t in text)
            thinking = (case.body.get("chat_template_kwargs") or {}).get("enable_thinking", True)
            assert _chosen_script(text, thinking) == expected[trigger], case.name
            named = "tool_choice" in case.body
            if expected[trigger] == calls[parser] or named:
                assert plan.tool_calls and plan.tool_calls[0].name == "Bash", case.name
            elif "after_tool" not in text:
                assert not plan.tool_calls, case.name


def test_case_names_are_unique() -> None:
    for parser in conf.TOOL_PARSERS:
        names = [c.name for c in conf.cases("m", tool_parser=parser)]
        assert len(names) == len(set(names))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=12,
)


@given(value=json_values)
def test_a_value_has_the_shape_of_its_copy(value: Any) -> None:
    assert conf.shape_differences("c", "", conf.shape(value),
                                  conf.shape(copy.deepcopy(value))) == []


@given(events=st.lists(st.sampled_from([
    chunk({"reasoning": "r"}), chunk({"content": "c"}), chunk({}, "stop"), "[DONE]"]),
    max_size=12))
def test_the_event_order_never_repeats_a_kind(events: list[Any]) -> None:
    order = conf.event_order(events)
    assert all(a != b for a, b in zip(order, order[1:], strict=False))
