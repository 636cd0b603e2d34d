"""Conformance with what the pinned Claude Code CLI really sends: the requests recorded by
``scripts/record_claude_code.py`` (tests/fixtures/claude_code/<version>/) through the proxy's
pure translation, and replayed over real sockets to the proxy in front of the vLLM simulator.

Re-record after a pin bump: ``.venv/bin/python scripts/record_claude_code.py``
(tests/fixtures/claude_code/README.md).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from spark_stack.proxy.config import ProxyConfig, Route, Upstream
from spark_stack.proxy.daemon import start_background, stop_background
from spark_stack.proxy.translate_request import (
    clamp_max_tokens,
    estimate_from_size,
    translate_request,
)
from spark_stack.simulator import start_in_thread
from tests.e2e.conftest import pinned_claude_version
from tests.helpers import free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude_code"
SCHEMA = "https://json-schema.org/draft/2020-12/schema"
QWEN = Upstream("qwen", "http://127.0.0.1:8000/v1", "qwen3.6", max_model_len=262144)
TOOL_USE_ID = "toolu_01RecordedBashCall000001"
MAX_LEN = 32768
SERVED = "qwen3.6-sim"
TOKEN = "recorded-replay-token"
# The recording's own transport headers; httpx sets these for the replay.
TRANSPORT_HEADERS = frozenset({"host", "content-length", "connection", "accept-encoding"})


def recorded(turn: int) -> dict[str, Any]:
    """A recorded request of the pinned CLI (fails, naming the fix, when it was never made)."""
    path = FIXTURES / pinned_claude_version() / f"turn{turn}.json"
    if not path.is_file():
        pytest.fail(f"no recording at {path}; re-record with "
                    "`.venv/bin/python scripts/record_claude_code.py`", pytrace=False)
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


def body(turn: int) -> dict[str, Any]:
    request: dict[str, Any] = recorded(turn)["body"]
    return request


def test_recording_matches_the_pinned_cli() -> None:
    pinned = pinned_claude_version()
    assert sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) == [pinned]
    for turn in (1, 2):
        record = recorded(turn)
        assert record["claude_code_version"] == pinned
        assert record["headers"]["user-agent"] == f"claude-cli/{pinned} (external, sdk-cli)"
        assert record["body"]["system"][0]["text"].startswith(
            f"x-anthropic-billing-header: cc_version={pinned}.")


def test_recording_is_real_and_secret_free() -> None:
    for turn in (1, 2):
        record = recorded(turn)
        assert record["method"] == "POST"
        assert record["path"] == "/v1/messages?beta=true"
        assert "authorization" not in record["headers"]
        assert "x-api-key" not in record["headers"]
        assert record["headers"]["anthropic-version"] == "2023-06-01"
        assert record["headers"]["x-app"] == "cli"
        assert "recording-placeholder-token" not in orjson.dumps(record).decode()
        # Scrubbing swaps a few short strings; the body stays the size the CLI sent.
        assert abs(len(orjson.dumps(record["body"])) - record["body_bytes"]) < 200


def test_turn1_translation() -> None:
    request = body(1)
    system, (prompt, environment) = request["system"], request["messages"]
    assert system[0]["text"].startswith("x-anthropic-billing-header:")
    assert [block.get("cache_control") for block in system[1:]] == [{"type": "ephemeral"}] * 2
    assert (prompt["role"], environment["role"]) == ("user", "system")

    out = translate_request(request, QWEN)

    assert out["messages"] == [
        {"role": "system", "content": system[1]["text"] + "\n\n" + system[2]["text"]},
        {"role": "user", "content": "\n".join(block["text"] for block in prompt["content"])},
        # The mid-conversation system message is carried in place as a user note.
        {"role": "user", "content": "<system-reminder>\n"
         + "\n".join(block["text"] for block in environment["content"])
         + "\n</system-reminder>"},
    ]
    assert "x-anthropic-billing-header" not in orjson.dumps(out).decode()
    assert out["chat_template_kwargs"] == {"enable_thinking": True}
    assert out["max_tokens"] == request["max_tokens"] == 128000
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert out["user"] == request["metadata"]["user_id"]
    assert out["model"] == "qwen3.6"
    for dropped in ("thinking", "output_config", "context_management", "metadata", "system"):
        assert dropped not in out


def test_every_tool_loses_schema_and_keeps_the_rest() -> None:
    request = body(1)
    assert sum("$schema" in tool["input_schema"] for tool in request["tools"]) >= 10
    out = translate_request(request, QWEN)
    assert [tool["function"]["name"] for tool in out["tools"]] == [
        tool["name"] for tool in request["tools"]]
    assert SCHEMA not in orjson.dumps(out["tools"]).decode()
    for original, tool in zip(request["tools"], out["tools"], strict=True):
        assert tool["type"] == "function"
        assert tool["function"]["description"] == original["description"]
        expected = {k: v for k, v in original["input_schema"].items() if k != "$schema"}
        assert tool["function"]["parameters"] == expected


def test_turn2_tool_round_trip() -> None:
    request = body(2)
    call, result = request["messages"][-2:]
    assert call["content"][-1]["type"] == "tool_use" and call["content"][-1]["id"] == TOOL_USE_ID
    assert result["content"][0]["type"] == "tool_result"

    out = translate_request(request, QWEN)

    assert out["messages"][-2:] == [
        {"role": "assistant", "content": "", "tool_calls": [{
            "id": TOOL_USE_ID, "type": "function",
            "function": {"name": "Bash", "arguments":
                         '{"command":"echo recorded","description":"Print the word recorded"}'},
        }]},
        {"role": "tool", "tool_call_id": TOOL_USE_ID, "content": "recorded"},
    ]


def test_turn1_prompt_is_a_prefix_of_turn2() -> None:
    """vLLM's prefix cache reuses turn 1 for turn 2 only if its messages come out unchanged,
    even though the billing line differs on every real request."""
    first = translate_request(body(1), QWEN)
    second_body = copy.deepcopy(body(2))
    second_body["system"][0]["text"] = second_body["system"][0]["text"].replace(
        ".000;", ".7c4;")
    second = translate_request(second_body, QWEN)
    assert second["messages"][:len(first["messages"])] == first["messages"]
    assert second["tools"] == first["tools"]


def test_max_tokens_is_clamped_to_the_context_left() -> None:
    record = recorded(1)
    prompt = estimate_from_size(record["body_bytes"])
    assert clamp_max_tokens(record["body"]["max_tokens"], MAX_LEN, prompt) == MAX_LEN - prompt
    assert clamp_max_tokens(record["body"]["max_tokens"], 262144, prompt) == 128000


# --- over real sockets: the recorded requests replayed to the proxy → the vLLM simulator -----


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The proxy's and the simulator's base URLs."""
    argv = ["Qwen/Qwen3.6-35B-A3B", "--port", "0", "--served-model-name", SERVED,
            "--max-model-len", str(MAX_LEN), "--reasoning-parser", "qwen3",
            "--tool-call-parser", "qwen3_coder", "--enable-auto-tool-choice"]
    with start_in_thread(argv, env={"VLLM_SIM_STARTUP_SECONDS": "0"}) as sim:
        state = tmp_path_factory.mktemp("recorded-proxy")
        config = ProxyConfig(
            port=free_port(), token=TOKEN,
            upstreams={"qwen": Upstream("qwen", f"{sim.url.rstrip('/')}/v1", SERVED,
                                        max_model_len=MAX_LEN)},
            routes=[Route("claude-*", "qwen")],
        ).with_own_names()
        start_background(config, state)
        try:
            yield f"http://127.0.0.1:{config.port}", sim.url.rstrip("/")
        finally:
            stop_background(state)


def replay(proxy_url: str, turn: int) -> list[tuple[str, dict[str, Any]]]:
    """POST a recorded request with its own path and headers (plus the proxy's token, as
    Claude Code sends it); the (event name, data) pairs of the SSE answer."""
    record = recorded(turn)
    headers = {k: v for k, v in record["headers"].items() if k not in TRANSPORT_HEADERS}
    headers["authorization"] = f"Bearer {TOKEN}"
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    with httpx.stream("POST", proxy_url + record["path"], content=orjson.dumps(record["body"]),
                      headers=headers, timeout=20) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, orjson.loads(line[6:])))
    return events


DELTA_FOR = {"text": "text_delta", "thinking": "thinking_delta", "tool_use": "input_json_delta"}


def check_well_formed(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Assert Anthropic's event grammar; return the message the events assemble."""
    assert all(name == data["type"] for name, data in events)
    kinds = [data["type"] for _, data in events]
    assert kinds[:2] == ["message_start", "ping"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    message = events[0][1]["message"]
    assert message["role"] == "assistant" and message["content"] == []
    assert message["usage"]["input_tokens"] > 0
    blocks: list[dict[str, Any]] = []
    open_index: int | None = None
    for _, event in events[2:-2]:
        kind = event["type"]
        if kind == "content_block_start":
            assert open_index is None and event["index"] == len(blocks)
            open_index = event["index"]
            blocks.append(dict(event["content_block"]))
        elif kind == "content_block_delta":
            assert event["index"] == open_index
            block, delta = blocks[event["index"]], event["delta"]
            assert delta["type"] in (DELTA_FOR[block["type"]], "signature_delta")
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
        else:
            assert kind == "content_block_stop" and event["index"] == open_index
            open_index = None
    assert open_index is None
    final = events[-2][1]
    assert final["usage"]["output_tokens"] > 0
    return {"content": blocks, "stop_reason": final["delta"]["stop_reason"]}


def test_turn1_replayed_streams_an_answer(urls: tuple[str, str]) -> None:
    proxy_url, sim_url = urls
    # Claude Code asks for 128000 output tokens of a 32768-token model, which the backend
    # refuses as it stands (vLLM 0.32: "max_tokens=128000 cannot be greater than
    # max_model_len=32768"); through the proxy it is answered, so the proxy clamped it.
    unclamped = translate_request(body(1), Upstream("qwen", sim_url, SERVED))
    direct = httpx.post(sim_url + "/v1/chat/completions", json=unclamped, timeout=20)
    assert direct.status_code == 400
    assert "cannot be greater than max_model_len=32768" in direct.text
    message = check_well_formed(replay(proxy_url, 1))
    assert message["stop_reason"] == "end_turn"
    assert [block["type"] for block in message["content"]] == ["thinking", "text"]
    assert message["content"][0]["signature"]
    assert message["content"][1]["text"].startswith("Hello from the vLLM simulator (")


def test_turn2_replayed_answers_from_the_tool_result(urls: tuple[str, str]) -> None:
    message = check_well_formed(replay(urls[0], 2))
    assert message["stop_reason"] == "end_turn"
    assert message["content"][-1] == {"type": "text", "text": "The command printed: recorded"}
