"""Start the simulator and vLLM's real engine on loopback, compare them, print the differences.

    .venv/bin/python -m tests.realvllm.run_conformance [--real-url URL] [--sim-url URL]
                                                        [--model DIR] [--keep]

Without ``--real-url`` the engine (its venv: :data:`tests.testhost.vllm_cpu.ENGINE_PYTHON`) is
started on the tiny model (made in a temporary directory unless ``--model`` names one) and
waited for (60-120 s on 2 cores); ``--keep`` leaves it running and prints its URL, so the
next run can pass ``--real-url`` while the simulator is being fixed. Without ``--sim-url`` the
simulator is started from this checkout with the same flags. Exit status 1 when a difference
is not in :data:`tests.realvllm.conformance.ACCEPTED`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from tests.helpers import free_port
from tests.realvllm.conformance import TOOL_PARSERS, compare_all
from tests.testhost.vllm_cpu import ENGINE_ENV, ENGINE_PYTHON, make_model

SERVED = "tiny"
MAX_MODEL_LEN = "32768"


def common_flags(tool_parser: str, api_key: str | None) -> list[str]:
    """The flags both servers get: spark-stack's for a Qwen3 model."""
    flags = ["--served-model-name", SERVED, "--max-model-len", MAX_MODEL_LEN,
             "--enable-auto-tool-choice", "--tool-call-parser", tool_parser,
             "--reasoning-parser", "qwen3", "--enable-prompt-tokens-details"]
    return flags + (["--api-key", api_key] if api_key else [])
ENGINE_START_TIMEOUT = 600.0
SIM_START_TIMEOUT = 30.0


def engine_argv(model: Path, port: int, flags: list[str]) -> list[str]:
    return [str(ENGINE_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
            "--dtype", "bfloat16", *flags]


def simulator_argv(model: Path, port: int, flags: list[str]) -> list[str]:
    return [sys.executable, "-m", "spark_stack.simulator", "serve", str(model),
            "--host", "127.0.0.1", "--port", str(port), "--sim-startup-seconds", "0", *flags]


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"{url} exited with {process.returncode} before it was healthy:\n"
                             f"{tail}")
        try:
            if httpx.get(url + "/health", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} was not healthy after {timeout:g} s (log: {log})")


@contextmanager
def server(argv: list[str], env: dict[str, str], log: Path, port: int, timeout: float,
           keep: bool = False) -> Iterator[str]:
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, process, timeout, log)
        if keep:
            print(f"running: {url} (pid {process.pid}, log {log})")
        yield url
    finally:
        if not keep or process.poll() is not None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-url", help="a running engine serving 'tiny' with these flags")
    parser.add_argument("--sim-url", help="a running simulator")
    parser.add_argument("--model", type=Path, help="the tiny model's directory")
    parser.add_argument("--keep", action="store_true", help="leave the engine running")
    parser.add_argument("--tool-call-parser", default="hermes", choices=TOOL_PARSERS)
    parser.add_argument("--api-key", help="both servers' --api-key")
    args = parser.parse_args(argv)
    flags = common_flags(args.tool_call_parser, args.api_key)
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="conformance-")) if args.keep else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="conformance-")))
        model = args.model or make_model(work / "models")
        real_url = args.real_url
        if real_url is None:
            env = {**ENGINE_ENV, "PATH": os.environ.get("PATH", ENGINE_ENV["PATH"])}
            port = free_port()
            real_url = stack.enter_context(server(
                engine_argv(model, port, flags), env, work / "engine.log", port,
                ENGINE_START_TIMEOUT, keep=args.keep))
        sim_url = args.sim_url
        if sim_url is None:
            port = free_port()
            sim_url = stack.enter_context(server(
                simulator_argv(model, port, flags), dict(os.environ), work / "simulator.log", port,
                SIM_START_TIMEOUT))
        failures, accepted = compare_all(sim_url, real_url, SERVED,
                                         tool_parser=args.tool_call_parser, api_key=args.api_key)
    for diff in accepted:
        print(f"ACCEPTED  {diff}")
    for diff in failures:
        print(f"DIFFERS   {diff}")
    print(f"{len(failures)} difference(s), {len(accepted)} accepted")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
