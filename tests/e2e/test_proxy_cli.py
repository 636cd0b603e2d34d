"""`spark-stack proxy` and `python -m spark_stack.proxy` in the foreground, as real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from spark_stack.cli import main
from spark_stack.proxy.config import ProxyConfig, Upstream
from tests.helpers import free_port


def write_config(tmp_path: Path, **extra: object) -> Path:
    config = ProxyConfig(port=free_port(), upstreams={
        "q": Upstream("q", "http://127.0.0.1:9/v1", "qwen")},
        **extra).with_own_names()  # type: ignore[arg-type]
    path = tmp_path / "proxy.json"
    path.write_text(config.to_json())
    return path


def wait_answer(url: str, process: subprocess.Popen[bytes], timeout: float = 10) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            httpx.head(url, timeout=1)
            return time.monotonic() - start
        except httpx.TransportError:
            time.sleep(0.01)
    raise AssertionError("the proxy never answered")


def test_module_entry_serves_then_stops_on_sigint(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    port = ProxyConfig.from_json(path.read_bytes()).port
    process = subprocess.Popen([sys.executable, "-m", "spark_stack.proxy", "--config", str(path)],
                               stderr=subprocess.PIPE)
    try:
        wait_answer(f"http://127.0.0.1:{port}/", process)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["q", "qwen"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        assert b"Traceback" not in process.stderr.read()
    finally:
        process.kill()
        process.wait()


def test_cli_refuses_a_public_address_without_token(tmp_path: Path, capsys: object) -> None:
    path = write_config(tmp_path, host="0.0.0.0")
    assert main(["proxy", "--config", str(path)]) == 1


def test_cli_port_taken(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    port = ProxyConfig.from_json(path.read_bytes()).port
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        assert main(["proxy", "--config", str(path)]) == 1


def test_cli_missing_config_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["proxy", "--config", str(tmp_path / "nope.json")]) == 2


def test_background_start_status_stop(tmp_path: Path) -> None:
    from spark_stack.proxy.daemon import proxy_status, start_background, stop_background

    config = ProxyConfig.from_json(write_config(tmp_path).read_bytes())
    state = tmp_path / "state"
    pid = start_background(config, state)
    try:
        status = proxy_status(state)
        assert (status.running, status.pid, status.healthy) == (True, pid, True)
        assert (state / "proxy.pid").read_text().strip() == str(pid)
    finally:
        assert stop_background(state) is True
    assert proxy_status(state).running is False
    assert not (state / "proxy.pid").exists()
    assert stop_background(state) is False


def test_a_stack_with_nothing_to_deploy_is_served_from_its_file(
    tmp_path: Path, spark_stack_home: Path
) -> None:
    """`proxy -s` used to refuse before `up` ("run `spark-stack up` first") even for a stack of
    remote models only; it serves the stack file's own routing table now."""
    port = free_port()
    stack = tmp_path / "remote.yaml"
    stack.write_text(f"name: remote\nmodels: [{{name: far, url: 'http://127.0.0.1:9/v1'}}]\n"
                     f"proxy: {{listen: '127.0.0.1:{port}'}}\n")
    process = subprocess.Popen([sys.executable, "-m", "spark_stack", "-s", str(stack), "proxy"],
                               stderr=subprocess.PIPE,
                               env={**os.environ, "SPARK_STACK_HOME": str(spark_stack_home)})
    try:
        wait_answer(f"http://127.0.0.1:{port}/", process)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["far"]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
    container = tmp_path / "container.yaml"
    container.write_text("name: c\nhost: {address: 127.0.0.1}\nmodels: [{name: q, image: "
                         "'vllm/vllm-openai:v0.28.0', model: Qwen/Qwen3-8B, max_model_len: "
                         "65536, gpu_memory_utilization: 0.4}]\n")
    assert main(["-s", str(container), "proxy"]) == 2  # containers need `up` first
