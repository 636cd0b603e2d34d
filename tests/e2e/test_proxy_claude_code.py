"""What the proxy makes of a Claude Code-shaped request body (``tests/claude_code_body.py``).
What the pinned CLI really sends is recorded in tests/fixtures/claude_code/ and tested in
test_claude_code_recorded.py; the body must keep that recording's shape."""

from __future__ import annotations

import time

import orjson

from spark_stack.proxy.config import Upstream
from spark_stack.proxy.translate_request import translate_request
from tests.claude_code_body import SCHEMA, claude_code_body

QWEN = Upstream("qwen", "http://127.0.0.1:8000/v1", "qwen3.6", max_model_len=262144)


def test_body_is_claude_code_sized() -> None:
    body = claude_code_body()
    assert 70_000 < len(orjson.dumps(body)) < 90_000
    assert len(body["tools"]) == 24


def test_body_has_the_recorded_shape() -> None:
    # Imported here: the benchmark imports this module and needs none of the e2e machinery.
    from tests.e2e.test_claude_code_recorded import recorded

    real, body = recorded(1)["body"], claude_code_body()
    assert set(body) == set(real)
    assert body["thinking"]["type"] == real["thinking"]["type"]
    assert set(orjson.loads(body["metadata"]["user_id"])) == set(
        orjson.loads(real["metadata"]["user_id"]))
    for blocks in (body["system"], real["system"]):
        assert len(blocks) == 3
        assert blocks[0]["text"].startswith("x-anthropic-billing-header: cc_version=")
        assert [b.get("cache_control") for b in blocks] == [None] + [{"type": "ephemeral"}] * 2
    assert "system" in {m["role"] for m in real["messages"]} & {m["role"] for m in body["messages"]}
    assert set(real["tools"][0]) == set(body["tools"][0]) == {"name", "description",
                                                              "input_schema"}
    assert all(t["input_schema"].get("$schema") == SCHEMA for t in body["tools"])


def test_translation_of_the_claude_code_body() -> None:
    out = translate_request(claude_code_body(), QWEN)
    assert out["messages"][0]["role"] == "system"
    assert out["messages"][0]["content"].startswith("You are Claude Code")
    assert "billing" not in orjson.dumps(out["messages"]).decode()
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "user", "user"]
    assert out["messages"][3]["content"] == (
        "<system-reminder>\nThe user switched to plan mode.\n</system-reminder>")
    assert out["messages"][2]["reasoning_content"] == "Look at the README."
    assert len(out["tools"]) == 24
    assert SCHEMA not in orjson.dumps(out["tools"]).decode()
    assert out["chat_template_kwargs"] == {"enable_thinking": True}
    assert out["user"].startswith('{"device_id"')
    assert "context_management" not in out and "output_config" not in out


def test_translation_is_cheap() -> None:
    raw = orjson.dumps(claude_code_body())
    start = time.perf_counter()
    for _ in range(20):
        translate_request(orjson.loads(raw), QWEN)
    per_request = (time.perf_counter() - start) / 20
    assert per_request < 0.01  # measured ~0.2 ms; generous for a loaded CI machine
