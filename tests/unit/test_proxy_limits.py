"""Abuse over loopback sockets against the real server (uvicorn + the proxy's protocol) in a
thread: each bound holds, and another client keeps being served while the abuse runs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from spark_stack.proxy.config import ProxyConfig, Route, Upstream
from spark_stack.proxy.serve import build_server
from tests.helpers import free_port

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def running(**settings: Any) -> Iterator[int]:
    """The proxy on a free loopback port, with these ProxyConfig settings."""
    port = free_port()
    settings.setdefault("upstreams", {"q": Upstream("q", "http://127.0.0.1:9/v1", "served")})
    settings.setdefault("routes", [Route("claude-*", "q")])
    server = build_server(ProxyConfig(port=port, **settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the proxy did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def upstream(handler: Any) -> Iterator[tuple[int, list[float]]]:
    """A fake backend on a loopback port: ``handler(reader, writer)`` per connection; yields
    the port and the times its connections closed."""
    port = free_port()
    closed: list[float] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stopping: asyncio.Future[None] = loop.create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            closed.append(time.monotonic())
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port)
        ready.set()
        async with server:
            await stopping
        handlers = asyncio.all_tasks() - {asyncio.current_task()}
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield port, closed
    finally:
        loop.call_soon_threadsafe(stopping.set_result, None)
        thread.join(5)
        loop.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def get(port: int, path: str = "/", version: str = "1.1") -> tuple[int, bytes, bytes]:
    """One request on a fresh connection: status, head, body (read to close)."""
    with connect(port) as sock:
        sock.sendall(f"GET {path} HTTP/{version}\r\nHost: x\r\nConnection: close\r\n\r\n"
                     .encode())
        return split(read_all(sock))


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def split(raw: bytes) -> tuple[int, bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.lower(), body


def latencies(port: int, until: threading.Event, at_least: int = 20) -> list[float]:
    """GET / over and over (fresh connections) until ``until`` is set."""
    times: list[float] = []
    while not until.is_set() or len(times) < at_least:
        started = time.perf_counter()
        assert get(port)[0] == 200
        times.append(time.perf_counter() - started)
        time.sleep(0.005)
    return times


def refusal(raw: bytes) -> tuple[int, str]:
    status, head, body = split(raw)
    assert b"content-type: application/json" in head, head
    error = orjson.loads(body)
    assert error["type"] == "error"
    return status, error["error"]["message"]


def test_a_huge_header_gets_431_while_others_are_served() -> None:
    with running(max_header_bytes=64 * 1024) as port:
        done = threading.Event()
        answer: list[bytes] = []

        def abuse() -> None:
            with connect(port) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
                try:
                    for _ in range(200):  # up to 200 MB, like the report
                        sock.sendall(b"a" * (1 << 20))
                except OSError:
                    pass  # refused and closed: what we want
                answer.append(read_all(sock))
            done.set()

        thread = threading.Thread(target=abuse)
        thread.start()
        times = latencies(port, done)
        thread.join()
    status, message = refusal(answer[0])
    assert status == 431 and "exceed 65536 bytes" in message
    assert statistics.median(times) < 0.05, times


def test_too_many_headers_get_431() -> None:
    with running(max_headers=20) as port, connect(port) as sock:
        headers = "".join(f"X-{i}: v\r\n" for i in range(30))
        sock.sendall(f"GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        assert refusal(read_all(sock)) == (431, "more than 20 request headers")


def test_slow_and_silent_connections_get_408_after_the_header_timeout() -> None:
    with running(header_timeout=0.3) as port, connect(port) as slow, connect(port) as silent:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert refusal(read_all(slow)) == (408, "request headers not received within 0.3 s")
        assert refusal(read_all(silent))[0] == 408
        assert time.monotonic() - started < 2


def test_a_keep_alive_connection_gets_the_header_timeout_on_its_next_request() -> None:
    with running(header_timeout=0.3) as port, connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)  # idle between requests is keep-alive's business, not this timeout
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        raw = read_all(sock)
        assert raw.startswith(b"HTTP/1.1 200")
        assert b"HTTP/1.1 408" in raw


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        data = sock.recv(65536)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    assert not data or refusal(data)[0] == 408
    return True


def test_idle_and_incomplete_connections_beyond_the_cap_make_room_for_new_clients() -> None:
    with running(max_connections=50, header_timeout=30) as port:
        hogs = []
        for i in range(150):
            hogs.append(connect(port))
            if i % 2:  # half send an incomplete head, half nothing
                hogs[-1].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        try:
            done = threading.Event()
            done.set()
            times = latencies(port, done, at_least=20)
            still_open = sum(not closed_by_server(hog) for hog in hogs)
        finally:
            for hog in hogs:
                hog.close()
    assert statistics.median(times) < 0.05, times
    assert still_open <= 50


def sse(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "served",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    event = b"data: " + orjson.dumps(chunk) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def streaming(chunk_chars: int, limit_bytes: int) -> Any:
    """A backend that streams content chunks of ``chunk_chars`` until its client goes or
    ``limit_bytes`` went out, then ends the answer properly."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        framed = sse({"content": "x" * chunk_chars})
        for _ in range(max(1, limit_bytes // len(framed))):
            writer.write(framed)
            await writer.drain()
        done = b"data: [DONE]\n\n"
        writer.write(sse({}, "stop") + b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        await writer.drain()
    return handle


def stream_request(model: str = "claude-x") -> bytes:
    body = orjson.dumps({"model": model, "max_tokens": 100, "stream": True,
                         "messages": [{"role": "user", "content": "hi"}]})
    return (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def test_clients_that_stop_reading_are_dropped_and_their_upstream_request_cancelled() -> None:
    with upstream(streaming(4096, 100 * 1024 * 1024)) as (backend, closed):
        ups = {"q": Upstream("q", f"http://127.0.0.1:{backend}/v1", "served")}
        with running(upstreams=ups, write_timeout=0.5) as port:
            readers = []
            for _ in range(10):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", port))
                sock.sendall(stream_request())
                readers.append(sock)
            try:
                started = time.monotonic()
                while len(closed) < 10 and time.monotonic() - started < 10:
                    assert get(port)[0] == 200
                    time.sleep(0.05)
                dropped = len(closed)
            finally:
                for sock in readers:
                    sock.close()
    assert dropped == 10, f"{dropped} of 10 upstream requests cancelled"
    assert time.monotonic() - started < 5


def test_an_upstream_that_never_answers_is_a_504() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(30)

    with upstream(silent) as (backend, _):
        ups = {"q": Upstream("q", f"http://127.0.0.1:{backend}/v1", "served")}
        with running(upstreams=ups, upstream_timeout=0.5) as port, connect(port) as sock:
            started = time.monotonic()
            sock.sendall(stream_request())
            status, message = refusal(sock.recv(65536))
    assert status == 504
    assert message == "upstream q sent nothing for 0.5 s (the proxy's upstream_timeout)"
    assert time.monotonic() - started < 3


def test_malformed_http_gets_an_anthropic_error() -> None:
    with running() as port, connect(port) as sock:
        sock.sendall(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
        assert refusal(read_all(sock)) == (400, "malformed HTTP request")


def test_http_1_0_clients_get_no_chunked_encoding() -> None:
    with upstream(streaming(10, 100)) as (backend, _):
        ups = {"q": Upstream("q", f"http://127.0.0.1:{backend}/v1", "served")}
        with running(upstreams=ups) as port:
            with connect(port) as sock:
                sock.sendall(stream_request().replace(b"HTTP/1.1", b"HTTP/1.0"))
                status, head, body = split(read_all(sock))
            assert status == 200 and b"chunked" not in head
            assert f"content-length: {len(body)}".encode() in head
            assert body.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
            status, head, body = get(port, "/", "1.0")
            assert status == 200 and b"chunked" not in head and body == b'{"status":"ok"}'
            status, head, _ = get(port, "/nowhere", "1.0")
            assert status == 404 and b"chunked" not in head and b"content-length" in head


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_a_body_declared_over_the_limit_gets_413_at_once(path: str) -> None:
    with running(body_timeout=30) as port, connect(port) as sock:
        started = time.monotonic()
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                     f"content-length: {64 * 1024 * 1024 + 1}\r\n\r\n{{".encode())
        assert refusal(read_all(sock)) == (413, "request body exceeds 64 MiB")
        assert time.monotonic() - started < 2  # not the 30 s body timeout's 408
