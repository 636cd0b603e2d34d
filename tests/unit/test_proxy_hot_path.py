"""The proxy's hot-path shortcuts give exactly what the plain path gives: the body parser that
skips known tool definitions, the pre-serialised tools, and the raw HTTP/1.1 upstream client
(against real loopback servers that misbehave on purpose)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_stack.proxy.config import Upstream
from spark_stack.proxy.errors import ProxyError
from spark_stack.proxy.translate_request import BodyParser, encode_request, translate_request
from spark_stack.proxy.upstream import TRANSPORT_ERRORS, UpstreamClient
from tests.claude_code_body import claude_code_body

QWEN = Upstream("qwen", "http://127.0.0.1:1/v1", "qwen3")


def claude_body() -> bytes:
    return orjson.dumps(claude_code_body("Summarise the repository."))


def test_known_tools_are_reused_and_the_result_equals_a_full_parse() -> None:
    parser = BodyParser()
    raw = claude_body()
    first, first_json = parser.loads(raw)
    second, second_json = parser.loads(raw)
    assert first == second == orjson.loads(raw)
    assert second["tools"] is first["tools"]  # not parsed again
    assert first_json is second_json
    assert first_json == orjson.dumps(orjson.loads(raw)["tools"])


def test_the_same_tools_in_a_new_conversation_are_found() -> None:
    parser = BodyParser()
    parser.loads(claude_body())
    later = orjson.loads(claude_body())
    later["messages"].append({"role": "user", "content": "and now the tests"})
    raw = orjson.dumps(later)
    body, _ = parser.loads(raw)
    assert body == orjson.loads(raw)
    assert list(body) == list(orjson.loads(raw))  # key order too


@pytest.mark.parametrize(
    "edit",
    [
        # The known tools nested elsewhere, other tools at the top.
        lambda body: {**body, "metadata": {"tools": body["tools"]}, "tools": body["tools"][:2]},
        # Duplicate keys: the last one wins, as in a full parse.
        lambda body: body,
    ],
)
def test_look_alikes_fall_back_to_a_full_parse(edit: Callable[[Any], Any]) -> None:
    parser = BodyParser()
    known = claude_body()
    parser.loads(known)
    raw = orjson.dumps(edit(orjson.loads(known)))
    for variant in (raw, raw[:-1] + b',"tools":[]}', b'{"tools":[],' + raw[1:]):
        assert parser.loads(variant)[0] == orjson.loads(variant)


def test_invalid_json_raises_what_a_full_parse_raises() -> None:
    parser = BodyParser()
    raw = claude_body()
    parser.loads(raw)
    with pytest.raises(orjson.JSONDecodeError) as ours:
        parser.loads(raw[:-1])
    with pytest.raises(orjson.JSONDecodeError) as plain:
        orjson.loads(raw[:-1])
    assert str(ours.value) == str(plain.value)


KNOWN_TOOLS = orjson.loads(claude_body())["tools"]
LEAVES = st.none() | st.integers(-1000, 1000) | st.text(max_size=5) | st.just(KNOWN_TOOLS)


@settings(max_examples=60, deadline=None)
@given(
    extra=st.dictionaries(
        st.sampled_from(["tools", "metadata", "system", "x"]),
        st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.sampled_from(["tools", "a"]), inner, max_size=2),
                     max_leaves=6),
        max_size=3,
    ),
)
def test_any_body_parses_as_orjson_does(extra: dict[str, Any]) -> None:
    """Known tools anywhere (top level, nested, twice), or other values under ``tools``."""
    parser = BodyParser()
    parser.loads(claude_body())
    body = {**orjson.loads(claude_body()), **extra}
    raw = orjson.dumps(body)
    assert parser.loads(raw)[0] == orjson.loads(raw)


def test_encoded_request_is_byte_identical() -> None:
    body = orjson.loads(claude_body())
    request = translate_request(body, QWEN)
    again = translate_request(body, QWEN, orjson.dumps(body["tools"]))
    assert request == again
    assert encode_request(request) == orjson.dumps(request) == encode_request(again)
    plain = translate_request({"model": "m", "max_tokens": 5, "messages": []}, QWEN)
    assert encode_request(plain) == orjson.dumps(plain)


# The raw upstream client, against loopback servers scripted per test.

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CHAT = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await reader.readexactly(length)


def serve(handler: Handler, check: Callable[[Upstream, UpstreamClient], Awaitable[None]]) -> int:
    """Run ``check`` against a loopback server that answers with ``handler``; the number of
    connections the server accepted."""
    accepted = 0

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(counted, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient()
        try:
            upstream = Upstream("up", f"http://127.0.0.1:{port}/v1", "m", api_key="sk-1")
            await asyncio.wait_for(check(upstream, client), 10)
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    return accepted


async def read_all(response: Any) -> bytes:
    data = b"".join([piece async for piece in response.content.iter_any()])
    response.release()
    return data


def test_streams_and_reuses_one_connection() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            seen.append(head + body)
            writer.write(CHAT + chunk(b"data: 1\n\n"))
            await writer.drain()
            writer.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            await writer.drain()

    async def check(upstream: Upstream, client: UpstreamClient) -> None:
        for _ in range(3):
            response = await client.post_chat(upstream, b'{"a":1}')
            assert response.status == 200
            assert await read_all(response) == b"data: 1\n\ndata: [DONE]\n\n"

    assert serve(handler, check) == 1
    assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer sk-1\r\n" in seen[0]
    assert b"\r\nContent-Type: application/json\r\n" in seen[0]
    assert seen[0].endswith(b'\r\n\r\n{"a":1}')


def test_an_error_body_is_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = b'{"object":"error","message":"bad","code":400}'
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()

    async def check(upstream: Upstream, client: UpstreamClient) -> None:
        response = await client.post_chat(upstream, b"{}")
        assert response.status == 400
        error = await client.error_from(upstream, response)
        assert isinstance(error, ProxyError) and "bad" in error.message

    serve(handler, check)


def test_an_idle_connection_the_backend_closed_is_replaced() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        # Keep-alive promised, then the connection is dropped (a keep-alive timeout).
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async def check(upstream: Upstream, client: UpstreamClient) -> None:
        for _ in range(3):
            response = await client.post_chat(upstream, b"{}")
            assert await read_all(response) == b"ok"
            await asyncio.sleep(0.05)  # let the close arrive, sometimes

    assert serve(handler, check) == 3


def test_a_stream_cut_short_is_a_transport_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHAT + chunk(b"data: 1\n\n"))
        await writer.drain()

    async def check(upstream: Upstream, client: UpstreamClient) -> None:
        response = await client.post_chat(upstream, b"{}")
        pieces = []
        with pytest.raises(TRANSPORT_ERRORS):
            async for piece in response.content.iter_any():
                pieces.append(piece)
        assert pieces == [b"data: 1\n\n"]
        response.release()

    serve(handler, check)


def test_garbage_and_refusal_are_unreachable() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SPDY/9 nonsense\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def check(upstream: Upstream, client: UpstreamClient) -> None:
        with pytest.raises(ProxyError) as caught:
            await client.post_chat(upstream, b"{}")
        assert caught.value.status == 529 and "unreachable" in caught.value.message
        gone = Upstream("gone", "http://127.0.0.1:1/v1", "m")
        with pytest.raises(ProxyError) as refused:
            await client.post_chat(gone, b"{}")
        assert "upstream gone is unreachable" in refused.value.message

    serve(handler, check)


def test_an_abandoned_stream_closes_its_connection() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHAT + chunk(b"data: 1\n\n"))
        await writer.drain()
        await reader.read()  # returns when the client hangs up: vLLM aborts here
        closed.set()

    async def check(upstream: Upstream, client: UpstreamClient) -> None:
        response = await client.post_chat(upstream, b"{}")
        async for _ in response.content.iter_any():
            break
        response.release()
        await closed.wait()

    serve(handler, check)


def test_what_a_reader_left_unread_never_reaches_the_next_response() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for n in range(2):
            await read_request(reader)
            writer.write(CHAT + chunk(b"data: [DONE]\n\n"))
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(chunk(b"left%d" % n) + b"0\r\n\r\n")
            await writer.drain()

    async def check(upstream: Upstream, client: UpstreamClient) -> None:
        response = await client.post_chat(upstream, b"{}")
        async for piece in response.content.iter_any():
            assert piece == b"data: [DONE]\n\n"
            break
        await asyncio.sleep(0.05)  # the rest arrives: the response is complete, unread
        response.release()
        again = await client.post_chat(upstream, b"{}")
        assert await read_all(again) == b"data: [DONE]\n\nleft1"

    assert serve(handler, check) == 1


def test_a_large_answer_to_a_slow_reader_arrives_whole() -> None:
    piece = b"x" * 65536
    count = 48  # 3 MiB: reading pauses at 1 MiB buffered and resumes as the reader catches up

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await read_request(reader)
            writer.write(CHAT)
            for _ in range(count):
                writer.write(chunk(piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async def check(upstream: Upstream, client: UpstreamClient) -> None:
        for _ in range(2):
            response = await client.post_chat(upstream, b"{}")
            await asyncio.sleep(0.2)
            assert len(await read_all(response)) == len(piece) * count

    assert serve(handler, check) == 1


def test_releasing_twice_pools_the_connection_once() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def check(upstream: Upstream, client: UpstreamClient) -> None:
        response = await client.post_chat(upstream, b"{}")
        assert await read_all(response) == b"ok"
        response.release()
        # Two requests at once need two connections, not the same one twice.
        both = await asyncio.gather(*(client.post_chat(upstream, b"{}") for _ in range(2)))
        assert [await read_all(r) for r in both] == [b"ok", b"ok"]

    assert serve(handler, check) == 2
