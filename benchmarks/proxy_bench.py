"""Benchmark: direct to the vLLM simulator vs through spark-stack's proxy vs through LiteLLM.

    .venv/bin/python benchmarks/proxy_bench.py            # full run (~3-5 min + LiteLLM install)
    .venv/bin/python benchmarks/proxy_bench.py --quick    # short run
    .venv/bin/python benchmarks/proxy_bench.py --no-litellm
    .venv/bin/python benchmarks/proxy_bench.py --no-litellm --baseline HEAD~3   # A/B in one run

One run, same requests, rounds interleaved so every target shares the machine's noise. The
simulator answers every chat request with 5 content chunks and no delay
(``VLLM_SIM_BENCH_CHUNKS=5``), so what is measured is the proxies' own cost; a dumb TCP relay
shows what one extra loopback hop alone costs on the machine at hand. Reported:
streamed TTFT p50/p95/p99 at c=1 (2 KB and a ~78 KB Claude Code body with 24 tools) and at
c=32, req/s at c=32, proxy CPU ms per streamed request (from /proc/<pid>/stat), RSS, start-up
time to first answer, and warm count_tokens p50. ``--baseline REV`` adds the proxy as it was at
git revision REV (its ``spark_stack`` extracted to a temporary directory) as one more target, so
before/after comparisons share the machine's noise. LiteLLM is installed (once) into its own
venv under ~/.cache/spark-stack/bench with ``LITELLM_LOCAL_MODEL_COST_MAP=True``.

Only loopback traffic. With 2+ cores the proxies are pinned to the last core and the client
and simulator to the others.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spark_stack.proxy.config import ProxyConfig, Route, Upstream  # noqa: E402
from spark_stack.proxy.translate_request import translate_request  # noqa: E402
from tests.claude_code_body import claude_code_body  # noqa: E402

SERVED = "sim"
MODEL = "claude-bench"
MASTER_KEY = "sk-bench-master-key"
TEAM_KEY = "sk-spark-bench-team-key"
LITELLM_HOME = Path.home() / ".cache" / "spark-stack" / "bench" / "litellm-venv"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ANTHROPIC_MARK = b"content_block_delta"
OPENAI_MARK = b'"delta":{"content":"'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pin(pid: int, cores: set[int]) -> None:
    try:
        os.sched_setaffinity(pid, cores)
    except OSError:
        pass


def small_body() -> dict[str, Any]:
    system = "You are a concise assistant. " * 60  # ~1.7 KB: a 2 KB request
    return {"model": MODEL, "max_tokens": 256, "stream": True, "system": system,
            "messages": [{"role": "user", "content": "Say hello in five words."}]}


def big_body() -> dict[str, Any]:
    body = claude_code_body("Summarise the repository.")
    body["model"] = MODEL
    return body


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str]
    mark: bytes
    pid: int | None
    proc: subprocess.Popen[bytes] | None = None
    start_s: float | None = None
    bodies: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Sample:
    ttft: list[float] = field(default_factory=list)
    errors: int = 0
    cpu: float = 0.0
    requests: int = 0
    wall: float = 0.0


async def one(session: aiohttp.ClientSession, target: Target, body: bytes) -> float | None:
    start = time.perf_counter()
    ttft = None
    async with session.post(target.url, data=body, headers=target.headers) as response:
        async for data in response.content.iter_any():
            if ttft is None and target.mark in data:
                ttft = time.perf_counter() - start
        if response.status != 200:
            return None
    return ttft


async def phase(session: aiohttp.ClientSession, target: Target, kind: str, concurrency: int,
                count: int, sample: Sample) -> None:
    body = target.bodies[kind]
    cpu_before = cpu_seconds(target.pid) if target.pid else 0.0
    queue = iter(range(count))
    started = time.perf_counter()

    async def worker() -> None:
        for _ in queue:
            try:
                ttft = await one(session, target, body)
            except (TimeoutError, aiohttp.ClientError):
                ttft = None
            if ttft is None:
                sample.errors += 1
            else:
                sample.ttft.append(ttft)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sample.wall += time.perf_counter() - started
    sample.requests += count
    if target.pid:
        sample.cpu += cpu_seconds(target.pid) - cpu_before


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, method: str = "GET",
              headers: dict[str, str] | None = None) -> float:
    """Seconds from now until ``url`` answers anything (polling every 5 ms)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                                timeout=2)
        try:
            connection.request(method, parts.path or "/", headers=headers or {})
            connection.getresponse().read()
            return time.perf_counter() - start
        except OSError:
            time.sleep(0.005)
        finally:
            connection.close()
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def start_simulator(port: int, cores: set[int]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VLLM_SIM_BENCH_CHUNKS": "5", "VLLM_SIM_STARTUP_SECONDS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "spark_stack.simulator", "serve", "Qwen/Qwen3.6-35B-A3B",
         "--port", str(port), "--served-model-name", SERVED, "--max-model-len", "262144",
         "--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_coder",
         "--enable-auto-tool-choice"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    pin(proc.pid, cores)
    wait_http(f"http://127.0.0.1:{port}/health", proc, 30)
    return proc


def start_ours(sim_port: int, workdir: Path, cores: set[int], tree: Path = REPO,
               name: str = "spark-stack") -> Target:
    port = free_port()
    config = ProxyConfig(port=port, upstreams={"sim": Upstream(
        "sim", f"http://127.0.0.1:{sim_port}/v1", SERVED, max_model_len=262144)},
        routes=[Route("claude-*", "sim")]).with_own_names()
    if tree == REPO:
        # As `up` runs it for a team: a key file (the requests carry a team key, so every one
        # is looked up, admitted by the dispatcher and counted per key) and a usage database.
        from spark_stack.proxy.keyfile import KeyRecord, digest, encode_keys

        keys = workdir / f"keys-{port}.json"
        keys.write_text(encode_keys([KeyRecord("bench", digest(TEAM_KEY), "2026-01-01")]))
        keys.chmod(0o600)
        config = replace(config, keys_file=str(keys), usage_db=str(workdir / f"usage-{port}.db"))
    path = workdir / f"proxy-{port}.json"
    path.write_text(config.to_json())
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "spark_stack.proxy", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tree,
                            env={**os.environ, "PYTHONPATH": str(tree)})
    pin(proc.pid, cores)
    wait_http(f"http://127.0.0.1:{port}/", proc, 30, method="HEAD")
    target = Target(name, f"http://127.0.0.1:{port}/v1/messages?beta=true",
                    {"content-type": "application/json", "anthropic-version": "2023-06-01",
                     "x-api-key": TEAM_KEY},
                    ANTHROPIC_MARK, proc.pid, proc)
    target.start_s = time.perf_counter() - started
    return target


RELAY_SOURCE = """
import asyncio, sys, uvloop
UP = int(sys.argv[2])
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
async def handle(reader, writer):
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", UP)
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
uvloop.run(main())
"""


def start_relay(sim_port: int, cores: set[int]) -> Target:
    """A dumb TCP relay (uvloop): the floor cost of one extra loopback hop on this machine."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", RELAY_SOURCE, str(port), str(sim_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pin(proc.pid, cores)
    wait_http(f"http://127.0.0.1:{port}/health", proc, 30)
    return Target("tcp-relay", f"http://127.0.0.1:{port}/v1/chat/completions",
                  {"content-type": "application/json"}, OPENAI_MARK, proc.pid, proc)


def extract_revision(rev: str, workdir: Path) -> Path:
    """``spark_stack`` as it was at git revision ``rev``, in a directory of its own."""
    tree = workdir / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev, "spark_stack"], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def install_litellm() -> Path | None:
    python = LITELLM_HOME / "bin" / "python"
    litellm = LITELLM_HOME / "bin" / "litellm"
    if litellm.exists():
        return litellm
    print(f"installing litellm[proxy] into {LITELLM_HOME} (once, ~1 min) ...", flush=True)
    LITELLM_HOME.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_HOME)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "litellm[proxy]"],
                       check=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"LiteLLM could not be installed: {exc}", flush=True)
        shutil.rmtree(LITELLM_HOME, ignore_errors=True)
        return None
    return litellm if litellm.exists() else None


def start_litellm(binary: Path, sim_port: int, workdir: Path, cores: set[int]) -> Target | None:
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: hosted_vllm/{SERVED}\n"
        f"      api_base: http://127.0.0.1:{sim_port}/v1\n"
        "      api_key: none\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
           "DISABLE_SCHEMA_UPDATE": "True"}
    started = time.perf_counter()
    log = open(workdir / "litellm.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([str(binary), "--config", str(config), "--host", "127.0.0.1",
                             "--port", str(port), "--num_workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    pin(proc.pid, cores)
    try:
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, 120)
    except RuntimeError as exc:
        print(f"LiteLLM did not start: {exc}; see {workdir / 'litellm.log'}")
        proc.kill()
        return None
    target = Target("litellm", f"http://127.0.0.1:{port}/v1/messages",
                    {"content-type": "application/json", "x-api-key": MASTER_KEY,
                     "authorization": f"Bearer {MASTER_KEY}",
                     "anthropic-version": "2023-06-01"},
                    ANTHROPIC_MARK, proc.pid, proc)
    target.start_s = time.perf_counter() - started
    return target


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def count_tokens_p50(target: Target, body: dict[str, Any], n: int) -> float | None:
    base = target.url.split("/v1/messages")[0]
    payload = orjson.dumps({k: body[k] for k in ("model", "messages", "system", "tools")
                            if k in body})
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n + 3):
            start = time.perf_counter()
            async with session.post(base + "/v1/messages/count_tokens", data=payload,
                                    headers=target.headers) as response:
                await response.read()
                if response.status != 200:
                    return None
            times.append(time.perf_counter() - start)
    return statistics.median(times[3:])


async def run(args: argparse.Namespace) -> None:
    cores = sorted(os.sched_getaffinity(0))
    proxy_cores = {cores[-1]}
    other_cores = set(cores[:-1]) or proxy_cores
    pin(os.getpid(), other_cores)
    workdir = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    sim_port = free_port()
    sim = start_simulator(sim_port, other_cores)
    targets: list[Target] = []
    try:
        direct = Target("direct", f"http://127.0.0.1:{sim_port}/v1/chat/completions",
                        {"content-type": "application/json"}, OPENAI_MARK, None)
        upstream = Upstream("sim", "", SERVED)
        bodies = {"2KB": small_body(), "78KB": big_body()}
        direct.bodies = {k: orjson.dumps(translate_request(v, upstream)) for k, v in bodies.items()}
        targets.append(direct)
        relay = start_relay(sim_port, proxy_cores)
        relay.bodies = dict(direct.bodies)
        targets.append(relay)
        ours = start_ours(sim_port, workdir, proxy_cores)
        ours.bodies = {k: orjson.dumps(v) for k, v in bodies.items()}
        targets.append(ours)
        if args.baseline:
            tree = extract_revision(args.baseline, workdir)
            before = start_ours(sim_port, workdir, proxy_cores, tree, f"ss@{args.baseline}")
            before.bodies = dict(ours.bodies)
            targets.append(before)
        if not args.no_litellm:
            binary = install_litellm()
            litellm = start_litellm(binary, sim_port, workdir, proxy_cores) if binary else None
            if litellm is not None:
                litellm.bodies = dict(ours.bodies)
                targets.append(litellm)
        rounds = 2 if args.quick else 5
        n1 = 30 if args.quick else 100
        n32 = 320 if args.quick else 960
        results: dict[tuple[str, str], Sample] = {}
        connector_limit = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector_limit) as session:
            for target in targets:  # warm-up
                await phase(session, target, "2KB", 1, 5, Sample())
                await phase(session, target, "78KB", 1, 3, Sample())
            for r in range(rounds):
                for target in targets if r % 2 == 0 else list(reversed(targets)):
                    for kind, concurrency, count in (("2KB", 1, n1), ("78KB", 1, n1 // 2),
                                                     ("2KB", 32, n32)):
                        # LiteLLM takes ~20 ms a request: give it fewer, same shape.
                        if target.name == "litellm" and concurrency == 32:
                            count = max(64, count // 8)
                        key = (target.name, f"{kind} c={concurrency}")
                        await phase(session, target, kind, concurrency, count,
                                    results.setdefault(key, Sample()))
        tokens = {t.name: await count_tokens_p50(t, bodies["78KB"], 20 if args.quick else 50)
                  for t in targets if t.start_s is not None}
        report(targets, results, tokens)
    finally:
        for target in targets:
            if target.proc is not None:
                target.proc.terminate()
                try:
                    target.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    target.proc.kill()
        sim.terminate()
        sim.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def report(targets: list[Target], results: dict[tuple[str, str], Sample],
           tokens: dict[str, float | None]) -> None:
    ms = 1000.0
    print()
    print(f"{'target':<12} {'phase':<12} {'TTFT p50':>9} {'p95':>8} {'p99':>8} {'req/s':>8} "
          f"{'CPU ms/req':>10} {'errors':>6}")
    for (name, phase_name), sample in results.items():
        cpu = f"{sample.cpu / max(1, sample.requests) * ms:.3f}" if name != "direct" else "-"
        rate = sample.requests / sample.wall if sample.wall else float("nan")
        p50, p95, p99 = (percentile(sample.ttft, q) * ms for q in (0.5, 0.95, 0.99))
        print(f"{name:<12} {phase_name:<12} {p50:>8.2f}m {p95:>7.2f}m {p99:>7.2f}m "
              f"{rate:>8.0f} {cpu:>10} {sample.errors:>6}")
    print()
    for target in targets:
        if target.pid is None or target.name == "tcp-relay":
            continue
        count = tokens.get(target.name)
        print(f"{target.name:<12} start to first answer {target.start_s or 0:.3f} s, "
              f"RSS {rss_mb(target.pid):.0f} MB, count_tokens p50 (warm, 78 KB) "
              + (f"{count * ms:.2f} ms" if count is not None else "unsupported"))
    print()
    direct = {phase: percentile(s.ttft, .5) for (n, phase), s in results.items() if n == "direct"}
    direct_rate = {phase: s.requests / s.wall for (n, phase), s in results.items()
                   if n == "direct"}
    for (name, phase_name), sample in results.items():
        if name == "direct":
            continue
        added = (percentile(sample.ttft, .5) - direct[phase_name]) * ms
        rate = sample.requests / sample.wall / direct_rate[phase_name]
        print(f"{name:<12} {phase_name:<12} added TTFT p50 {added:+.2f} ms, "
              f"req/s {rate:.2f}x direct")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run the proxy as of this git revision (A/B in one run)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
