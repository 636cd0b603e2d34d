"""The proxy's HTTP edge towards vLLM.

Chat completions to ``http://`` upstreams go through a small keep-alive HTTP/1.1 client built
on asyncio and httptools (uvicorn's parser): it cost ~0.08 ms of CPU per streamed request
where aiohttp's ClientSession cost ~0.35 ms on the same machine (``benchmarks/README.md``).
Everything else (``https://`` upstreams, ``/tokenize``, ``/health``) uses one aiohttp session
(httpx's AsyncClient cost 5-10x the CPU per streamed request and collapsed at c=32).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import httptools
import orjson
from yarl import URL

from spark_stack.neterrors import connect_reason
from spark_stack.proxy.config import Upstream
from spark_stack.proxy.errors import ProxyError, from_backend, unreachable, upstream_timeout

_TOKENIZE_CACHE_SIZE = 1024
_HEALTH_TIMEOUT = aiohttp.ClientTimeout(total=3)
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
_CONNECT_SECONDS = 10
# Stop reading from the backend while this much is waiting for a slow client: with the
# client's own transport buffer, about what one slow client can hold in the proxy.
_READ_BUFFER = 256 * 1024


class UpstreamTimeout(TimeoutError):
    """The backend sent nothing (no headers, or no more of the body) for too long."""


class UpstreamConnectionError(ConnectionError):
    """The backend closed the connection or sent something that is not HTTP/1.1."""


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._timeout = 0.0
        self._last_data = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = False
        self.status = 0
        self.keep_alive = False
        self.complete = False
        self.received = False
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._headers: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None

    def begin(self, request: bytes, timeout: float) -> asyncio.Future[None]:
        """Send ``request``; the future resolves once the response headers are in. The
        response fails with :class:`UpstreamTimeout` when the backend sends nothing for
        ``timeout`` seconds."""
        assert self.transport is not None
        self.status = 0
        self.keep_alive = False
        self.complete = self.received = False
        self._parser = httptools.HttpResponseParser(self)
        # Whatever the previous reader left unread of its (complete) response goes.
        self._chunks = []
        self._buffered = 0
        self._error = None
        if self._paused:
            self._resume()
        loop = asyncio.get_running_loop()
        self._headers = loop.create_future()
        self.transport.write(request)
        # One timer per response that re-arms itself, rather than one per read: reads only
        # stamp the time.
        self._timeout = timeout
        self._last_data = loop.time()
        self._watchdog = loop.call_later(timeout, self._check_silence)
        return self._headers

    def close(self) -> None:
        self._stop_watchdog()
        if self.transport is not None:
            self.transport.close()
        self.closed = True

    def _check_silence(self) -> None:
        self._watchdog = None
        if self.complete or self.closed:
            return
        loop = asyncio.get_running_loop()
        silent = loop.time() - self._last_data
        if silent < self._timeout:
            self._watchdog = loop.call_later(self._timeout - silent, self._check_silence)
            return
        self._fail(UpstreamTimeout(f"upstream sent nothing for {self._timeout:g} s"))
        self.close()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        self._last_data = asyncio.get_running_loop().time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamConnectionError(f"malformed HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            reason = f": {exc}" if exc else ""
            self._fail(UpstreamConnectionError(f"upstream closed the connection{reason}"))

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        if self._headers is not None and not self._headers.done():
            self._headers.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _READ_BUFFER and not self._paused and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._stop_watchdog()
        self._wake()

    def _fail(self, error: Exception) -> None:
        self._error = error
        if self._headers is not None and not self._headers.done():
            self._headers.set_exception(error)
        self._wake()

    def _resume(self) -> None:
        self._paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (all that is buffered at once); raises if it is cut short."""
        while True:
            if self._chunks:
                data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                if self._paused:
                    self._resume()
                yield data
            elif self.complete:
                return
            elif self._error is not None:
                raise self._error
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None


class RawResponse:
    """What the server reads of a chat completion: ``status``, ``content.iter_any()``,
    ``read()`` and ``release()`` (the names aiohttp's response has)."""

    def __init__(self, connection: _Connection, pool: list[_Connection]) -> None:
        self._connection = connection
        self._pool: list[_Connection] | None = pool
        self.status = connection.status
        self.content = self

    def iter_any(self) -> AsyncIterator[bytes]:
        return self._connection.chunks()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self._connection.chunks()])

    def release(self) -> None:
        """Back to the pool when the response was read to its end, else closed: a backend
        that sees its client go away aborts the generation."""
        connection, pool = self._connection, self._pool
        if pool is None or connection.closed:
            return
        self._pool = None  # released once: a connection must never be pooled twice
        if connection.complete and connection.keep_alive:
            pool.append(connection)
        else:
            connection.close()


class _Target:
    """An upstream's chat-completions endpoint: where to connect, the request head, the
    idle connections."""

    def __init__(self, upstream: Upstream) -> None:
        url = URL(upstream.base_url.rstrip("/") + "/chat/completions")
        if not url.raw_host:
            raise UpstreamConnectionError(f"no host in {upstream.base_url!r}")
        self.host = url.raw_host
        self.port = url.port or 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        lines = [
            f"POST {url.raw_path_qs} HTTP/1.1",
            f"Host: {host}:{self.port}",
            "Content-Type: application/json",
        ]
        if upstream.api_key:
            lines.append(f"Authorization: Bearer {upstream.api_key}")
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError(f"upstream {upstream.name}: line break in its URL or API key")
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self.idle: list[_Connection] = []

    def request(self, body: bytes) -> bytes:
        return b"".join((self.head, str(len(body)).encode(), b"\r\n\r\n", body))


class UpstreamClient:
    """Chat completions, exact token counts (cached) and health checks against upstreams."""

    def __init__(self, read_timeout: float = 600.0) -> None:
        """``read_timeout``: how long a backend may send nothing (no headers, or no more of a
        response) before the request fails."""
        self.read_timeout = read_timeout
        # Connecting is quick or never; reading is bounded by silence, not by a total: a long
        # generation streams for as long as it takes.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=_CONNECT_SECONDS, connect=_CONNECT_SECONDS,
            sock_read=read_timeout,
        )
        self._session: aiohttp.ClientSession | None = None
        self._token_cache: OrderedDict[bytes, int] = OrderedDict()
        self._no_tokenize: set[str] = set()
        self._targets: dict[Upstream, _Target] = {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            # No cookie jar: vLLM sets no cookies, and the default jar filters every request.
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        for target in self._targets.values():
            for connection in target.idle:
                connection.close()
            target.idle.clear()
        if self._session is not None:
            await self._session.close()

    @staticmethod
    def headers(upstream: Upstream) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if upstream.api_key:
            headers["Authorization"] = f"Bearer {upstream.api_key}"
        return headers

    async def post_chat(self, upstream: Upstream, body: bytes) -> Any:
        """Open ``POST /chat/completions``; the caller reads (and releases) the response
        (a :class:`RawResponse`, or aiohttp's for ``https://`` upstreams)."""
        try:
            if upstream.base_url.startswith("https:"):
                return await self.session.post(
                    upstream.base_url.rstrip("/") + "/chat/completions",
                    data=body,
                    headers=self.headers(upstream),
                )
            return await self._post_raw(upstream, body)
        except (UpstreamTimeout, aiohttp.SocketTimeoutError):
            raise upstream_timeout(self.read_timeout, upstream.name) from None
        except TRANSPORT_ERRORS as exc:
            raise unreachable(upstream.name, _describe(exc)) from exc

    async def _post_raw(self, upstream: Upstream, body: bytes) -> RawResponse:
        target = self._targets.get(upstream)
        if target is None:
            target = self._targets[upstream] = _Target(upstream)
        request = target.request(body)
        while target.idle:
            connection = target.idle.pop()
            if connection.closed:
                continue
            try:
                await self._send(connection, request)
            except UpstreamConnectionError:
                if connection.received:
                    raise
                # The backend closed this idle connection as the request went out (its
                # keep-alive ran out) and read none of it: try the next one.
                continue
            return RawResponse(connection, target.idle)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(_CONNECT_SECONDS):
            _, connection = await loop.create_connection(_Connection, target.host, target.port)
        await self._send(connection, request)
        return RawResponse(connection, target.idle)

    async def _send(self, connection: _Connection, request: bytes) -> None:
        try:
            await connection.begin(request, self.read_timeout)
        except BaseException:
            connection.close()
            raise

    async def error_from(self, upstream: Upstream, response: Any) -> ProxyError:
        try:
            body = await response.read()
        except TRANSPORT_ERRORS:
            body = b""
        finally:
            response.release()
        return from_backend(response.status, body, upstream.name)

    async def count_tokens(self, upstream: Upstream, tokenize_body: dict[str, Any]) -> int | None:
        """The exact prompt tokens from vLLM's ``POST /tokenize`` (chat template and tools
        applied), or None when the backend has no tokenizer endpoint."""
        if upstream.name in self._no_tokenize:
            return None
        payload = orjson.dumps(tokenize_body)
        key = upstream.name.encode() + hashlib.blake2b(payload, digest_size=16).digest()
        cached = self._token_cache.get(key)
        if cached is not None:
            self._token_cache.move_to_end(key)
            return cached
        try:
            async with self.session.post(
                upstream.root_url + "/tokenize", data=payload, headers=self.headers(upstream)
            ) as response:
                if response.status in (404, 405, 501):
                    self._no_tokenize.add(upstream.name)
                    return None
                body = await response.read()
                if response.status != 200:
                    raise from_backend(response.status, body, upstream.name)
        except aiohttp.SocketTimeoutError:
            raise upstream_timeout(self.read_timeout, upstream.name) from None
        except TRANSPORT_ERRORS as exc:
            raise unreachable(upstream.name, _describe(exc)) from exc
        try:
            count = orjson.loads(body)["count"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ProxyError(502, "api_error", f"upstream {upstream.name} /tokenize answered "
                             "without a count") from exc
        if not isinstance(count, int):
            raise ProxyError(502, "api_error", f"upstream {upstream.name} /tokenize count is odd")
        self._token_cache[key] = count
        if len(self._token_cache) > _TOKENIZE_CACHE_SIZE:
            self._token_cache.popitem(last=False)
        return count

    async def health(self, upstream: Upstream) -> dict[str, Any]:
        try:
            async with self.session.get(
                upstream.root_url + "/health",
                headers=self.headers(upstream),
                timeout=_HEALTH_TIMEOUT,
            ) as response:
                return {"ok": response.status == 200, "status": response.status}
        except TRANSPORT_ERRORS as exc:
            return {"ok": False, "status": None, "error": _describe(exc)}


def _describe(exc: BaseException) -> str:
    """Why a backend call failed, in words (not aiohttp's ``Cannot connect to host … ssl:…``)."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({connect_reason(exc.os_error)})"
    if isinstance(exc, OSError) and exc.errno:
        return connect_reason(exc)
    return str(exc) or type(exc).__name__
