"""A small, fast HTTP/1.1 server on asyncio.Protocol (the network edge).

Content-Length request bodies, keep-alive and pipelining, `Expect: 100-continue`, chunked
responses for streams. Each request runs as a task; when the client goes away the task is
cancelled, which is how the simulator stops generating at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Request:
    """One parsed HTTP request."""

    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


Handler = Callable[[Request, "Responder"], Awaitable[None]]


class _DateCache:
    """The Date header, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode("ascii")
        return self._value


_DATE = _DateCache()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class Responder:
    """Writes one response on a connection."""

    def __init__(self, protocol: HttpProtocol, request: Request) -> None:
        self._protocol = protocol
        self._request = request
        self.started = False
        self._chunked = False
        self._pending = b""
        self.keep_alive = request.keep_alive

    def _head(self, status: int, headers: Iterable[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_reason(status)}\r\n".encode("latin-1")]
        lines.append(b"date: " + _DATE.get() + b"\r\nserver: uvicorn\r\n")
        for name, value in headers:
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def send(
        self,
        status: int,
        body: bytes,
        content_type: str | None = "application/json",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """A complete response with a Content-Length (and no Content-Type when None)."""
        self.started = True
        typed = [("content-type", content_type)] if content_type is not None else []
        head = self._head(status, [("content-length", str(len(body))), *typed, *headers])
        body_out = b"" if self._request.method == "HEAD" else body
        self._protocol.write(head + body_out)
        await self._protocol.drain()

    async def start_stream(
        self, status: int = 200, content_type: str = "text/event-stream; charset=utf-8"
    ) -> None:
        """Begin a streamed response: chunked on HTTP/1.1, close-delimited on HTTP/1.0."""
        self.started = True
        self._chunked = self._request.version != "HTTP/1.0"
        if not self._chunked:
            self.keep_alive = False
        headers = [("content-type", content_type)]
        if self._chunked:
            headers.append(("transfer-encoding", "chunked"))
        # Held back so the head goes out with the first piece of body: one send, not two.
        self._pending = self._head(status, headers)

    def _frame(self, data: str) -> bytes:
        raw = data.encode("utf-8")
        return b"%x\r\n%s\r\n" % (len(raw), raw) if self._chunked else raw

    async def write(self, data: str) -> None:
        """One piece of a streamed body (one HTTP chunk)."""
        self._protocol.write(self._pending + self._frame(data))
        self._pending = b""
        await self._protocol.drain()

    async def write_all(self, pieces: Iterable[str]) -> None:
        """Every remaining piece and the end of the body, in one send."""
        body = b"".join(self._frame(p) for p in pieces)
        self._protocol.write(self._pending + body + (b"0\r\n\r\n" if self._chunked else b""))
        self._pending = b""
        await self._protocol.drain()

    async def end_stream(self) -> None:
        self._protocol.write(self._pending + (b"0\r\n\r\n" if self._chunked else b""))
        self._pending = b""
        await self._protocol.drain()

    def abort(self) -> None:
        """Drop the connection mid-response, as a crashing server would."""
        self.keep_alive = False
        if self._pending:
            self._protocol.write(self._pending)
            self._pending = b""
        self._protocol.abort()


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, handler: Handler, on_error: Callable[[BaseException], None]) -> None:
        self._handler = handler
        self._on_error = on_error
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._paused: asyncio.Future[None] | None = None
        self._closed = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._task is None:
            self._next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)

    def pause_writing(self) -> None:
        if self._paused is None or self._paused.done():
            self._paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)

    # used by Responder
    def write(self, data: bytes) -> None:
        if not self._closed and self._transport is not None:
            self._transport.write(data)

    async def drain(self) -> None:
        if self._paused is not None and not self._paused.done():
            await self._paused

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # parsing
    def _fail(self, status: int) -> None:
        if self._transport is not None:
            body = f'{{"detail":"{_reason(status)}"}}'.encode()
            self._transport.write(
                f"HTTP/1.1 {status} {_reason(status)}\r\ncontent-length: {len(body)}\r\n"
                "content-type: application/json\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            self._transport.close()

    def _next_request(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                self._fail(431)
            return
        try:
            head = self._buffer[:end].decode("latin-1")
            request_line, *header_lines = head.split("\r\n")
            method, target, version = request_line.split(" ")
            headers: dict[str, str] = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or "0")
        except ValueError:
            self._fail(400)
            return
        if not version.startswith("HTTP/1.") or length < 0:
            self._fail(400)
            return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._fail(411)
            return
        if length > MAX_BODY_BYTES:
            self._fail(413)
            return
        if len(self._buffer) < end + 4 + length:
            if headers.get("expect", "").lower() == "100-continue" and self._transport:
                headers.pop("expect")
                self._buffer[:end] = self._rebuild_head(request_line, headers)
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        path, _, query = target.partition("?")
        request = Request(method.upper(), path, query, version, headers, body)
        self._task = asyncio.get_running_loop().create_task(self._run(request))

    @staticmethod
    def _rebuild_head(request_line: str, headers: dict[str, str]) -> bytes:
        lines = [request_line, *(f"{k}: {v}" for k, v in headers.items())]
        return "\r\n".join(lines).encode("latin-1")

    async def _run(self, request: Request) -> None:
        responder = Responder(self, request)
        try:
            await self._handler(request, responder)
        except asyncio.CancelledError:
            return
        except Exception as exc:  # a bug in a handler must not kill the server
            self._on_error(exc)
            if not responder.started:
                await responder.send(500, b'{"detail":"Internal Server Error"}')
            else:
                self.abort()
        finally:
            self._task = None
        if self._closed:
            return
        if not responder.keep_alive:
            if self._transport is not None:
                self._transport.close()
            return
        if self._buffer:
            self._next_request()
