"""Benchmark: one key floods a saturated engine; how long does another key wait for its first
token, with the proxy's fair queue and without it (first come, first served in the engine)?

    .venv/bin/python benchmarks/fair_queue_bench.py                 # 30 s per mode
    .venv/bin/python benchmarks/fair_queue_bench.py --seconds 10    # quicker

The vLLM simulator runs with ``--max-num-seqs 4`` (vLLM's scheduler: at most 4 requests
generate, the rest wait first come, first served) and answers with a per-token delay taken from
each request (``SIM_SCRIPT``): key A keeps 16 long streams in flight (1.5-2.5 s each, started
staggered), key B sends one short request (~0.1 s) every second. Reported: B's time to first
token (p50, p95, max) and A's finished streams per second, in two modes of the same proxy:

- ``fair``: the proxy knows the engine's capacity (``max_num_seqs: 4`` on the upstream), holds
  at most 4 requests in flight and queues the rest itself, serving keys in turn;
- ``fcfs``: the proxy is told nothing (``max_in_flight`` 1000), passes every request through,
  and the engine's own first-come-first-served queue decides: the "before".

plus ``alone``: B with no flood (its TTFT floor). Only loopback traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spark_stack.proxy.config import ProxyConfig, Route, Upstream  # noqa: E402
from spark_stack.proxy.keyfile import KeyRecord, digest, encode_keys  # noqa: E402
from tests.helpers import free_port  # noqa: E402

SLOTS = 4
KEY_A = "sk-spark-bench-key-a"
KEY_B = "sk-spark-bench-key-b"
# A: 75-125 chunks of 4 characters, 20 ms apart: 1.5-2.5 s. B: 5 chunks: ~0.1 s.
LONG = ["SIM_SCRIPT: " + json.dumps({"content": "a" * (300 + 25 * i), "chunk_chars": 4,
                                     "delay_ms": 20}) for i in range(5)]
SHORT = "SIM_SCRIPT: " + json.dumps({"content": "b" * 20, "chunk_chars": 4, "delay_ms": 20})


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
        try:
            connection.request("GET", parts.path or "/")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.02)
        finally:
            connection.close()
    raise RuntimeError(f"{url} did not answer")


def start_simulator(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "spark_stack.simulator", "serve", "Qwen/Qwen3-0.6B",
         "--port", str(port), "--served-model-name", "sim",
         "--max-num-seqs", str(SLOTS), "--max-model-len", "32768"],
        env={**os.environ, "VLLM_SIM_STARTUP_SECONDS": "0"}, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_up(f"http://127.0.0.1:{port}/health", proc)
    return proc


def start_proxy(sim_port: int, workdir: Path, fair: bool) -> tuple[str, subprocess.Popen[bytes]]:
    keys = workdir / "keys.json"
    keys.write_text(encode_keys([KeyRecord("a", digest(KEY_A), "2026-01-01T00:00:00Z"),
                                 KeyRecord("b", digest(KEY_B), "2026-01-01T00:00:00Z")]))
    keys.chmod(0o600)
    port = free_port()
    upstream = Upstream("sim", f"http://127.0.0.1:{sim_port}/v1", "sim", thinking="none",
                        max_num_seqs=SLOTS if fair else None)
    config = ProxyConfig(port=port, upstreams={"sim": upstream},
                         routes=[Route("claude-*", "sim")], keys_file=str(keys),
                         max_in_flight=SLOTS if fair else 1000).with_own_names()
    path = workdir / f"proxy-{port}.json"
    path.write_text(config.to_json())
    proc = subprocess.Popen([sys.executable, "-m", "spark_stack.proxy", "--config", str(path)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_up(f"http://127.0.0.1:{port}/", proc)
    return f"http://127.0.0.1:{port}/v1/messages", proc


async def stream(session: aiohttp.ClientSession, url: str, key: str, text: str) -> float:
    """Seconds to the first content delta; reads the stream to its end."""
    body = {"model": "claude-bench", "max_tokens": 512, "stream": True,
            "messages": [{"role": "user", "content": text}]}
    started = time.perf_counter()
    ttft = float("nan")
    async with session.post(url, json=body, headers={"x-api-key": key}) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {await response.text()}")
        async for chunk in response.content.iter_any():
            if ttft != ttft and b"content_block_delta" in chunk:
                ttft = time.perf_counter() - started
    return ttft


async def measure(url: str, seconds: float, flood: int) -> tuple[list[float], float]:
    """B's TTFTs, and A's finished streams per second while B was measured."""
    stop = asyncio.Event()
    window: list[float] = []  # when A's streams finished
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def flooder(index: int) -> None:
            # Staggered starts and lengths, as sub-agents are: the engine's slots free up one
            # at a time (every ~0.5 s with 4 slots), not in lockstep.
            await asyncio.sleep(index * 2.0 / flood)
            turn = 0
            while not stop.is_set():
                await stream(session, url, KEY_A, LONG[(index + turn) % len(LONG)])
                window.append(time.perf_counter())
                turn += 1

        tasks = [asyncio.ensure_future(flooder(i)) for i in range(flood)]
        await asyncio.sleep(5.0 if flood else 0.0)  # let the flood fill the engine's queue
        started = time.perf_counter()
        pending: list[asyncio.Future[float]] = []
        while time.perf_counter() - started < seconds:
            pending.append(asyncio.ensure_future(stream(session, url, KEY_B, SHORT)))
            await asyncio.sleep(1.0)
        ended = time.perf_counter()
        ttfts = list(await asyncio.gather(*pending))
        stop.set()
        await asyncio.gather(*tasks)
    done = sum(1 for t in window if started <= t < ended)
    return ttfts, done / (ended - started)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="how long B sends its requests in each mode")
    parser.add_argument("--flood", type=int, default=16, help="A's concurrent streams")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode, fair, flood in (("alone", True, False), ("fcfs", False, True),
                                  ("fair", True, True)):
            sim_port = free_port()
            simulator = start_simulator(sim_port)
            url, proxy = start_proxy(sim_port, Path(tmp), fair)
            try:
                ttfts, finished = asyncio.run(
                    measure(url, args.seconds, args.flood if flood else 0))
            finally:
                proxy.terminate()
                simulator.terminate()
                proxy.wait()
                simulator.wait()
            rows.append((mode, ttfts, finished))
    print(f"engine: {SLOTS} slots (--max-num-seqs), A: {args.flood} concurrent ~2 s streams, "
          f"B: one ~0.1 s stream per second, {args.seconds:g} s per mode\n")
    print("| mode | B requests | B TTFT p50 | B TTFT p95 | B TTFT max | A streams/s |")
    print("|---|---|---|---|---|---|")
    for mode, ttfts, rate in rows:
        print(f"| {mode} | {len(ttfts)} | {statistics.median(ttfts) * 1000:.0f} ms | "
              f"{percentile(ttfts, 95) * 1000:.0f} ms | {max(ttfts) * 1000:.0f} ms | "
              f"{f'{rate:.2f}' if mode != 'alone' else '-'} |")


if __name__ == "__main__":
    main()
