"""A non-streaming OpenAI chat completion → an Anthropic ``message`` (pure)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from spark_stack.proxy.errors import ProxyError
from spark_stack.proxy.markup import marker_index, split_leaked_calls
from spark_stack.proxy.repair import repair_arguments
from spark_stack.proxy.stream import cached_tokens, map_stop_reason


@dataclass(frozen=True)
class Translation:
    """The Anthropic message, and how many tool calls the text held as markup (markup.py)."""

    message: dict[str, Any]
    leaked_calls: int = 0


def translate_response(
    completion: Any,
    model: str,
    message_id: str,
    input_tokens: int,
    *,
    repair_markup: bool = False,
    tools: list[Any] | None = None,
) -> Translation:
    """Translate vLLM's answer; a malformed one is a 502 ``api_error``, never a 500.

    ``input_tokens`` is the prompt less what vLLM's prefix cache served, which is
    ``cache_read_input_tokens``. Tool calls leaked into the text as markup are counted, and
    with ``repair_markup`` turned back into ``tool_use`` blocks."""
    if not isinstance(completion, dict):
        raise _malformed("the body is not an object")
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _malformed("no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _malformed("no message")
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        signature = hashlib.blake2b(reasoning.encode(), digest_size=16).hexdigest()
        content.append({"type": "thinking", "thinking": reasoning, "signature": signature})
    text = message.get("content")
    leaked = None
    if isinstance(text, str) and marker_index(text) >= 0:
        leaked = split_leaked_calls(text, tools)
        if leaked is not None and repair_markup:
            text = leaked[0]
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _malformed("tool_calls is not a list")
    for i, call in enumerate(calls):
        content.append(_tool_use(call, i, message_id))
    repaired = leaked[1] if leaked is not None and repair_markup else []
    for number, call in enumerate(repaired):
        content.append({"type": "tool_use", "id": f"toolu_{message_id[-12:]}m{number:02d}",
                        "name": call.name, "input": orjson.loads(call.arguments)})
    stop_string = choice.get("stop_reason")
    stop_reason, stop_sequence = map_stop_reason(
        choice.get("finish_reason"),
        stop_string if isinstance(stop_string, str) else None,
        bool(calls) or bool(repaired),
    )
    usage = completion.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    prompt = usage.get("prompt_tokens")
    completion_tokens = usage.get("completion_tokens")
    cached = cached_tokens(usage, prompt) if isinstance(prompt, int) else 0
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": prompt - cached if isinstance(prompt, int) else input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
            "output_tokens": completion_tokens if isinstance(completion_tokens, int) else 0,
        },
    }
    return Translation(message, len(leaked[1]) if leaked is not None else 0)


def _tool_use(call: Any, position: int, message_id: str) -> dict[str, Any]:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise _malformed("a tool call has no function")
    function = call["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise _malformed("a tool call has no name")
    raw = function.get("arguments", "")
    arguments = repair_arguments(raw) if isinstance(raw, str) else None
    if arguments is None:
        raise ProxyError(
            502, "api_error", f"the model produced invalid JSON arguments for tool {name!r}"
        )
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        call_id = f"toolu_{message_id[-12:]}{position:02d}"
    return {"type": "tool_use", "id": call_id, "name": name, "input": orjson.loads(arguments)}


def _malformed(what: str) -> ProxyError:
    return ProxyError(502, "api_error", f"upstream sent a malformed completion: {what}")
