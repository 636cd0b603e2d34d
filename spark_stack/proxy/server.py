"""The proxy's ASGI app: a bare ASGI callable (no framework) on uvicorn with httptools and
uvloop — the fastest combination measured for this job (see benchmarks/proxy_bench.py).

Endpoints: POST /v1/messages (stream and not), POST /v1/messages/count_tokens, GET /v1/models,
HEAD|GET /, GET /health, GET /metrics. Every error is Anthropic's envelope; nothing a client
sends can produce a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson

from spark_stack.proxy.accesslog import AccessLog, clip
from spark_stack.proxy.config import ConfigError, ProxyConfig, Upstream
from spark_stack.proxy.control import (
    CONFIG_FILE,
    CONTROL_S,
    STATE_FILE,
    ProxyState,
    config_digest,
    read_drain,
    reloadable,
)
from spark_stack.proxy.dispatch import (
    SESSION_HEADER,
    Caller,
    Dispatcher,
    RateLimited,
    Ticket,
    Waiter,
    session_key,
)
from spark_stack.proxy.errors import (
    ProxyError,
    Unreachable,
    envelope,
    invalid_request,
    parse_context_overflow,
    prompt_too_long,
    upstream_timeout,
)
from spark_stack.proxy.keyfile import RELOAD_S, KeyRing
from spark_stack.proxy.metrics import Metrics
from spark_stack.proxy.routing import Router
from spark_stack.proxy.stream import StreamTranslator, encode_events
from spark_stack.proxy.translate_request import (
    BodyParser,
    clamp_max_tokens,
    encode_request,
    estimate_from_size,
    estimate_tokens,
    too_deep,
    translate_for_tokenize,
    translate_request,
)
from spark_stack.proxy.translate_response import translate_response
from spark_stack.proxy.usage import UsageWriter

if TYPE_CHECKING:
    from spark_stack.proxy.upstream import UpstreamClient

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("spark_stack.proxy")

MAX_BODY_BYTES = 64 * 1024 * 1024
# Real model ids are under 100 characters; a longer ``model`` is refused before routing, so a
# client cannot fill the routing memo or the log with megabyte names.
MAX_MODEL_CHARS = 256
# Answers remembered by count_tokens (16-byte key → int: ~200 bytes each with the dict entry).
_COUNTED_ENTRIES = 1024
_JSON = [(b"content-type", b"application/json")]
_SSE = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_OPEN_PATHS = frozenset({"/"})
HEALTH_S = 0.5  # how often replicas are checked: a dead one is out within a second


class _ClientGone(Exception):
    """The client disconnected while the proxy was still answering."""


class ProxyApp:
    """The ASGI application; one instance per proxy process."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.router = Router(config)
        self.metrics = Metrics(config.metrics_keys)
        self.keys = KeyRing(config.token, Path(config.keys_file) if config.keys_file else None)
        # A model not listed under ``replicas`` is served by one replica: itself.
        self.dispatcher = Dispatcher(
            {name: upstream.max_num_seqs or config.max_in_flight
             for name, upstream in config.upstreams.items()},
            {name: tuple(config.replicas.get(name, (name,))) for name in config.upstreams},
            config.weights)
        self.metrics.key_load = self._key_load
        self.metrics.slots = self.dispatcher.load
        self.usage = UsageWriter(Path(config.usage_db) if config.usage_db else None)
        self._reloading: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None
        self._controlled: asyncio.Task[None] | None = None
        self._control_seen: tuple[int, int] | None = None  # the config file's (mtime, size)
        self._control_written = b""
        self._client: UpstreamClient | None = None
        self._loading: asyncio.Future[ModuleType] | None = None
        self._transport_errors: tuple[type[BaseException], ...] = (OSError,)
        self._counted: OrderedDict[bytes, int] = OrderedDict()
        self._bodies = BodyParser()
        self.access_log = AccessLog(config.log_max_bytes, config.log_backups)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # aiohttp takes ~0.1-0.2 s to import (it builds an SSL context): load it in a
                # thread so the port opens at once; the first upstream call waits for it.
                loop = asyncio.get_running_loop()
                self._loading = loop.run_in_executor(None, _load_upstream)
                self.usage.start()
                if self.keys.path is not None:
                    self._reloading = asyncio.ensure_future(self._reload_keys())
                if self.config.replicas:
                    self._watching = asyncio.ensure_future(self._watch_replicas())
                if self.config.control_dir is not None:
                    self._controlled = asyncio.ensure_future(self._watch_control())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in (self._reloading, self._watching, self._controlled):
                    if task is not None:
                        task.cancel()
                if self._client is not None:
                    await self._client.close()
                # Every answered request's usage is written before the process ends.
                await asyncio.get_running_loop().run_in_executor(None, self.usage.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _reload_keys(self) -> None:
        """Keys added, revoked or rotated take effect within :data:`RELOAD_S`."""
        while True:
            await asyncio.sleep(RELOAD_S)
            self.keys.reload()

    async def _watch_replicas(self) -> None:
        """Every :data:`HEALTH_S`, each replica's ``/health``: one that fails is taken out
        (its sessions move), one that answers again comes back (they return)."""
        names = sorted({n for replicas in self.config.replicas.values() for n in replicas})
        while True:
            await asyncio.sleep(HEALTH_S)
            client = await self.client()
            results = await asyncio.gather(
                *(client.health(self.config.upstreams[n]) for n in names))
            for name, result in zip(names, results, strict=True):
                if result["ok"]:
                    self.dispatcher.down.discard(name)
                else:
                    self.dispatcher.down.add(name)

    async def _watch_control(self) -> None:
        """Every :data:`CONTROL_S`, what ``up`` asks of the running proxy (control.py)."""
        while True:
            await asyncio.sleep(CONTROL_S)
            try:
                self.apply_control()
            except OSError as exc:  # a full disk must not end the loop
                log.warning("control files: %s", exc)

    def apply_control(self) -> None:
        """Drain the replicas ``drain.json`` names, take over a config whose only changes
        are the upstreams' settings, and say in ``control.json`` what is in effect."""
        assert self.config.control_dir is not None
        directory = Path(self.config.control_dir)
        known = set(self.config.upstreams)
        self.dispatcher.drained = frozenset(n for n in read_drain(directory) if n in known)
        self._reload_config(directory / CONFIG_FILE)
        state = ProxyState(
            self.dispatcher.drained,
            {n: self.dispatcher.busy(n) for n in sorted(self.dispatcher.drained)},
            config_digest(self.config)).to_json()
        if state != self._control_written:
            from spark_stack.paths import write_atomic

            write_atomic(directory / STATE_FILE, state.decode(), mode=0o600)
            self._control_written = state

    def _reload_config(self, path: Path) -> None:
        try:
            stat = path.stat()
        except OSError:
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._control_seen:
            return
        self._control_seen = seen
        try:
            new = ProxyConfig.from_json(path.read_bytes())
        except (OSError, ConfigError):
            return
        if new == self.config or not reloadable(self.config, new):
            return  # unchanged, or a change `up` restarts the proxy for
        self.config = new
        self.router = Router(new)
        self.dispatcher.resize({name: upstream.max_num_seqs or new.max_in_flight
                                for name, upstream in new.upstreams.items()})
        log.info("configuration reloaded: %s", ", ".join(sorted(new.upstreams)))

    def _key_load(self) -> list[tuple[str, int, int]]:
        return [(c.name, c.running, c.queued) for c in self.keys.callers()]

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        record = _Record(method, path)
        if scope.get("http_version") == "1.0":
            send = _WholeBody(send)
        try:
            caller = self.keys.owner if path in _OPEN_PATHS else self._authorize(scope)
            record.key = caller.name
            if path == "/v1/messages":
                _allow(method, "POST")
                _refuse_declared_oversize(scope)
                await self._messages(scope, receive, send, record, started, caller)
            elif path == "/v1/messages/count_tokens":
                _allow(method, "POST")
                _refuse_declared_oversize(scope)
                await self._count_tokens(scope, receive, send, record)
            elif path == "/":
                _allow(method, "GET", "HEAD")
                await _respond(send, 200, b"" if method == "HEAD" else b'{"status":"ok"}')
            elif path == "/v1/models":
                _allow(method, "GET")
                await _respond(send, 200, orjson.dumps(self._models()))
            elif path == "/health":
                _allow(method, "GET")
                record.status = await self._health(send)
            elif path == "/metrics":
                _allow(method, "GET")
                body = self.metrics.render().encode()
                await _respond(send, 200, body, [(b"content-type", b"text/plain; version=0.0.4")])
            else:
                raise ProxyError(404, "not_found_error", f"no route for {method} {clip(path)}")
        except RateLimited as exc:
            record.status = exc.status
            record.error = exc.message
            headers = [*_JSON, (b"retry-after", str(exc.retry_after).encode())]
            await _respond(send, exc.status, exc.body(), headers)
        except ProxyError as exc:
            record.status = exc.status
            record.error = exc.message
            await _respond(send, exc.status, exc.body(), _closing(exc.status))
        except _ClientGone:
            record.status = 499
        except Exception:  # a bug: log it, answer in Anthropic's shape, keep serving
            log.exception("internal error on %s %s", method, clip(path))
            record.status = 500
            try:
                body = orjson.dumps(envelope("api_error", "internal proxy error"))
                await _respond(send, 500, body)
            except RuntimeError:  # the response had already started
                return
        finally:
            self._account(record, started)

    def refused(self, status: int | None, reason: str) -> None:
        """Log (and count, with a status) what the HTTP layer refused before the app saw it."""
        if status is not None:
            self.metrics.count_http("other", status)
        self.access_log.write(f"- - status={status or '-'} reason={reason}")

    async def client(self) -> UpstreamClient:
        """The upstream client, once its module has loaded."""
        if self._client is None:
            module = await self._loading if self._loading is not None else _load_upstream()
            if self._client is None:
                self._client = module.UpstreamClient(self.config.upstream_timeout)
                self._transport_errors = module.TRANSPORT_ERRORS
        return self._client

    def _authorize(self, scope: Scope) -> Caller:
        """The caller the request's credential names: the owner (the stack's token) or a
        team key; 401 for a wrong or revoked one."""
        keys = self.keys
        if not keys.required and not keys.count:
            return keys.owner  # a loopback proxy without token or keys: as before
        offered: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                offered = value
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                offered = value[7:].strip()
            else:
                continue
            caller = keys.caller(offered)
            if caller is not None:
                return caller
        if offered is None:
            caller = keys.caller(None)
            if caller is not None:
                return caller
        raise ProxyError(
            401, "authentication_error",
            "missing, wrong or revoked key (x-api-key or Bearer)",
        )

    def _models(self) -> dict[str, Any]:
        names = self.router.exact_names()
        data = [
            {"type": "model", "id": name, "display_name": name,
             "created_at": "2025-01-01T00:00:00Z"}
            for name in names
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }

    async def _health(self, send: Send) -> int:
        upstreams = list(self.config.upstreams.values())
        client = await self.client()
        results = await asyncio.gather(*(client.health(u) for u in upstreams))
        report = {u.name: result for u, result in zip(upstreams, results, strict=True)}
        healthy = all(result["ok"] for result in results)
        body = {"status": "ok" if healthy else "degraded", "proxy": "ok", "upstreams": report}
        status = 200 if healthy else 503
        await _respond(send, status, orjson.dumps(body))
        return status

    def _parse(
        self, raw: bytes
    ) -> tuple[dict[str, Any], bytes | None, tuple[Upstream, str]]:
        """The body, its tools as JSON when it has some, and the upstream its model maps to
        with the route that matched."""
        try:
            body, tools_json = self._bodies.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise invalid_request("", f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise invalid_request("", "request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise invalid_request("model", "required, a non-empty string")
        if len(model) > MAX_MODEL_CHARS:
            raise invalid_request("model", f"longer than {MAX_MODEL_CHARS} characters")
        if self.config.log_prompts:
            log.info("prompt %s", raw[:4000].decode("utf-8", "replace"))
        return body, tools_json, self.router.resolve_route(model)

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send,
                            record: _Record) -> None:
        raw = await _read_body(receive, self.config.body_timeout)
        # IDE extensions call this in bursts with the same body: answer repeats from memory
        # without parsing 78 KB again.
        key = hashlib.blake2b(raw, digest_size=16).digest()
        count = self._counted.get(key)
        headers = list(_JSON)
        if count is None:
            body, tools_json, (model_upstream, route) = self._parse(raw)
            # Counted where the conversation's turns go (the same replica).
            upstream = self._replica(scope, model_upstream, body)
            record.model, record.upstream, record.route = body["model"], upstream.name, route
            try:
                tokenize_body = translate_for_tokenize(body, upstream, tools_json)
                client = await self.client()
                count = await _until_gone(receive, client.count_tokens(upstream, tokenize_body))
                if count is None:
                    # The backend has no /tokenize: say so, and over- rather than under-count.
                    count = estimate_tokens(tokenize_body)
                    headers.append((b"x-spark-stack-token-count", b"estimate"))
                    record.estimate = True
            except (orjson.JSONEncodeError, RecursionError):
                raise too_deep(body) from None
            if not record.estimate:
                self._counted[key] = count
                if len(self._counted) > _COUNTED_ENTRIES:
                    self._counted.popitem(last=False)
        else:
            self._counted.move_to_end(key)
        record.input_tokens = count
        await _respond(send, 200, orjson.dumps({"input_tokens": count}), headers)

    def _replica(self, scope: Scope, model: Upstream, body: dict[str, Any]) -> Upstream:
        """The replica of ``model`` this request's session goes to (the session is hashed only
        when there is a choice to make)."""
        name = self.dispatcher.replica(
            model.name, lambda: session_key(_header(scope, SESSION_HEADER), body))
        return self.config.upstreams[name]

    async def _messages(
        self, scope: Scope, receive: Receive, send: Send, record: _Record, started: float,
        caller: Caller,
    ) -> None:
        raw = await _read_body(receive, self.config.body_timeout)
        body, tools_json, (model_upstream, route) = self._parse(raw)
        upstream = self._replica(scope, model_upstream, body)
        record.model, record.upstream, record.route = body["model"], upstream.name, route
        record.target = model_upstream.name
        try:
            request = translate_request(body, upstream, tools_json)
            record.stream = bool(request.get("stream"))
            relay = self._relay(body, request, len(raw), upstream, send, record, started,
                                caller, lambda: self._replica(scope, model_upstream, body))
            await _until_gone(receive, relay)
        except (orjson.JSONEncodeError, RecursionError):
            # Nesting deeper than orjson's 255 levels, or Python's recursion limit: the
            # client's fault, said as such (the upstream answer is never this deep).
            raise too_deep(body) from None

    async def _relay(
        self,
        body: dict[str, Any],
        request: dict[str, Any],
        body_size: int,
        upstream: Upstream,
        send: Send,
        record: _Record,
        started: float,
        caller: Caller,
        choose: Callable[[], Upstream],
    ) -> None:
        prompt_tokens = await self._clamp(request, body_size, upstream)
        record.input_tokens = prompt_tokens
        message_id = "msg_" + os.urandom(12).hex()
        model = body["model"]
        tools = body.get("tools") if isinstance(body.get("tools"), list) else None
        translator = None
        if request.get("stream"):
            translator = StreamTranslator(
                model, message_id, prompt_tokens,
                repair_markup=self.config.repair_tool_markup, tools=tools,
            )
        while True:
            admitted = self.dispatcher.admit(caller, upstream.name)
            if isinstance(admitted, Waiter):
                admitted = await self._queued(admitted, translator, send, record)
            try:
                await self._generate(request, upstream, translator, model, message_id,
                                     prompt_tokens, tools, send, record, started)
                return
            except Unreachable as error:
                # Nothing came from this replica: take it out, the session moves to another.
                if not self.dispatcher.mark_down(upstream.name, record.target):
                    await self._end_with(error, translator, send, record)
                    return
                log.warning("%s; retrying on another replica", error.message)
                upstream = choose()
                request["model"] = upstream.served_name
                record.upstream = upstream.name
            except ProxyError as error:
                await self._end_with(error, translator, send, record)
                return
            finally:
                tokens = record.input_tokens + record.output_tokens if record.ran else 0
                self.dispatcher.release(admitted, tokens)

    async def _end_with(self, error: ProxyError, translator: StreamTranslator | None,
                        send: Send, record: _Record) -> None:
        """Answer ``error``: as its status, or, when the stream had started while the request
        waited for a slot, as the stream's ``error`` event."""
        if translator is None or not record.streaming:
            raise error
        record.failed = True
        record.error = error.message
        await send(_body(encode_events(translator.fail(error.error_type, error.message)),
                         more=False))

    async def _queued(self, waiter: Waiter, translator: StreamTranslator | None, send: Send,
                      record: _Record) -> Ticket:
        """Wait for a slot; a streaming client gets the stream's start and then a ``ping``
        every ``queue_ping_seconds`` meanwhile, so it does not time out."""
        async def ping() -> None:
            assert translator is not None
            if record.streaming:
                await send(_body(encode_events([{"type": "ping"}]), more=True))
                return
            record.streaming = True
            record.status = 200
            await send({"type": "http.response.start", "status": 200, "headers": _SSE})
            await send(_body(encode_events(translator.start()), more=True))

        try:
            ticket = await self.dispatcher.wait(
                waiter, ping if translator is not None else None, self.config.queue_ping_seconds)
        finally:
            record.wait = time.perf_counter() - waiter.since  # a client that left waited too
        return ticket

    async def _generate(
        self,
        request: dict[str, Any],
        upstream: Upstream,
        translator: StreamTranslator | None,
        model: str,
        message_id: str,
        prompt_tokens: int,
        tools: list[Any] | None,
        send: Send,
        record: _Record,
        started: float,
    ) -> None:
        client = await self.client()
        response = await client.post_chat(upstream, encode_request(request))
        if response.status != 200:
            error = await client.error_from(upstream, response)
            retry = _clamp_from_error(error, request)
            if retry is None:
                raise error
            response = await client.post_chat(upstream, encode_request(retry))
            if response.status != 200:
                raise await client.error_from(upstream, response)
        record.ran = True
        try:
            if translator is not None:
                await self._stream(response, translator, send, record, started)
            else:
                await self._complete(response, model, message_id, prompt_tokens, tools, send,
                                     record)
        finally:
            response.release()

    async def _clamp(self, request: dict[str, Any], body_size: int, upstream: Upstream) -> int:
        """Clamp ``max_tokens`` to the context left; returns the prompt-size estimate (exact
        when the backend tokenizer was asked)."""
        # The client's body is about as large as the translated one: no need to serialise again.
        estimate = estimate_from_size(body_size)
        limit = upstream.max_model_len
        if limit is None or request["max_tokens"] + estimate <= limit:
            return estimate
        keys = ("model", "messages", "tools", "chat_template_kwargs")
        tokenize_body: dict[str, Any] = {key: request[key] for key in keys if key in request}
        tokenize_body["add_generation_prompt"] = True
        exact = await (await self.client()).count_tokens(upstream, tokenize_body)
        prompt = estimate if exact is None else exact
        if exact is not None and exact >= limit:
            raise prompt_too_long(exact, limit)
        request["max_tokens"] = clamp_max_tokens(request["max_tokens"], limit, prompt)
        return prompt

    async def _complete(
        self,
        response: Any,
        model: str,
        message_id: str,
        prompt: int,
        tools: list[Any] | None,
        send: Send,
        record: _Record,
    ) -> None:
        try:
            completion = orjson.loads(await response.read())
        except TimeoutError:
            raise upstream_timeout(self.config.upstream_timeout) from None
        except _unreadable(self._transport_errors) as exc:
            raise ProxyError(502, "api_error", f"upstream answer unreadable: {exc}") from None
        translation = translate_response(
            completion, model, message_id, prompt,
            repair_markup=self.config.repair_tool_markup, tools=tools,
        )
        message = translation.message
        usage = message["usage"]
        record.cached_tokens = usage["cache_read_input_tokens"]
        record.input_tokens = usage["input_tokens"] + record.cached_tokens
        record.output_tokens = usage["output_tokens"]
        record.leaked_calls = translation.leaked_calls
        record.status = 200
        await _respond(send, 200, orjson.dumps(message))

    async def _stream(
        self,
        response: Any,
        translator: StreamTranslator,
        send: Send,
        record: _Record,
        started: float,
    ) -> None:
        if not record.streaming:  # else started while queued
            record.status = 200
            record.streaming = True
            await send({"type": "http.response.start", "status": 200, "headers": _SSE})
            await send(_body(encode_events(translator.start()), more=True))
        pending = b""
        done = False
        try:
            async for data in response.content.iter_any():
                lines = (pending + data).split(b"\n")
                pending = lines.pop()
                events: list[dict[str, Any]] = []
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        break
                    events.extend(translator.feed(orjson.loads(payload)))
                if events:
                    if record.ttft is None and translator.has_content:
                        record.ttft = time.perf_counter() - started
                    await send(_body(encode_events(events), more=True))
                if done or translator.failed:
                    break
        except orjson.JSONDecodeError:
            events = translator.fail("api_error", "upstream sent a malformed stream chunk")
        except self._transport_errors as exc:
            events = translator.fail("api_error", f"upstream connection lost mid-stream: {exc}")
        except Exception:  # a bug: end this stream cleanly, keep serving
            log.exception("internal error while relaying a stream")
            events = translator.fail("api_error", "internal proxy error")
        else:
            if done or translator.finish_reason is not None:
                events = translator.finish()
            else:
                events = translator.fail("api_error", "upstream closed the stream before the end")
        record.input_tokens = translator.prompt_tokens
        record.cached_tokens = translator.cached_tokens
        record.leaked_calls = translator.leaked_calls
        record.output_tokens = translator.output_tokens or translator.deltas
        record.failed = translator.failed
        await send(_body(encode_events(events), more=False))

    def _account(self, record: _Record, started: float) -> None:
        duration = time.perf_counter() - started
        self.metrics.count_http(record.path, record.status)
        if record.path != "/v1/messages":
            self._log_other(record, duration)
            return
        route = self.metrics.route(record.route or "-", record.upstream or "-")
        route.requests += 1
        if record.status >= 400 or record.failed:
            route.errors += 1
        route.duration.observe(duration)
        if record.ttft is not None:
            route.ttft.observe(record.ttft)
        route.input_tokens += record.input_tokens
        route.cached_tokens += record.cached_tokens
        route.output_tokens += record.output_tokens
        self._account_key(record, duration)
        leak = ""
        if record.leaked_calls:
            route.leaked_tool_markup += 1
            how = "repaired" if self.config.repair_tool_markup else "left in the text"
            leak = f" leaked_tool_markup={record.leaked_calls} ({how})"
        ttft = "-" if record.ttft is None else f"{record.ttft * 1000:.1f}"
        self.access_log.write(
            f"{record.method} /v1/messages model={clip(record.model)!r} "
            f"route={record.route or '-'!r} upstream={record.upstream or '-'} "
            f"key={record.key} stream={record.stream} "
            f"status={record.status}{' stream_error' if record.failed else ''} ttft_ms={ttft} "
            f"wait_ms={record.wait * 1000:.1f} dur_ms={duration * 1000:.1f} "
            f"in={record.input_tokens} "
            f"cached={record.cached_tokens} out={record.output_tokens}{leak}"
            f"{_error_note(record)}"
        )

    def _account_key(self, record: _Record, duration: float) -> None:
        """The key's counters and its usage row (written to SQLite off this path)."""
        if record.key == "-":
            return  # refused before a key was known (401, or a malformed request line)
        counts = self.metrics.key(record.key)
        counts.requests += 1
        error = record.status >= 400 or record.failed
        if error:
            counts.errors += 1
        if record.status == 429:
            counts.rate_limited += 1
        # Tokens as the engine counted them: none for a request it refused or never saw.
        ran = record.ran
        prompt = record.input_tokens if ran else 0
        cached = record.cached_tokens if ran else 0
        output = record.output_tokens if ran else 0
        counts.input_tokens += prompt
        counts.cached_tokens += cached
        counts.output_tokens += output
        counts.wait_seconds += record.wait
        self.usage.record((time.time(), record.key, record.target or record.model,
                           record.status, prompt, cached, output, int(error), record.wait,
                           duration))

    def _log_other(self, record: _Record, duration: float) -> None:
        line = f"{record.method} {clip(record.path)} status={record.status}"
        if record.path == "/v1/messages/count_tokens":
            line += (f" model={clip(record.model)!r} route={record.route or '-'!r} "
                     f"upstream={record.upstream or '-'}")
            if record.status == 200:
                kind = "estimate" if record.estimate else "exact"
                line += f" in={record.input_tokens} count={kind}"
        self.access_log.write(f"{line} dur_ms={duration * 1000:.1f}{_error_note(record)}")


class _Record:
    """What the per-request log line and the metrics need."""

    __slots__ = ("method", "path", "model", "route", "target", "upstream", "stream", "status",
                 "failed", "ttft", "input_tokens", "cached_tokens", "output_tokens",
                 "leaked_calls", "estimate", "error", "key", "wait", "streaming", "ran")

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path
        self.model = "-"
        self.route = ""
        self.target = ""  # the stack's model the route leads to
        self.upstream = ""  # the replica that served it
        self.key = "-"  # the caller's key name (never the key)
        self.wait = 0.0  # seconds in the proxy's queue
        self.streaming = False  # the SSE response has started
        self.ran = False  # the engine accepted the request (its tokens count)
        self.stream = False
        self.status = 200
        self.failed = False
        self.ttft: float | None = None
        self.input_tokens = 0  # the whole prompt
        self.cached_tokens = 0  # of which vLLM's prefix cache served
        self.output_tokens = 0
        self.leaked_calls = 0
        self.estimate = False
        self.error = ""


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _error_note(record: _Record) -> str:
    return f" error={clip(record.error)!r}" if record.error else ""


def _unreadable(transport: tuple[type[BaseException], ...]) -> tuple[type[BaseException], ...]:
    return (orjson.JSONDecodeError, *transport)


def _load_upstream() -> ModuleType:
    import importlib

    return importlib.import_module("spark_stack.proxy.upstream")


def _clamp_from_error(error: ProxyError, request: dict[str, Any]) -> dict[str, Any] | None:
    """When the backend says prompt + max_tokens overflow but the prompt itself fits (our
    estimate was low), retry once with ``max_tokens`` set to the room it reported."""
    if error.status != 400 or not error.message.startswith("max_tokens: "):
        return None
    overflow = parse_context_overflow(error.message)
    if overflow is None or overflow.prompt_tokens is None:
        return None
    room = overflow.max_model_len - overflow.prompt_tokens
    if room < 1 or room >= request["max_tokens"]:
        return None
    return {**request, "max_tokens": room}


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise ProxyError(405, "invalid_request_error", f"method {method} not allowed here")


def _refuse_declared_oversize(scope: Scope) -> None:
    """413 at once for a body whose ``content-length`` is over the limit: waiting for bytes
    that will be refused anyway would end in a 408 after the body timeout."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
            raise ProxyError(413, "request_too_large", "request body exceeds 64 MiB")


async def _read_body(receive: Receive, timeout: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    try:
        # One deadline for the whole body: a client trickling it holds a connection and memory.
        async with asyncio.timeout(timeout):
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise ProxyError(413, "request_too_large", "request body exceeds 64 MiB")
                chunks.append(chunk)
                more = message.get("more_body", False)
    except TimeoutError:
        raise ProxyError(
            408, "invalid_request_error", f"request body not received within {timeout:g} s"
        ) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _until_gone(receive: Receive, work: Awaitable[Any]) -> Any:
    """Run ``work`` but cancel it the moment the client disconnects: a cancelled upstream
    request closes its connection, and vLLM aborts the generation (frees the GPU slot)."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            continue
        gone = True
        task.cancel()

    # uvicorn also reports "disconnect" once the response is complete; the work never yields
    # between its last send and returning, so the watcher is cancelled before it can see that.
    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            task.uncancel()
            raise _ClientGone from None
        raise
    finally:
        watcher.cancel()


def _body(data: bytes, *, more: bool) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


def _closing(status: int) -> list[tuple[bytes, bytes]]:
    """Headers for an error answer; after 408 and 413 the rest of the request may still be
    coming, so the connection closes."""
    if status in (408, 413):
        return [*_JSON, (b"connection", b"close")]
    return _JSON


class _WholeBody:
    """``send`` for HTTP/1.0 clients, which know no chunked encoding: the response goes out in
    one piece with its ``content-length`` (a stream included, once it has ended)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._start: Message | None = None
        self._parts: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start = message
            return
        self._parts.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        assert self._start is not None
        body = b"".join(self._parts)
        headers = [(name, value) for name, value in self._start.get("headers", [])
                   if name != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self._send({**self._start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    # An explicit length: uvicorn would otherwise answer in chunks (to HTTP/1.0 clients too).
    headers = [*(headers or _JSON), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
