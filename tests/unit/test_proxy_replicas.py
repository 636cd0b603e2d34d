"""A request whose replica cannot be reached is retried on another before anything was sent
to the client; a model with one replica answers the 529 as before."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from spark_stack.proxy.config import ConfigError, ProxyConfig, Route, Upstream
from spark_stack.proxy.errors import unreachable
from spark_stack.proxy.server import ProxyApp
from tests.unit.test_proxy_accounting import ask, call

COMPLETION = {"id": "c", "object": "chat.completion", "model": "q", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


class Answer:
    status = 200

    async def read(self) -> bytes:
        return orjson.dumps(COMPLETION)

    def release(self) -> None:
        return None


class OneDead:
    """Replica ``a`` refuses connections; the others answer."""

    def __init__(self) -> None:
        self.tried: list[str] = []

    async def post_chat(self, upstream: Upstream, body: bytes) -> Any:
        self.tried.append(upstream.name)
        if upstream.name == "a":
            raise unreachable("a", "connection refused")
        return Answer()


def app_with(replicas: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
             ) -> tuple[ProxyApp, OneDead]:
    upstreams = {n: Upstream(n, f"http://127.0.0.1:9/{n}/v1", "q") for n in ("a", "b")}
    app = ProxyApp(ProxyConfig(upstreams=upstreams, routes=[Route("claude-*", "a")],
                               replicas=replicas))
    fake = OneDead()

    async def client() -> OneDead:
        return fake

    monkeypatch.setattr(app, "client", client)
    return app, fake


def session(name: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-claude-code-session-id", name.encode())]


def test_an_unreachable_replica_is_taken_out_and_the_request_retried(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    app, fake = app_with({"a": ["a", "b"]}, monkeypatch)
    # A session whose replica is "a".
    name = next(f"s{i}" for i in range(100)
                if app.dispatcher.replica("a", lambda i=i: f"s:s{i}".encode()) == "a")
    status, _, raw = call(app, "/v1/messages", ask(), headers=session(name))
    assert status == 200, raw
    assert fake.tried == ["a", "b"]
    assert app.dispatcher.down == {"a"}
    assert [p.in_flight for p in app.dispatcher.pools.values()] == [0, 0]
    assert "upstream=b" in capsys.readouterr().err
    status, _, _ = call(app, "/v1/messages", ask(), headers=session(name))
    assert status == 200 and fake.tried == ["a", "b", "b"]  # no second try on the dead one


def test_a_model_with_one_replica_answers_529_as_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app, fake = app_with({}, monkeypatch)
    status, _, raw = call(app, "/v1/messages", ask())
    assert status == 529 and fake.tried == ["a"]
    assert orjson.loads(raw)["error"]["type"] == "overloaded_error"
    assert app.dispatcher.down == set()


@pytest.mark.parametrize("replicas", [{"a": ["a", "zz"]}, {"a": ["a", "a"]}, {"a": []},
                                      {"zz": ["a"]}])
def test_replicas_must_be_distinct_known_upstreams(replicas: dict[str, list[str]]) -> None:
    raw = {"upstreams": {n: {"name": n, "base_url": "http://x/v1", "served_name": "q"}
                         for n in ("a", "b")}, "replicas": replicas}
    with pytest.raises(ConfigError, match="must be distinct known upstreams"):
        ProxyConfig.from_dict(raw)
