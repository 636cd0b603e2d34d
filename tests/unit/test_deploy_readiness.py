"""Readiness: phases from vLLM's log lines, and the wait loop against a real simulator process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from spark_stack.deploy.readiness import (
    PHASE_ORDER,
    Failed,
    HttpProbe,
    ProcessState,
    Progress,
    Ready,
    answer_is_right,
    phase_of,
    wait_ready,
)
from spark_stack.simulator.config import SimConfig
from spark_stack.simulator.vlog import startup_phases
from tests.helpers import free_port

FLAGS_0_28 = Path(__file__).resolve().parents[2] / "spark_stack/vllm/data/vllm-flags-0.28.0.json"


def test_phases_follow_the_simulators_startup_log_and_never_go_back() -> None:
    phases = startup_phases(SimConfig(startup_seconds=1.0))
    seen = []
    lines: list[str] = []
    for phase in phases:
        lines += [" ".join(map(str, line)) for line in phase.lines]
        seen.append(phase_of(lines))
    assert seen[0] == "starting" and seen[-1] == "warming up"
    assert {"loading weights", "profiling memory"} <= set(seen)
    assert [PHASE_ORDER.index(p) for p in seen] == sorted(PHASE_ORDER.index(p) for p in seen)
    assert phase_of(["Application startup complete."]) == "opening the API"
    assert phase_of(["nothing"], "compiling") == "compiling"


def test_the_test_answer_must_be_the_number() -> None:
    assert answer_is_right("204")
    assert answer_is_right("12*17 = 204.")
    assert not answer_is_right("2040")
    assert not answer_is_right("!!!!!!!!")


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    log = tmp_path / "sim.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "spark_stack.simulator", "serve", "Qwen/Qwen3-0.6B",
             "--host", "127.0.0.1", "--port", str(port), "--sim-startup-seconds", "0.5",
             "--api-key", "k-123"], stdout=out, stderr=subprocess.STDOUT)
    yield process, port, log
    process.terminate()
    process.wait(timeout=10)


def _state(process: subprocess.Popen[bytes]) -> ProcessState:
    code = process.poll()
    return ProcessState(alive=code is None, exit_code=code)


def test_a_real_server_becomes_ready_through_every_phase(
    simulator: tuple[subprocess.Popen[bytes], int, Path]
) -> None:
    process, port, log = simulator
    phases: list[str] = []
    probe = HttpProbe(f"http://127.0.0.1:{port}/v1", "Qwen/Qwen3-0.6B", "k-123")
    try:
        outcome = wait_ready(state=lambda: _state(process),
                             logs=lambda: log.read_text().splitlines(), probe=probe,
                             timeout=30,
                             on_progress=lambda p: phases.append(p.phase) if p.changed else None)
    finally:
        probe.close()
    assert isinstance(outcome, Ready)
    assert phases[0] == "starting" and phases[-2:] == ["test completion", "ready"]
    assert phases == sorted(set(phases), key=phases.index)  # each once, in order


def test_a_wrong_key_never_gets_ready_and_times_out(
    simulator: tuple[subprocess.Popen[bytes], int, Path]
) -> None:
    process, port, log = simulator
    probe = HttpProbe(f"http://127.0.0.1:{port}/v1", "Qwen/Qwen3-0.6B", "wrong")
    started = time.monotonic()
    try:
        outcome = wait_ready(state=lambda: _state(process),
                             logs=lambda: log.read_text().splitlines(), probe=probe,
                             timeout=2, on_progress=lambda _: None)
    finally:
        probe.close()
    assert isinstance(outcome, Failed) and outcome.reason == "timeout"
    assert outcome.diagnosis.message.startswith("not ready after 2 s without progress (phase:")
    assert time.monotonic() - started < 5


def test_an_exited_process_fails_fast_with_its_diagnosis(tmp_path: Path) -> None:
    log = tmp_path / "sim.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "spark_stack.simulator", "serve", "m", "--port", "1",
             "--not-a-flag"], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "VLLM_SIM_FLAGS_FILE": str(FLAGS_0_28)})
    process.wait(timeout=30)
    probe = HttpProbe("http://127.0.0.1:1/v1", "m", None)
    outcome = wait_ready(state=lambda: _state(process), logs=lambda: log.read_text().splitlines(),
                         probe=probe, timeout=30, on_progress=lambda _: None)
    probe.close()
    assert isinstance(outcome, Failed) and outcome.reason == "exited"
    assert outcome.diagnosis.key == "unknown_flag"
    assert "--not-a-flag" in outcome.diagnosis.message


@contextmanager
def _server(answers: dict[str, tuple[int, dict[str, str], bytes]]) -> Iterator[str]:
    """A real HTTP server on loopback answering ``path → (status, headers, body)``; its URL."""
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            status, headers, body = answers[self.path]
            self.send_response(status)
            for name, value in {**headers, "content-length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_garbage_output_is_not_ready() -> None:
    with _server({
        "/health": (200, {}, b""),
        "/v1/models": (200, {}, json.dumps({"data": [{"id": "m"}]}).encode()),
        "/v1/chat/completions": (200, {}, json.dumps(
            {"choices": [{"message": {"content": "!!!!!!!!"}}]}).encode()),
    }) as url:
        probe = HttpProbe(url, "m", None)
        outcome = wait_ready(state=lambda: ProcessState(alive=True), logs=list, probe=probe,
                             timeout=5, on_progress=lambda _: None)
        probe.close()
    assert isinstance(outcome, Failed) and outcome.reason == "bad answer"
    assert "'!!!!!!!!'" in outcome.diagnosis.message and "expected 204" in outcome.diagnosis.message


class _Silent:
    served_name = "m"

    def health(self) -> bool:
        return False

    def models(self) -> list[str] | None:
        return None

    def completion(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def test_a_growing_download_is_progress_and_a_stall_times_out() -> None:
    """The timeout is for a start that stops moving, not for a 20 GB download still arriving."""
    now = [0.0]
    sizes = iter([0, *range(10, 400, 10)])
    seen: list[Progress] = []
    outcome = wait_ready(
        state=lambda: ProcessState(alive=True), logs=list, probe=_Silent(), timeout=5.0,
        on_progress=seen.append, downloaded=lambda: next(sizes, 390), download_total=lambda: 1000,
        clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + 1.0))
    assert isinstance(outcome, Failed) and outcome.reason == "timeout"
    # 39 seconds of growth, then 5 without: well past the 5 s timeout in all.
    assert 43.0 <= outcome.elapsed <= 46.0
    assert "downloading" in [p.phase for p in seen if p.changed]
    last = [p for p in seen if p.phase == "downloading"][-1]
    assert (last.downloaded, last.download_total) == (390, 1000)
    assert len(seen) > 40  # every poll is told, so the elapsed time on screen moves


# vLLM 0.32's real engine (CPU build) as tests/e2e/test_real_vllm.py saw it start.
REAL_0_32_STARTUP = [
    ("(APIServer pid=1) INFO 12-07 04:22:08 [api_utils.py:286] non-default args: "
     "{'model_tag': '/models/tiny-qwen3'}", "starting"),
    ("(Worker pid=39) INFO 12-07 04:05:48 [default_loader.py:501] Loading weights took 0.01 "
     "seconds", "loading weights"),
    ("(EngineCore pid=28) INFO 12-07 04:06:08 [kv_cache_utils.py:2327] CPU KV cache size: "
     "2,097,152 tokens, Maximum concurrency for 32,768 tokens per request: 64.00x",
     "profiling memory"),
    ("(EngineCore pid=28) INFO 12-07 04:06:08 [core.py:402] init engine (profile, create kv "
     "cache, warmup model) took 19.08 s", "warming up"),
    ("(APIServer pid=1) INFO 12-07 04:06:09 [api_server.py:609] Starting vLLM server on "
     "http://0.0.0.0:8000", "opening the API"),
]


def test_phases_follow_the_real_engines_startup_log() -> None:
    lines: list[str] = []
    for line, phase in REAL_0_32_STARTUP:
        lines.append(line)
        assert phase_of(lines) == phase, line


class _Serving(_Silent):
    def health(self) -> bool:
        return True

    def models(self) -> list[str] | None:
        return ["m"]

    def completion(self) -> str | None:
        return "204"


def test_a_server_that_already_serves_is_ready_without_reading_its_log() -> None:
    """A kept container on a no-op `up`: its log is one more request over SSH and the model's
    size a question to the Hub; neither is needed."""
    def no_log() -> list[str]:
        raise AssertionError("the log was read")

    def no_hub() -> int | None:
        raise AssertionError("the Hub was asked")

    outcome = wait_ready(state=lambda: ProcessState(alive=True), logs=no_log, probe=_Serving(),
                         timeout=5, on_progress=lambda _: None, downloaded=lambda: 5,
                         download_total=no_hub)
    assert isinstance(outcome, Ready)


def test_another_server_on_the_port_is_not_ready_and_its_death_says_why() -> None:
    """``identity`` false (someone else answers): polled on until our process exits."""
    alive = iter([True, True, False])
    outcome = wait_ready(
        state=lambda: ProcessState(alive=next(alive), exit_code=1),
        logs=lambda: ["OSError: [Errno 98] Address already in use"], probe=_Serving(),
        identity=lambda: False, timeout=30, on_progress=lambda _: None, sleep=lambda _: None)
    assert isinstance(outcome, Failed) and outcome.diagnosis.key == "port_in_use"


def test_a_docker_log_is_demultiplexed_and_a_tty_log_kept_as_is() -> None:
    from spark_stack.deploy.docker_host import demultiplex

    frames = (b"\x01\0\0\0\0\0\0\x06hello\n" + b"\x02\0\0\0\0\0\0\x05oops\n"
              + b"\x01\0\0\0\0\0\0\x03ok\n")
    assert demultiplex(frames) == b"hello\noops\nok\n"
    assert demultiplex(b"INFO raw tty text\n") == b"INFO raw tty text\n"
    assert demultiplex(b"") == b""


def test_server_pid_reads_the_header_and_is_none_without_it() -> None:
    from spark_stack.deploy.readiness import PID_HEADER, server_pid

    with _server({"/health": (200, {PID_HEADER: "4242"}, b"")}) as url:
        assert server_pid(url) == 4242
    with _server({"/health": (200, {}, b"")}) as url:  # vLLM: does not say
        assert server_pid(url) is None
    assert server_pid(f"http://127.0.0.1:{free_port()}/v1") is None  # nobody there
