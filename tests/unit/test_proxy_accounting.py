"""Every request is logged and counted with the status it really got; /metrics parses as
Prometheus text; bodies too deep to forward and absurd model names are 400s."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from spark_stack.proxy.config import ProxyConfig, Route, Upstream
from spark_stack.proxy.server import ProxyApp

UPSTREAM = Upstream("q", "http://127.0.0.1:9/v1", "served")
TOKEN = "t0ken"


def make_app(**settings: Any) -> ProxyApp:
    return ProxyApp(ProxyConfig(upstreams={"q": UPSTREAM}, routes=[Route("claude-*", "q")],
                                **settings))


def call(app: ProxyApp, path: str, body: bytes = b"", method: str = "POST",
         headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or [],
             "query_string": b"", "http_version": "1.1"}
    asyncio.run(app(scope, receive, send))
    head = {name.decode(): value.decode() for name, value in sent[0]["headers"]}
    return sent[0]["status"], head, b"".join(m.get("body", b"") for m in sent[1:])


def ask(**extra: Any) -> bytes:
    body = {"model": "claude-x", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}], **extra}
    # orjson (and json at Python's recursion limit) cannot write what the tests send.
    deep = {key: body.pop(key) for key in list(body) if isinstance(body[key], Deep)}
    raw = orjson.dumps(body)
    for key, value in deep.items():
        raw = raw[:-1] + f',"{key}":{value}}}'.encode()
    return raw


class Deep(str):
    """JSON text spliced into a request body as it is."""


def deep_tools(levels: int) -> Deep:
    """One tool whose input_schema nests ``2 * levels`` objects deep."""
    schema = '{"type":"object","properties":{"a":' * levels + '{"type":"string"}' + "}}" * levels
    return Deep(f'[{{"name":"Deep","input_schema":{schema}}}]')


def samples(app: ProxyApp) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(app.metrics.render())}


@pytest.mark.parametrize("depth", [130, 300, 500])
def test_tool_schema_too_deep_is_a_400_naming_the_path_and_is_logged_and_counted(
    depth: int, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app()
    status, _, raw = call(app, "/v1/messages", ask(tools=deep_tools(depth)))
    answer = orjson.loads(raw)
    assert status == 400, raw
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["message"].startswith("tools.0.input_schema.properties.a.")
    assert "too deep to forward" in answer["error"]["message"]
    log = capsys.readouterr().err
    assert "POST /v1/messages model='claude-x'" in log and "status=400" in log
    errors = samples(app)["spark_proxy_errors"]
    assert [s.value for s in errors.samples] == [1.0]


def test_tool_use_input_too_deep_is_a_400() -> None:
    app = make_app()
    deep = "[" * 300 + "1" + "]" * 300
    messages = Deep(
        '[{"role":"user","content":"go"},{"role":"assistant","content":[{"type":"tool_use",'
        f'"id":"t1","name":"Bash","input":{{"x":{deep}}}}}]}},{{"role":"user","content":'
        '[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}]'
    )
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        status, _, raw = call(app, path, ask(messages=messages))
        assert status == 400, raw
        assert orjson.loads(raw)["error"]["message"].startswith("messages.1.content.0.input.x.0")


def test_an_absurd_model_name_is_refused_before_routing_and_logged_short(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = make_app()
    status, _, raw = call(app, "/v1/messages", ask(model="claude-" + "x" * 3_000_000))
    assert status == 400
    assert status == 400
    assert orjson.loads(raw)["error"]["message"] == "model: longer than 256 characters"
    assert app.router._cache == {}
    log = capsys.readouterr().err
    assert len(log) < 1000, len(log)


@pytest.mark.parametrize(
    ("path", "method", "headers", "status"),
    [
        ("/v1/messages", "POST", [], 401),
        ("/nowhere", "GET", [(b"x-api-key", TOKEN.encode())], 404),
        ("/v1/messages", "GET", [(b"x-api-key", TOKEN.encode())], 405),
        ("/v1/models", "GET", [(b"x-api-key", TOKEN.encode())], 200),
    ],
)
def test_every_request_is_logged_and_counted(
    path: str, method: str, headers: list[tuple[bytes, bytes]], status: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = make_app(token=TOKEN)
    assert call(app, path, method=method, headers=headers)[0] == status
    line = capsys.readouterr().err
    assert f"spark_stack.proxy {method} {path} " in line and f" status={status} " in line
    endpoint = path if path != "/nowhere" else "other"
    http = samples(app)["spark_proxy_http_requests"].samples
    assert any(s.labels == {"endpoint": endpoint, "status": str(status)} and s.value == 1
               for s in http), http


def test_count_tokens_estimate_is_said_in_the_log(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()

    class NoTokenizer:
        async def count_tokens(self, upstream: Upstream, body: Any) -> None:
            return None

    async def client() -> NoTokenizer:
        return NoTokenizer()

    monkeypatch.setattr(app, "client", client)
    status, headers, raw = call(app, "/v1/messages/count_tokens", ask())
    assert status == 200 and headers["x-spark-stack-token-count"] == "estimate"
    line = capsys.readouterr().err
    count = orjson.loads(raw)["input_tokens"]
    assert "POST /v1/messages/count_tokens status=200 model='claude-x'" in line
    assert f"in={count} count=estimate" in line


def test_metrics_round_trip_through_prometheus_parser_with_the_right_types() -> None:
    app = make_app()
    route = app.metrics.route("claude-*", "q")
    route.requests, route.errors, route.input_tokens, route.output_tokens = 3, 1, 50, 7
    route.ttft.observe(0.02)
    route.duration.observe(0.3)
    app.metrics.route("other", "q").requests = 1
    app.metrics.count_http("/v1/messages", 200)
    app.metrics.key("ann").requests = 2
    _, headers, text = call(app, "/metrics", method="GET")
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    expected = {
        "spark_proxy_http_requests": "counter",
        "spark_proxy_requests": "counter",
        "spark_proxy_errors": "counter",
        "spark_proxy_input_tokens": "counter",
        "spark_proxy_cached_input_tokens": "counter",
        "spark_proxy_output_tokens": "counter",
        "spark_proxy_leaked_tool_markup": "counter",
        "spark_proxy_ttft_seconds": "histogram",
        "spark_proxy_duration_seconds": "histogram",
        **{f"spark_proxy_key_{name}": "counter" for name in (
            "requests", "errors", "rate_limited", "input_tokens", "cached_input_tokens",
            "output_tokens", "queue_wait_seconds")},
        "spark_proxy_key_running": "gauge",
        "spark_proxy_key_queued": "gauge",
        "spark_proxy_upstream_capacity": "gauge",
        "spark_proxy_upstream_in_flight": "gauge",
        "spark_proxy_upstream_queued": "gauge",
    }
    assert {name: f.type for name, f in families.items()} == expected
    assert all(f.samples for f in families.values())
    requests = {s.labels["route"]: s.value for s in families["spark_proxy_requests"].samples}
    assert requests == {"claude-*": 3, "other": 1}
    ttft = families["spark_proxy_ttft_seconds"].samples
    assert any(s.name == "spark_proxy_ttft_seconds_count" and s.value == 1 for s in ttft)


def test_each_family_is_contiguous_help_then_type_then_samples() -> None:
    app = make_app()
    app.metrics.route("a", "q").requests = 1
    app.metrics.route("b", "q").requests = 1
    text = app.metrics.render().splitlines()
    order: list[str] = []
    for line in text:
        name = line.split()[2] if line.startswith("#") else line.split("{")[0]
        family = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        if family.endswith("_seconds_bucket"):
            family = family.removesuffix("_bucket")
        if not order or order[-1] != family:
            assert family not in order, f"{family} is split: {line}"
            order.append(family)
