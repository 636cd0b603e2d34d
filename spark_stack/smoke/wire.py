"""Timed HTTP calls in both wire formats, for `smoke` and `bench` (httpx, no SDKs).

Anthropic Messages (through the proxy, as Claude Code speaks it) and OpenAI chat completions
(straight to vLLM). A streamed call records the time to the first token — the first delta
that carries text, thinking or tool-call input, so both formats measure the same moment —
and the time of the last one, for the decode rate. Errors never raise: they come back in
the result's ``error``, ready to be a check's reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..neterrors import connect_reason

ANTHROPIC_VERSION = "2023-06-01"
# spark-stack's proxy marks a count it estimated because the backend's tokenizer did not answer.
COUNT_SOURCE_HEADER = "x-spark-stack-token-count"


@dataclass
class CallResult:
    """One request's outcome in a shape common to both wire formats."""

    status: int | None = None
    error: str | None = None
    started: float = 0.0
    first_token_at: float | None = None
    last_token_at: float | None = None
    finished_at: float = 0.0
    text: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {id, name, input}
    content: list[dict[str, Any]] = field(default_factory=list)  # Anthropic content blocks
    stop_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    token_deltas: int = 0
    estimated: bool = False  # count_tokens: the proxy estimated (the backend could not count)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def latency_ms(self) -> float:
        return (self.finished_at - self.started) * 1000

    @property
    def ttft_ms(self) -> float | None:
        if self.first_token_at is None:
            return None
        return (self.first_token_at - self.started) * 1000

    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first over the time they took (the model's decode rate)."""
        tokens = self.output_tokens if self.output_tokens is not None else self.token_deltas
        if self.first_token_at is None or self.last_token_at is None or tokens < 2:
            return None
        elapsed = self.last_token_at - self.first_token_at
        return (tokens - 1) / elapsed if elapsed > 0 else None


def anthropic_headers(token: str | None, session: str | None = None) -> dict[str, str]:
    headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
    if token:
        headers["x-api-key"] = token
    if session:
        # Claude Code's session header: the proxy keeps a session on one replica by it.
        headers["x-claude-code-session-id"] = session
    return headers


def openai_headers(api_key: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def _error_text(status: int, body: bytes) -> str:
    """The server's own error message from an Anthropic or OpenAI error body."""
    try:
        data = json.loads(body)
    except ValueError:
        return f"HTTP {status}: {body[:200].decode(errors='replace')}"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        kind = error.get("type", "")
        return f"HTTP {status} {kind}: {error.get('message', '')}".replace("  ", " ")
    return f"HTTP {status}: {str(data)[:200]}"


def _transport_error(exc: httpx.HTTPError, url: str) -> str:
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {url}: {connect_reason(exc)}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out talking to {url}"
    return f"{type(exc).__name__} from {url}: {exc}"


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) pairs of a server-sent event stream; unnamed events are 'message'."""
    name = ""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield name or "message", "\n".join(data)
            name, data = "", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield name or "message", "\n".join(data)


class AnthropicStream:
    """Folds Anthropic stream events into a :class:`CallResult`, checking their order."""

    def __init__(self, result: CallResult) -> None:
        self.result = result
        self.blocks: dict[int, dict[str, Any]] = {}
        self.json_parts: dict[int, list[str]] = {}
        self.open: set[int] = set()
        self.stopped = False

    def feed(self, name: str, data: dict[str, Any]) -> None:
        result = self.result
        if name == "message_start":
            usage = data.get("message", {}).get("usage", {})
            result.input_tokens = usage.get("input_tokens")
        elif name == "content_block_start":
            index = int(data["index"])
            block = dict(data["content_block"])
            if index in self.blocks:
                raise ValueError(f"content block {index} started twice")
            self.blocks[index] = block
            self.open.add(index)
            self.json_parts[index] = []
        elif name == "content_block_delta":
            self._delta(int(data["index"]), data["delta"])
        elif name == "content_block_stop":
            index = int(data["index"])
            if index not in self.open:
                raise ValueError(f"content block {index} stopped but not open")
            self.open.discard(index)
            self._close(index)
        elif name == "message_delta":
            result.stop_reason = data.get("delta", {}).get("stop_reason")
            usage = data.get("usage", {})
            result.output_tokens = usage.get("output_tokens")
            # message_start may carry an estimate; the final usage has the server's count.
            result.input_tokens = usage.get("input_tokens", result.input_tokens)
        elif name == "message_stop":
            self.stopped = True
        elif name == "error":
            error = data.get("error", {})
            raise ValueError(f"error event {error.get('type')}: {error.get('message')}")

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        if index not in self.open:
            raise ValueError(f"delta for content block {index}, which is not open")
        block = self.blocks[index]
        kind = delta.get("type")
        piece = ""
        if kind == "text_delta":
            piece = delta["text"]
            block["text"] = block.get("text", "") + piece
        elif kind == "thinking_delta":
            piece = delta["thinking"]
            block["thinking"] = block.get("thinking", "") + piece
        elif kind == "input_json_delta":
            piece = delta["partial_json"]
            self.json_parts[index].append(piece)
        elif kind == "signature_delta":
            block["signature"] = delta["signature"]
        if piece:
            now = time.perf_counter()
            if self.result.first_token_at is None:
                self.result.first_token_at = now
            self.result.last_token_at = now
            self.result.token_deltas += 1

    def _close(self, index: int) -> None:
        block = self.blocks[index]
        if block.get("type") == "tool_use":
            raw = "".join(self.json_parts[index])
            try:
                block["input"] = json.loads(raw) if raw else block.get("input", {})
            except ValueError as exc:
                raise ValueError(f"tool_use input is not JSON: {raw[:100]!r}") from exc

    def finish(self) -> None:
        if self.open:
            raise ValueError(f"stream ended with content blocks still open: {sorted(self.open)}")
        if not self.stopped:
            raise ValueError("stream ended without message_stop")
        fill_from_content(self.result, [self.blocks[i] for i in sorted(self.blocks)])


def fill_from_content(result: CallResult, content: list[dict[str, Any]]) -> None:
    result.content = content
    result.text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
    result.thinking = "".join(
        b.get("thinking", "") for b in content if b.get("type") == "thinking"
    )
    result.tool_calls = [
        {"id": b.get("id"), "name": b.get("name"), "input": b.get("input")}
        for b in content
        if b.get("type") == "tool_use"
    ]


def anthropic_call(
    client: httpx.Client, base_url: str, token: str | None, body: dict[str, Any],
    session: str | None = None,
) -> CallResult:
    """``POST /v1/messages`` (streamed when ``body["stream"]``), timed; ``session`` is sent as
    Claude Code's session id."""
    url = f"{base_url.rstrip('/')}/v1/messages"
    result = CallResult(started=time.perf_counter())
    try:
        if body.get("stream"):
            _anthropic_stream(client, url, token, body, result, session)
        else:
            response = client.post(url, json=body, headers=anthropic_headers(token, session))
            result.status = response.status_code
            if response.status_code != 200:
                result.error = _error_text(response.status_code, response.content)
            else:
                data = response.json()
                fill_from_content(result, list(data.get("content", [])))
                result.stop_reason = data.get("stop_reason")
                usage = data.get("usage", {})
                result.input_tokens = usage.get("input_tokens")
                result.output_tokens = usage.get("output_tokens")
    except httpx.HTTPError as exc:
        result.error = _transport_error(exc, url)
    except (ValueError, KeyError, TypeError) as exc:
        result.error = f"malformed answer: {exc}"
    result.finished_at = time.perf_counter()
    return result


def _anthropic_stream(
    client: httpx.Client, url: str, token: str | None, body: dict[str, Any], result: CallResult,
    session: str | None = None,
) -> None:
    headers = anthropic_headers(token, session)
    with client.stream("POST", url, json=body, headers=headers) as response:
        result.status = response.status_code
        if response.status_code != 200:
            result.error = _error_text(response.status_code, response.read())
            return
        folder = AnthropicStream(result)
        for name, data in sse_events(response.iter_lines()):
            folder.feed(name, json.loads(data))
        folder.finish()


def count_tokens_call(
    client: httpx.Client, base_url: str, token: str | None, body: dict[str, Any],
    session: str | None = None,
) -> CallResult:
    """``POST /v1/messages/count_tokens``; the count lands in ``input_tokens``."""
    url = f"{base_url.rstrip('/')}/v1/messages/count_tokens"
    result = CallResult(started=time.perf_counter())
    try:
        response = client.post(url, json=body, headers=anthropic_headers(token, session))
        result.status = response.status_code
        if response.status_code != 200:
            result.error = _error_text(response.status_code, response.content)
        else:
            count = response.json().get("input_tokens")
            if not isinstance(count, int) or isinstance(count, bool):
                result.error = f"input_tokens is not an integer: {count!r}"
            else:
                result.input_tokens = count
                result.estimated = response.headers.get(COUNT_SOURCE_HEADER) == "estimate"
    except httpx.HTTPError as exc:
        result.error = _transport_error(exc, url)
    except ValueError as exc:
        result.error = f"malformed answer: {exc}"
    result.finished_at = time.perf_counter()
    return result


def openai_stream_call(
    client: httpx.Client, base_url: str, api_key: str | None, body: dict[str, Any]
) -> CallResult:
    """A streamed ``POST {base_url}/chat/completions`` (``base_url`` ends in ``/v1``), timed."""
    url = f"{base_url.rstrip('/')}/chat/completions"
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    result = CallResult(started=time.perf_counter())
    calls: dict[int, dict[str, Any]] = {}
    try:
        with client.stream("POST", url, json=body, headers=openai_headers(api_key)) as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.error = _error_text(response.status_code, response.read())
            else:
                done = False
                for _, data in sse_events(response.iter_lines()):
                    if data.strip() == "[DONE]":
                        done = True
                        break
                    _fold_openai_chunk(result, json.loads(data), calls)
                if not done:
                    result.error = "stream ended without [DONE]"
    except httpx.HTTPError as exc:
        result.error = _transport_error(exc, url)
    except (ValueError, KeyError, TypeError) as exc:
        result.error = f"malformed answer: {exc}"
    for index in sorted(calls):
        call = calls[index]
        try:
            arguments = json.loads(call["arguments"] or "{}")
        except ValueError:
            arguments = call["arguments"]
        result.tool_calls.append({"id": call["id"], "name": call["name"], "input": arguments})
    result.finished_at = time.perf_counter()
    return result


def _fold_openai_chunk(
    result: CallResult, chunk: dict[str, Any], calls: dict[int, dict[str, Any]]
) -> None:
    if "error" in chunk:
        raise ValueError(f"error chunk: {chunk['error']}")
    usage = chunk.get("usage")
    if usage:
        result.input_tokens = usage.get("prompt_tokens")
        result.output_tokens = usage.get("completion_tokens")
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        pieces = []
        if delta.get("content"):
            result.text += delta["content"]
            pieces.append(delta["content"])
        reasoning = delta.get("reasoning") or delta.get("reasoning_content")
        if reasoning:
            result.thinking += reasoning
            pieces.append(reasoning)
        for call in delta.get("tool_calls") or []:
            entry = calls.setdefault(int(call["index"]), {"id": None, "name": None,
                                                           "arguments": ""})
            entry["id"] = entry["id"] or call.get("id")
            function = call.get("function") or {}
            entry["name"] = entry["name"] or function.get("name")
            if function.get("arguments"):
                entry["arguments"] += function["arguments"]
                pieces.append(function["arguments"])
        if pieces:
            now = time.perf_counter()
            if result.first_token_at is None:
                result.first_token_at = now
            result.last_token_at = now
            result.token_deltas += 1
        if choice.get("finish_reason"):
            result.stop_reason = choice["finish_reason"]
