"""What the proxy says when a backend cannot be reached: words, not a library's repr (it reaches
`spark-stack claude`, `status` and Claude Code's error text)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from spark_stack.proxy.config import Upstream
from spark_stack.proxy.errors import ProxyError
from spark_stack.proxy.upstream import UpstreamClient


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_health_and_chat_name_the_refused_address_in_words() -> None:
    port = _closed_port()
    upstream = Upstream("big", f"http://127.0.0.1:{port}/v1", "q")

    async def run() -> tuple[dict[str, object], ProxyError]:
        client = UpstreamClient()
        try:
            health = await client.health(upstream)
            with pytest.raises(ProxyError) as caught:
                await client.post_chat(upstream, b"{}")
            return health, caught.value
        finally:
            await client.close()

    health, error = asyncio.run(run())
    assert health["error"] == f"cannot connect to 127.0.0.1:{port} (connection refused)"
    assert "connection refused" in error.message and "ssl:" not in error.message
    assert "Errno" not in error.message
