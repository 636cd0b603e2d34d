"""`spark-stack top` against a real local stack: the simulator and the proxy as processes, a
scripted load through the proxy and straight to vLLM, and `top --once --json` checked against
what was sent; pieces that stop answering are reported, not crashed on."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import spark_stack
from spark_stack.cli import main
from spark_stack.deploy import local
from spark_stack.deploy.down import down
from spark_stack.deploy.report import QuietReporter
from spark_stack.deploy.up import UpOptions, up
from spark_stack.paths import proxy_state_dir
from spark_stack.proxy import daemon
from spark_stack.simulator.metrics import BLOCK_TOKENS
from spark_stack.stack.loader import load_stack_text
from tests.helpers import free_port

REPO = Path(spark_stack.__file__).resolve().parent.parent


@pytest.fixture
def running_stack(tmp_path: Path, fake_home: Path, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[tuple[Path, str, str]]:
    """A simulator stack brought up with its proxy: (stack file, proxy URL, vLLM URL)."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the processes run this checkout's code
    sim_port, proxy_port = free_port(), free_port()
    text = f"""
name: toptest
models:
  - name: sim
    kind: simulator
    port: {sim_port}
    startup_seconds: 0
proxy:
  listen: 127.0.0.1:{proxy_port}
"""
    path = tmp_path / "spark-stack.yaml"
    path.write_text(text)
    stack = load_stack_text(text, lint=False).stack
    up(stack, UpOptions(), QuietReporter())
    try:
        yield path, f"http://127.0.0.1:{proxy_port}", f"http://127.0.0.1:{sim_port}"
    finally:
        down(stack)


def top_once(path: Path, capsys: pytest.CaptureFixture[str], interval: float = 0.5
             ) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["-s", str(path), "top", "--once", "--json", "--interval", str(interval)]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def through_proxy(client: httpx.Client, proxy: str, text: str, *, stream: bool = False
                  ) -> httpx.Response:
    body = {"model": "claude-sonnet-4", "max_tokens": 64, "stream": stream,
            "messages": [{"role": "user", "content": text}]}
    return client.post(proxy + "/v1/messages", json=body)


def test_top_once_counts_what_was_sent(running_stack: tuple[Path, str, str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path, proxy, vllm = running_stack
    # `up` itself asked the model its test question: count from what top reads now.
    before = top_once(path, capsys, interval=0.2)["models"][0]["totals"]
    prompt_tokens = generated = 0
    with httpx.Client(timeout=10) as client:
        for n in range(4):  # unique openings: no prefix shared with anything else
            answer = through_proxy(client, proxy, f"Q{n} What is 12*17? " + "pad " * 50)
            assert answer.status_code == 200
            prompt_tokens += answer.json()["usage"]["input_tokens"]
            generated += answer.json()["usage"]["output_tokens"]
        failed = through_proxy(client, proxy, 'SIM_SCRIPT: {"http_status": 503, '
                               '"error_message": "busy"}')
        assert failed.status_code == 529
        repeated = "ZZ " + "the same long prompt " * 40
        direct = {"model": "Qwen/Qwen3.6-35B-A3B-simulated", "max_tokens": 16,
                  "messages": [{"role": "user", "content": repeated}]}
        sizes = []
        for _ in range(3):
            usage = client.post(vllm + "/v1/chat/completions", json=direct).json()["usage"]
            sizes.append(usage["prompt_tokens"])
            prompt_tokens += usage["prompt_tokens"]
            generated += usage["completion_tokens"]
    report = top_once(path, capsys)
    model = report["models"][0]
    assert model["state"] == "serving" and model["error"] is None
    cached = (sizes[0] - 1) // BLOCK_TOKENS * BLOCK_TOKENS  # the 2nd and 3rd hit all but one
    sent = {key: model["totals"][key] - before[key] for key in before}
    assert sent == {
        "requests": 4 + 3, "prompt_tokens": prompt_tokens, "generation_tokens": generated,
        "prefix_cache_queries": prompt_tokens, "prefix_cache_hits": 2 * cached,
    }
    assert before["prefix_cache_hits"] == 0
    assert model["prefix_cache_hit_rate"]["since_start"] == pytest.approx(
        2 * cached / model["totals"]["prefix_cache_queries"])
    # Idle while top read: rates are known and zero, the recent window saw nothing.
    assert model["prompt_tokens_per_s"] == 0 and model["generation_tokens_per_s"] == 0
    assert model["prefix_cache_hit_rate"]["recent"] is None
    assert model["requests_running"] == 0 and model["requests_waiting"] == 0
    assert model["ttft_seconds_since_start"]["p50"] is not None
    assert report["proxy"]["state"] == "running"
    assert report["proxy"]["requests_total"] == 5
    assert report["proxy"]["errors_total"] == 1
    assert sum(report["proxy"]["errors_by_type"].values()) == 1
    assert report["proxy"]["requests_per_s"] == 0
    assert report["hosts"][0]["name"] == "this machine" and report["hosts"][0]["reachable"]
    assert report["hosts"][0]["memory"]["available_bytes"] > 0


def test_top_once_shows_rates_under_load(running_stack: tuple[Path, str, str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path, proxy, _ = running_stack
    stop = threading.Event()
    sent: list[int] = []

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                answer = through_proxy(client, proxy, f"load {len(sent)} " + "word " * 100,
                                       stream=len(sent) % 2 == 1)
                sent.append(answer.status_code)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        report = top_once(path, capsys, interval=1.0)
    finally:
        stop.set()
        worker.join(10)
    model = report["models"][0]
    assert set(sent) == {200}
    assert model["prompt_tokens_per_s"] > 0 and model["generation_tokens_per_s"] > 0
    assert report["proxy"]["requests_per_s"] > 0
    assert model["ttft_seconds"]["p50"] is not None
    assert 0.9 <= report["interval_seconds"] <= 3.0


def test_top_says_what_is_down_and_does_not_crash(running_stack: tuple[Path, str, str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = running_stack
    assert local.simulator_process("toptest", "sim").stop()
    daemon.stop_background(proxy_state_dir("toptest"))
    report = top_once(path, capsys, interval=0.2)
    model = report["models"][0]
    assert (model["state"], model["error"]) == ("down", "connection refused")
    assert model["prompt_tokens_per_s"] is None
    assert report["proxy"]["state"] == "not running"
    capsys.readouterr()
    assert main(["-s", str(path), "top", "--once", "--interval", "0.2"]) == 0
    screen = capsys.readouterr().out
    assert "down: connection refused" in screen and "not running (spark-stack up)" in screen
