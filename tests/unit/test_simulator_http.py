"""The simulator over real sockets, started in-process (httpx and raw sockets)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spark_stack.simulator import SimHandle, start_in_thread

MODEL = "Qwen/Qwen3.6-35B-A3B"
QWEN_FLAGS = [
    "--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_coder",
    "--enable-auto-tool-choice",
]  # fmt: skip
FAST = {"VLLM_SIM_STARTUP_SECONDS": "0"}
BASH = [
    {
        "type": "function",
        "function": {"name": "Bash", "parameters": {"type": "object", "properties": {}}},
    }
]


def start(*flags: str, env: dict[str, str] | None = None) -> SimHandle:
    argv = [MODEL, "--host", "127.0.0.1", "--port", "0", *flags]
    return start_in_thread(argv, env={**FAST, **(env or {})})


@pytest.fixture(scope="module")
def sim() -> Iterator[SimHandle]:
    with start(*QWEN_FLAGS, "--max-model-len", "4096") as handle:
        yield handle


@pytest.fixture()
def client(sim: SimHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=5) as c:
        yield c


def sse(response: httpx.Response) -> list[Any]:
    out: list[Any] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def chat(**body: Any) -> dict[str, Any]:
    return {"model": MODEL, **body}


def metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_health_version_models(client: httpx.Client) -> None:
    health = client.get("/health")
    assert (health.status_code, health.content) == (200, b"")
    assert client.get("/version").json() == {"version": "0.28.0"}
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    card = models["data"][0]
    assert (card["id"], card["owned_by"], card["max_model_len"]) == (MODEL, "vllm", 4096)


def test_unknown_path_method_and_bad_json(client: httpx.Client) -> None:
    assert client.get("/nope").status_code == 404
    assert client.get("/nope").json() == {"detail": "Not Found"}
    assert client.get("/v1/chat/completions").status_code == 405
    bad = client.post("/v1/chat/completions", content=b"{not json")
    assert bad.status_code == 400
    # FastAPI's validation error as vLLM 0.32 reports it (tests/realvllm/conformance.py).
    assert bad.json()["error"] == {
        "message": "1 validation error:\n  {'type': 'json_invalid', 'loc': 'body.1', 'msg': "
                   "'JSON decode error', 'input': '<dict of 0 items>', 'ctx': {'error': "
                   "'Expecting property name enclosed in double quotes'}}",
        "type": "Bad Request", "param": "body.1", "code": 400}
    assert client.post("/v1/chat/completions", json=chat()).json()["error"]["param"] == (
        "body.messages")
    missing = client.post("/v1/chat/completions",
                          json={"model": "other", "messages": [{"role": "user", "content": "x"}]})
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == (
        f"The model `other` does not exist. Valid aliases: {MODEL}.")
    empty = client.post("/v1/chat/completions", json=chat(messages=[])).json()["error"]
    assert empty["message"] == (
        "Cannot apply chat template to an empty conversation. Provide at least one message.")


def test_request_validation_as_vllm_answers_it(client: httpx.Client) -> None:
    """Mistyped fields: pydantic's errors, type "Bad Request", param the body location; and
    pydantic's lax reading of numbers and booleans ("7", 7.0, "yes")."""
    hello = [{"role": "user", "content": "hello"}]

    def error(**fields: Any) -> dict[str, Any]:
        response = client.post("/v1/chat/completions", json=chat(**{"messages": hello, **fields}))
        assert response.status_code == 400, response.text
        result: dict[str, Any] = response.json()["error"]
        return result

    stop = error(stop=5)
    assert (stop["type"], stop["param"]) == ("Bad Request", "body.stop")
    assert stop["message"].startswith("2 validation errors:\n  {'type': 'string_type'")
    assert error(max_tokens="many")["message"] == (
        "1 validation error:\n  {'type': 'int_parsing', 'loc': 'body.max_tokens', 'msg': "
        "'Input should be a valid integer, unable to parse string as an integer', "
        "'input': 'many'}")
    assert "int_from_float" in error(max_tokens=2.5)["message"]
    assert error(stream=[1])["param"] == "body.stream"
    assert error(messages="hi")["param"] == "body.messages"
    role = client.post("/v1/chat/completions", json=chat(messages=[{"content": "x"}])).json()
    assert role["error"]["param"] == "body.messages.0.ChatCompletionDeveloperMessageParam.role"
    assert error(max_tokens=0)["message"] == (
        "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)")
    options = error(stream_options={"include_usage": True})
    assert (options["param"], options["message"]) == (
        "stream_options",
        "Stream options can only be defined when `stream=True`. (parameter=stream_options)")
    lax = client.post("/v1/chat/completions",
                      json=chat(messages=hello, max_tokens="7", stream="yes"))
    assert lax.status_code == 200 and lax.headers["content-type"].startswith("text/event-stream")


def test_health_has_no_content_type(client: httpx.Client) -> None:
    health = client.get("/health")
    assert "content-type" not in health.headers


def test_non_stream_answer(client: httpx.Client) -> None:
    body = client.post(
        "/v1/chat/completions",
        json=chat(messages=[{"role": "user", "content": "What is 12*17? Answer with the number."}]),
    ).json()
    choice = body["choices"][0]
    assert choice["message"]["content"] == "204"
    assert choice["message"]["reasoning"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["id"].startswith("chatcmpl-")


def test_thinking_off_per_request(client: httpx.Client) -> None:
    body = client.post(
        "/v1/chat/completions",
        json=chat(
            messages=[{"role": "user", "content": "What is 12*17?"}],
            chat_template_kwargs={"enable_thinking": False},
        ),
    ).json()
    assert body["choices"][0]["message"]["reasoning"] is None


def test_streamed_tool_call_round_trip(client: httpx.Client) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Use the Bash tool to run: echo hi"}
    ]
    request = chat(
        messages=messages, tools=BASH, stream=True, stream_options={"include_usage": True}
    )
    with client.stream("POST", "/v1/chat/completions", json=request) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse(response)
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"] == [] and events[-2]["usage"]["prompt_tokens"] > 0
    calls = [t for e in events[:-2] for t in e["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["id"].startswith("chatcmpl-tool-")
    assert calls[0]["function"] == {"name": "Bash"}
    arguments = "".join(c["function"].get("arguments", "") for c in calls)
    assert json.loads(arguments)["command"] == "echo hi"
    assert events[-3]["choices"][0]["finish_reason"] == "tool_calls"
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": calls[0]["id"], "type": "function",
                 "function": {"name": "Bash", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "hi\n"},
    ]  # fmt: skip
    final = client.post("/v1/chat/completions", json=chat(messages=messages, tools=BASH)).json()
    assert final["choices"][0]["message"]["content"] == "The command printed: hi"
    assert final["choices"][0]["finish_reason"] == "stop"


def test_stop_and_length(client: httpx.Client) -> None:
    script = 'SIM_SCRIPT: {"content": "alpha beta STOP gamma", "chunk_chars": 5}'
    messages = [{"role": "user", "content": script}]
    stopped = client.post(
        "/v1/chat/completions", json=chat(messages=messages, stop=["STOP"])
    ).json()["choices"][0]
    assert stopped["message"]["content"] == "alpha beta "
    assert (stopped["finish_reason"], stopped["stop_reason"]) == ("stop", "STOP")
    cut = client.post("/v1/chat/completions", json=chat(messages=messages, max_tokens=2)).json()
    assert cut["choices"][0]["message"]["content"] == "alpha beta"
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 2


def test_context_overflow_is_vllms_400(client: httpx.Client) -> None:
    """vLLM 0.32: a prompt over max_model_len is refused with its own words; max_tokens beyond
    the room left is clamped to it; max_tokens over max_model_len is refused; a prompt that
    fills the context leaves max_tokens 0."""
    def post(prompt_tokens: int, **fields: Any) -> httpx.Response:
        script = f'SIM_SCRIPT: {{"prompt_tokens": {prompt_tokens}, "content": "{"x" * 40}"}}'
        body = chat(messages=[{"role": "user", "content": script}], **fields)
        return client.post("/v1/chat/completions", json=body)

    response = post(5000, max_tokens=200)
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": (
                "This model's maximum context length is 4096 tokens. However, your prompt "
                "contains at least 4097 input tokens, which exceeds this limit even without any "
                "output tokens. Please reduce the length of the input prompt. "
                "(parameter=input_tokens, value=4097)"
            ),
            "type": "BadRequestError",
            "param": "input_tokens",
            "code": 400,
        }
    }
    assert "contains 4097 input tokens" not in post(4097).json()["error"]["message"]
    clamped = post(4090, max_tokens=200)
    assert clamped.status_code == 200
    assert clamped.json()["choices"][0]["finish_reason"] == "length"
    assert clamped.json()["usage"]["completion_tokens"] == 6
    assert post(4096).json()["error"]["message"] == (
        "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)")
    assert post(10, max_completion_tokens=5000).json()["error"] == {
        "message": "max_completion_tokens=5000 cannot be greater than max_model_len=4096. "
                   "Please request fewer output tokens. (parameter=max_completion_tokens, "
                   "value=5000)",
        "type": "BadRequestError", "param": "max_completion_tokens", "code": 400}
    long = [{"role": "user", "content": "word " * 5000}]
    assert client.post("/v1/chat/completions", json=chat(messages=long)).status_code == 400


def test_scripted_http_error(client: httpx.Client) -> None:
    script = 'SIM_SCRIPT: {"http_status": 503, "error_message": "engine asleep"}'
    response = client.post(
        "/v1/chat/completions", json=chat(messages=[{"role": "user", "content": script}])
    )
    assert response.status_code == 503
    assert response.json()["error"] == {
        "message": "engine asleep",
        "type": "ServiceUnavailableError",
        "param": None,
        "code": 503,
    }


def test_backend_dying_mid_stream(client: httpx.Client) -> None:
    script = 'SIM_SCRIPT: {"content": "abcdefghij", "chunk_chars": 1, "die_after_chunks": 3}'
    request = chat(messages=[{"role": "user", "content": script}], stream=True)
    seen: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", "/v1/chat/completions", json=request) as response:
            for line in response.iter_lines():
                seen.append(line)
    data = [line for line in seen if line.startswith("data: ")]
    assert len(data) == 3
    assert "data: [DONE]" not in data


def test_client_disconnect_cancels_the_stream(sim: SimHandle, client: httpx.Client) -> None:
    before = metric(client, "vllm_sim_cancelled_requests_total")
    script = 'SIM_SCRIPT: {"content": "' + "x" * 200 + '", "chunk_chars": 1, "delay_ms": 20}'
    request = chat(messages=[{"role": "user", "content": script}], stream=True)
    with httpx.Client(base_url=sim.url, timeout=5) as other:
        with other.stream("POST", "/v1/chat/completions", json=request) as response:
            lines = response.iter_lines()
            next(lines)
    deadline = time.monotonic() + 3
    while metric(client, "vllm_sim_cancelled_requests_total") == before:
        assert time.monotonic() < deadline, "the stream was not cancelled"
        time.sleep(0.02)
    assert metric(client, "vllm_sim_cancelled_requests_total") == before + 1


def test_tokenize_prompt_and_messages(client: httpx.Client) -> None:
    short = client.post("/tokenize", json={"model": MODEL, "prompt": "hello world"}).json()
    assert short == {
        "count": 3,
        "max_model_len": 4096,
        "tokens": short["tokens"],
        "token_strs": None,
    }
    messages = [{"role": "user", "content": "hi"}]
    plain = client.post("/tokenize", json={"model": MODEL, "messages": messages}).json()
    tooled = client.post(
        "/tokenize", json={"model": MODEL, "messages": messages, "tools": BASH}
    ).json()
    assert tooled["count"] > plain["count"] == len(plain["tokens"])
    again = client.post("/tokenize", json={"model": MODEL, "messages": messages}).json()
    assert again == plain
    usage = client.post("/v1/chat/completions", json=chat(messages=messages)).json()["usage"]
    assert usage["prompt_tokens"] == plain["count"]
    # Neither prompt nor messages: pydantic's error for each request model (vLLM 0.32).
    neither = client.post("/tokenize", json={"model": "other"})
    assert neither.status_code == 400
    assert neither.json()["error"] == {
        "message": "2 validation errors:\n  {'type': 'missing', 'loc': 'body.prompt', 'msg': "
                   "'Field required', 'input': '<dict of 1 items>'}\n  {'type': 'missing', "
                   "'loc': 'body.messages', 'msg': 'Field required', 'input': "
                   "'<dict of 1 items>'}",
        "type": "Bad Request", "param": "body.prompt", "code": 400}


def test_keep_alive_and_pipelining(sim: SimHandle) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /version HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while data.count(b"HTTP/1.1 200 OK") < 2 or not data.endswith(b'"0.28.0"}'):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed early: {data!r}"
            data += chunk
    assert data.index(b"content-length: 0") < data.index(b'{"version"')


def test_expect_100_continue(sim: SimHandle) -> None:
    body = json.dumps({"model": MODEL, "prompt": "abcd"}).encode()
    head = (
        f"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", sim.port), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        reply = b""
        while b'"token_strs":null}' not in reply:
            chunk = sock.recv(65536)
            assert chunk
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK")


def test_auth_on_v1_only() -> None:
    with start(env={"VLLM_API_KEY": "k-123"}) as handle, httpx.Client(base_url=handle.url) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models").json() == {"error": "Unauthorized"}
        wrong = c.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = c.get("/v1/models", headers={"Authorization": "Bearer k-123"})
        assert ok.status_code == 200
        assert c.get("/health").status_code == 200


def test_auto_tool_choice_needs_the_flag() -> None:
    with start() as handle, httpx.Client(base_url=handle.url) as c:
        request = chat(messages=[{"role": "user", "content": "hi"}], tools=BASH)
        response = c.post("/v1/chat/completions", json=request)
        assert response.status_code == 400
        assert response.json()["error"]["message"] == (
            '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
        )
        plain = c.post("/v1/chat/completions", json={**request, "tool_choice": "none"})
        assert plain.status_code == 200
        # No reasoning parser: the thinking stays in the content.
        assert "</think>" in plain.json()["choices"][0]["message"]["content"]


def test_server_quirks_and_served_names() -> None:
    env = {"VLLM_SIM_QUIRKS": "reasoning_content"}
    with start(*QWEN_FLAGS, "--served-model-name", "a", "b", env=env) as handle:
        with httpx.Client(base_url=handle.url) as c:
            assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["a", "b"]
            request = {"model": "b", "messages": [{"role": "user", "content": "hi"}]}
            body = c.post("/v1/chat/completions", json=request).json()
            assert body["model"] == "b"
            message = body["choices"][0]["message"]
            assert "reasoning_content" in message and "reasoning" not in message


def test_bench_mode_chunk_count() -> None:
    with start(env={"VLLM_SIM_BENCH_CHUNKS": "5"}) as handle:
        with httpx.Client(base_url=handle.url) as c:
            request = chat(messages=[{"role": "user", "content": "hi"}], stream=True)
            with c.stream("POST", "/v1/chat/completions", json=request) as response:
                events = sse(response)
    contents = [e["choices"][0]["delta"].get("content") for e in events[1:-1]]
    assert contents == ["bench "] * 5 + [None]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
chat_fields = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([MODEL, "other"]) | json_values,
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant", "tool", "system"]) | json_values},
                optional={"content": json_values},
            ),
            max_size=3,
        )
        | json_values,
        "tools": st.just(BASH) | json_values,
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | json_values,
        "stream": json_values,
        "stream_options": json_values,
        "stop": json_values,
        "max_tokens": json_values,
        "chat_template_kwargs": json_values,
    },
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=chat_fields)
def test_garbage_requests_never_cause_a_server_error(client: httpx.Client, body: Any) -> None:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code in (200, 400, 404), response.text
    if response.status_code != 200:
        error = response.json()["error"]
        assert error["code"] == response.status_code and error["message"]


def test_client_leaving_a_slow_non_streamed_request_is_counted(
    sim: SimHandle, client: httpx.Client
) -> None:
    before = metric(client, "vllm_sim_cancelled_requests_total")
    script = 'SIM_SCRIPT: {"content": "' + "y" * 100 + '", "chunk_chars": 1, "delay_ms": 50}'
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{sim.url}/v1/chat/completions",
            json=chat(messages=[{"role": "user", "content": script}]),
            timeout=0.3,
        )
    deadline = time.monotonic() + 3
    while metric(client, "vllm_sim_cancelled_requests_total") == before:
        assert time.monotonic() < deadline, "the request was not cancelled"
        time.sleep(0.02)
