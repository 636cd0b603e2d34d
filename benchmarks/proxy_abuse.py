"""Abuse over loopback against the proxy process, measuring what another client sees.

    .venv/bin/python benchmarks/proxy_abuse.py                     # this tree
    .venv/bin/python benchmarks/proxy_abuse.py --baseline 735a48f  # and a revision, same run

Scenarios (each bounded in bytes and time):
  header   one connection sends a header of up to 200 MB in 1 MB writes (stops when refused)
           while a victim sends GET / in a loop: victim p50/max, what the abuser got, RSS.
  slowhead 1,100 connections each send half a request head and wait, under an open-file limit
           of 1,024 for the proxy; then a victim tries 20 requests: how many succeed.
  readers  50 clients start a stream from a backend that streams ~40 MB each, and never read:
           proxy RSS before, after 5 s, and 5 s after they were closed.
  models   300 requests whose `model` is a distinct 3 MB string: RSS and log size after.

The backend for `readers` is a fake in this process (streams content chunks until its client
goes); the others need none (the proxy refuses before routing or answers GET /).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_bench import REPO, extract_revision, free_port, rss_mb  # noqa: E402

from spark_stack.proxy.config import ProxyConfig, Route, Upstream  # noqa: E402

MB = 1 << 20


def start_proxy(
    tree: Path, workdir: Path, backend: int, name: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    config = ProxyConfig(port=port, upstreams={"q": Upstream(
        "q", f"http://127.0.0.1:{backend}/v1", "served")}, routes=[Route("*", "q")])
    path = workdir / f"{name}.json"
    path.write_text(config.to_json())
    log = workdir / f"{name}.log"

    def limit_files() -> None:  # the common default the report was measured under
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "spark_stack.proxy", "--config",
                                 str(path)], stdout=out, stderr=subprocess.STDOUT, cwd=tree,
                                env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                                preexec_fn=limit_files)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if get(port, timeout=1) == 200:
                return proc, port, log
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not start: {log.read_text()[-500:]}")


def get(port: int, timeout: float = 10) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split()[1])


def victim(port: int, stop: threading.Event) -> list[float]:
    times: list[float] = []
    while not stop.is_set() or len(times) < 10:
        started = time.perf_counter()
        try:
            get(port)
            times.append(time.perf_counter() - started)
        except OSError:
            times.append(float("inf"))
        time.sleep(0.01)
    return times


def ms(values: list[float]) -> str:
    finite = [v for v in values if v != float("inf")]
    failed = len(values) - len(finite)
    if not finite:
        return f"all {failed} failed"
    return (f"p50 {statistics.median(finite) * 1000:.1f} ms, max {max(finite) * 1000:.0f} ms"
            f"{f', {failed} failed' if failed else ''}")


def header(port: int, pid: int) -> str:
    stop = threading.Event()
    outcome: list[str] = []

    def abuse() -> None:
        sent = 0
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                while sent < 200 * MB and time.monotonic() - started < 60:
                    sock.sendall(b"a" * MB)
                    sent += MB
                sock.sendall(b"\r\n\r\n")
                answer = sock.recv(200)
            except OSError as exc:
                answer = f"{type(exc).__name__}".encode()
                try:
                    answer = sock.recv(200) or answer
                except OSError:
                    pass
        first = answer.split(b"\r\n")[0].decode(errors="replace")
        outcome.append(f"abuser sent {sent // MB} MB in {time.monotonic() - started:.1f} s, "
                       f"got {first!r}")
        stop.set()

    thread = threading.Thread(target=abuse)
    thread.start()
    times = victim(port, stop)
    thread.join()
    return f"{outcome[0]}; victim {ms(times)}; proxy RSS {rss_mb(pid):.0f} MB"


def slowhead(port: int) -> str:
    hogs: list[socket.socket] = []
    for _ in range(1100):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            hogs.append(sock)
        except OSError:
            break
    time.sleep(0.5)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        try:
            get(port, timeout=3)
            times.append(time.perf_counter() - started)
        except (OSError, IndexError, ValueError):
            times.append(float("inf"))
    for sock in hogs:
        sock.close()
    ok = sum(t != float("inf") for t in times)
    return f"{len(hogs)} half-sent heads open; victim {ok}/20 answered ({ms(times)})"


async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        chunk = {"id": "c", "object": "chat.completion.chunk", "model": "served",
                 "choices": [{"index": 0, "delta": {"content": "x" * 4000}}]}
        event = b"data: " + orjson.dumps(chunk) + b"\n\n"
        framed = b"%x\r\n%s\r\n" % (len(event), event)
        for _ in range(40 * MB // len(framed)):
            writer.write(framed)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def start_backend() -> int:
    port = free_port()
    ready = threading.Event()

    async def main() -> None:
        server = await asyncio.start_server(firehose, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
    ready.wait(5)
    return port


def readers(port: int, pid: int) -> str:
    before = rss_mb(pid)
    body = orjson.dumps({"model": "claude-x", "max_tokens": 100, "stream": True,
                         "messages": [{"role": "user", "content": "hi"}]})
    request = (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    socks = []
    for _ in range(50):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        socks.append(sock)
    stop = threading.Event()
    times: list[float] = []
    thread = threading.Thread(target=lambda: times.extend(victim(port, stop)))
    thread.start()
    time.sleep(5)
    during = rss_mb(pid)
    stop.set()
    thread.join()
    for sock in socks:
        sock.close()
    time.sleep(5)
    return (f"RSS {before:.0f} MB before, {during:.0f} MB after 5 s, {rss_mb(pid):.0f} MB 5 s "
            f"after they closed; victim {ms(times)}")


def models(port: int, pid: int, log: Path) -> str:
    log_before = log.stat().st_size
    for i in range(300):
        body = orjson.dumps({"model": f"{i}" + "m" * (3 * MB), "max_tokens": 1,
                             "messages": [{"role": "user", "content": "hi"}]})
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            while sock.recv(65536):
                pass
    grown = sum(p.stat().st_size for p in log.parent.glob(log.name + "*")) - log_before
    return f"RSS {rss_mb(pid):.0f} MB after; log grew {grown / MB:.1f} MB"


def run(name: str, tree: Path, workdir: Path, backend: int) -> None:
    for scenario in ("header", "slowhead", "readers", "models"):
        proc, port, log = start_proxy(tree, workdir, backend, f"{name}-{scenario}")
        try:
            if scenario == "header":
                result = header(port, proc.pid)
            elif scenario == "slowhead":
                result = slowhead(port)
            elif scenario == "readers":
                result = readers(port, proc.pid)
            else:
                result = models(port, proc.pid, log)
        finally:
            proc.terminate()
            proc.wait(10)
        print(f"{name:12} {scenario:9} {result}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", help="also run the proxy as of REV")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    backend = start_backend()
    with tempfile.TemporaryDirectory(prefix="proxy-abuse-") as tmp:
        workdir = Path(tmp)
        run("spark-stack", REPO, workdir, backend)
        if args.baseline:
            run(f"ss@{args.baseline}", extract_revision(args.baseline, workdir), workdir, backend)


if __name__ == "__main__":
    main()
