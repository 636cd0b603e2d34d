"""The simulator as a process, the way `spark-stack up` and the test image run it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
FLAGS_FILE = REPO / "spark_stack/vllm/data/vllm-flags-0.28.0.json"
MODEL = "Qwen/Qwen3.6-35B-A3B"


def sim_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    env.update({"VLLM_SIM_STARTUP_SECONDS": "0", "PYTHONPATH": str(REPO), **extra})
    return env


def run_sim(*args: str, timeout: float = 20, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spark_stack.simulator", *args],
        env=sim_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Running:
    """A simulator process whose output lines are collected as they come."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None or self._reader.is_alive(), self.lines
            assert time.monotonic() < deadline, f"no {text!r} in {self.lines}"
            time.sleep(0.01)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


@pytest.fixture()
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
        r.stop()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_bad_flag_exits_2_like_argparse() -> None:
    done = run_sim(
        "serve", MODEL, "--port", "1", "--bogus-flag", VLLM_SIM_FLAGS_FILE=str(FLAGS_FILE)
    )
    assert done.returncode == 2
    assert done.stderr == (
        "usage: vllm serve [model_tag] [options]\n"
        "vllm serve: error: unrecognized arguments: --bogus-flag\n"
    )
    assert done.stdout == ""


def test_no_subcommand_is_a_usage_error() -> None:
    done = run_sim("chat")
    assert done.returncode == 2
    assert "vllm: error: argument subparser: invalid choice: 'chat'" in done.stderr


@pytest.mark.parametrize(
    ("failure", "signature"),
    [
        ("gpu_memory", "is less than desired GPU memory utilization (0.9,"),
        ("kv_cache", "KV cache is needed, which is larger than the available KV cache memory"),
        ("oom", "torch.OutOfMemoryError: CUDA out of memory."),
        ("no_kernel", "CUDA error: no kernel image is available for execution on the device"),
        ("gated", "Cannot access gated repo for url"),
        ("engine_dead", "EngineCore failed to start."),
    ],
)
def test_injected_failures_print_vllms_lines_and_exit_1(failure: str, signature: str) -> None:
    done = run_sim("serve", MODEL, "--port", str(free_port()), VLLM_SIM_FAIL=failure)
    assert done.returncode == 1
    assert signature in done.stderr
    assert "Application startup complete" not in done.stdout + done.stderr
    assert done.stdout.startswith("INFO ")  # a few normal lines first
    if failure != "gated":
        assert "RuntimeError: Engine core initialization failed." in done.stderr


def test_startup_log_then_port_then_sigterm(running: list[Running]) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "spark_stack.simulator", "serve", MODEL, "--port", str(port)]
    sim = Running(argv, sim_env(VLLM_SIM_STARTUP_SECONDS="1.0"))
    running.append(sim)
    sim.wait_for("Automatically detected platform")
    assert not port_open(port), "the port opened before the engine was built"
    sim.wait_for("Application startup complete.")
    assert port_open(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
        assert json.load(r)["data"][0]["id"] == MODEL
    order = [
        "Loading weights took",
        "torch.compile took",
        "Available KV cache memory:",
        "GPU KV cache size:",
        "Maximum concurrency for 262,144 tokens per request:",
        "init engine (profile, create kv cache, warmup model) took",
        f"Starting vLLM API server 0 on http://0.0.0.0:{port}",
        "Application startup complete.",
    ]
    positions = [next(i for i, line in enumerate(sim.lines) if text in line) for text in order]
    assert positions == sorted(positions)
    started = time.monotonic()
    assert sim.stop() == 0
    assert time.monotonic() - started < 3


def test_hang_never_opens_the_port(running: list[Running]) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "spark_stack.simulator", "serve", MODEL, "--port", str(port)]
    sim = Running(argv, sim_env(VLLM_SIM_FAIL="hang"))
    running.append(sim)
    sim.wait_for("Automatically detected platform")
    time.sleep(0.5)
    assert sim.proc.poll() is None
    assert not port_open(port)
    assert sim.stop() == 0


def test_port_in_use_exits_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_sim("serve", MODEL, "--host", "127.0.0.1", "--port", str(port))
    assert done.returncode == 1
    assert "Address already in use" in done.stderr


def test_runs_isolated_from_a_copy_under_another_name(
    tmp_path: Path, running: list[Running]
) -> None:
    shutil.copytree(
        REPO / "spark_stack/simulator",
        tmp_path / "vllm_simulator",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    # The bare interpreter, no site-packages, no spark_stack: only the copied directory.
    python = Path(sys.base_prefix) / "bin" / "python3"
    bootstrap = (
        "import importlib.util, runpy, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "assert importlib.util.find_spec('spark_stack') is None\n"
        "runpy.run_module('vllm_simulator', run_name='__main__', alter_sys=True)\n"
    )
    port = free_port()
    argv = [
        str(python), "-I", "-S", "-c", bootstrap, "serve", MODEL, "--port", str(port),
        "--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_coder",
        "--enable-auto-tool-choice", "--sim-flags-file", str(FLAGS_FILE),
    ]  # fmt: skip
    sim = Running(argv, {"VLLM_SIM_STARTUP_SECONDS": "0", "PATH": os.environ["PATH"]})
    running.append(sim)
    sim.wait_for("Application startup complete.")
    body = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "What is 12*17?"}]}
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        assert json.load(r)["choices"][0]["message"]["content"] == "204"
    assert sim.stop() == 0
