"""`smoke` on a model with replicas (issue 22): every replica is checked, straight at its own
vLLM endpoint and through the proxy with a session the proxy routes to it, so a broken copy
cannot hide behind a healthy one. Real sockets: two simulators behind spark-stack's proxy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spark_stack.deployment import resolve
from spark_stack.proxy.config import ProxyConfig, Route, Upstream
from spark_stack.proxy.daemon import start_background, stop_background
from spark_stack.proxy.dispatch import rendezvous, session_key
from spark_stack.simulator import SimHandle, start_in_thread
from spark_stack.smoke import endpoints_from_proxy_config, run_smoke
from spark_stack.smoke.endpoints import session_for
from spark_stack.stack.loader import LoadedStack, load_stack_text
from tests.helpers import free_port

FLAGS = ["--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_coder",
         "--enable-auto-tool-choice", "--served-model-name", "qwen36"]
STACK = """\
name: smokereplicas
models:
  - {name: qwen, kind: simulator, port: 18811}
"""
CHECKS = ["direct_completion", "completion", "tool_round_trip", "count_tokens", "thinking"]


def _sim() -> SimHandle:
    return start_in_thread(["Qwen/Qwen3.6-35B-A3B", "--host", "127.0.0.1", "--port", "0",
                            *FLAGS], env={"VLLM_SIM_STARTUP_SECONDS": "0"})


def _config(urls: dict[str, str]) -> ProxyConfig:
    """What `up` writes for a replicated model: the model's own upstream (its first copy's
    endpoint), one upstream per copy, and the set they form."""
    first = next(iter(urls.values()))
    upstreams = {"qwen": Upstream("qwen", first, "qwen36")}
    upstreams |= {name: Upstream(name, url, "qwen36") for name, url in urls.items()}
    return ProxyConfig(port=free_port(), upstreams=upstreams, routes=[Route("claude-*", "qwen")],
                       replicas={"qwen": list(urls)}).with_own_names()


def _chat_requests(sim: SimHandle) -> float:
    text = httpx.get(f"{sim.url}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total"))


@pytest.fixture
def loaded() -> LoadedStack:
    return load_stack_text(STACK)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[SimHandle, SimHandle]]:
    with _sim() as a, _sim() as b:
        yield a, b


def test_each_replica_is_checked_direct_and_through_the_proxy(
    loaded: LoadedStack, pair: tuple[SimHandle, SimHandle], tmp_path: Path
) -> None:
    a, b = pair
    urls = {"qwen@a": f"{a.url}/v1", "qwen@b": f"{b.url}/v1"}
    config = _config(urls)
    start_background(config, tmp_path)
    seen: list[str] = []
    try:
        report = run_smoke(loaded, endpoints_from_proxy_config(resolve(loaded.stack), config),
                           on_result=lambda r: seen.append(r.label))
    finally:
        stop_background(tmp_path)
    data = report.to_dict()
    assert report.ok, data
    assert seen == [f"{r}/{c}" for r in urls for c in CHECKS]
    assert data["models"][0]["replicas"] == [
        {"name": name, "endpoint": url} for name, url in urls.items()]
    assert [c["replica"] for c in data["checks"]] == [r for r in urls for _ in CHECKS]
    # Each copy answered its own checks: the warm-up and direct_completion straight to it,
    # and the warm-up, completion, both turns of tool_round_trip and thinking via the proxy.
    assert _chat_requests(a) == _chat_requests(b) == 7


def test_a_dead_replica_fails_its_direct_check_though_the_proxy_hides_it(
    loaded: LoadedStack, tmp_path: Path
) -> None:
    with _sim() as a:
        with _sim() as b:
            dead = f"{b.url}/v1"
        config = _config({"qwen@a": f"{a.url}/v1", "qwen@b": dead})
        start_background(config, tmp_path)
        try:
            report = run_smoke(loaded,
                               endpoints_from_proxy_config(resolve(loaded.stack), config))
        finally:
            stop_background(tmp_path)
    data = report.to_dict()
    assert not report.ok
    # The proxy moves qwen@b's sessions to qwen@a, so only the direct check can tell.
    assert data["failed"] == ["qwen@b/direct_completion"], data
    [direct] = [c for c in report.checks if c.label == "qwen@b/direct_completion"]
    assert direct.reason.startswith(f"cannot connect to {dead}")


@given(st.lists(st.text("abcdefgh@-", min_size=1, max_size=12), min_size=2, max_size=6,
                unique=True),
       st.data())
def test_the_session_found_for_a_replica_is_routed_to_it(names: list[str],
                                                          data: st.DataObject) -> None:
    weights = {n: data.draw(st.sampled_from([1.0, 2.0, 3.0])) for n in names}
    for name in names:
        session = session_for(name, names, weights)
        assert session is not None
        assert rendezvous(session_key(session.encode(), {}), names, weights) == name
