"""Errors in Anthropic's envelope, and the mapping from backend (vLLM/OpenAI) errors.

Claude Code reacts to the exact shape: ``prompt is too long: N tokens > M maximum`` drives its
auto-compaction, and 529 ``overloaded_error`` is retried briefly and then reported as a gateway
problem instead of being retried for minutes like a 500.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}
# Statuses that mean "the backend is not able to serve right now".
_OVERLOAD_STATUSES = frozenset({502, 503, 504, 529})


class ProxyError(Exception):
    """An error answered to the client as ``{"type":"error","error":{...}}``."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message

    def body(self) -> bytes:
        return orjson.dumps(envelope(self.error_type, self.message))


def envelope(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def invalid_request(field: str, message: str) -> ProxyError:
    """400 naming the offending field, e.g. ``messages.2.content: must be a string or a list``."""
    return ProxyError(400, "invalid_request_error", f"{field}: {message}" if field else message)


def overloaded(message: str) -> ProxyError:
    return ProxyError(529, "overloaded_error", message)


def prompt_too_long(prompt_tokens: int, max_tokens: int) -> ProxyError:
    message = f"prompt is too long: {prompt_tokens} tokens > {max_tokens} maximum"
    return ProxyError(400, "invalid_request_error", message)


@dataclass(frozen=True)
class ContextOverflow:
    """What a backend's "maximum context length" error says, as far as it says it."""

    max_model_len: int
    prompt_tokens: int | None


_MAX_LEN = re.compile(r"maximum (?:context length|model length) is (\d+)", re.I)
_PROMPT_PATTERNS = (
    re.compile(r"\((\d+) in the messages", re.I),
    re.compile(r"request has (\d+) input tokens", re.I),
    re.compile(r"your prompt (?:contains|has) (?:at least )?(\d+)", re.I),
    re.compile(r"(\d+) input tokens", re.I),
)


def parse_context_overflow(message: str) -> ContextOverflow | None:
    """Read vLLM's context-length error (its wording varies between versions)."""
    found = _MAX_LEN.search(message)
    if found is None:
        return None
    prompt: int | None = None
    for pattern in _PROMPT_PATTERNS:
        match = pattern.search(message)
        if match:
            prompt = int(match.group(1))
            break
    return ContextOverflow(int(found.group(1)), prompt)


def backend_message(body: bytes) -> str:
    """The human message inside an OpenAI- or vLLM-shaped error body (or the raw text)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:500] or "no message"
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        if isinstance(data.get("detail"), str):
            return str(data["detail"])
    return body.decode("utf-8", "replace").strip()[:500]


def from_backend(status: int, body: bytes, upstream: str) -> ProxyError:
    """Map a backend's HTTP error to the nearest Anthropic error."""
    message = backend_message(body)
    overflow = parse_context_overflow(message)
    if overflow is not None and status in (400, 413, 422):
        prompt = overflow.prompt_tokens
        if prompt is None:
            prompt = overflow.max_model_len + 1
        if prompt >= overflow.max_model_len:
            return prompt_too_long(prompt, overflow.max_model_len)
        # The prompt fits; only prompt + max_tokens does not (the server clamps and retries).
        return invalid_request("max_tokens", message)
    if status in _OVERLOAD_STATUSES:
        return overloaded(f"upstream {upstream} is overloaded or unavailable ({status}): {message}")
    error_type = _STATUS_TYPES.get(status, "api_error")
    # The backend's own auth failures are our configuration problem, not the client's.
    if status in (401, 403):
        refused = f"upstream {upstream} refused the proxy ({status}): {message}"
        return ProxyError(502, "api_error", refused)
    return ProxyError(status if status in _STATUS_TYPES else 500, error_type, message)


def upstream_timeout(seconds: float, upstream: str = "") -> ProxyError:
    """504: the backend accepted the request and then sent nothing for ``seconds``."""
    who = f"upstream {upstream}" if upstream else "the upstream"
    message = f"{who} sent nothing for {seconds:g} s (the proxy's upstream_timeout)"
    return ProxyError(504, "timeout_error", message)


class Unreachable(ProxyError):
    """529: the upstream could not be reached or answered nothing (another replica may)."""

    def __init__(self, message: str) -> None:
        super().__init__(529, "overloaded_error", message)


def unreachable(upstream: str, reason: str) -> ProxyError:
    return Unreachable(f"upstream {upstream} is unreachable: {reason}")
