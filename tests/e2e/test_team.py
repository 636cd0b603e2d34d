"""A team on one Spark, as its people meet it: `spark-stack up` of a simulator stack (the real
simulator and the real background proxy), keys made with the CLI, requests over HTTP, usage
read back with `spark-stack usage` and compared with the engine's own counters."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import free_port


@dataclass
class Stack:
    file: Path
    env: dict[str, str]
    url: str
    sim_url: str
    state: Path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "spark_stack", "-s", str(self.file), *args],
                              env=self.env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    @property
    def owner_token(self) -> str:
        return (self.state / "secrets" / "proxy-token").read_text().strip()

    def proxy_pid(self) -> int:
        return int((self.state / "proxy.pid").read_text().split()[0])


def stack_file(tmp_path: Path, name: str, *, max_num_seqs: int = 2,
               limits: dict[str, object] | None = None) -> tuple[Path, int, int]:
    proxy_port, sim_port = free_port(), free_port()
    document = {
        "name": name,
        "models": [{"name": "sim", "kind": "simulator", "port": sim_port,
                    "served_name": "qwen-sim", "max_num_seqs": max_num_seqs,
                    "startup_seconds": 0}],
        "proxy": {"listen": f"127.0.0.1:{proxy_port}", "token": "auto",
                  "routes": {"claude-*": "sim"}, "limits": limits or {}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path, proxy_port, sim_port


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Stack]:
    yield from _up(tmp_path, f"team{os.getpid()}")


def _up(tmp_path: Path, name: str, **options: object) -> Iterator[Stack]:
    path, proxy_port, sim_port = stack_file(tmp_path, name, **options)  # type: ignore[arg-type]
    home = tmp_path / "state"
    env = {**os.environ, "SPARK_STACK_HOME": str(home), "HOME": str(tmp_path)}
    stack = Stack(path, env, f"http://127.0.0.1:{proxy_port}", f"http://127.0.0.1:{sim_port}",
                  home / "stacks" / name)
    stack.cli("up")
    try:
        yield stack
    finally:
        stack.cli("down", check=False)


def ask(url: str, key: str, text: str = "hello", *, stream: bool = False,
        tools: bool = False, timeout: float = 30) -> httpx.Response:
    body: dict[str, object] = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": stream,
                               "messages": [{"role": "user", "content": text}]}
    if tools:
        body["tools"] = [{"name": "Bash", "description": "run a command",
                          "input_schema": {"type": "object",
                                           "properties": {"command": {"type": "string"}}}}]
    return httpx.post(f"{url}/v1/messages", json=body, headers={"x-api-key": key},
                      timeout=timeout)


def accepted(url: str, key: str, within: float = 2.0) -> None:
    """Wait until the running proxy has read a new key (it re-reads keys.json every 250 ms):
    `keys add` returns as soon as the file is written."""
    deadline = time.monotonic() + within
    while httpx.get(f"{url}/v1/models", headers={"x-api-key": key}, timeout=5).status_code == 401:
        assert time.monotonic() < deadline, f"the proxy did not accept the new key in {within} s"
        time.sleep(0.05)


def script(**plan: object) -> str:
    return "SIM_SCRIPT: " + json.dumps(plan)


def usage_json(stack: Stack, *args: str) -> dict[str, object]:
    return json.loads(stack.cli("usage", "--json", *args).stdout)


def by_name(report: dict[str, object]) -> dict[str, dict[str, object]]:
    return {row["name"]: row for row in report["rows"]}  # type: ignore[index,union-attr]


def test_keys_through_the_cli_against_a_running_proxy(team: Stack) -> None:
    added = json.loads(team.cli("keys", "add", "ann", "--json").stdout)
    assert added["name"] == "ann" and added["key"].startswith("sk-spark-")
    ann = added["key"]
    text = team.cli("keys", "add", "bob").stdout
    bob = next(line.split()[-1] for line in text.splitlines() if "sk-spark-" in line)
    assert "export ANTHROPIC_BASE_URL=" + team.url in text
    assert f"export ANTHROPIC_AUTH_TOKEN={bob}" in text
    status = json.loads(team.cli("status", "--json").stdout)
    assert status["proxy"]["keys"] == 2 and status["proxy"]["keys_error"] is None
    assert "· 2 team keys" in team.cli("status").stdout
    keys_json = (team.state / "keys.json").read_text()
    assert ann not in keys_json and bob not in keys_json  # hashes only
    assert oct((team.state / "keys.json").stat().st_mode & 0o777) == "0o600"

    deadline = time.monotonic() + 2
    while ask(team.url, ann).status_code != 200:  # the proxy reads the key file within 250 ms
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert ask(team.url, bob).status_code == 200
    assert ask(team.url, team.owner_token).status_code == 200  # the launcher's token: the owner
    wrong = ask(team.url, "sk-spark-wrong")
    assert wrong.status_code == 401
    assert wrong.json()["type"] == "error"
    assert wrong.json()["error"]["type"] == "authentication_error"

    listed = json.loads(team.cli("keys", "list", "--json").stdout)
    assert [row["name"] for row in listed] == ["ann", "bob"]
    assert ann not in json.dumps(listed)

    team.cli("keys", "revoke", "ann")
    revoked_at = time.monotonic()
    while ask(team.url, ann).status_code != 401:
        time.sleep(0.02)
    assert time.monotonic() - revoked_at < 1.0

    rotated = json.loads(team.cli("keys", "rotate", "bob", "--json").stdout)["key"]
    rotated_at = time.monotonic()
    while ask(team.url, bob).status_code != 401:
        time.sleep(0.02)
    assert time.monotonic() - rotated_at < 1.0
    assert ask(team.url, rotated).status_code == 200

    time.sleep(1.0)  # one flush of the usage writer
    usage = by_name(usage_json(team))
    assert usage["ann"]["requests"] >= 1 and usage["bob"]["requests"] >= 2
    assert usage["owner"]["requests"] == 1
    relisted = {row["name"]: row for row in json.loads(team.cli("keys", "list", "--json").stdout)}
    assert relisted["bob"]["last_used"] is not None  # from the usage database
    log = (team.state / "proxy.log").read_text()
    assert "key=ann" in log and "key=bob" in log and ann not in log and bob not in log
    metrics = httpx.get(f"{team.url}/metrics", headers={"x-api-key": team.owner_token}).text
    assert 'spark_proxy_key_requests_total{key="bob"}' in metrics


def test_bad_input_is_refused_with_the_fix(team: Stack) -> None:
    bad = team.cli("keys", "add", "Ann Smith", check=False)
    assert bad.returncode == 2 and "not a valid key name" in bad.stderr
    unknown = team.cli("keys", "revoke", "nobody", check=False)
    assert unknown.returncode == 2 and "no key named 'nobody'" in unknown.stderr
    team.cli("keys", "add", "ann")
    (team.state / "keys.json").chmod(0o644)
    loose = team.cli("keys", "list", check=False)
    assert loose.returncode == 1 and f"chmod 600 {team.state / 'keys.json'}" in loose.stderr


def test_usage_on_a_stack_that_never_ran_says_so(tmp_path: Path) -> None:
    path, _, _ = stack_file(tmp_path, "never")
    env = {**os.environ, "SPARK_STACK_HOME": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-m", "spark_stack", "-s", str(path), "usage"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "no usage recorded for stack 'never' yet: its proxy has never run" in done.stderr


def test_limits_give_429_with_retry_after(team: Stack) -> None:
    one = json.loads(team.cli("keys", "add", "one", "--max-concurrent", "1", "--json").stdout)
    few = json.loads(team.cli("keys", "add", "few", "--tokens-per-minute", "20",
                              "--json").stdout)
    time.sleep(0.5)
    slow = script(content="x" * 80, delay_ms=20, chunk_chars=4)  # ~0.4 s
    holder = threading.Thread(target=ask, args=(team.url, one["key"], slow))
    holder.start()
    time.sleep(0.15)
    refused = ask(team.url, one["key"])
    holder.join()
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert ask(team.url, one["key"]).status_code == 200

    assert ask(team.url, few["key"], script(content="y" * 200)).status_code == 200
    over = ask(team.url, few["key"])
    assert over.status_code == 429
    assert 1 <= int(over.headers["retry-after"]) <= 60


def engine_counts(stack: Stack) -> tuple[float, float]:
    text = httpx.get(f"{stack.sim_url}/metrics").text
    values = {}
    for line in text.splitlines():
        for name in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total"):
            if line.startswith(name):
                values[name] = float(line.rsplit(" ", 1)[1])
    return values["vllm:prompt_tokens_total"], values["vllm:generation_tokens_total"]


def test_usage_adds_up_to_the_engines_counters(team: Stack) -> None:
    key = json.loads(team.cli("keys", "add", "mix", "--json").stdout)["key"]
    time.sleep(0.5)
    prompt_before, output_before = engine_counts(team)
    answers = [
        ask(team.url, key, "hello there"),
        ask(team.url, key, "a streamed answer please", stream=True),
        ask(team.url, key, "run: ls -la", tools=True),
        ask(team.url, key, "run: pwd", tools=True, stream=True),
        ask(team.url, key, script(http_status=400, error_message="bad request")),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 400]
    time.sleep(1.0)
    prompt_after, output_after = engine_counts(team)
    row = by_name(usage_json(team))["mix"]
    assert row["requests"] == 5 and row["errors"] == 1
    assert row["input_tokens"] == prompt_after - prompt_before
    assert row["output_tokens"] == output_after - output_before
    assert row["cached_input_tokens"] > 0  # the second tool request reused the first's prefix
    # A stream the engine cuts sends no usage: counted as a request and an error.
    assert ask(team.url, key, script(content="cut", die_after_chunks=1), stream=True).is_success
    time.sleep(1.0)
    row = by_name(usage_json(team))["mix"]
    assert row["requests"] == 6 and row["errors"] == 2
    csv_text = team.cli("usage", "--csv", "--by", "model").stdout
    assert csv_text.splitlines()[0].startswith("name,requests,input_tokens")


def test_sigkill_under_load_loses_at_most_the_last_second(team: Stack) -> None:
    key = json.loads(team.cli("keys", "add", "load", "--json").stdout)["key"]
    time.sleep(0.5)
    finished, stop, threads = load(team, key)
    time.sleep(3.0)
    killed_at = time.time()
    os.kill(team.proxy_pid(), signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join()
    stored = stored_requests(team, "load")
    before_last_second = sum(1 for t in finished if t < killed_at - 1.0)
    assert before_last_second > 50
    assert stored >= before_last_second, (stored, before_last_second, len(finished))
    assert stored < len(finished)  # the last moments were lost: what a crash costs


def test_a_corrupt_usage_database_is_logged_and_requests_still_served(tmp_path: Path) -> None:
    name = f"corrupt{os.getpid()}"
    state = tmp_path / "state" / "stacks" / name
    state.mkdir(parents=True)
    os.chmod(tmp_path / "state", 0o700)
    db = state / "usage.db"
    db.write_bytes(b"this is not a database" * 100)
    db.chmod(0o600)
    for stack in _up(tmp_path, name):
        for _ in range(5):
            assert ask(stack.url, stack.owner_token).status_code == 200
        time.sleep(1.0)
        assert "cannot write usage" in (stack.state / "proxy.log").read_text()
        assert (stack.state / "usage.incomplete").exists()
        report = stack.cli("usage", check=False)
        assert report.returncode == 1 and "cannot read the usage database" in report.stderr


def test_a_locked_usage_database_delays_writes_but_not_requests(team: Stack) -> None:
    key = json.loads(team.cli("keys", "add", "locked", "--json").stdout)["key"]
    accepted(team.url, key)
    assert ask(team.url, key).status_code == 200
    time.sleep(1.0)
    lock = sqlite3.connect(team.state / "usage.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        for _ in range(5):
            assert ask(team.url, key).status_code == 200
        assert time.monotonic() - started < 5
        time.sleep(1.0)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    time.sleep(1.0)
    assert by_name(usage_json(team))["locked"]["requests"] == 6
    assert "is locked" in (team.state / "proxy.log").read_text()


@pytest.fixture
def one_slot(tmp_path: Path) -> Iterator[Stack]:
    yield from _up(tmp_path, f"slot{os.getpid()}", max_num_seqs=1,
                   limits={"queue_ping_seconds": 0.2})


def gauge(stack: Stack, name: str) -> float:
    text = httpx.get(f"{stack.url}/metrics", headers={"x-api-key": stack.owner_token}).text
    line = next(line for line in text.splitlines() if line.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


def engine_successes(stack: Stack) -> float:
    engine = httpx.get(f"{stack.sim_url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in engine.splitlines()
               if line.startswith("vllm:request_success_total"))


def test_queued_streams_get_pings_and_a_client_that_leaves_is_dropped(one_slot: Stack) -> None:
    stack = one_slot
    owner = stack.owner_token
    before = engine_successes(stack)
    slow = script(content="z" * 320, delay_ms=25, chunk_chars=4)  # ~2 s in the one slot
    holder = threading.Thread(target=ask, args=(stack.url, owner, slow))
    holder.start()
    time.sleep(0.1)
    assert gauge(stack, "spark_proxy_upstream_in_flight") == 1

    # A client that gives up while queued leaves the queue and never reaches the engine.
    body = {"model": "claude-x", "max_tokens": 16, "stream": True,
            "messages": [{"role": "user", "content": "leaving"}]}
    with httpx.stream("POST", f"{stack.url}/v1/messages", json=body,
                      headers={"x-api-key": owner}, timeout=10) as leaving:
        assert leaving.status_code == 200
        first = next(leaving.iter_raw())
        assert b"message_start" in first  # the queued stream started with a ping
    time.sleep(0.1)
    assert gauge(stack, "spark_proxy_upstream_queued") == 0

    events: list[tuple[float, str]] = []
    started = time.monotonic()
    body["messages"] = [{"role": "user", "content": "waiting"}]
    with httpx.stream("POST", f"{stack.url}/v1/messages", json=body,
                      headers={"x-api-key": owner}, timeout=10) as waiting:
        for line in waiting.iter_lines():
            if line.startswith("event: "):
                events.append((time.monotonic() - started, line[7:]))
    holder.join()
    kinds = [kind for _, kind in events]
    assert kinds[:2] == ["message_start", "ping"]
    first_content = kinds.index("content_block_start")
    assert kinds[2:first_content].count("ping") >= 1  # pinged again while it waited
    assert kinds[-1] == "message_stop"
    assert gauge(stack, "spark_proxy_upstream_in_flight") == 0
    success = engine_successes(stack)
    assert success - before == 2  # the slow one and "waiting"; "leaving" never ran
    time.sleep(1.0)
    database = sqlite3.connect(stack.state / "usage.db")
    left = database.execute("SELECT input_tokens, output_tokens, wait_s FROM requests "
                            "WHERE status = 499").fetchall()
    database.close()
    assert len(left) == 1 and left[0][:2] == (0, 0) and left[0][2] > 0.1  # waited, ran not


def load(stack: Stack, key: str, clients: int = 4) -> tuple[list[float], threading.Event,
                                                          list[threading.Thread]]:
    """``clients`` threads sending requests back to back until the event is set; the times
    their answers (200) arrived."""
    finished: list[float] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                try:
                    answer = http.post(f"{stack.url}/v1/messages", headers={"x-api-key": key},
                                       json={"model": "claude-x", "max_tokens": 16,
                                             "messages": [{"role": "user", "content": "hi"}]})
                except httpx.HTTPError:
                    return
                if answer.status_code == 200:
                    finished.append(time.time())

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return finished, stop, threads


def stored_requests(stack: Stack, key: str) -> int:
    database = sqlite3.connect(stack.state / "usage.db")
    try:
        return int(database.execute("SELECT count(*) FROM requests WHERE key = ?",
                                    (key,)).fetchone()[0])
    finally:
        database.close()


def test_a_clean_stop_under_load_loses_no_usage(team: Stack) -> None:
    key = json.loads(team.cli("keys", "add", "clean", "--json").stdout)["key"]
    time.sleep(0.5)
    finished, stop, threads = load(team, key)
    time.sleep(2.0)
    pid = team.proxy_pid()
    os.kill(pid, signal.SIGTERM)  # rows of the last half second are still in its memory
    deadline = time.monotonic() + 15
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join()
    assert len(finished) > 50
    assert stored_requests(team, "clean") >= len(finished)


def test_a_teammates_claude_code_with_the_two_printed_lines(
        team: Stack, claude_bin: Path, claude_home: Path) -> None:
    printed = team.cli("keys", "add", "ann").stdout
    exports = dict(line.strip()[len("export "):].split("=", 1) for line in printed.splitlines()
                   if line.strip().startswith("export "))
    assert set(exports) == {"ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"}
    env = {"PATH": os.environ["PATH"], "HOME": str(claude_home), **exports,
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
           "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1",
           "CLAUDE_CODE_MAX_RETRIES": "0"}
    time.sleep(0.5)
    args = [str(claude_bin), "-p", "What is 12*17?", "--output-format", "json",
            "--max-turns", "2"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180,
                          cwd=claude_home, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["result"] == "204"
    time.sleep(1.0)
    assert by_name(usage_json(team))["ann"]["requests"] >= 1
    assert "key=ann" in (team.state / "proxy.log").read_text()

    team.cli("keys", "revoke", "ann")
    time.sleep(0.5)
    refused = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180,
                             cwd=claude_home, stdin=subprocess.DEVNULL)
    answer = json.loads(refused.stdout)
    # Claude Code's words for Anthropic's 401 authentication_error.
    assert answer["is_error"] and answer["result"] == "Not logged in · Please run /login"
    assert "status=401 ttft_ms=- wait_ms=0.0 dur_ms=" in (team.state / "proxy.log").read_text()
