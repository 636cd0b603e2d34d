"""Property tests: any valid request translates; any chunk sequence yields a well-formed
Anthropic event stream; any garbage body gets an Anthropic error envelope, never a 500.

10,500 generated cases in total: 1,000 requests, 6,000 chunk sequences, 1,000 garbage
bodies, 2,500 tool-argument strings.
"""

from __future__ import annotations

import asyncio
import string
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spark_stack.proxy.config import ProxyConfig, Route, Upstream
from spark_stack.proxy.repair import repair_arguments
from spark_stack.proxy.server import ProxyApp
from spark_stack.proxy.stream import StreamTranslator, encode_events
from spark_stack.proxy.translate_request import translate_for_tokenize, translate_request


def fast(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
UPSTREAM = Upstream("q", "http://127.0.0.1:9/v1", "qwen", max_model_len=4096)

text = st.text(string.printable + "äø中🙂", max_size=12)
names = st.text(string.ascii_letters + "_", min_size=1, max_size=12)
json_scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=4,
)
cache = st.just({"type": "ephemeral"})


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


image = st.builds(
    lambda data: {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                              "data": data}},
    st.text(string.ascii_letters, max_size=8),
) | st.builds(lambda url: {"type": "image", "source": {"type": "url", "url": url}}, text)
text_block = st.builds(
    lambda t, c: {"type": "text", "text": t, **({"cache_control": c} if c else {})}, text,
    _maybe(cache))
tool_result = st.builds(
    lambda i, content, err: {"type": "tool_result", "tool_use_id": i, "content": content,
                             **({"is_error": err} if err is not None else {})},
    names, text | st.lists(text_block | image, max_size=3), _maybe(st.booleans()))
user_content = text | st.lists(text_block | image | tool_result, min_size=1, max_size=3)
assistant_block = (
    text_block
    | st.builds(lambda i, n, inp: {"type": "tool_use", "id": i, "name": n, "input": inp},
                names, names, st.dictionaries(text, json_values, max_size=3))
    | st.builds(lambda t: {"type": "thinking", "thinking": t, "signature": "s"}, text)
    | st.just({"type": "redacted_thinking", "data": "xx"})
)
message = (
    st.builds(lambda c: {"role": "user", "content": c}, user_content)
    | st.builds(lambda c: {"role": "assistant", "content": c},
                text | st.lists(assistant_block, min_size=1, max_size=3))
    | st.builds(lambda c: {"role": "system", "content": c}, text | st.lists(text_block, max_size=2))
)
schema = st.recursive(
    st.sampled_from([{"type": "string"}, {"type": "integer", "exclusiveMinimum": 0},
                     {"const": "x"}, {"type": "string", "format": "uri"}]),
    lambda inner: st.builds(
        lambda props, extra: {"$schema": "https://json-schema.org/draft/2020-12/schema",
                              "type": "object", "properties": props,
                              "additionalProperties": False, **extra},
        st.dictionaries(names, inner, max_size=3),
        st.sampled_from([{}, {"propertyNames": {"pattern": "^a"}}]))
    | st.builds(lambda a: {"anyOf": a}, st.lists(inner, min_size=1, max_size=2)),
    max_leaves=6,
).map(lambda s: s if s.get("type") == "object" else {"type": "object", "properties": {"v": s}})
tool = st.builds(lambda n, d, s: {"name": n, "description": d, "input_schema": s},
                 names, text, schema)
requests = st.fixed_dictionaries(
    {
        "model": names,
        "max_tokens": st.integers(1, 70000),
        "messages": st.lists(message, max_size=4),
    },
    optional={
        "system": text | st.lists(text_block, max_size=3),
        "stream": st.booleans(),
        "tools": st.lists(tool, max_size=3),
        "tool_choice": st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"},
                                        {"type": "tool", "name": "x"},
                                        {"type": "auto", "disable_parallel_tool_use": True}]),
        "thinking": st.sampled_from([{"type": "adaptive"}, {"type": "disabled"},
                                     {"type": "enabled", "budget_tokens": 1024}]),
        "stop_sequences": st.lists(text, max_size=3),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(1, 100),
        "metadata": st.fixed_dictionaries({"user_id": text}),
        "context_management": json_values,
        "output_config": st.just({"effort": "high"}),
    },
)


@fast(1000)
@given(requests)
def test_any_valid_request_translates(body: dict[str, Any]) -> None:
    out = translate_request(body, UPSTREAM)
    orjson.dumps(out)
    assert out["model"] == "qwen"
    assert out["max_tokens"] == body["max_tokens"]
    roles = [m["role"] for m in out["messages"]]
    assert "system" not in roles[1:]
    for m in out["messages"]:
        if m["role"] == "tool":
            assert isinstance(m["content"], str)
    for t in out.get("tools", []):
        assert "$schema" not in orjson.dumps(t["function"]["parameters"]).decode().replace(
            '"$schema":{', "")
    translate_for_tokenize(body, UPSTREAM)


# --- the stream grammar --------------------------------------------------------------------

# A chunk sequence is built from one drawn byte string, 5 bytes per chunk (one draw is cheap,
# so thousands of sequences run in seconds, and it still shrinks towards fewer, simpler
# chunks): each 5 bytes pick a chunk shape and its parts from pools of awkward values.
FRAGMENTS = ["{", '"command": "ls"', ', "n": 1', "}", "", '{"a": 1}', "{'a': 1}", '"x', "null"]
TEXTS = ["", "a", "Hel", "lo ", "äø中🙂", "\n", '"q"', "<think>"]
FINISHES = [None, None, None, None, None, None, "stop", "length", "tool_calls", "abort",
            "content_filter"]
STOPS = [None, "###", 151645]


def build_chunk(spec: tuple[int, int, int, int, int]) -> Any:
    shape, a, b, c, d = spec
    if shape == 0:
        return {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
    if shape == 1:
        return {"error": {"message": "boom"}}
    if shape == 2:
        return [None, 1, "x", {}, {"choices": "x"}, {"choices": [5]}, [], {"choices": [{}]}][a % 8]
    delta: dict[str, Any] = {}
    if shape in (3, 7):
        delta["content"] = TEXTS[a % 8]
    if shape in (4, 7):
        delta["reasoning" if b % 2 else "reasoning_content"] = TEXTS[b % 8]
    if shape in (5, 6, 7):
        calls = []
        for index in range(1 + (shape == 6) * (c % 3)):
            call: dict[str, Any] = {"index": (a + index) % 4}
            if b % 3 == 0:
                call.update(id=f"call_{(a + index) % 4}", type="function")
            function: dict[str, Any] = {}
            if b % 2 == 0 or index:
                function["name"] = ["Bash", "Read"][c % 2]
            if d % 9:
                function["arguments"] = FRAGMENTS[(d + index) % 9]
            call["function"] = function
            calls.append(call)
        delta["tool_calls"] = calls
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": FINISHES[d % 11],
                         "stop_reason": STOPS[c % 3]}]}


def build_chunks(raw: bytes) -> list[Any]:
    return [build_chunk((raw[i] % 8, raw[i + 1], raw[i + 2], raw[i + 3], raw[i + 4]))
            for i in range(0, len(raw) - 4, 5)]


chunk_sequences = st.binary(max_size=90).map(build_chunks)
DELTA_FOR = {"text": {"text_delta"}, "thinking": {"thinking_delta", "signature_delta"},
             "tool_use": {"input_json_delta"}}


def check_grammar(events: list[dict[str, Any]]) -> None:
    assert [e["type"] for e in events[:2]] == ["message_start", "ping"]
    position, next_index, open_block = 2, 0, None
    tool_json = ""
    while position < len(events):
        event = events[position]
        kind = event["type"]
        if kind == "error":
            assert position == len(events) - 1, "nothing may follow an error"
            assert set(event["error"]) == {"type", "message"}
            return
        if kind == "content_block_start":
            assert open_block is None and event["index"] == next_index
            open_block = event["content_block"]["type"]
            tool_json = ""
        elif kind == "content_block_delta":
            assert open_block is not None and event["index"] == next_index
            assert event["delta"]["type"] in DELTA_FOR[open_block]
            if open_block == "tool_use":
                tool_json += event["delta"]["partial_json"]
        elif kind == "content_block_stop":
            assert open_block is not None and event["index"] == next_index
            if open_block == "tool_use":
                assert isinstance(orjson.loads(tool_json or "{}"), dict)
            open_block, next_index = None, next_index + 1
        else:
            assert open_block is None
            assert [e["type"] for e in events[position:]] == ["message_delta", "message_stop"]
            assert event["delta"]["stop_reason"] in (
                "end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal")
            return
        position += 1
    raise AssertionError("the stream neither finished nor failed")


@fast(6000)
@given(chunk_sequences, st.booleans())
def test_any_chunk_sequence_is_a_well_formed_stream(chunks: list[Any], died: bool) -> None:
    translator = StreamTranslator("m", "msg_0123456789ab", 3)
    events = translator.start()
    for item in chunks:
        events += translator.feed(item)
    if died and translator.finish_reason is None:
        events += translator.fail("api_error", "upstream closed the stream before the end")
    else:
        events += translator.finish()
    check_grammar(events)
    encode_events(events)


# --- garbage in, Anthropic error out -------------------------------------------------------

LOOP = asyncio.new_event_loop()
APP = ProxyApp(
    ProxyConfig(upstreams={"q": UPSTREAM}, routes=[Route("claude-*", "q")]).with_own_names())


async def call(path: str, body: bytes, method: str = "POST") -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    await APP(scope, receive, send)
    status = sent[0]["status"]
    return status, b"".join(m.get("body", b"") for m in sent[1:])


shallow = json_scalars | st.lists(json_scalars, max_size=2) | st.dictionaries(
    st.sampled_from(["role", "content", "type", "text", "name"]), json_scalars, max_size=2)
garbage = (
    st.binary(max_size=200)
    | st.lists(json_scalars, max_size=3).map(orjson.dumps)
    | st.dictionaries(st.sampled_from(["model", "max_tokens", "messages", "system", "tools",
                                       "thinking", "tool_choice", "stream"]),
                      shallow | st.lists(shallow, max_size=2), max_size=6).map(orjson.dumps)
)


@fast(1000)
@given(garbage, st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]))
def test_garbage_gets_an_anthropic_error_never_a_500(body: bytes, path: str) -> None:
    status, raw = LOOP.run_until_complete(call(path, body))
    assert status in (400, 404, 413, 529), (status, raw)
    answer = orjson.loads(raw)
    assert answer["type"] == "error"
    assert set(answer["error"]) == {"type", "message"}
    assert answer["error"]["message"]


@fast(2500)
@given(st.text('{}[]":,\' abtrueflsn1\\', max_size=30))
@example("{[]}")  # a list as a dict key: literal_eval raised TypeError
def test_repair_returns_a_json_object_or_none(raw: str) -> None:
    repaired = repair_arguments(raw)
    assert repaired is None or isinstance(orjson.loads(repaired), dict)
