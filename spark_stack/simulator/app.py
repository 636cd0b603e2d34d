"""The OpenAI-compatible endpoints of the simulated `vllm serve`."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from .config import SimConfig
from .generation import Outcome, Settings, generate, prefill_seconds
from .httpserver import Request, Responder
from .metrics import Metrics
from .script import Plan, ScriptError, apply_quirks, apply_tool_choice, bench_plan, plan_for
from .tokenizer import count_tokens, render_chat, token_ids
from .wire import (
    StreamContext,
    completion_body,
    context_overflow_message,
    dumps,
    error_body,
    model_list,
    stream_events,
)

AUTO_TOOL_CHOICE_ERROR = (
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
)
_ROUTES: dict[str, set[str]] = {
    "/health": {"GET"},
    "/ping": {"GET", "POST"},
    "/version": {"GET"},
    "/metrics": {"GET"},
    "/load": {"GET"},
    "/v1/models": {"GET"},
    "/tokenize": {"POST"},
    "/v1/chat/completions": {"POST"},
}

PID_HEADER = "x-spark-stack-pid"  # spark_stack.deploy.readiness reads it (same name)


class RequestError(Exception):
    """A request vLLM would refuse, with the status and body it would answer."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 err_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, status, err_type, param=param)


def invalid(message: str, param: str, value: Any = None) -> RequestError:
    """vLLM's VLLMValidationError: the message names the parameter (and the value)."""
    extras = f"parameter={param}" + ("" if value is None else f", value={value}")
    return RequestError(f"{message} ({extras})", param=param)


def _summarized(value: Any) -> Any:
    """What vLLM's validation handler shows of a rejected value."""
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "...[truncated]"
    if isinstance(value, list | tuple | dict):
        return f"<{type(value).__name__} of {len(value)} items>"
    return str(value)


def validation_error(kind: str, loc: str, msg: str, value: Any,
                     ctx: Mapping[str, Any] | None = None,
                     also: Sequence[tuple[str, str]] = ()) -> RequestError:
    """A request body FastAPI's pydantic model refuses, as vLLM's handler answers it:
    type "Bad Request", param the field's location, pydantic's errors in the message (``also``:
    more (type, msg) errors at the same place, as a union field's branches give)."""
    errors = [(kind, loc, msg, value), *((k, loc, m, value) for k, m in also)]
    return validation_errors(errors, ctx)


def validation_errors(errors: Sequence[tuple[str, str, str, Any]],
                      ctx: Mapping[str, Any] | None = None) -> RequestError:
    """Several (type, loc, msg, input) errors; the first one's location is the param."""
    entries: list[dict[str, Any]] = []
    for kind, loc, msg, value in errors:
        entry: dict[str, Any] = {"type": kind, "loc": loc, "msg": msg,
                                 "input": _summarized(value)}
        if ctx:
            entry["ctx"] = dict(ctx)
        entries.append(entry)
    label = "error" if len(entries) == 1 else "errors"
    message = f"{len(entries)} validation {label}:" + "".join(f"\n  {e}" for e in entries)
    return RequestError(message, param=errors[0][1], err_type="Bad Request")


def _json_body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"null")
    except json.JSONDecodeError as exc:
        raise validation_error("json_invalid", f"body.{exc.pos}", "JSON decode error", {},
                               {"error": exc.msg}) from exc
    except ValueError as exc:  # not UTF-8
        raise validation_error("json_invalid", "body", "JSON decode error", {},
                               {"error": str(exc)}) from exc
    if not isinstance(data, dict):
        raise validation_error(
            "model_attributes_type", "body",
            "Input should be a valid dictionary or object to extract fields from", data)
    return data


class SimApp:
    """Routes requests; holds the server's counters."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.metrics = Metrics(
            config.primary_name,
            max_num_seqs=config.max_num_seqs,
            kv_cache_tokens=config.kv_cache_tokens,
            spec_tokens=config.num_speculative_tokens,
        )
        self._slots: asyncio.Semaphore | None = None  # made on the server's loop
        self._prefill_lock = asyncio.Lock()  # one prompt prefilled at a time
        self._models_body: bytes | None = None

    async def __call__(self, request: Request, responder: Responder) -> None:
        allowed = _ROUTES.get(request.path)
        if allowed is None:
            await responder.send(404, b'{"detail":"Not Found"}')
            return
        if request.method not in allowed and not (request.method == "HEAD" and "GET" in allowed):
            await responder.send(405, b'{"detail":"Method Not Allowed"}')
            return
        if request.path.startswith("/v1") and not self._authorized(request):
            await responder.send(401, b'{"error":"Unauthorized"}')
            return
        try:
            await self._route(request, responder)
        except RequestError as exc:
            await responder.send(exc.status, dumps(exc.body).encode())

    def _authorized(self, request: Request) -> bool:
        if not self.config.api_keys:
            return True
        header = request.headers.get("authorization", "")
        return any(header == f"Bearer {key}" for key in self.config.api_keys)

    async def _route(self, request: Request, responder: Responder) -> None:
        path = request.path
        if path in ("/health", "/ping"):
            # vLLM answers an empty 200 without a Content-Type. The pid header says who
            # answers: `up` waits for the process it started, not whatever holds the port.
            await responder.send(200, b"", content_type=None,
                                 headers=((PID_HEADER, str(os.getpid())),))
        elif path == "/version":
            await responder.send(200, dumps({"version": self.config.version}).encode())
        elif path == "/load":
            await responder.send(200, dumps({"server_load": self.metrics.running}).encode())
        elif path == "/metrics":
            text = self.metrics.render().encode()
            await responder.send(200, text, content_type="text/plain; version=0.0.4; charset=utf-8")
        elif path == "/v1/models":
            if self._models_body is None:
                c = self.config
                body = model_list(c.served_model_names, c.model, c.max_model_len)
                self._models_body = dumps(body).encode()
            await responder.send(200, self._models_body)
        elif path == "/tokenize":
            await responder.send(200, dumps(self._tokenize(_json_body(request))).encode())
        else:
            await self._chat(_json_body(request), responder)

    def _check_model(self, data: Mapping[str, Any]) -> str:
        model = data.get("model")
        if model is None or model in self.config.served_model_names:
            return self.config.primary_name if model is None else str(model)
        names = ", ".join(self.config.served_model_names)
        raise RequestError(f"The model `{model}` does not exist. Valid aliases: {names}.", 404,
                           param="model", err_type="NotFoundError")

    def _thinking(self, data: Mapping[str, Any]) -> bool:
        kwargs = data.get("chat_template_kwargs") or {}
        if isinstance(kwargs, Mapping) and "enable_thinking" in kwargs:
            return bool(kwargs["enable_thinking"])
        return self.config.thinking_default

    def _tokenize(self, data: Mapping[str, Any]) -> dict[str, Any]:
        if "messages" not in data and not isinstance(data.get("prompt"), str):
            # Neither of the two request models fits: pydantic's error for each.
            prompt = data.get("prompt")
            first = (("missing", "body.prompt", "Field required", dict(data)) if prompt is None
                     else ("string_type", "body.prompt", "Input should be a valid string", prompt))
            raise validation_errors([first, ("missing", "body.messages", "Field required",
                                             dict(data))])
        self._check_model(data)
        if "messages" in data:
            text = render_chat(
                _messages(data),
                data.get("tools") or None,
                bool(data.get("add_generation_prompt", True)),
                self._thinking(data),
            )
        else:
            text = data["prompt"]
        ids = token_ids(text)
        return {
            "count": len(ids),
            "max_model_len": self.config.max_model_len,
            "tokens": ids,
            "token_strs": None,
        }

    def _settings(self, data: Mapping[str, Any]) -> tuple[Settings, int | None]:
        max_tokens = _max_tokens(data)[1]
        if max_tokens is not None and max_tokens > self.config.max_model_len:
            name = _max_tokens(data)[0]
            raise invalid(f"{name}={max_tokens} cannot be greater than max_model_len="
                          f"{self.config.max_model_len}. Please request fewer output tokens.",
                          name, max_tokens)
        stop = data.get("stop") or ()
        stops = (stop,) if isinstance(stop, str) else tuple(s for s in stop if isinstance(s, str))
        settings = Settings(
            reasoning_parser=self.config.reasoning_parser is not None,
            thinking=self._thinking(data),
            max_tokens=max_tokens,
            stop=stops,
            named_tool_choice=isinstance(data.get("tool_choice"), Mapping),
        )
        return settings, max_tokens

    def _plan(self, data: Mapping[str, Any]) -> Plan:
        if self.config.bench_chunks:
            return bench_plan(self.config.bench_chunks)
        try:
            plan = plan_for(data, self.config.primary_name)
        except ScriptError as exc:
            raise RequestError(str(exc)) from exc
        tools = data.get("tools") or None
        plan = apply_tool_choice(plan, data.get("tool_choice"), tools)
        return apply_quirks(plan, self.config.quirks, tools)

    async def _chat(self, data: dict[str, Any], responder: Responder) -> None:
        arrived = time.monotonic()
        _validate(data)
        model = self._check_model(data)
        messages = _messages(data)
        tools = data.get("tools") or None
        tool_choice = data.get("tool_choice")
        if tool_choice is None and "tool_choice" not in data and tools:
            tool_choice = "auto"
        if tool_choice == "auto" and not (
            self.config.enable_auto_tool_choice and self.config.tool_call_parser
        ):
            raise RequestError(AUTO_TOOL_CHOICE_ERROR)
        if data.get("stream_options") and not _bool_field(data, "stream"):
            raise invalid("Stream options can only be defined when `stream=True`.",
                          "stream_options")
        self.metrics.requests += 1
        plan = self._plan({**data, "tool_choice": tool_choice})
        if plan.http_status:
            message = plan.error_message or f"Simulated error {plan.http_status}"
            body = error_body(message, plan.http_status, plan.error_type)
            await responder.send(plan.http_status, dumps(body).encode())
            return
        settings, max_tokens = self._settings(data)
        prompt = render_chat(messages, tools, True, settings.thinking)
        if plan.prompt_tokens is not None:
            prompt_tokens = plan.prompt_tokens
        else:
            prompt_tokens = count_tokens(prompt)
        limit = self.config.max_model_len
        if prompt_tokens > limit:
            # vLLM tokenizes at most limit + 1 tokens of a prompt: "at least" that many.
            shown = min(prompt_tokens, limit + 1)
            raise invalid(context_overflow_message(limit, shown, shown == limit + 1),
                          "input_tokens", shown)
        # The answer gets what room is left when max_tokens asks for more (vLLM clamps).
        room = limit - prompt_tokens if max_tokens is None else min(max_tokens,
                                                                      limit - prompt_tokens)
        if room < 1:
            name = _max_tokens(data)[0]
            raise invalid(f"max_tokens must be at least 1, got {room}.", name, room)
        quirks = self.config.quirks
        settings = replace(
            settings,
            max_tokens=room,
            multi_index_chunk=_quirk(plan.multi_index_chunk, "multi_index_chunk", quirks),
        )
        outcome = generate(plan, settings)
        stream_options = data.get("stream_options") or {}
        ctx = StreamContext(
            request_id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=model,
            prompt_tokens=prompt_tokens,
            include_usage=bool(stream_options.get("include_usage")),
            continuous_usage=bool(stream_options.get("include_usage"))
            and bool(stream_options.get("continuous_usage_stats")),
            reasoning_field=(
                "reasoning_content"
                if _quirk(plan.reasoning_content, "reasoning_content", quirks)
                else "reasoning"
            ),
            resend_id=_quirk(plan.resend_id, "resend_id", quirks),
            reasoning_details=settings.reasoning_parser,
            prompt_tokens_details=self.config.enable_prompt_tokens_details,
            system_fingerprint=f"vllm-{self.config.version}-simulated",
            tool_parser=self.config.tool_call_parser,
        )
        kv_tokens = prompt_tokens + outcome.completion_tokens
        # The first token comes one decoding step (`delay_ms`) after the request gets a slot.
        first_token = plan.delay_ms / 1000
        async with self._engine_slot(prompt.encode(), prompt_tokens, kv_tokens,
                                     time.monotonic() - arrived + first_token) as cache:
            if self.config.enable_prompt_tokens_details:
                ctx = replace(ctx, cached_tokens=cache[0], created_cache_tokens=cache[1])
            if not _bool_field(data, "stream"):
                if plan.delay_ms:
                    await asyncio.sleep(plan.delay_ms * len(outcome.deltas) / 1000)
                self.metrics.finish(outcome.finish_reason, outcome.completion_tokens)
                await responder.send(200, dumps(completion_body(outcome, ctx)).encode())
                return
            await self._stream(responder, stream_events(outcome, ctx), plan, outcome)

    @asynccontextmanager
    async def _engine_slot(
        self, prompt: bytes, prompt_tokens: int, kv_tokens: int, ttft: float
    ) -> AsyncIterator[tuple[int, int]]:
        """Wait for one of ``--max-num-seqs`` slots, then count the request as running; its
        time to first token is ``ttft`` plus that wait plus the prefill of the prompt tokens
        the prefix cache did not serve (``--sim-prefill-ms-per-1k-tokens``), slept here one
        prompt at a time. Yields the prompt tokens the prefix cache served and those the
        request added to it."""
        waited = time.monotonic()
        metrics = self.metrics
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_num_seqs)
        metrics.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            metrics.waiting -= 1
        metrics.running += 1
        blocks, cached, created = metrics.admitted(prompt, prompt_tokens, kv_tokens)
        prefill = prefill_seconds(prompt_tokens, cached, self.config.prefill_ms_per_1k)
        try:
            if prefill:
                # Prefill is compute-bound: one engine computes one prompt at a time, so
                # concurrent cold prompts queue behind each other (decoding stays batched).
                async with self._prefill_lock:
                    await asyncio.sleep(prefill)
            metrics.ttft.observe(ttft + time.monotonic() - waited)
            yield cached, created
        except asyncio.CancelledError:
            metrics.cancelled += 1
            metrics.finish("abort", 0)
            raise
        finally:
            metrics.running -= 1
            metrics.released(blocks)
            self._slots.release()

    async def _stream(
        self, responder: Responder, events: Iterator[str], plan: Plan, outcome: Outcome
    ) -> None:
        delay = plan.delay_ms / 1000
        await responder.start_stream()
        if not delay and plan.die_after_chunks is None:
            await responder.write_all(events)
        else:
            for sent, event in enumerate(events):
                if plan.die_after_chunks is not None and sent >= plan.die_after_chunks:
                    responder.abort()
                    return
                if delay and sent:
                    await asyncio.sleep(delay)
                await responder.write(event)
            await responder.end_stream()
        self.metrics.finish(outcome.finish_reason, outcome.completion_tokens)


def _quirk(per_request: bool | None, name: str, server: frozenset[str]) -> bool:
    return per_request if per_request is not None else name in server


_LIST = ("list_type", "Input should be a valid list")
_STRING = ("string_type", "Input should be a valid string")
_DICT = ("dict_type", "Input should be a valid dictionary")
# Fields of the wrong JSON type: pydantic's errors for each (a union's first branches).
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], tuple[tuple[str, str], ...]]] = {
    "messages": ((list,), (_LIST,)),
    "tools": ((list,), (_LIST,)),
    "stream_options": ((dict,), (_DICT,)),
    "stop": ((str, list), (_STRING, _LIST)),
    "chat_template_kwargs": ((dict,), (_DICT,)),
    "tool_choice": ((str, dict), (_STRING,)),
}
# What pydantic (lax) reads as a boolean.
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
EMPTY_CONVERSATION = (
    "Cannot apply chat template to an empty conversation. Provide at least one message."
)


def _validate(data: Mapping[str, Any]) -> None:
    """Refuse a body vLLM's pydantic model refuses (missing or mistyped fields)."""
    if "messages" not in data:
        raise validation_error("missing", "body.messages", "Field required", dict(data))
    for name, (types, errors) in _FIELD_TYPES.items():
        value = data.get(name)
        if value is not None and not isinstance(value, types):
            (kind, msg), *also = errors
            raise validation_error(kind, f"body.{name}", msg, value, also=also)
    for name in ("max_tokens", "max_completion_tokens"):
        _int_field(data, name)
    _bool_field(data, "stream")
    for index, message in enumerate(_messages(data)):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            # pydantic tries each message type of the union; vLLM names the first (the rest
            # of its errors are left out here).
            raise validation_error(
                "missing", f"body.messages.{index}.ChatCompletionDeveloperMessageParam.role",
                "Field required", message)


def _int_field(data: Mapping[str, Any], name: str) -> int | None:
    """An integer field as pydantic reads it (lax: "12" and 12.0 are 12)."""
    value = data.get(name)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise validation_error(
                "int_parsing", f"body.{name}",
                "Input should be a valid integer, unable to parse string as an integer",
                value) from None
    if isinstance(value, float):
        raise validation_error(
            "int_from_float", f"body.{name}",
            "Input should be a valid integer, got a number with a fractional part", value)
    raise validation_error("int_type", f"body.{name}", "Input should be a valid integer", value)


def _bool_field(data: Mapping[str, Any], name: str) -> bool:
    """A boolean field as pydantic reads it (lax: "yes", "off", 1, 0 …)."""
    value = data.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, str):
        raise validation_error("bool_parsing", f"body.{name}",
                               "Input should be a valid boolean, unable to interpret input", value)
    raise validation_error("bool_type", f"body.{name}", "Input should be a valid boolean", value)


def _max_tokens(data: Mapping[str, Any]) -> tuple[str, int | None]:
    """Which field limits the answer (max_completion_tokens first), and its value."""
    if data.get("max_completion_tokens") is not None:
        return "max_completion_tokens", _int_field(data, "max_completion_tokens")
    return "max_tokens", _int_field(data, "max_tokens")


def _messages(data: Mapping[str, Any]) -> list[Any]:
    messages = data.get("messages")
    if messages is None:
        raise validation_error("missing", "body.messages", "Field required", dict(data))
    if not isinstance(messages, list):
        raise validation_error("list_type", "body.messages", "Input should be a valid list",
                               messages)
    if not messages:
        raise RequestError(EMPTY_CONVERSATION)
    return messages
