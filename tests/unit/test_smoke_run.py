"""`run_smoke` over real sockets: the vLLM simulator, spark-stack's proxy in front of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from spark_stack.deployment import resolve
from spark_stack.proxy.config import ProxyConfig, Route, Upstream
from spark_stack.proxy.daemon import start_background, stop_background
from spark_stack.simulator import SimHandle, start_in_thread
from spark_stack.smoke import Endpoints, ModelTarget, endpoints_from_proxy_config, run_smoke
from spark_stack.smoke.checks import KNOWN_PROMPT
from spark_stack.stack.loader import LoadedStack, load_stack_text
from tests.helpers import free_port

QWEN_FLAGS = [
    "--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_coder",
    "--enable-auto-tool-choice",
]  # fmt: skip
STACK = """\
name: smoketest
models:
  - {name: qwen, kind: simulator, port: 18801}
  - {name: plain, kind: simulator, port: 18802, reasoning_parser: null, tool_call_parser: null}
proxy:
  routes: {"claude-*": qwen}
"""


def _sim(*flags: str) -> SimHandle:
    return start_in_thread(
        ["Qwen/Qwen3.6-35B-A3B", "--host", "127.0.0.1", "--port", "0", *flags],
        env={"VLLM_SIM_STARTUP_SECONDS": "0"},
    )


@pytest.fixture(scope="module")
def loaded() -> LoadedStack:
    return load_stack_text(STACK)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyConfig, SimHandle]]:
    """A reasoning+tools simulator and a plain one, behind one proxy with a token."""
    with _sim(*QWEN_FLAGS, "--served-model-name", "qwen36") as qwen, _sim(
        "--served-model-name", "plain-model"
    ) as plain:
        config = ProxyConfig(
            port=free_port(),
            token="proxy-secret",
            upstreams={
                "qwen": Upstream("qwen", f"{qwen.url}/v1", "qwen36"),
                "plain": Upstream("plain", f"{plain.url}/v1", "plain-model", thinking="none"),
            },
            routes=[Route("claude-*", "qwen")],
        ).with_own_names()
        state = tmp_path_factory.mktemp("proxy")
        start_background(config, state)
        try:
            yield config, qwen
        finally:
            stop_background(state)


def test_every_check_passes_against_the_simulator(
    loaded: LoadedStack, running: tuple[ProxyConfig, SimHandle]
) -> None:
    config, _ = running
    seen: list[str] = []
    report = run_smoke(
        loaded,
        endpoints_from_proxy_config(resolve(loaded.stack), config),
        on_result=lambda r: seen.append(f"{r.model}/{r.name}"),
    )
    data = report.to_dict()
    assert report.ok, data
    assert seen == [
        "qwen/direct_completion", "qwen/completion", "qwen/tool_round_trip",
        "qwen/count_tokens", "qwen/thinking",
        "plain/direct_completion", "plain/completion", "plain/tool_round_trip",
        "plain/count_tokens", "plain/thinking",
    ]  # fmt: skip
    assert [c["name"] for c in data["checks"]] == [s.split("/")[1] for s in seen]
    by = {(c["model"], c["name"]): c for c in data["checks"]}
    assert by[("qwen", "tool_round_trip")]["reason"] == (
        "called Bash('echo smoke-ok'), then answered with its output"
    )
    assert by[("qwen", "thinking")]["reason"].startswith("thinking block of ")
    assert by[("qwen", "count_tokens")]["reason"].endswith("counted by the backend")
    assert by[("plain", "thinking")]["status"] == "skipped"
    assert "no reasoning_parser" in by[("plain", "thinking")]["reason"]
    assert by[("plain", "tool_round_trip")]["status"] == "skipped"
    assert "no tool_call_parser" in by[("plain", "tool_round_trip")]["reason"]
    for check in data["checks"]:
        if check["status"] == "skipped":
            continue
        assert check["ok"] and check["status"] == "passed" and check["latency_ms"] > 0
        streamed = check["name"] in ("direct_completion", "completion", "tool_round_trip")
        assert (check["ttft_ms"] is not None) == streamed
    qwen = data["models"][0]
    assert qwen["served_model"] == "qwen36" and qwen["endpoint"].endswith("/v1")
    ttft = qwen["ttft_ms"]
    assert ttft["proxy_added"] == pytest.approx(ttft["proxy"] - ttft["direct"], abs=0.11)
    assert data["failed"] == [] and data["error"] is None
    assert "proxy-secret" not in json.dumps(data)


def test_wrong_token_fails_every_proxy_check_with_the_reason(
    loaded: LoadedStack, running: tuple[ProxyConfig, SimHandle]
) -> None:
    config, _ = running
    good = endpoints_from_proxy_config(resolve(loaded.stack), config)
    bad = Endpoints(good.proxy_url, "wrong", good.models[:1], good.host)
    report = run_smoke(loaded, bad)
    assert not report.ok
    verdicts = {c.name: c for c in report.checks}
    assert verdicts["direct_completion"].ok
    for name in ("completion", "tool_round_trip", "count_tokens", "thinking"):
        assert not verdicts[name].ok
        assert verdicts[name].reason.startswith("HTTP 401 authentication_error"), name
    assert report.to_dict()["failed"] == [
        "qwen/completion", "qwen/tool_round_trip", "qwen/count_tokens", "qwen/thinking"
    ]


def test_upstream_stopped_fails_with_overloaded_and_connect_errors(
    loaded: LoadedStack, tmp_path: Path
) -> None:
    with _sim(*QWEN_FLAGS, "--served-model-name", "qwen36") as sim:
        url = f"{sim.url}/v1"
    config = ProxyConfig(port=free_port(),
                         upstreams={"qwen": Upstream("qwen", url, "qwen36")}).with_own_names()
    start_background(config, tmp_path)
    try:
        report = run_smoke(loaded, endpoints_from_proxy_config(resolve(loaded.stack), config))
    finally:
        stop_background(tmp_path)
    verdicts = {c.name: c for c in report.checks}
    assert not report.ok
    assert verdicts["direct_completion"].reason.startswith(f"cannot connect to {url}")
    assert verdicts["completion"].reason.startswith("HTTP 529 overloaded_error")
    # The proxy may refuse to count or fall back to an estimate; smoke must say which.
    count = verdicts["count_tokens"]
    assert count.reason.startswith("HTTP 529 overloaded_error") or count.reason.endswith(
        "estimated by the proxy: the backend's tokenizer did not answer"
    )


def _fake_vllm_and_proxy(answer: str, *, tool_call: bool) -> httpx.MockTransport:
    """A transport answering like a model that gets things wrong."""

    def handler(request: httpx.Request) -> httpx.Response:
        body: dict[str, Any] = json.loads(request.content)
        if request.url.path.endswith("/chat/completions"):
            chunk = {"choices": [{"index": 0, "delta": {"content": answer}}]}
            text = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
            return httpx.Response(200, content=text.encode())
        if request.url.path.endswith("/count_tokens"):
            return httpx.Response(200, json={"input_tokens": 10})
        events: list[tuple[str, dict[str, Any]]] = [("message_start", {"message": {"usage": {}}})]
        block: dict[str, Any] = {"type": "text"}
        delta: dict[str, Any] = {"type": "text_delta", "text": answer}
        if tool_call and body.get("tools"):
            block = {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}
            delta = {"type": "input_json_delta", "partial_json": "{\"path\": \"x\"}"}
        events += [
            ("content_block_start", {"index": 0, "content_block": block}),
            ("content_block_delta", {"index": 0, "delta": delta}),
            ("content_block_stop", {"index": 0}),
            ("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {}}),
            ("message_stop", {}),
        ]
        if not body.get("stream"):
            return httpx.Response(200, json={"content": [{"type": "text", "text": answer}]})
        text = "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events)
        return httpx.Response(200, content=text.encode())

    return httpx.MockTransport(handler)


def test_wrong_answers_fail_with_what_the_model_said(loaded: LoadedStack) -> None:
    model = ModelTarget("qwen", "qwen36", "http://vllm/v1", None, reasoning=True, tools=True)
    ends = Endpoints("http://proxy", None, (model,))
    report = run_smoke(loaded, ends, transport=_fake_vllm_and_proxy("205", tool_call=True))
    reasons = {c.name: c.reason for c in report.checks}
    assert reasons == {
        "direct_completion": "expected 204 in the answer, got '205'",
        "completion": "expected 204 in the answer, got '205'",
        "tool_round_trip": "called 'Read', expected 'Bash'",
        "count_tokens": "a prompt 8x longer counted 10 tokens, not more than 10",
        "thinking": "no thinking block in the answer (blocks: ['text'])",
    }
    assert not report.ok and len(report.failed()) == 5


def test_no_tool_call_is_named(loaded: LoadedStack) -> None:
    model = ModelTarget("qwen", "qwen36", "http://vllm/v1", None, reasoning=False, tools=True)
    report = run_smoke(
        loaded,
        Endpoints("http://proxy", None, (model,)),
        transport=_fake_vllm_and_proxy("I won't.", tool_call=False),
    )
    tool = next(c for c in report.checks if c.name == "tool_round_trip")
    assert tool.reason == "no tool call (stop_reason end_turn): \"I won't.\""


def test_no_model_to_check_is_an_error(loaded: LoadedStack) -> None:
    report = run_smoke(loaded, Endpoints("http://proxy", None, ()))
    assert not report.ok
    assert report.to_dict()["error"] == "no model of the stack has an endpoint to check"


def test_prompt_matches_the_simulators_rule() -> None:
    assert "What is 12*17?" in KNOWN_PROMPT


def test_both_paths_are_warmed_before_either_is_measured(loaded: LoadedStack) -> None:
    """The direct request used to go first and take the warm-up alone: proxy_added came out
    negative (-17 ms seen). Now one unmeasured request per path precedes the measured ones."""
    seen: list[str] = []
    inner = _fake_vllm_and_proxy("204", tool_call=True)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append("direct" if request.url.host == "vllm" else "proxy")
        return inner.handle_request(request)

    model = ModelTarget("qwen", "qwen36", "http://vllm/v1", None, reasoning=False, tools=False)
    report = run_smoke(loaded, Endpoints("http://proxy", None, (model,)),
                       transport=httpx.MockTransport(handler))
    assert seen[:4] == ["direct", "proxy", "direct", "proxy"]  # warm-ups, then the measured
    assert [c.name for c in report.checks][:2] == ["direct_completion", "completion"]
