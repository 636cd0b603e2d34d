"""One model as two replicas, a full copy on each stand-in Spark, through the real CLI (issue 22).

Each host runs the simulator image as its own vLLM; the proxy sends each session to one of
them (rendezvous hashing of ``X-Claude-Code-Session-Id``). Measured here: sessions stick to a
replica (the simulators' prefix-cache hits, against round robin straight to the replicas), a
replica's container killed under load costs no request, and a rolling update of
``max_model_len`` under load costs none either. Every test deploys its own stack name on its
own ports and removes what it made on both daemons.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from spark_stack.paths import proxy_state_dir
from spark_stack.proxy.dispatch import rendezvous
from tests.e2e.test_two_sparks import (  # noqa: F401  (fixtures)
    MODEL,
    PairDeployer,
    _containers,
    daemons,
    pair_image,
)
from tests.helpers import free_port, metric_total
from tests.testhost import HostPair

UPSTREAMS = ["qwen@a", "qwen@b"]
SESSIONS = 20
TURNS = 4
# A long system prompt per session: the prefix every turn shares (the reusable part).
SYSTEM_WORDS = 1500


class ReplicaDeployer(PairDeployer):
    """A two-host stack whose model has a replica on each host (no cluster section)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = f"r{uuid.uuid4().hex[:8]}"
        self.max_model_len = 40960

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hosts": self.hosts,
            "models": [{
                "name": "qwen",
                "image": self.image,
                "model": MODEL,
                "replicas": ["a", "b"],
                "gpus": "none",
                "port": self.port,
                "max_model_len": self.max_model_len,
                "api_key": "none",
                "readiness_timeout": 60,
                "restart": "no",
                "cache": {"huggingface": None, "vllm": None, "flashinfer": None},
                "env": {"VLLM_SIM_STARTUP_SECONDS": "0.5"},
            }],
            "proxy": {"listen": f"127.0.0.1:{self.proxy_port}"},
            "claude": {"launcher": str(self.launcher),
                       "models": {"opus": "qwen", "sonnet": "qwen", "haiku": "qwen"}},
        }

    def replica_url(self, key: str) -> str:
        host = self.pair.head if key == "a" else self.pair.worker
        return f"http://{host.address}:{self.port}"


@pytest.fixture
def replicas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host_pair: HostPair, fake_home: Path,
    daemons: dict[str, docker.DockerClient], pair_image: str,  # noqa: F811
) -> Iterator[ReplicaDeployer]:
    host_pair.write_ssh_home(fake_home)
    deployer = ReplicaDeployer(tmp_path, capsys, host_pair, pair_image)
    deployer.proxy_port = free_port()
    deployer.write()
    yield deployer
    deployer.run("down")
    for client in daemons.values():
        for container in _containers(client, deployer.name):
            container.remove(force=True)


def _system(session: str) -> str:
    rng = random.Random(session)
    return f"You are session {session}. " + " ".join(
        rng.choice(("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"))
        for _ in range(SYSTEM_WORDS))


def _messages(session: str, turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for turn in range(turns):
        if turn:
            messages.append({"role": "assistant", "content": f"answer {turn - 1}"})
        messages.append({"role": "user", "content": f"question {turn} of {session}"})
    return messages


def _turn(client: httpx.Client, proxy: str, session: str, turns: int) -> httpx.Response:
    return client.post(
        f"{proxy}/v1/messages",
        headers={"anthropic-version": "2023-06-01", "x-api-key": "spark-stack-local",
                 "x-claude-code-session-id": session},
        json={"model": "qwen", "max_tokens": 8, "system": _system(session),
              "messages": _messages(session, turns)},
        timeout=60)


def _prefix(url: str) -> tuple[float, float]:
    """A simulator's prefix-cache (queries, hits), in tokens."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return (metric_total(text, "vllm:prefix_cache_queries_total"),
            metric_total(text, "vllm:prefix_cache_hits_total"))


def _prefix_all(deployer: ReplicaDeployer) -> tuple[float, float]:
    both = [_prefix(deployer.replica_url(key)) for key in ("a", "b")]
    return sum(q for q, _ in both), sum(h for _, h in both)


def _served(proxy: str) -> dict[str, float]:
    text = httpx.get(f"{proxy}/metrics", headers={"x-api-key": "spark-stack-local"},
                     timeout=10).text
    return {name: metric_total(text, "spark_proxy_requests_total", upstream=name)
            for name in UPSTREAMS}


def _report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """A measured figure, printed past the capture (the CLI's output is parsed from it)."""
    with capsys.disabled():
        print(f"\n[replicas] {line}")


def _home(session: str) -> str:
    return rendezvous(b"s:" + session.encode(), UPSTREAMS)


@dataclass
class Load:
    """Clients sending turns of their sessions through the proxy until stopped."""

    proxy: str
    sessions: list[str]
    failures: list[str] = field(default_factory=list)
    # (session, sent at, answered at) of every successful request.
    done: list[tuple[str, float, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, session: str) -> None:
        with httpx.Client() as client:
            turns = 1
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    answer = _turn(client, self.proxy, session, turns)
                    if answer.status_code != 200:
                        self.failures.append(f"{session}: {answer.status_code} {answer.text}")
                    else:
                        self.done.append((session, sent, time.monotonic()))
                except httpx.HTTPError as exc:
                    self.failures.append(f"{session}: {exc!r}")
                turns = turns % 6 + 1

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self.run, args=(s,)) for s in self.sessions]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=90)


def test_sessions_stick_to_one_replica_and_a_killed_one_costs_no_request(
    replicas: ReplicaDeployer, host_pair: HostPair, daemons: dict[str, docker.DockerClient],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = replicas.run("up")
    assert code == 0, out + err
    assert f"starting spark-stack-{replicas.name}-qwen" in out
    for host in host_pair.hosts:
        [container] = _containers(daemons[host.ssh_alias], replicas.name)
        assert container.status == "running"
    proxy = f"http://127.0.0.1:{replicas.proxy_port}"
    code, report = replicas.run_json("status")
    assert code == 0, report
    assert [(m["host"], m["healthy"]) for m in report["models"]] == [("a", True), ("b", True)]
    code, out, err = replicas.run("logs", "qwen")
    assert code == 0, out + err
    assert out.index("==> qwen [a] <==") < out.index("==> qwen [b] <=="), out

    # 20 concurrent multi-turn sessions, each turn extending the last.
    sessions = [f"{replicas.name}-s{i}" for i in range(SESSIONS)]
    homes = {s: _home(s) for s in sessions}
    assert set(homes.values()) == set(UPSTREAMS)
    with httpx.Client() as client, ThreadPoolExecutor(SESSIONS) as pool:
        def first(session: str) -> int:
            return _turn(client, proxy, session, 1).status_code

        assert set(pool.map(first, sessions)) == {200}
        before_q, before_h = _prefix_all(replicas)
        for turns in range(2, TURNS + 1):
            assert set(pool.map(lambda s, t=turns: _turn(client, proxy, s, t).status_code,
                                sessions)) == {200}
        queries, hits = _prefix_all(replicas)
    sticky = (hits - before_h) / (queries - before_q)
    served = _served(proxy)
    expected = {u: float(TURNS * sum(1 for h in homes.values() if h == u)) for u in UPSTREAMS}
    assert served == expected, (served, expected)  # every turn on its session's replica

    # The same sessions' turns round robin straight to the replicas (no proxy): the baseline.
    robin = [f"{replicas.name}-rr{i}" for i in range(SESSIONS)]
    with httpx.Client() as client:
        def direct(session: str, turns: int, key: str) -> None:
            messages = [{"role": "system", "content": _system(session)},
                        *_messages(session, turns)]
            answer = client.post(f"{replicas.replica_url(key)}/v1/chat/completions",
                                 json={"model": MODEL, "max_tokens": 8, "messages": messages},
                                 timeout=60)
            assert answer.status_code == 200, answer.text

        for index, session in enumerate(robin):
            direct(session, 1, "ab"[index % 2])
        before_q, before_h = _prefix_all(replicas)
        for turns in range(2, TURNS + 1):
            for index, session in enumerate(robin):
                direct(session, turns, "ab"[(index + turns) % 2])
        queries, hits = _prefix_all(replicas)
    round_robin = (hits - before_h) / (queries - before_q)
    _report(capsys, f"prefix-cache hit rate after the first turn: session-sticky "
            f"{sticky:.3f}, round robin {round_robin:.3f}")
    assert sticky >= 0.95, sticky
    assert round_robin < 0.75, round_robin

    # Replica b's container killed under load: no failed request, its sessions on a at once.
    on_b = [s for s in sessions if homes[s] == "qwen@b"]
    [container_b] = _containers(daemons[host_pair.worker.ssh_alias], replicas.name)
    with Load(proxy, sessions[:8]) as load:
        time.sleep(1.5)
        killed = time.monotonic()
        container_b.kill()
        time.sleep(3)
    assert load.failures == [], load.failures[:5]
    after = [(s, sent, answered) for s, sent, answered in load.done
             if s in on_b and sent >= killed]
    assert after, "no request of b's sessions after the kill"
    moved = min(answered for _, _, answered in after) - killed
    _report(capsys, f"b's sessions answered by a {moved:.3f} s after the kill "
            f"({len(load.done)} requests, {len(load.failures)} failed)")
    assert moved < 1.0, moved
    code, report = replicas.run_json("status")
    assert code == 4
    assert [(m["host"], m["healthy"]) for m in report["models"]] == [("a", True), ("b", False)]
    # `smoke` checks each replica: the proxy serves b's sessions from a, but b's own endpoint
    # does not answer, and smoke says so.
    code, smoke = replicas.run_json("smoke")
    assert code == 4 and smoke["failed"] == ["qwen@b/direct_completion"], smoke

    # It comes back after `up`, and its sessions return to it.
    code, out, err = replicas.run("up")
    assert code == 0, out + err
    before = _served(proxy)
    deadline = time.monotonic() + 5
    with httpx.Client() as client:
        while _served(proxy)["qwen@b"] == before["qwen@b"]:
            assert time.monotonic() < deadline, "b's sessions never came back"
            assert _turn(client, proxy, on_b[0], 1).status_code == 200
            time.sleep(0.1)
    code, smoke = replicas.run_json("smoke")
    assert code == 0, smoke
    assert {c["replica"] for c in smoke["checks"]} == {"qwen@a", "qwen@b"}, smoke


def test_a_rolling_update_under_load_fails_no_request(
    replicas: ReplicaDeployer, host_pair: HostPair, daemons: dict[str, docker.DockerClient],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = replicas.run("up")
    assert code == 0, out + err
    proxy = f"http://127.0.0.1:{replicas.proxy_port}"
    ids = {h.ssh_alias: _containers(daemons[h.ssh_alias], replicas.name)[0].id
           for h in host_pair.hosts}
    replicas.max_model_len = 32768
    replicas.write()
    sessions = [f"{replicas.name}-s{i}" for i in range(8)]
    with Load(proxy, sessions) as load:
        time.sleep(1)
        started = time.monotonic()
        code, out, err = replicas.run("up")
        rolled = time.monotonic() - started
        time.sleep(1)
    assert code == 0, out + err
    _report(capsys, f"rolling update of 2 replicas: {rolled:.1f} s, {len(load.done)} "
            f"requests, {len(load.failures)} failed")
    assert load.failures == [], load.failures[:5]
    assert len(load.done) > 20
    # One after the other: a drained, replaced, serving; then b.
    steps = [m.group(0) for m in re.finditer(r"draining qwen@[ab]|starting \S+ \(\S+\) on \S+",
                                              out)]
    assert [s.split(" on ")[0] if s.startswith("starting") else s for s in steps] == [
        "draining qwen@a", f"starting spark-stack-{replicas.name}-qwen ({replicas.image})",
        "draining qwen@b", f"starting spark-stack-{replicas.name}-qwen ({replicas.image})"], out
    assert "the proxy took over the models' new settings (no restart)" in out, out
    # The proxy confirmed each drain and each replica was idle before it was replaced.
    assert "replacing it anyway" not in out, out
    # …so no request even needed the retry on the other replica.
    log = (proxy_state_dir(replicas.name) / "proxy.log").read_text()
    assert "retrying on another replica" not in log, log[-2000:]
    for host in host_pair.hosts:
        [container] = _containers(daemons[host.ssh_alias], replicas.name)
        assert container.id != ids[host.ssh_alias]
        assert "32768" in container.attrs["Args"], container.attrs["Args"]
    code, report = replicas.run_json("status")
    assert code == 0, report
    assert report["healthy"] is True
    assert [(m["host"], m["healthy"]) for m in report["models"]] == [("a", True), ("b", True)]
