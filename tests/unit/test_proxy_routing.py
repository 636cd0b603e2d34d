"""Route table and the proxy's config file."""

from __future__ import annotations

import pytest

from spark_stack.proxy.config import ConfigError, ProxyConfig, Route, Upstream
from spark_stack.proxy.errors import ProxyError
from spark_stack.proxy.routing import Router

BIG = Upstream("big", "http://127.0.0.1:8000/v1", "qwen3.6-35b", api_key="sk-1",
               max_model_len=262144)
SMALL = Upstream("small", "http://127.0.0.1:8001/v1", "qwen3-4b", thinking="none")
CONFIG = ProxyConfig(
    upstreams={"big": BIG, "small": SMALL},
    routes=[
        Route("claude-opus-4-5", "big"),
        Route("claude-*haiku*", "small"),
        Route("claude-*", "big"),
        Route("claude-haiku-4-5", "big"),
    ],
).with_own_names()


@pytest.mark.parametrize(
    ("model", "upstream"),
    [
        ("claude-opus-4-5", "big"),
        ("claude-haiku-4-5", "big"),  # exact names beat earlier globs
        ("claude-3-5-haiku-latest", "small"),  # globs in file order
        ("claude-sonnet-4-5-20250929", "big"),
        ("small", "small"),  # a model's own name
        ("qwen3-4b", "small"),  # and its served name
    ],
)
def test_resolve(model: str, upstream: str) -> None:
    assert Router(CONFIG).resolve(model).name == upstream


def test_unknown_model_is_404_listing_names() -> None:
    with pytest.raises(ProxyError) as caught:
        Router(CONFIG).resolve("gpt-4")
    assert caught.value.status == 404
    assert caught.value.error_type == "not_found_error"
    assert caught.value.message == (
        "model: 'gpt-4' is not routable; routable models: big, claude-haiku-4-5, claude-opus-4-5, "
        "qwen3-4b, qwen3.6-35b, small, claude-*haiku*, claude-*"
    )


def test_config_json_round_trip() -> None:
    config = ProxyConfig(host="0.0.0.0", port=9999, token="t", upstreams=CONFIG.upstreams,
                         routes=CONFIG.routes, log_prompts=True).with_own_names()
    assert ProxyConfig.from_json(config.to_json()) == config
    assert not config.is_loopback and CONFIG.is_loopback


def test_root_url_strips_v1() -> None:
    assert BIG.root_url == "http://127.0.0.1:8000"
    assert Upstream("x", "http://h:1/", "m").root_url == "http://h:1"


@pytest.mark.parametrize(
    "text",
    ["nope", "[]", '{"upstreams": {"a": {"name": "a"}}}',
     '{"upstreams": {}, "routes": [{"pattern": "x", "upstream_name": "ghost"}]}',
     '{"upstreams": {"a": {"name": "a", "base_url": "u", "served_name": "s", "thinking": "x"}}}'],
)
def test_bad_config(text: str) -> None:
    with pytest.raises(ConfigError):
        ProxyConfig.from_json(text)


def test_shared_served_name_goes_to_the_first_upstream() -> None:
    twin = Upstream("twin", "http://127.0.0.1:8002/v1", "qwen3.6-35b")
    config = ProxyConfig(upstreams={"big": BIG, "twin": twin}, routes=[]).with_own_names()
    assert Router(config).resolve("qwen3.6-35b").name == "big"
    assert Router(config).resolve("twin").name == "twin"


@pytest.mark.parametrize(
    ("model", "route"),
    [
        ("claude-opus-4-5", "claude-opus-4-5"),
        ("claude-3-5-haiku-latest", "claude-*haiku*"),
        ("claude-sonnet-4-5-20250929", "claude-*"),
        ("small", "small"),
        ("qwen3-4b", "qwen3-4b"),
    ],
)
def test_resolve_route_names_the_entry_that_matched(model: str, route: str) -> None:
    router = Router(CONFIG)
    assert router.resolve_route(model)[1] == route
    assert router.resolve_route(model)[1] == route  # the memoised answer too


def test_metrics_are_labelled_by_route_and_upstream() -> None:
    from spark_stack.proxy.metrics import Metrics

    metrics = Metrics()
    metrics.route("claude-*", "big").requests += 2
    metrics.route("small", "small").requests += 1
    text = metrics.render()
    assert 'spark_proxy_requests_total{route="claude-*",upstream="big"} 2' in text
    assert 'spark_proxy_requests_total{route="small",upstream="small"} 1' in text


@pytest.mark.parametrize(
    ("listen", "dial"),
    [("0.0.0.0", "127.0.0.1"), ("::", "127.0.0.1"), ("127.0.0.2", "127.0.0.2"), ("::1", "[::1]")],
)
def test_dial_host_reaches_a_wildcard_bind_on_loopback(listen: str, dial: str) -> None:
    from spark_stack.proxy.config import dial_host

    assert dial_host(listen) == dial
