"""Benchmark: replayed Claude Code sessions through the proxy, one replica against two, and two
replicas with session-sticky routing against session-blind spreading (issue 22).

    .venv/bin/python benchmarks/replica_routing_bench.py            # ~1 min, loopback only
    .venv/bin/python benchmarks/replica_routing_bench.py --sessions 8 --turns 4

Every arm starts fresh vLLM simulators (cold prefix caches) as local processes on 127.0.0.1
with a prefill cost (``--sim-prefill-ms-per-1k-tokens``: time to first token grows with the
prompt tokens the prefix cache did not serve, and one engine prefills one prompt at a time) and
a decode delay per token, and a fresh proxy whose config lists them as ``replicas`` of one
model. ``--sessions`` sessions run at once, each ``--turns`` turns in a row, replayed from the
recorded Claude Code request (tests/fixtures/claude_code/: its system prompt, 3 system blocks
and tools, shared by every session), each turn one more Bash ``tool_use`` / ``tool_result``
round trip with a session-unique output of ``--result-words`` words (a file read).

Arms:

- ``1 replica``: one simulator (stickiness cannot matter);
- ``2 replicas, sticky``: each session's ``X-Claude-Code-Session-Id`` (the dispatcher's
  rendezvous hashing keeps it on one replica);
- ``2 replicas, blind``: each request a fresh session id, so the dispatcher places every turn
  independently, as a session-blind load balancer does: a turn finds its whole history on
  the replica it lands on about half the time (otherwise only the turns that landed there).

Reported per arm: time to first token (p50, p95) of the first turns and of the later turns
(and per turn, in a second table);
the prefix-cache hit rate, over all prompt tokens (the simulators' ``vllm:prefix_cache_hits /
queries``) and over the session's own history (the later turns' ``cache_read_input_tokens``
beyond the prefix every session shares, over the previous turn's prompt beyond it); and the
aggregate output tokens per second (all sessions' output tokens over the arm's wall time).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spark_stack.proxy.config import ProxyConfig, Route, Upstream  # noqa: E402
from tests.helpers import free_port, wait_until_ok  # noqa: E402

RECORDED = REPO / "tests" / "fixtures" / "claude_code" / "2.1.332" / "turn2.json"
SERVED = "qwen"
WORDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "src", "lib",
         "def", "return", "import", "class", "self", "value")


@dataclass(frozen=True)
class Arm:
    label: str
    replicas: int
    sticky: bool


ARMS = (Arm("1 replica", 1, True), Arm("2 replicas, sticky", 2, True),
        Arm("2 replicas, blind", 2, False))


@dataclass(frozen=True)
class Turn:
    turn: int
    ttft: float
    prompt: int
    cached: int
    output: int


def start_simulator(port: int, prefill_ms: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "spark_stack.simulator", "serve", "Qwen/Qwen3-0.6B",
         "--host", "127.0.0.1", "--port", str(port), "--served-model-name", SERVED,
         "--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_coder",
         "--enable-auto-tool-choice", "--enable-prompt-tokens-details",
         "--sim-startup-seconds", "0", "--sim-prefill-ms-per-1k-tokens", str(prefill_ms)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _script(reasoning_tokens: int, delay_ms: float) -> str:
    """Every turn: some thinking, then a Bash call (``after_tool``: the same again)."""
    step = {"reasoning": "think " * reasoning_tokens, "chunk_chars": len("think "),
            "delay_ms": delay_ms,
            "tool_calls": [{"name": "Bash", "arguments": {"command": "cat next.py"}}]}
    return "SIM_SCRIPT: " + json.dumps({**step, "after_tool": step})


def _output(session: str, turn: int, words: int) -> str:
    rng = random.Random(f"{session}/{turn}")
    return " ".join(rng.choice(WORDS) + str(rng.randrange(100)) for _ in range(words))


def session_body(recorded: dict[str, Any], session: str, turns: int, args: argparse.Namespace
                 ) -> dict[str, Any]:
    """The recorded request as turn ``turns`` of ``session``: its first prompt made the
    session's own, then one Bash round trip per earlier turn."""
    first, environment = recorded["messages"][:2]
    prompt = {"type": "text", "text": f"Session {session}: read the files one by one. "
              + _script(args.reasoning_tokens, args.delay_ms)}
    messages = [{**first, "content": [first["content"][0], prompt]}, environment]
    for turn in range(1, turns):
        call = f"toolu_{session[:8]}{turn:04d}"
        messages.append({"role": "assistant", "content": [
            {"type": "tool_use", "id": call, "name": "Bash",
             "input": {"command": "cat next.py", "description": "Read the next file"}}]})
        messages.append({"role": "user", "content": [
            {"tool_use_id": call, "type": "tool_result",
             "content": _output(session, turn, args.result_words), "is_error": False}]})
    user_id = json.dumps({"device_id": "0" * 64, "account_uuid": "", "session_id": session})
    return {**recorded, "model": SERVED, "messages": messages, "stream": True,
            "metadata": {"user_id": user_id}}


def one_turn(client: httpx.Client, url: str, body: dict[str, Any], session: str, turn: int,
             headers: dict[str, str]) -> Turn:
    started = time.monotonic()
    first: float | None = None
    usage: dict[str, Any] = {}
    with client.stream("POST", f"{url}/v1/messages", json=body,
                       headers={**headers, "x-claude-code-session-id": session}) as response:
        if response.status_code != 200:
            raise SystemExit(f"turn {turn} of {session}: {response.status_code} "
                             f"{response.read()[:300]!r}")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if first is None and event.get("type") == "content_block_delta":
                first = time.monotonic() - started
            if event.get("type") == "message_start":
                usage.update(event["message"].get("usage") or {})
            if event.get("type") == "message_delta":
                usage.update({k: v for k, v in (event.get("usage") or {}).items()
                              if v is not None})
    cached = int(usage.get("cache_read_input_tokens") or 0)
    return Turn(turn, first if first is not None else time.monotonic() - started,
                int(usage.get("input_tokens", 0)) + cached, cached,
                int(usage.get("output_tokens", 0)))


def run_session(client: httpx.Client, url: str, recorded: dict[str, Any], session: str,
                sticky: bool, args: argparse.Namespace) -> list[Turn]:
    headers = recorded_headers()
    turns = []
    for turn in range(1, args.turns + 1):
        body = session_body(recorded, session, turn, args)
        key = session if sticky else str(uuid.uuid4())
        if not sticky:
            # metadata.user_id is the dispatcher's second choice: blind it too.
            body = {k: v for k, v in body.items() if k != "metadata"}
        turns.append(one_turn(client, url, body, key, turn, headers))
    return turns


def recorded_headers() -> dict[str, str]:
    recorded = json.loads(RECORDED.read_text())["headers"]
    skip = {"content-length", "host", "x-claude-code-session-id", "connection",
            "accept-encoding"}
    return {k: v for k, v in recorded.items() if k not in skip} | {
        "x-api-key": "spark-stack-local"}


def prefix_totals(port: int) -> tuple[float, float]:
    found = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        for name in ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"):
            if line.startswith(name):
                found[name] = float(line.split()[-1])
    return found["vllm:prefix_cache_queries_total"], found["vllm:prefix_cache_hits_total"]


Measured = tuple[list[list[Turn]], float, list[tuple[float, float]]]


def run_arm(arm: Arm, args: argparse.Namespace, workdir: Path) -> Measured:
    """Every session's turns, the wall time, each simulator's prefix-cache totals."""
    names = ["sim", "sim-b"][: arm.replicas]
    ports = {name: free_port() for name in names}
    processes = [start_simulator(port, args.prefill_ms) for port in ports.values()]
    proxy: subprocess.Popen[bytes] | None = None
    try:
        for port in ports.values():
            wait_until_ok(f"http://127.0.0.1:{port}/health", 30)
        config = ProxyConfig(
            port=free_port(),
            upstreams={name: Upstream(name, f"http://127.0.0.1:{port}/v1", SERVED,
                                      max_num_seqs=256) for name, port in ports.items()},
            routes=[Route("*", "sim")], replicas={"sim": names})
        path = workdir / f"proxy-{arm.replicas}-{arm.sticky}.json"
        path.write_text(config.to_json())
        proxy = subprocess.Popen([sys.executable, "-m", "spark_stack.proxy", "--config",
                                  str(path)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        wait_until_ok(f"{config.url}/health", 30)
        recorded = json.loads(RECORDED.read_text())["body"]
        sessions = [str(uuid.UUID(int=random.Random(f"s{i}").getrandbits(128), version=4))
                    for i in range(args.sessions)]
        started = time.monotonic()
        with httpx.Client(timeout=120) as client, ThreadPoolExecutor(args.sessions) as pool:
            results = list(pool.map(
                lambda s: run_session(client, config.url, recorded, s, arm.sticky, args),
                sessions))
        wall = time.monotonic() - started
        totals = [prefix_totals(port) for port in ports.values()]
    finally:
        for process in [*processes, *([proxy] if proxy else [])]:
            process.kill()
            process.wait()
    return results, wall, totals


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(arm: Arm, sessions: list[list[Turn]], wall: float,
              totals: list[tuple[float, float]], shared: int) -> dict[str, Any]:
    first = [s[0].ttft for s in sessions]
    later = [t.ttft for s in sessions for t in s[1:]]
    reusable = sum(prev.prompt - shared for s in sessions for prev in s[:-1])
    reused = sum(max(0, min(t.cached, prev.prompt) - shared)
                 for s in sessions for prev, t in zip(s, s[1:], strict=False))
    queries = sum(q for q, _ in totals)
    hits = sum(h for _, h in totals)
    output = sum(t.output for s in sessions for t in s)
    by_turn = [[s[i].ttft for s in sessions] for i in range(len(sessions[0]))]
    return {
        "arm": arm.label, "requests": sum(len(s) for s in sessions), "wall_s": wall,
        "ttft_first_p50": statistics.median(first), "ttft_first_p95": _pct(first, 0.95),
        "ttft_later_p50": statistics.median(later) if later else 0.0,
        "ttft_later_p95": _pct(later, 0.95) if later else 0.0,
        "hit_rate_all": hits / queries if queries else 0.0,
        "hit_rate_history": reused / reusable if reusable else 0.0, "shared_prefix": shared,
        "output_tokens": output, "output_tok_s": output / wall,
        "prompt_tokens_last_turn": statistics.median(s[-1].prompt for s in sessions),
        "ttft_by_turn": [[statistics.median(t), _pct(t, 0.95)] for t in by_turn],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--prefill-ms", type=float, default=100.0,
                        help="simulated prefill per 1000 uncached prompt tokens")
    parser.add_argument("--result-words", type=int, default=1500,
                        help="words of each turn's tool output (the session's new tokens)")
    parser.add_argument("--reasoning-tokens", type=int, default=30)
    parser.add_argument("--delay-ms", type=float, default=20.0, help="decode time per token")
    parser.add_argument("--json", action="store_true", help="one JSON object per arm")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measured = [run_arm(arm, args, Path(tmp)) for arm in ARMS]
    # A first turn finds in the cache only what every session shares (system prompt, tools):
    # the most any first turn found, in any arm, is that shared prefix.
    shared = max(s[0].cached for sessions, _, _ in measured for s in sessions)
    rows = [summarize(arm, *m, shared) for arm, m in zip(ARMS, measured, strict=True)]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"{args.sessions} sessions x {args.turns} turns at once; prefill "
          f"{args.prefill_ms:g} ms per 1k uncached tokens; decode {args.delay_ms:g} ms/token; "
          f"prompt: ~{rows[0]['shared_prefix']} tokens shared by every session, "
          f"~{rows[0]['prompt_tokens_last_turn']:.0f} at the last turn")
    print("| arm | TTFT turn 1 p50 / p95 | TTFT turns 2+ p50 / p95 | prefix-cache hit rate "
          "(all tokens / session history) | output tok/s | wall |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['arm']} | {row['ttft_first_p50']:.2f} / {row['ttft_first_p95']:.2f} s "
              f"| {row['ttft_later_p50']:.2f} / {row['ttft_later_p95']:.2f} s "
              f"| {row['hit_rate_all']:.1%} / {row['hit_rate_history']:.1%} "
              f"| {row['output_tok_s']:.0f} | {row['wall_s']:.1f} s |")
    print()
    print("| turn | " + " | ".join(f"{row['arm']}: TTFT p50 / p95" for row in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for turn in range(args.turns):
        cells = [f"{row['ttft_by_turn'][turn][0]:.2f} / {row['ttft_by_turn'][turn][1]:.2f} s"
                 for row in rows]
        print(f"| {turn + 1} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
