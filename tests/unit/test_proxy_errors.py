"""Backend errors → Anthropic errors, and the safe tool-argument repairs."""

from __future__ import annotations

import orjson
import pytest

from spark_stack.proxy.errors import ContextOverflow, from_backend, parse_context_overflow
from spark_stack.proxy.repair import repair_arguments


def vllm_error(message: str, code: int = 400) -> bytes:
    return orjson.dumps({"object": "error", "message": message, "type": "BadRequestError",
                         "param": None, "code": code})


@pytest.mark.parametrize(
    ("message", "parsed"),
    [
        ("This model's maximum context length is 32768 tokens. However, you requested 40000 "
         "tokens (39000 in the messages, 1000 in the completion). Please reduce the length.",
         ContextOverflow(32768, 39000)),
        ("This model's maximum context length is 4096 tokens. However, your request has 5000 "
         "input tokens. Please reduce the length of the input messages.",
         ContextOverflow(4096, 5000)),
        ("'max_tokens' or 'max_completion_tokens' is too large: 64000. This model's maximum "
         "context length is 65536 tokens and your request has 3000 input tokens "
         "(64000 > 65536 - 3000).", ContextOverflow(65536, 3000)),
        ("The maximum model length is 2048", ContextOverflow(2048, None)),
        ("something else", None),
    ],
)
def test_parse_context_overflow(message: str, parsed: ContextOverflow | None) -> None:
    assert parse_context_overflow(message) == parsed


def test_overflow_becomes_prompt_too_long() -> None:
    error = from_backend(400, vllm_error(
        "This model's maximum context length is 4096 tokens. However, your request has 5000 "
        "input tokens."), "qwen")
    assert (error.status, error.error_type, error.message) == (
        400, "invalid_request_error", "prompt is too long: 5000 tokens > 4096 maximum")
    assert orjson.loads(error.body()) == {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "prompt is too long: 5000 tokens > 4096 maximum"}}


def test_overflow_from_max_tokens_alone_is_a_max_tokens_error() -> None:
    message = ("This model's maximum context length is 4096 tokens. However, you requested 5000 "
               "tokens (1000 in the messages, 4000 in the completion).")
    error = from_backend(400, vllm_error(message), "qwen")
    assert (error.status, error.message) == (400, f"max_tokens: {message}")


@pytest.mark.parametrize(
    ("status", "expected_status", "expected_type"),
    [(503, 529, "overloaded_error"), (502, 529, "overloaded_error"), (429, 429, "rate_limit_error"),
     (404, 404, "not_found_error"), (400, 400, "invalid_request_error"), (500, 500, "api_error"),
     (401, 502, "api_error"), (418, 500, "api_error")],
)
def test_status_mapping(status: int, expected_status: int, expected_type: str) -> None:
    error = from_backend(status, vllm_error("boom", status), "qwen")
    assert (error.status, error.error_type) == (expected_status, expected_type)
    assert "boom" in error.message


def test_non_json_backend_body_keeps_its_text() -> None:
    assert from_backend(500, b"Internal Server Error", "q").message == "Internal Server Error"
    assert from_backend(500, b'{"detail":"Not Found"}', "q").message == "Not Found"
    assert from_backend(500, b'{"error":{"message":"x"}}', "q").message == "x"


@pytest.mark.parametrize(
    ("raw", "repaired"),
    [
        ('{"a": 1}', '{"a": 1}'),
        ("", "{}"),
        ("  ", "{}"),
        ('"{\\"a\\": 1}"', '{"a":1}'),
        ("{'a': 'x', 'b': True, 'c': None}", '{"a":"x","b":true,"c":null}'),
        ('{"a": "x",', '{"a": "x"}'),
        ('{"a": {"b": [1, "x"]', '{"a": {"b": [1, "x"]}}'),
        ('{"a": true', '{"a": true}'),
        ('{"command": "rm -rf /tm', None),
        ('{"n": 12', None),
        ('{"a": ', None),
        ('{"a": "x", "b"', None),
        ("[1, 2]", None),
        ("hello", None),
        ("{'a': object()}", None),
        ('{"a": 1}}', None),
    ],
)
def test_repair_arguments(raw: str, repaired: str | None) -> None:
    assert repair_arguments(raw) == repaired
