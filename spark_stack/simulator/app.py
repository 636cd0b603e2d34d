"""The OpenAI-compatible endpoints of the simulated `vllm serve`."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from .config import SimConfig
from .generation import Outcome, Settings, generate
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

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, status, param=param)


def _json_body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"null")
    except ValueError as exc:
        raise RequestError(f"JSON decode error: {exc}") from exc
    if not isinstance(data, dict):
        raise RequestError("Input should be a valid dictionary or object to extract fields from")
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
            # Who answers: `up` waits for the process it started, not whatever holds the port.
            await responder.send(200, b"", content_type="application/json",
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
        raise RequestError(f"The model `{model}` does not exist.", 404, param="model")

    def _thinking(self, data: Mapping[str, Any]) -> bool:
        kwargs = data.get("chat_template_kwargs") or {}
        if isinstance(kwargs, Mapping) and "enable_thinking" in kwargs:
            return bool(kwargs["enable_thinking"])
        return self.config.thinking_default

    def _tokenize(self, data: Mapping[str, Any]) -> dict[str, Any]:
        self._check_model(data)
        if "messages" in data:
            text = render_chat(
                _messages(data),
                data.get("tools") or None,
                bool(data.get("add_generation_prompt", True)),
                self._thinking(data),
            )
        elif isinstance(data.get("prompt"), str):
            text = data["prompt"]
        else:
            raise RequestError("Either `prompt` or `messages` must be provided.")
        ids = token_ids(text)
        return {
            "count": len(ids),
            "max_model_len": self.config.max_model_len,
            "tokens": ids,
            "token_strs": None,
        }

    def _settings(self, data: Mapping[str, Any]) -> tuple[Settings, int | None]:
        max_tokens = data.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = data.get("max_tokens")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
        ):
            raise RequestError("max_tokens must be an integer", param="max_tokens")
        if max_tokens is not None and max_tokens < 1:
            raise RequestError(
                f"max_tokens must be at least 1, got {max_tokens}.", param="max_tokens"
            )
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
        model = self._check_model(data)
        _validate(data)
        messages = _messages(data)
        tools = data.get("tools") or None
        tool_choice = data.get("tool_choice")
        if tool_choice is None and "tool_choice" not in data and tools:
            tool_choice = "auto"
        if tool_choice == "auto" and not (
            self.config.enable_auto_tool_choice and self.config.tool_call_parser
        ):
            raise RequestError(AUTO_TOOL_CHOICE_ERROR)
        if data.get("stream_options") and not data.get("stream"):
            raise RequestError("Stream options can only be defined when `stream=True`.")
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
        if prompt_tokens >= limit or prompt_tokens + (max_tokens or 0) > limit:
            message = context_overflow_message(limit, prompt_tokens, max_tokens or 0)
            raise RequestError(message, param="input_tokens")
        quirks = self.config.quirks
        settings = replace(
            settings,
            max_tokens=limit - prompt_tokens if max_tokens is None else max_tokens,
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
        )
        kv_tokens = prompt_tokens + outcome.completion_tokens
        # The first token comes one decoding step (`delay_ms`) after the request gets a slot.
        first_token = plan.delay_ms / 1000
        async with self._engine_slot(prompt.encode(), prompt_tokens, kv_tokens,
                                     time.monotonic() - arrived + first_token) as cached:
            if self.config.enable_prompt_tokens_details:
                ctx = replace(ctx, cached_tokens=cached)
            if not data.get("stream"):
                if plan.delay_ms:
                    await asyncio.sleep(plan.delay_ms * len(outcome.deltas) / 1000)
                self.metrics.finish(outcome.finish_reason, outcome.completion_tokens)
                await responder.send(200, dumps(completion_body(outcome, ctx)).encode())
                return
            await self._stream(responder, stream_events(outcome, ctx), plan, outcome)

    @asynccontextmanager
    async def _engine_slot(
        self, prompt: bytes, prompt_tokens: int, kv_tokens: int, ttft: float
    ) -> AsyncIterator[int]:
        """Wait for one of ``--max-num-seqs`` slots, then count the request as running; its
        time to first token is ``ttft`` plus that wait. Yields the prompt tokens the prefix
        cache served."""
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
        blocks, cached = metrics.admitted(prompt, prompt_tokens, kv_tokens)
        metrics.ttft.observe(ttft + time.monotonic() - waited)
        try:
            yield cached
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


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "tools": (list,),
    "stream_options": (dict,),
    "stop": (str, list),
    "chat_template_kwargs": (dict,),
    "tool_choice": (str, dict),
    "stream": (bool,),
}


def _validate(data: Mapping[str, Any]) -> None:
    """Refuse fields of the wrong type with a 400, as vLLM's pydantic models do."""
    for name, types in _FIELD_TYPES.items():
        value = data.get(name)
        if value is not None and not isinstance(value, types):
            raise RequestError(f"Input should be a valid {types[0].__name__}", param=name)
    for message in _messages(data):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise RequestError("Each message must be an object with a role", param="messages")


def _messages(data: Mapping[str, Any]) -> list[Any]:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            "Field required: messages" if messages is None else "messages must be a non-empty list"
        )
    return messages
