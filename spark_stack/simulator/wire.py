"""vLLM's JSON shapes: stream chunks, chat completions, errors, model cards (pure).

Field order and null fields follow vLLM's pydantic models: stream chunks are dumped with
``exclude_unset`` (so explicitly set nulls stay), the usage chunk with ``exclude_none`` too,
and full responses with every field.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .generation import Delta, Outcome, ToolDelta

ERROR_TYPES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    403: "ForbiddenError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    413: "RequestEntityTooLargeError",
    422: "UnprocessableEntityError",
    429: "TooManyRequestsError",
    500: "InternalServerError",
    501: "NotImplementedError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


def dumps(obj: Any) -> str:
    """Compact JSON with raw UTF-8, like pydantic's model_dump_json."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def error_body(
    message: str, status: int = 400, err_type: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """vLLM's ErrorResponse."""
    return {
        "error": {
            "message": message,
            "type": err_type or ERROR_TYPES.get(status, "InternalServerError"),
            "param": param,
            "code": status,
        }
    }


def context_overflow_message(max_model_len: int, prompt_tokens: int, at_least: bool) -> str:
    """vLLM's refusal of a prompt longer than the context (before its "(parameter=…)")."""
    qualifier = "at least " if at_least else ""
    return (
        f"This model's maximum context length is {max_model_len} tokens. However, your prompt "
        f"contains {qualifier}{prompt_tokens} input tokens, which exceeds this limit even "
        "without any output tokens. Please reduce the length of the input prompt."
    )


@dataclass(frozen=True)
class StreamContext:
    """Per-request values every chunk of a stream carries."""

    request_id: str
    created: int
    model: str
    prompt_tokens: int
    include_usage: bool = False
    continuous_usage: bool = False
    reasoning_field: str = "reasoning"
    resend_id: bool = False
    reasoning_details: bool = False
    # vLLM's --enable-prompt-tokens-details: the final usage always carries
    # prompt_tokens_details with the prompt tokens the prefix cache served (cached_tokens)
    # and those this request added to it (created_cache_tokens), zeros included.
    prompt_tokens_details: bool = False
    cached_tokens: int = 0
    created_cache_tokens: int = 0
    # "vllm-<version>-<commit>" on the engine: in full responses and the usage chunk.
    system_fingerprint: str | None = None
    # hermes' deltas say `content: null` beside every tool-call delta (vLLM 0.32).
    tool_parser: str | None = None


def _tool_delta(t: ToolDelta, resend_id: bool, ids: dict[int, str]) -> dict[str, Any]:
    if t.name is not None:
        ids[t.index] = t.id or ""
        # The header names the function; it has no `arguments` until there are some
        # (vLLM 0.32's hermes and qwen3_coder alike).
        function: dict[str, Any] = {"name": t.name}
        if t.arguments:
            function["arguments"] = t.arguments
        return {"id": t.id, "type": "function", "index": t.index, "function": function}
    if resend_id and t.index in ids:
        return {
            "id": ids[t.index],
            "type": "function",
            "index": t.index,
            "function": {"arguments": t.arguments},
        }
    return {"index": t.index, "function": {"arguments": t.arguments}}


def delta_json(
    d: Delta, reasoning_field: str, resend_id: bool, ids: dict[int, str],
    tool_parser: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hermes = tool_parser == "hermes"
    if d.content is not None or (hermes and d.tool_calls):
        out["content"] = d.content
    if d.reasoning is not None:
        out[reasoning_field] = d.reasoning
    if d.tool_calls:
        out["tool_calls"] = [_tool_delta(t, resend_id, ids) for t in d.tool_calls]
    return out


def _usage(ctx: StreamContext, completion: int, reasoning: int) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": ctx.prompt_tokens,
        "total_tokens": ctx.prompt_tokens + completion,
        "completion_tokens": completion,
    }
    usage["completion_tokens_details"] = (
        {"reasoning_tokens": reasoning} if ctx.reasoning_details else None
    )
    return usage


def _final_usage(ctx: StreamContext, outcome: Outcome) -> dict[str, Any]:
    """The whole answer's usage, in vLLM's field order (``UsageInfo``)."""
    usage = _usage(ctx, outcome.completion_tokens, outcome.reasoning_tokens)
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "total_tokens": usage["total_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "prompt_tokens_details": (
            {"cached_tokens": ctx.cached_tokens, "created_cache_tokens": ctx.created_cache_tokens,
             "multimodal_tokens": None}
            if ctx.prompt_tokens_details else None
        ),
        "completion_tokens_details": usage["completion_tokens_details"],
    }


def _chunk(ctx: StreamContext, choices: list[dict[str, Any]], **extra: Any) -> str:
    body: dict[str, Any] = {
        "id": ctx.request_id,
        "object": "chat.completion.chunk",
        "created": ctx.created,
        "model": ctx.model,
        "choices": choices,
    }
    body.update(extra)
    return f"data: {dumps(body)}\n\n"


def _fingerprint_on_finish(ctx: StreamContext) -> dict[str, Any]:
    """vLLM puts system_fingerprint on a stream's last chunk: the usage chunk when there is
    one, else the finish chunk."""
    if ctx.system_fingerprint is None or ctx.include_usage:
        return {}
    return {"system_fingerprint": ctx.system_fingerprint}


def stream_events(outcome: Outcome, ctx: StreamContext) -> Iterator[str]:
    """Every `data:` event of a streamed chat completion, `[DONE]` last."""
    first_choice = {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }
    first_extra: dict[str, Any] = {"prompt_token_ids": None, "prompt_text": None}
    if ctx.continuous_usage:
        first_extra["usage"] = _usage(ctx, 0, 0)
    yield _chunk(ctx, [first_choice], **first_extra)
    ids: dict[int, str] = {}
    deltas = outcome.deltas
    last = len(deltas) - 1
    reasoning_seen = 0
    for n, d in enumerate(deltas):
        finishing = outcome.finish_on_last and n == last
        if d.reasoning:
            reasoning_seen += 1
        choice: dict[str, Any] = {
            "index": 0,
            "delta": delta_json(d, ctx.reasoning_field, ctx.resend_id, ids, ctx.tool_parser),
            "logprobs": None,
            "finish_reason": outcome.finish_reason if finishing else None,
        }
        if finishing:
            choice["stop_reason"] = outcome.stop_reason
        choice["token_ids"] = None
        extra = {"usage": _usage(ctx, n + 1, reasoning_seen)} if ctx.continuous_usage else {}
        if finishing:
            extra.update(_fingerprint_on_finish(ctx))
        yield _chunk(ctx, [choice], **extra)
    if not outcome.finish_on_last or not deltas:
        choice = {
            "index": 0,
            "delta": {},
            "logprobs": None,
            "finish_reason": outcome.finish_reason,
            "stop_reason": outcome.stop_reason,
            "token_ids": None,
        }
        extra = (
            {"usage": _usage(ctx, outcome.completion_tokens, outcome.reasoning_tokens)}
            if ctx.continuous_usage
            else {}
        )
        yield _chunk(ctx, [choice], **extra, **_fingerprint_on_finish(ctx))
    if ctx.include_usage:
        # The usage chunk is dumped without its nulls.
        usage = _final_usage(ctx, outcome)
        for key in ("prompt_tokens_details", "completion_tokens_details"):
            if usage[key] is None:
                del usage[key]
            elif isinstance(usage[key], dict):
                usage[key] = {k: v for k, v in usage[key].items() if v is not None}
        usage_extra: dict[str, Any] = {"usage": usage}
        if ctx.system_fingerprint is not None:
            usage_extra["system_fingerprint"] = ctx.system_fingerprint
        yield _chunk(ctx, [], **usage_extra)
    yield "data: [DONE]\n\n"


def completion_body(outcome: Outcome, ctx: StreamContext) -> dict[str, Any]:
    """A non-streamed chat completion (vLLM's ChatCompletionResponse.model_dump())."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": outcome.content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if outcome.tool_calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in outcome.tool_calls
        ]
    message[ctx.reasoning_field] = outcome.reasoning
    usage = _final_usage(ctx, outcome)
    return {
        "id": ctx.request_id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": outcome.finish_reason,
                "stop_reason": outcome.stop_reason,
                "token_ids": None,
                "routed_experts": None,
            }
        ],
        "service_tier": None,
        "system_fingerprint": ctx.system_fingerprint,
        "usage": usage,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


def model_list(names: tuple[str, ...], root: str, max_model_len: int) -> dict[str, Any]:
    """GET /v1/models."""
    now = int(time.time())
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": now,
                "owned_by": "vllm",
                "root": root,
                "parent": None,
                "max_model_len": max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{uuid.uuid4().hex}",
                        "object": "model_permission",
                        "created": now,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for name in names
        ],
    }
