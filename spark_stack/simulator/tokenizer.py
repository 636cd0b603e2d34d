"""A deterministic toy tokenizer over a Qwen3-style ChatML rendering (pure).

One token per 4 bytes of UTF-8 (rounded up): deterministic, monotonic in input size and close
enough to a real BPE's ~4 bytes per token for context-length arithmetic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

BYTES_PER_TOKEN = 4
VOCAB_SIZE = 151643

_TOOLS_PREAMBLE = "# Tools\n\nYou have access to the following functions:\n\n<tools>"
_TOOLS_POSTAMBLE = (
    "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO "
    "suffix:\n\n<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>"
    "\nvalue_1\n</parameter>\n</function>\n</tool_call>"
)


def text_of(content: Any) -> str:
    """The text of a message's content: a string or a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return str(content)


def _render_tool_calls(tool_calls: Any) -> str:
    if not isinstance(tool_calls, list):
        return ""
    out = []
    for call in tool_calls:
        fn = call.get("function", {}) if isinstance(call, Mapping) else {}
        name = fn.get("name", "") if isinstance(fn, Mapping) else ""
        raw_args = fn.get("arguments", "{}") if isinstance(fn, Mapping) else "{}"
        try:
            args = json.loads(raw_args) if isinstance(raw_args, str) else raw_args
        except ValueError:
            args = {}
        out.append("\n" + tool_call_markup(name, args if isinstance(args, Mapping) else {}))
    return "".join(out)


def tool_call_markup(name: str, args: Mapping[str, Any]) -> str:
    """One call in qwen3_coder's format, as the model writes it (and the template renders it)."""
    params = "".join(
        f"<parameter={k}>\n{v if isinstance(v, str) else json.dumps(v)}\n</parameter>\n"
        for k, v in args.items()
    )
    return f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>"


def render_chat(
    messages: Sequence[Any],
    tools: Sequence[Any] | None = None,
    add_generation_prompt: bool = True,
    enable_thinking: bool = True,
) -> str:
    """Render messages (and tools) the way Qwen3's chat template lays them out."""
    parts: list[str] = []
    system = ""
    rest = list(messages)
    if rest and isinstance(rest[0], Mapping) and rest[0].get("role") in ("system", "developer"):
        system = text_of(rest[0].get("content"))
        rest = rest[1:]
    if tools:
        tool_lines = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
        body = _TOOLS_PREAMBLE + tool_lines + _TOOLS_POSTAMBLE
        system = f"{system}\n\n{body}" if system else body
    if system:
        parts.append(f"<|im_start|>system\n{system}<|im_end|>\n")
    for message in rest:
        if not isinstance(message, Mapping):
            continue
        role = str(message.get("role", "user"))
        text = text_of(message.get("content"))
        if role == "tool":
            parts.append(f"<|im_start|>user\n<tool_response>\n{text}\n</tool_response><|im_end|>\n")
            continue
        if role == "assistant":
            reasoning = message.get("reasoning") or message.get("reasoning_content")
            think = f"<think>\n{reasoning}\n</think>\n\n" if isinstance(reasoning, str) else ""
            calls = _render_tool_calls(message.get("tool_calls"))
            parts.append(f"<|im_start|>assistant\n{think}{text}{calls}<|im_end|>\n")
            continue
        parts.append(f"<|im_start|>{role}\n{text}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
        parts.append("<think>\n" if enable_thinking else "<think>\n\n</think>\n\n")
    return "".join(parts)


def count_tokens(text: str) -> int:
    """How many toy tokens `text` is."""
    n = len(text.encode("utf-8"))
    return -(-n // BYTES_PER_TOKEN)


def token_ids(text: str) -> list[int]:
    """The toy token ids of `text`: one per 4-byte slice of its UTF-8."""
    data = text.encode("utf-8")
    return [
        int.from_bytes(data[i : i + BYTES_PER_TOKEN], "little") % VOCAB_SIZE
        for i in range(0, len(data), BYTES_PER_TOKEN)
    ]
