"""Anthropic Messages request → OpenAI Chat Completions request for vLLM (pure, plain dicts).

Validation happens here too: anything malformed raises a 400 ``invalid_request_error`` naming
the field (``messages.3.content.0.type: …``), never a 500.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from spark_stack.proxy.bytecache import ByteBoundedCache
from spark_stack.proxy.config import Upstream
from spark_stack.proxy.errors import ProxyError, invalid_request

BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"
# JSON-Schema keys that strict backends (xgrammar/outlines guided decoding, OpenAI strict
# mode) reject or choke on; none of them changes what a valid tool input is.
STRIPPED_SCHEMA_KEYS = frozenset(
    {"$schema", "$id", "$comment", "$anchor", "$dynamicAnchor", "$vocabulary"}
)
# Keys whose value maps names to sub-schemas: recurse into the values, never strip the names.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions",
                          "dependentSchemas"})
# Keys whose value is data, not a schema.
_SCHEMA_DATA = frozenset({"const", "enum", "default", "examples", "required"})
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
# Parsed JSON takes several times its text in Python objects: caches count entries as this
# many times their JSON size.
_PARSED_PER_JSON_BYTE = 8
# What each tool cache may hold: ~15 of Claude Code's ~71 KB tool sets.
TOOL_CACHE_BYTES = 16 * 1024 * 1024


def translate_request(
    body: Any, upstream: Upstream, tools_json: bytes | None = None
) -> dict[str, Any]:
    """Translate a ``POST /v1/messages`` body for ``upstream`` (``max_tokens`` not yet clamped).
    ``tools_json`` is ``body["tools"]`` as compact JSON when the caller has it already."""
    request = _require_object(body)
    max_tokens = request.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise invalid_request("max_tokens", "required, an integer ≥ 1")
    out = _conversation(request, upstream, tools_json)
    out["max_tokens"] = max_tokens
    stream = request.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid_request("stream", "must be a boolean")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    stops = request.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise invalid_request("stop_sequences", "must be a list of strings")
        if stops:
            out["stop"] = stops
    for key in ("temperature", "top_p"):
        value = request.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise invalid_request(key, "must be a number")
            out[key] = value
    top_k = request.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise invalid_request("top_k", "must be an integer")
        out["top_k"] = top_k
    metadata = request.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise invalid_request("metadata", "must be an object")
        user_id = metadata.get("user_id")
        if isinstance(user_id, str) and user_id:
            out["user"] = user_id
    return out


def translate_for_tokenize(
    body: Any, upstream: Upstream, tools_json: bytes | None = None
) -> dict[str, Any]:
    """The vLLM ``POST /tokenize`` body that counts a ``count_tokens`` request exactly."""
    out = _conversation(_require_object(body), upstream, tools_json)
    out.pop("tool_choice", None)
    out.pop("parallel_tool_calls", None)
    out["add_generation_prompt"] = True
    return out


def clamp_max_tokens(requested: int, max_model_len: int | None, prompt_tokens: int) -> int:
    """``max_tokens`` that fits the context left; Claude Code asks for 32000/64000 blindly."""
    if max_model_len is None:
        return requested
    return max(1, min(requested, max_model_len - prompt_tokens))


def estimate_tokens(openai_body: dict[str, Any]) -> int:
    """A cheap upper-leaning estimate of the prompt's tokens (JSON bytes / 3).

    Over-estimating only costs output room when the prompt nearly fills the context, and
    the server asks the backend's tokenizer for the exact count in exactly that case.
    """
    size = len(orjson.dumps(openai_body.get("messages", [])))
    if "tools" in openai_body:
        size += len(orjson.dumps(openai_body["tools"]))
    return estimate_from_size(size)


def estimate_from_size(json_bytes: int) -> int:
    """The prompt-token estimate for this many bytes of JSON messages and tools."""
    return json_bytes // 3 + 16


# orjson serialises at most 255 levels of nesting.
MAX_JSON_DEPTH = 255
_PATH_SHOWN = 160


def too_deep(body: Any) -> ProxyError:
    """The 400 for a body nested too deeply to forward, naming where (only built once
    forwarding failed, so the walk costs nothing on the hot path)."""
    deepest: tuple[int, tuple[str, ...]] = (0, ())
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(body, 0, ())]
    while stack:
        value, depth, path = stack.pop()
        if depth > deepest[0]:
            deepest = (depth, path)
        if isinstance(value, dict):
            stack.extend((item, depth + 1, (*path, str(key))) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, depth + 1, (*path, str(i))) for i, item in enumerate(value))
    depth, path = deepest
    where = ".".join(path)
    if len(where) > _PATH_SHOWN:
        where = where[:_PATH_SHOWN] + "…"
    return invalid_request(
        where, f"JSON nested {depth} levels deep, too deep to forward (the limit is "
        f"{MAX_JSON_DEPTH} levels, counted in the request sent upstream)"
    )


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid_request("", "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("model", "required, a non-empty string")
    return body


def encode_request(request: dict[str, Any]) -> bytes:
    """``request`` as JSON for the backend; translated tools are serialised once per tool set."""
    tools = request.get("tools")
    if isinstance(tools, _Tools):
        return orjson.dumps({**request, "tools": tools.json})
    return orjson.dumps(request)


class BodyParser:
    """``orjson.loads`` for request bodies, minus the tool definitions it has seen before.

    Claude Code resends the same ~60 KB of tools (three quarters of its body) every turn, and
    parsing them, hashing them and freeing them again was most of a request's CPU. Once a
    body's ``"tools":[…]`` is known byte for byte, later bodies carrying those bytes are parsed
    with a marker in their place and get the tools parsed earlier (shared: never mutate them).
    The marker holds a per-process random string: only when the parsed body's own ``tools``
    is that string did the replaced bytes sit exactly where ``tools`` is read from, so the
    result equals a full parse. Anything else falls back to one.
    """

    def __init__(self, max_bytes: int = TOOL_CACHE_BYTES) -> None:
        # b'"tools":' + value JSON → (value JSON, parsed value).
        self._known: ByteBoundedCache[bytes, tuple[bytes, list[Any]]] = ByteBoundedCache(
            max_bytes
        )
        self._nonce = "spark-stack-tools-" + os.urandom(16).hex()
        self._marker = b'"tools":"' + self._nonce.encode() + b'"'

    def loads(self, raw: bytes) -> tuple[Any, bytes | None]:
        """The parsed body and, when it has a ``tools`` list, that list as compact JSON
        (``translate_request``'s ``tools_json``). Raises ``orjson.JSONDecodeError``."""
        for span, (value, tools) in self._known.recent_first():
            at = _find(raw, span)
            if at < 0:
                continue
            try:
                body = orjson.loads(raw[:at] + self._marker + raw[at + len(span) :])
            except orjson.JSONDecodeError:
                break
            if isinstance(body, dict) and body.get("tools") == self._nonce:
                body["tools"] = tools
                self._known.touch(span)
                return body, value
            break
        body = orjson.loads(raw)
        parsed = body.get("tools") if isinstance(body, dict) else None
        if not isinstance(parsed, list) or not parsed:
            return body, None
        try:
            value = orjson.dumps(parsed)
        except orjson.JSONEncodeError:  # too deep: translating says where, as a 400
            return body, None
        span = b'"tools":' + value
        if self._known.get(span) is None and _find(raw, span) >= 0:
            self._known.put(span, (value, parsed), len(span) * _PARSED_PER_JSON_BYTE)
        return body, value


def _find(haystack: bytes, needle: bytes) -> int:
    """``haystack.find(needle)`` for long needles: bytes.find preprocesses all of a 60 KB
    needle (~0.3 ms); finding its head and comparing the rest is a thousand times faster."""
    head = needle[:64]
    at = haystack.find(head)
    while at >= 0 and not haystack.startswith(needle, at):
        at = haystack.find(head, at + 1)
    return at


def _conversation(
    request: dict[str, Any], upstream: Upstream, tools_json: bytes | None = None
) -> dict[str, Any]:
    """The parts shared by generation and token counting: messages, tools, thinking."""
    messages = _system(request.get("system"))
    raw_messages = request.get("messages")
    if not isinstance(raw_messages, list):
        raise invalid_request("messages", "required, a list of messages")
    for i, message in enumerate(raw_messages):
        _message(message, f"messages.{i}", messages)
    out: dict[str, Any] = {"model": upstream.served_name, "messages": messages}
    tools = request.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid_request("tools", "must be a list")
        converted = _tools(orjson.dumps(tools) if tools_json is None else tools_json)
        if converted:
            out["tools"] = converted
    choice = request.get("tool_choice")
    if choice is not None:
        _tool_choice(choice, out)
    thinking = _thinking_enabled(request.get("thinking"))
    if upstream.thinking == "qwen3":
        out["chat_template_kwargs"] = {"enable_thinking": thinking}
    return out


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        text = _strip_billing(system)
    elif isinstance(system, list):
        parts = []
        for i, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise invalid_request(f"system.{i}", "must be a text block")
            piece = block.get("text")
            if not isinstance(piece, str):
                raise invalid_request(f"system.{i}.text", "must be a string")
            piece = _strip_billing(piece)
            if piece:
                parts.append(piece)
        text = "\n\n".join(parts)
    else:
        raise invalid_request("system", "must be a string or a list of text blocks")
    return [{"role": "system", "content": text}] if text else []


def _strip_billing(text: str) -> str:
    """Drop Claude Code's per-request billing line: it changes on every request, and at the
    head of the prompt it would defeat the backend's prefix cache. It means nothing to the
    model, so it is removed rather than moved."""
    if BILLING_HEADER_PREFIX not in text:
        return text
    lines = [ln for ln in text.split("\n") if not ln.startswith(BILLING_HEADER_PREFIX)]
    return "\n".join(lines).strip("\n")


def _message(message: Any, path: str, out: list[dict[str, Any]]) -> None:
    if not isinstance(message, dict):
        raise invalid_request(path, "must be an object")
    role = message.get("role")
    content = message.get("content")
    if not isinstance(content, str | list):
        raise invalid_request(f"{path}.content", "must be a string or a list of blocks")
    if role == "user":
        _user(content, path, out)
    elif role == "assistant":
        _assistant(content, path, out)
    elif role == "system":
        _mid_system(content, path, out)
    else:
        raise invalid_request(f"{path}.role", "must be 'user', 'assistant' or 'system'")


def _mid_system(content: str | list[Any], path: str, out: list[dict[str, Any]]) -> None:
    """A ``role: system`` message after the start (Claude Code sends these) is carried in place
    as a user note. Qwen templates reject a system message that is not first; folding it into
    the leading system prompt would instead change the prompt's first tokens, so vLLM's
    prefix cache would miss the tools and the whole history on that request (tens of
    thousands of tokens re-prefilled). Carried in place, every earlier token stays identical
    and each turn's prompt is a prefix of the next one's. Measured on the simulator's Qwen3
    rendering: the turn that first carries such a message reuses 100% of the previous prompt;
    folding would reuse under 1% (test_carrying_keeps_the_prefix_cache_folding_would_not)."""
    if not out:
        text = _plain_text(content, path)
        out.append({"role": "system", "content": text})
        return
    text = _plain_text(content, path)
    out.append({"role": "user", "content": f"<system-reminder>\n{text}\n</system-reminder>"})


def _plain_text(content: str | list[Any], path: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("text"), str):
            raise invalid_request(f"{path}.content.{i}", "must be a text block")
        parts.append(block["text"])
    return "\n".join(parts)


def _user(content: str | list[Any], path: str, out: list[dict[str, Any]]) -> None:
    if isinstance(content, str):
        out.append({"role": "user", "content": content})
        return
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        where = f"{path}.content.{i}"
        kind = _block_type(block, where)
        if kind == "text":
            parts.append({"type": "text", "text": _text_field(block, where)})
        elif kind == "image":
            parts.append(_image(block, where))
        elif kind == "tool_result":
            # OpenAI wants tool answers right after the assistant turn that called them,
            # so they go before any text of the same user turn.
            _tool_result(block, where, out)
        elif kind == "document":
            parts.append({"type": "text", "text": _document_text(block, where)})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise invalid_request(f"{where}.type", f"unsupported in a user turn: {kind!r}")
    if parts:
        out.append({"role": "user", "content": _collapse(parts)})


def _collapse(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only content as one string: vLLM joins text parts with newlines anyway."""
    if all(part["type"] == "text" for part in parts):
        return "\n".join(part["text"] for part in parts)
    return parts


def _block_type(block: Any, where: str) -> str:
    if not isinstance(block, dict):
        raise invalid_request(where, "must be a content block object")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise invalid_request(f"{where}.type", "required, a string")
    return kind


def _text_field(block: dict[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise invalid_request(f"{where}.text", "required, a string")
    return text


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid_request(f"{where}.source", "required, an object")
    kind = source.get("type")
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise invalid_request(f"{where}.source", "base64 images need media_type and data")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if kind == "url":
        url = source.get("url")
        if not isinstance(url, str):
            raise invalid_request(f"{where}.source.url", "required, a string")
        return {"type": "image_url", "image_url": {"url": url}}
    raise invalid_request(f"{where}.source.type", "must be 'base64' or 'url'")


def _document_text(block: dict[str, Any], where: str) -> str:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text":
        data = source.get("data")
        if isinstance(data, str):
            return data
    raise invalid_request(f"{where}.source", "only plain-text documents are supported")


def _tool_result(block: dict[str, Any], where: str, out: list[dict[str, Any]]) -> None:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str):
        raise invalid_request(f"{where}.tool_use_id", "required, a string")
    content = block.get("content", "")
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            kind = _block_type(part, f"{where}.content.{i}")
            if kind == "text":
                texts.append(_text_field(part, f"{where}.content.{i}"))
            elif kind == "image":
                images.append(_image(part, f"{where}.content.{i}"))
            else:
                raise invalid_request(f"{where}.content.{i}.type", f"unsupported {kind!r}")
        text = "\n".join(texts)
    else:
        raise invalid_request(f"{where}.content", "must be a string or a list of blocks")
    if block.get("is_error") is True:
        text = f"Error: {text}"
    out.append({"role": "tool", "tool_call_id": call_id, "content": text})
    if images:
        # Tool messages carry text only; the images follow as a user turn.
        out.append({"role": "user", "content": images})


def _assistant(content: str | list[Any], path: str, out: list[dict[str, Any]]) -> None:
    if isinstance(content, str):
        out.append({"role": "assistant", "content": content})
        return
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        where = f"{path}.content.{i}"
        kind = _block_type(block, where)
        if kind == "text":
            texts.append(_text_field(block, where))
        elif kind == "tool_use":
            calls.append(_tool_call(block, where))
        elif kind == "thinking":
            thought = block.get("thinking")
            if not isinstance(thought, str):
                raise invalid_request(f"{where}.thinking", "required, a string")
            reasoning.append(thought)
        elif kind == "redacted_thinking":
            continue
        else:
            raise invalid_request(f"{where}.type", f"unsupported in an assistant turn: {kind!r}")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if reasoning:
        # Qwen3 templates render reasoning_content for the turns of the current tool loop.
        message["reasoning_content"] = "\n".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    out.append(message)


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, name = block.get("id"), block.get("name")
    if not isinstance(call_id, str):
        raise invalid_request(f"{where}.id", "required, a string")
    if not isinstance(name, str):
        raise invalid_request(f"{where}.name", "required, a string")
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        raise invalid_request(f"{where}.input", "must be an object")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


class _Tools(list[dict[str, Any]]):
    """Translated tools and their JSON (``encode_request`` splices it in, unserialised)."""

    json: orjson.Fragment


_TRANSLATED: ByteBoundedCache[bytes, _Tools] = ByteBoundedCache(TOOL_CACHE_BYTES)


def _tools(raw: bytes) -> _Tools:
    """Translated tools, memoised on their JSON: Claude Code resends the same ~60 KB of tool
    definitions with every request, and cleaning their schemas is the costliest part of
    translating it. The result is shared between requests and never mutated."""
    tools = _TRANSLATED.get(raw)
    if tools is None:
        converted = [_tool(tool, f"tools.{i}") for i, tool in enumerate(orjson.loads(raw))]
        tools = _Tools(tool for tool in converted if tool is not None)
        tools.json = orjson.Fragment(orjson.dumps(tools))
        _TRANSLATED.put(raw, tools, len(raw) * _PARSED_PER_JSON_BYTE)
    return tools


def _tool(tool: Any, where: str) -> dict[str, Any] | None:
    if not isinstance(tool, dict):
        raise invalid_request(where, "must be an object")
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise invalid_request(f"{where}.name", "required, a non-empty string")
    schema = tool.get("input_schema")
    kind = tool.get("type")
    if schema is None and isinstance(kind, str) and kind != "custom":
        # Anthropic server tools (web search, …) have no schema and no backend to run them.
        return None
    if not isinstance(schema, dict):
        raise invalid_request(f"{where}.input_schema", "required, an object")
    function: dict[str, Any] = {"name": name}
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise invalid_request(f"{where}.description", "must be a string")
        function["description"] = description
    function["parameters"] = clean_schema(schema) if schema else {"type": "object"}
    return {"type": "function", "function": function}


def clean_schema(schema: Any) -> Any:
    """A copy of a JSON schema without the keys strict backends reject (``$schema`` …)."""
    if isinstance(schema, list):
        return [clean_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key in STRIPPED_SCHEMA_KEYS:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            cleaned[key] = {name: clean_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_DATA:
            cleaned[key] = value
        else:
            cleaned[key] = clean_schema(value)
    return cleaned


def _tool_choice(choice: Any, out: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        raise invalid_request("tool_choice", "must be an object")
    kind = choice.get("type")
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            raise invalid_request("tool_choice.name", "required for type 'tool'")
        mapped: Any = {"type": "function", "function": {"name": name}}
    elif kind in _TOOL_CHOICES:
        mapped = _TOOL_CHOICES[kind]
    else:
        raise invalid_request("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'")
    if "tools" not in out:
        return
    out["tool_choice"] = mapped
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False


def _thinking_enabled(thinking: Any) -> bool:
    if thinking is None:
        return False
    if not isinstance(thinking, dict):
        raise invalid_request("thinking", "must be an object")
    kind = thinking.get("type")
    if kind in ("enabled", "adaptive"):
        return True
    if kind == "disabled":
        return False
    raise invalid_request("thinking.type", "must be 'enabled', 'adaptive' or 'disabled'")
