"""The simulator's native multi-node mode: two real simulator processes meeting on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from spark_stack.simulator.config import build_config
from spark_stack.simulator.flags import UsageError, load_spec, parse_serve_args

REPO = Path(__file__).resolve().parents[2]
FLAGS_FILE = REPO / "spark_stack/vllm/data/vllm-flags-0.28.0.json"
MODEL = "Qwen/Qwen3-0.6B"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Rank:
    """One `vllm serve` simulator process of a multi-node world."""

    def __init__(self, rank: int, master_port: int, *, api_port: int | None = None,
                 timeout: float = 20.0, nnodes: int = 2) -> None:
        argv = [sys.executable, "-m", "spark_stack.simulator", "serve", MODEL,
                "--nnodes", str(nnodes), "--node-rank", str(rank), "--master-addr", "127.0.0.1",
                "--master-port", str(master_port), "--tensor-parallel-size", str(nnodes)]
        if rank == 0:
            argv += ["--host", "127.0.0.1", "--port", str(api_port)]
        else:
            argv += ["--headless"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "VLLM_SIM_FLAGS_FILE": str(FLAGS_FILE),
               "VLLM_SIM_STARTUP_SECONDS": "0.05", "VLLM_SIM_DIST_TIMEOUT": str(timeout)}
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

    def wait(self, timeout: float = 20.0) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait()


@pytest.fixture
def ranks() -> Iterator[list[Rank]]:
    started: list[Rank] = []
    yield started
    for rank in started:
        if rank.proc.poll() is None:
            rank.proc.kill()
            rank.proc.wait()


def _models(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code
    except httpx.TransportError:
        return None


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.05)
    return False


def test_rank_0_serves_only_once_the_headless_rank_joined(ranks: list[Rank]) -> None:
    master, api = _free_port(), _free_port()
    ranks.append(head := Rank(0, master, api_port=api))
    time.sleep(1.5)
    assert head.proc.poll() is None
    assert _models(api) is None  # still waiting for rank 1
    ranks.append(worker := Rank(1, master))
    assert _wait_for(lambda: _models(api) == 200, 15), head.stop()[1]
    code, head_log = head.stop()
    _, worker_log = worker.wait()
    assert code == 0
    init = f"distributed_init_method=tcp://127.0.0.1:{master} backend=nccl"
    assert f"world_size=2 rank=0 local_rank=0 {init}" in head_log
    assert ("rank 0 in world size 2 is assigned as DP rank 0, PP rank 0, PCP rank 0, TP rank 0, "
            "EP rank N/A, EPLB rank N/A") in head_log
    # The world forms before the model loads, and the API opens last.
    assert (head_log.index("is assigned as") < head_log.index("Starting to load model")
            < head_log.index("Starting vLLM API server"))
    assert (f"Launching vLLM (v0.28.0) headless multiproc executor, with head node address "
            f"127.0.0.1:{master} for torch.distributed process group.") in worker_log
    assert f"world_size=2 rank=1 local_rank=0 {init}" in worker_log
    assert "rank 1 in world size 2 is assigned as DP rank 0, PP rank 0, PCP rank 0, TP rank 1" \
        in worker_log
    assert "APIServer" not in worker_log


def test_a_rank_that_cannot_reach_the_master_fails_with_torchs_line(ranks: list[Rank]) -> None:
    master = _free_port()
    ranks.append(worker := Rank(1, master, timeout=1.5))
    code, log = worker.wait()
    assert code == 1
    assert (f"[c10d] The client socket has failed to connect to [127.0.0.1]:{master} "
            "(errno: 111 - Connection refused).") in log
    assert log.rstrip().endswith(
        "torch.distributed.DistNetworkError: The client socket has timed out after 1500ms "
        f"while trying to connect to (127.0.0.1, {master})."
    )


def test_rank_0_alone_times_out_waiting_for_clients(ranks: list[Rank]) -> None:
    ranks.append(head := Rank(0, _free_port(), api_port=_free_port(), timeout=1.0))
    code, log = head.wait()
    assert code == 1
    assert log.rstrip().endswith(
        "torch.distributed.DistStoreError: Timed out after 2 seconds waiting for clients. "
        "1/2 clients joined."
    )
    assert "Starting vLLM API server" not in log


def test_rank_0_fails_when_a_joined_rank_dies(ranks: list[Rank]) -> None:
    master, api = _free_port(), _free_port()
    ranks.append(head := Rank(0, master, api_port=api))
    ranks.append(worker := Rank(1, master))
    assert _wait_for(lambda: _models(api) == 200, 15)
    worker.proc.kill()
    code, log = head.wait()
    assert code == 1
    assert "RuntimeError: NCCL error: remote process exited or there was a network error" in log
    assert log.rstrip().endswith("Shutting down FastAPI HTTP server.")
    assert "EngineDeadError: EngineCore encountered an issue." in log


def test_the_multi_node_flags_parse_against_the_028_flag_set() -> None:
    argv = [MODEL, "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.214.0.1",
            "--master-port", "29501", "--headless", "--tensor-parallel-size", "2",
            "--distributed-executor-backend", "mp"]
    config = build_config(parse_serve_args(argv, load_spec(FLAGS_FILE)), {})
    assert (config.nnodes, config.node_rank, config.master_addr, config.master_port) == (
        2, 1, "10.214.0.1", 29501)
    assert config.headless and config.world_size == 2
    assert config.distributed_executor_backend == "mp"
    assert config.dist_timeout == 600.0


def test_headless_takes_no_value_with_the_flag_file() -> None:
    args = parse_serve_args(["--headless", MODEL], load_spec(FLAGS_FILE))
    assert args.model == MODEL and args.value("--headless") == "true"


@pytest.mark.parametrize(("argv", "message"), [
    (["--nnodes", "2", "--node-rank", "2", "--tensor-parallel-size", "2"], "node_rank (2)"),
    (["--nnodes", "2", "--tensor-parallel-size", "3"], "must be a multiple of nnodes (2)"),
])
def test_an_impossible_world_is_refused(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as refused:
        build_config(parse_serve_args([MODEL, *argv], load_spec(FLAGS_FILE)), {})
    assert message in refused.value.message
