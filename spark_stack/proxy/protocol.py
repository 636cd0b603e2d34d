"""uvicorn's httptools protocol, with the bounds uvicorn leaves open for httptools.

uvicorn bounds header size only for h11 (``h11_max_incomplete_event_size``), has no time limit
on receiving a request's head, lets a connection sit idle until its first byte forever, and
waits forever for a client that stopped reading. httptools accumulates a header value split
over many reads by repeated concatenation: a 200 MB header took seconds of CPU that every
other client waited for. Here, per connection and before the app (so before authentication):

- the request head (request line and headers) is at most ``max_header_bytes``, counted as
  the bytes arrive, and at most ``max_headers`` headers: else 431 and close;
- a head must arrive within ``header_timeout`` of its first byte, or of the connection
  opening: else 408 and close;
- at most ``max_connections`` connections: a new one beyond that evicts the connection that
  has been idle or incomplete longest, or is refused with 503 when every one is busy;
- a client whose socket takes no data for ``write_timeout`` while a response waits to be
  written is dropped (the app sees a disconnect and cancels the upstream request).

Refusals, and malformed HTTP, are answered in Anthropic's error envelope and reported through
``reporter`` (the app: its access log and metrics).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Protocol

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from spark_stack.proxy.config import ProxyConfig
from spark_stack.proxy.errors import envelope


class Reporter(Protocol):
    def refused(self, status: int | None, reason: str) -> None:
        """Log (and, with a status, count) what the app never saw: a request refused before
        it, or a client dropped."""

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
            503: b"Service Unavailable"}
_TYPES = {503: "overloaded_error"}


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that broke a limit."""


class LimitedProtocol(HttpToolsProtocol):
    """One client connection. Subclassed per server by :func:`protocol_class`."""

    settings: ClassVar[ProxyConfig]
    reporter: ClassVar[Reporter]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes of the current request head received so far; None while the head is complete
        # and its request is being read or answered.
        self._head: int | None = 0
        self._last_three = b""
        self._refusal: tuple[int, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.idle_since = self.loop.time()
        self._arm_head_timer()
        if len(self.connections) > self.settings.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head is not None and not self._count_head(data):
            return
        super().data_received(data)

    def _count_head(self, data: bytes) -> bool:
        """Count ``data`` into the current request head; False when it broke the limit."""
        if self._head_timer is None:
            self._arm_head_timer()
        head = self._head or 0
        end = data.find(b"\r\n\r\n")
        found = end >= 0
        if not found and self._last_three:
            # The blank line may straddle two reads.
            straddle = (self._last_three + data[:3]).find(b"\r\n\r\n")
            found = straddle >= 0
            end = straddle - len(self._last_three)
        size = head + end + 4 if found else head + len(data)
        limit = self.settings.max_header_bytes
        if size > limit:
            self.refuse(431, f"request headers exceed {limit} bytes")
            return False
        if found:
            self._head = None
            self._last_three = b""
        else:
            self._head = size
            self._last_three = (self._last_three + data[-3:])[-3:]
        return True

    # httptools callbacks
    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        # Counted once the head is in (its bytes bound how many there can be): a check per
        # header would cost a Python call for each on every request.
        if len(self.headers) > self.settings.max_headers:
            self._refusal = (431, f"more than {self.settings.max_headers} request headers")
            raise _Refused
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head = 0

    def on_response_complete(self) -> None:
        self.idle_since = self.loop.time()
        if self._head is None:
            # Answered before its body was read (401, 404, 413, …): the rest of that body would
            # keep the connection busy with no timer running. Close it instead.
            self.transport.close()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to unparseable HTTP (and to our callback refusals)."""
        status, reason = self._refusal or (400, "malformed HTTP request")
        self.refuse(status, reason)

    def refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` in Anthropic's envelope, report it and close the connection."""
        self._cancel_timers()
        if self.transport.is_closing():
            return
        error_type = _TYPES.get(status, "invalid_request_error")
        body = orjson.dumps(envelope(error_type, reason))
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()
        self.reporter.refused(status, reason)

    # Flow control: the transport's buffer is above its high-water mark while paused.
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(
                self.settings.write_timeout, self._drop_stalled
            )

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().resume_writing()

    def _drop_stalled(self) -> None:
        self._write_timer = None
        timeout = self.settings.write_timeout
        self.reporter.refused(None, f"client read nothing for {timeout:g} s: dropped")
        # abort: the buffered answer is discarded at once, and connection_lost tells the app.
        self.transport.abort()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.settings.header_timeout, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if self._head is not None:
            timeout = self.settings.header_timeout
            self.refuse(408, f"request headers not received within {timeout:g} s")

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._write_timer = None

    def _waiting(self) -> bool:
        """Idle between requests or still receiving a request's head."""
        return self.cycle is None or self.cycle.response_complete

    def _make_room(self) -> None:
        waiting = [
            other for other in self.connections
            if other is not self and isinstance(other, LimitedProtocol) and other._waiting()
        ]
        if not waiting:
            self.refuse(503, f"the proxy serves at most {self.settings.max_connections} "
                             "connections and all are busy")
            return
        # Half-sent heads go first (what slow-header attacks hold), then the longest idle.
        oldest = min(waiting, key=lambda other: (not other._head, other.idle_since))
        if oldest._head:
            oldest.refuse(408, "connection closed to make room for another client")
        else:
            oldest._cancel_timers()
            oldest.transport.close()


def protocol_class(settings: ProxyConfig, reporter: Reporter) -> type[LimitedProtocol]:
    """A :class:`LimitedProtocol` bound to these settings, for ``uvicorn.Config(http=…)``."""
    return type(
        "BoundLimitedProtocol", (LimitedProtocol,), {"settings": settings, "reporter": reporter}
    )
