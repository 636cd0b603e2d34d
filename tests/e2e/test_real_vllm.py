"""vLLM's real engine in the loop: `spark-stack up` deploys vLLM 0.32's own engine (CPU build) on
the stand-in GB10, serving a tiny Qwen3 model the tests make, with its answers scripted in its
weights (tests/realvllm). Everything spark-stack reads from vLLM is read here from the real one:
its readiness log, its failure lines, its wire format through the proxy (text, thinking from the
real qwen3 reasoning parser, tool calls from the real hermes parser, usage and prefix-cache
counts, error bodies), its /metrics (top), smoke and the soak, and the real Claude Code.

One stack is deployed for the module (a start costs ~1–2 min on 2 cores); the tests that replace
or break it come last, in file order. Run this tier alone with
``bash scripts/test.sh tests/e2e/test_real_vllm.py``.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import docker
import httpx
import pytest
import yaml

from spark_stack.claude_run import prepare_home
from spark_stack.spec import LABEL_STACK
from tests.helpers import CLAUDE_HERMETIC_ENV, claude_result, free_port, metric_total
from tests.realvllm import scripts
from tests.testhost import HostInfo, TestHostError
from tests.testhost.vllm_cpu import ENGINE_DIR, ENGINE_IMAGE, ensure_engine_image, make_model

pytestmark = pytest.mark.timeout(900)

MODEL_MOUNT = "/models/tiny-qwen3"
SERVED = "tiny-qwen3"
# The tiny model's own limit (max_position_embeddings). Claude Code's prompt is ~25K of its
# tokens: at 32768 Claude Code compacts after the first tool result (seen here with the real
# engine), as it should on any window that small.
MAX_MODEL_LEN = 65536
START_TIMEOUT = 600
HERMETIC = {**CLAUDE_HERMETIC_ENV, "CLAUDE_CODE_MAX_RETRIES": "1"}
BASH_TOOL = {
    "name": "Bash",
    "description": "Run a shell command.",
    "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                     "required": ["command"]},
}


@dataclass(frozen=True)
class Engine:
    image_id: str
    model_dir: Path


@pytest.fixture(scope="session")
def engine(testhost: HostInfo) -> Engine:
    """The engine image on the stand-in and the tiny model (both made once per machine)."""
    try:
        image_id = ensure_engine_image()
        model_dir = make_model(ENGINE_DIR / "models")
    except TestHostError as exc:
        pytest.fail(f"vLLM's CPU engine unavailable: {exc.message}"
                    + (f"\nfix: {exc.fix}" if exc.fix else ""), pytrace=False)
    return Engine(image_id, model_dir)


def _host_port() -> int:
    return random.randint(20000, 39999)


@dataclass
class RealStack:
    """A stack whose model is the real engine, driven through the real CLI (subprocesses)."""

    testhost: HostInfo
    engine: Engine
    root: Path
    name: str = field(default_factory=lambda: f"rv{uuid.uuid4().hex[:8]}")
    port: int = field(default_factory=_host_port)
    proxy_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.testhost.write_ssh_home(self.home)
        self.stack_file = self.root / f"{self.name}.yaml"
        self.launcher = self.root / "bin" / f"claude-{self.name}"
        self.state_home = self.root / "state"

    def model(self, **extra: Any) -> dict[str, Any]:
        model: dict[str, Any] = {
            "name": "tiny",
            "image": ENGINE_IMAGE,
            "model": MODEL_MOUNT,
            "served_name": SERVED,
            "gpus": "none",
            "port": self.port,
            "dtype": "bfloat16",
            "max_model_len": MAX_MODEL_LEN,
            "tool_call_parser": "hermes",
            "reasoning_parser": "qwen3",
            "readiness_timeout": START_TIMEOUT,
            "restart": "no",
            # vLLM's engine core needs more /dev/shm than docker's 64 MiB (as on a Spark).
            "ipc": "host",
            "cache": {"huggingface": None, "vllm": None, "flashinfer": None},
            "mounts": [{"source": str(self.engine.model_dir), "target": MODEL_MOUNT,
                        "read_only": True}],
        }
        model.update(extra)
        return model

    def write(self, **model: Any) -> None:
        document = {
            "name": self.name,
            "host": {"address": self.testhost.ssh_alias},
            "models": [self.model(**model)],
            "proxy": {"listen": f"127.0.0.1:{self.proxy_port}", "token": "auto"},
            "claude": {"launcher": str(self.launcher),
                       "models": {"opus": "tiny", "sonnet": "tiny", "haiku": "tiny"}},
        }
        self.stack_file.write_text(yaml.safe_dump(document, sort_keys=False))

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "HOME": str(self.home),
                "SPARK_STACK_HOME": str(self.state_home), "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": "1", "SPARK_STACK_OFFLINE": "1",
                **({"SPARK_STACK_CLAUDE_BIN": os.environ["SPARK_STACK_CLAUDE_BIN"]}
                   if "SPARK_STACK_CLAUDE_BIN" in os.environ else {})}

    def cli(self, *args: str, timeout: float = START_TIMEOUT + 120
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spark_stack", "-s", str(self.stack_file), *args],
            env=self.env(), capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL)

    def cli_json(self, *args: str) -> tuple[int, Any]:
        done = self.cli(*args, "--json")
        try:
            return done.returncode, json.loads(done.stdout)
        except ValueError:
            raise AssertionError(f"no JSON from {args}: {done.stdout}{done.stderr}") from None

    @property
    def engine_url(self) -> str:
        return f"http://{self.testhost.address}:{self.port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def secret(self, name: str) -> str:
        return (self.state_home / "stacks" / self.name / "secrets" / name).read_text().strip()

    def token(self) -> str:
        return self.secret("proxy-token")

    def engine_headers(self) -> dict[str, str]:
        """The engine's own API key (``api_key: auto``), for requests that skip the proxy."""
        return {"Authorization": f"Bearer {self.secret('vllm-api-key-tiny')}"}

    def proxy_log(self) -> list[str]:
        path = self.state_home / "stacks" / self.name / "proxy.log"
        return path.read_text().splitlines() if path.exists() else []

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.proxy_url, api_key=self.token(),
                                   max_retries=0, timeout=120)

    def engine_metric(self, name: str) -> float:
        return metric_total(httpx.get(f"{self.engine_url}/metrics", timeout=10).text, name)

    def remove_everything(self) -> None:
        self.cli("down", timeout=120)
        client = docker.DockerClient(base_url=self.testhost.local_docker_url, timeout=60)
        try:
            for container in client.containers.list(
                    all=True, filters={"label": f"{LABEL_STACK}={self.name}"}):
                container.remove(force=True)
        finally:
            client.close()


def _events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@dataclass
class Deployed:
    stack: RealStack
    up: subprocess.CompletedProcess[str]
    up_seconds: float


@pytest.fixture(scope="module")
def real(testhost: HostInfo, engine: Engine,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    stack = RealStack(testhost, engine, tmp_path_factory.mktemp("real-vllm"))
    stack.write()
    started = time.monotonic()
    up = stack.cli("up", "--json")
    elapsed = time.monotonic() - started
    try:
        assert up.returncode == 0, f"up failed ({elapsed:.0f} s):\n{up.stdout}\n{up.stderr}"
        yield Deployed(stack, up, elapsed)
    finally:
        stack.remove_everything()


# --- up, status, logs from the real engine ---------------------------------------------------


def test_up_follows_the_real_engines_startup_phases_and_status_is_healthy(
        real: Deployed) -> None:
    events = _events(real.up.stderr)
    phases = [e["phase"] for e in events if e.get("event") == "phase"]
    # The phases come from the real engine's own log lines (readiness.PHASE_LINES).
    for phase in ("loading weights", "warming up", "opening the API", "test completion",
                  "ready"):
        assert phase in phases, (phase, phases)
    assert phases[-1] == "ready"
    result = json.loads(real.up.stdout)
    assert result["ok"] is True
    code, report = real.stack.cli_json("status")
    assert code == 0, report
    [model] = report["models"]
    assert report["healthy"] is True
    assert model["state"] == "running" and model["health"] is True
    assert model["models_listed"] is True and model["served_name"] == SERVED
    assert model["drift"] is False


def test_logs_show_the_real_engines_lines(real: Deployed) -> None:
    done = real.stack.cli("logs", "tiny")
    assert done.returncode == 0, done.stderr
    for line in ("non-default args:", "Loading weights took", "Starting vLLM server on",
                 "Application startup complete."):
        assert line in done.stdout, line
    assert "vllm-0.32.0" in httpx.get(f"{real.stack.engine_url}/version").text or \
        httpx.get(f"{real.stack.engine_url}/version").json()["version"] == "0.32.0"


# --- the proxy in front of the real engine ---------------------------------------------------


def test_text_through_the_proxy(real: Deployed) -> None:
    with real.stack.client() as client:
        reply = client.messages.create(model="tiny", max_tokens=100,
                                       messages=[{"role": "user", "content": "hi [text]"}])
    assert [block.type for block in reply.content] == ["text"]
    assert reply.content[0].text == scripts.TEXT_ANSWER  # type: ignore[union-attr]
    assert reply.stop_reason == "end_turn"
    assert reply.usage.output_tokens > 0


def test_thinking_from_the_real_qwen3_parser_streamed_and_not(real: Deployed) -> None:
    request: dict[str, Any] = {
        "model": "tiny", "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "a sum [think]"}]}
    with real.stack.client() as client:
        reply = client.messages.create(**request)
        with client.messages.stream(**request) as stream:
            kinds = [event.type for event in stream]
            streamed = stream.get_final_message()
    for message in (reply, streamed):
        assert [block.type for block in message.content] == ["thinking", "text"]
        assert message.content[0].thinking == scripts.THINKING  # type: ignore[union-attr]
        assert message.content[1].text.strip() == scripts.THINK_ANSWER.strip()  # type: ignore[union-attr]
    assert "thinking" in kinds and "text" in kinds


def test_tool_call_from_the_real_hermes_parser_streamed_and_not(real: Deployed) -> None:
    request: dict[str, Any] = {"model": "tiny", "max_tokens": 512, "tools": [BASH_TOOL],
                               "messages": [{"role": "user", "content": "list it [tool]"}]}
    with real.stack.client() as client:
        reply = client.messages.create(**request)
        with client.messages.stream(**request) as stream:
            deltas = [e for e in stream if e.type == "input_json"]
            streamed = stream.get_final_message()
    for message in (reply, streamed):
        calls = [block for block in message.content if block.type == "tool_use"]
        assert len(calls) == 1, message.content
        assert calls[0].name == "Bash"
        assert calls[0].input == {"command": scripts.TOOL_COMMAND}
        assert message.stop_reason == "tool_use"
    # The arguments arrive as input_json deltas (vLLM sends fragments; under load one step
    # may carry several tokens, so their number varies).
    assert deltas and "".join(d.partial_json for d in deltas) == '{"command": "ls"}'


def test_markup_the_parser_missed_is_counted(real: Deployed) -> None:
    before = _proxy_metric(real.stack, "spark_proxy_leaked_tool_markup_total")
    with real.stack.client() as client:
        reply = client.messages.create(
            model="tiny", max_tokens=512, tools=[BASH_TOOL],  # type: ignore[list-item]
            messages=[{"role": "user", "content": "do it [leak]"}])
    text = "".join(b.text for b in reply.content if b.type == "text")
    assert "<function=Bash>" in text and reply.stop_reason == "end_turn"
    assert _proxy_metric(real.stack, "spark_proxy_leaked_tool_markup_total") == before + 1


def test_stop_sequences_and_max_tokens(real: Deployed) -> None:
    with real.stack.client() as client:
        stopped = client.messages.create(
            model="tiny", max_tokens=500, stop_sequences=["w10"],
            messages=[{"role": "user", "content": "count [long]"}])
        capped = client.messages.create(
            model="tiny", max_tokens=5, messages=[{"role": "user", "content": "count [long]"}])
        full = client.messages.create(
            model="tiny", max_tokens=500, messages=[{"role": "user", "content": "count [long]"}])
    text = stopped.content[0].text  # type: ignore[union-attr]
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "w10"
    assert text.rstrip().endswith("w09") and "w10" not in text
    assert capped.stop_reason == "max_tokens" and capped.usage.output_tokens == 5
    assert full.content[0].text == scripts.LONG_ANSWER  # type: ignore[union-attr]
    assert full.stop_reason == "end_turn" and full.usage.output_tokens > 30


def _claude_code_like_request(marker: str) -> dict[str, Any]:
    """A long prompt (Claude Code's own tools), so the prefix cache has blocks to serve."""
    from spark_stack.smoke.soak import claude_code_tools

    return {"model": "tiny", "max_tokens": 200, "tools": claude_code_tools(),
            "system": f"You are a test ({marker}).",
            "messages": [{"role": "user", "content": "hello [text]"}]}


def test_cache_reads_are_the_engines_prefix_cache_hits(real: Deployed) -> None:
    request = _claude_code_like_request(uuid.uuid4().hex)
    with real.stack.client() as client:
        first = client.messages.create(**request)
        hits_before = real.stack.engine_metric("vllm:prefix_cache_hits_total")
        second = client.messages.create(**request)
        hits_after = real.stack.engine_metric("vllm:prefix_cache_hits_total")
    assert first.usage.cache_read_input_tokens in (0, None)
    cached = second.usage.cache_read_input_tokens
    assert cached and cached > 1000, second.usage
    assert cached == hits_after - hits_before  # what the engine's own counter says it served
    prompt = second.usage.input_tokens + cached
    assert prompt == first.usage.input_tokens + (first.usage.cache_read_input_tokens or 0)


def test_count_tokens_equals_the_engines_prompt_count(real: Deployed) -> None:
    request = _claude_code_like_request("count")
    with real.stack.client() as client:
        counted = client.messages.count_tokens(
            model="tiny", tools=request["tools"], system=request["system"],
            messages=request["messages"])
        reply = client.messages.create(**request)
    engine_count = reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0)
    assert counted.input_tokens == engine_count


def test_a_prompt_over_the_context_is_the_400_claude_code_compacts_on(real: Deployed) -> None:
    words = " ".join(f"word{i}" for i in range(MAX_MODEL_LEN))  # far over 32K tokens
    with real.stack.client() as client, pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="tiny", max_tokens=100,
                               messages=[{"role": "user", "content": words + " [text]"}])
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert re.fullmatch(rf"prompt is too long: \d+ tokens > {MAX_MODEL_LEN} maximum",
                        body["error"]["message"]), body


def test_the_engines_own_4xx_bodies_are_mapped(real: Deployed) -> None:
    # The engine refuses an out-of-range sampling parameter with its own 400 body.
    direct = httpx.post(f"{real.stack.engine_url}/v1/chat/completions", json={
        "model": SERVED, "max_tokens": 10, "top_p": 7,
        "messages": [{"role": "user", "content": "x [text]"}]},
        headers=real.stack.engine_headers(), timeout=30)
    assert direct.status_code == 400, direct.text
    engine_message = direct.json()["error"]["message"]
    reply = httpx.post(f"{real.stack.proxy_url}/v1/messages", json={
        "model": "tiny", "max_tokens": 10, "top_p": 7,
        "messages": [{"role": "user", "content": "x [text]"}]},
        headers={"x-api-key": real.stack.token(), "anthropic-version": "2023-06-01"},
        timeout=30)
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert engine_message.split("\n")[0][:40] in body["error"]["message"], (engine_message, body)


def _proxy_metric(stack: RealStack, name: str) -> float:
    return metric_total(httpx.get(f"{stack.proxy_url}/metrics", timeout=10,
                                  headers={"x-api-key": stack.token()}).text, name)


# --- the simulator held to the engine --------------------------------------------------------


def test_the_simulator_answers_as_the_real_engine_does(real: Deployed, tmp_path: Path) -> None:
    """The same requests to the simulator and to the engine `up` deployed; every difference in
    what spark-stack reads (fields, event order, usage, finish reasons, errors, metrics) fails,
    except the ones tests/realvllm/conformance.py accepts with a reason."""
    from tests.realvllm.conformance import compare_all
    from tests.realvllm.run_conformance import common_flags, server, simulator_argv

    key = real.stack.secret("vllm-api-key-tiny")
    flags = common_flags("hermes", key)
    flags[flags.index("--served-model-name") + 1] = SERVED
    flags[flags.index("--max-model-len") + 1] = str(MAX_MODEL_LEN)
    port = free_port()
    with server(simulator_argv(real.stack.engine.model_dir, port, flags), dict(os.environ),
                tmp_path / "simulator.log", port, 30.0) as sim_url:
        differences, accepted = compare_all(sim_url, real.stack.engine_url, SERVED,
                                            tool_parser="hermes", api_key=key)
    assert differences == [], "\n".join(str(d) for d in differences)
    assert len(accepted) <= 5, accepted


# --- top and smoke ---------------------------------------------------------------------------


def test_top_reads_the_real_metrics(real: Deployed) -> None:
    with real.stack.client() as client:
        client.messages.create(**_claude_code_like_request("top"))
        client.messages.create(**_claude_code_like_request("top"))
    code, snapshot = real.stack.cli_json("top", "--once")
    assert code == 0, snapshot
    [model] = snapshot["models"]
    assert model["state"] == "serving", model
    assert model["requests_running"] == 0 and model["requests_waiting"] == 0
    assert model["kv_cache_usage"] is not None and 0 <= model["kv_cache_usage"] <= 1
    totals = model["totals"]
    assert totals["requests"] and totals["requests"] >= 2
    assert totals["prompt_tokens"] > 1000 and totals["generation_tokens"] > 0
    assert totals["prefix_cache_hits"] > 0 and totals["prefix_cache_queries"] > 0
    assert model["prefix_cache_hit_rate"]["since_start"] > 0


def test_smoke_and_the_soak_pass_against_the_real_engine(real: Deployed) -> None:
    code, report = real.stack.cli_json("smoke")
    assert code == 0, report
    code, report = real.stack.cli_json("smoke", "--soak", "5")
    assert code == 0, report
    assert any(check["name"] == "tool_soak" and check["status"] == "passed"
               for check in report["checks"]), report


# --- the real Claude Code through the launcher -----------------------------------------------


def _claude(stack: RealStack, claude_bin: Path, args: list[str], cwd: Path,
            home: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {**stack.env(), **HERMETIC, "HOME": str(home), "SPARK_STACK_CLAUDE_BIN": str(claude_bin)}
    done = subprocess.run([str(stack.launcher), *args, "--output-format", "json"], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    return done, claude_result(done.stdout)


def _claude_home(root: Path) -> Path:
    return prepare_home(root / f"claude-home-{uuid.uuid4().hex[:8]}")


def test_claude_code_runs_a_tool_from_the_real_parser(real: Deployed, claude_bin: Path,
                                                      tmp_path: Path) -> None:
    from spark_stack.smoke.checks import TOOL_PROMPT

    home = _claude_home(tmp_path)
    done, result = _claude(real.stack, claude_bin,
                           ["-p", TOOL_PROMPT, "--max-turns", "3", "--allowedTools", "Bash"],
                           tmp_path, home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert result["is_error"] is False, result
    assert result["num_turns"] == 2, result
    assert result["result"] == scripts.SMOKE_FINAL_ANSWER


def test_a_ten_turn_claude_code_session_reads_the_real_prefix_cache(
        real: Deployed, claude_bin: Path, tmp_path: Path) -> None:
    home = _claude_home(tmp_path)
    reported = []
    for turn in range(10):
        args = ["-p", f"turn {turn} [text]", "--max-turns", "1"]
        if turn:
            args.append("--continue")
        hits_before = real.stack.engine_metric("vllm:prefix_cache_hits_total")
        logged_before = len(real.stack.proxy_log())
        done, result = _claude(real.stack, claude_bin, args, tmp_path, home)
        hits = real.stack.engine_metric("vllm:prefix_cache_hits_total") - hits_before
        assert done.returncode == 0 and result.get("is_error") is False, (turn, done.stdout,
                                                                          done.stderr)
        assert result["result"] == scripts.TEXT_ANSWER, result
        lines = [line for line in real.stack.proxy_log()[logged_before:]
                 if "/v1/messages " in line and "status=200" in line]
        cached = [int(m.group(1)) for line in lines
                  if (m := re.search(r" cached=(\d+) ", line))]
        # Every token the proxy reported as a cache read, the engine's own counter served.
        assert sum(cached) == hits, (turn, lines, hits)
        # Claude Code's own figure is one of those requests' (the turn's main request).
        reported.append(result["usage"]["cache_read_input_tokens"])
        assert reported[-1] in cached or reported[-1] == sum(cached), (turn, result, lines)
    assert all(read > 1000 for read in reported[1:]), reported


# --- replace, rollback and failures diagnosed from the real engine's lines --------------------


def test_a_changed_setting_replaces_the_real_engine(real: Deployed) -> None:
    real.stack.write(max_model_len=40960)
    code, result = real.stack.cli_json("up")
    assert code == 0, result
    [action] = [a for a in result["actions"] if a["model"] == "tiny"]
    assert action["action"] == "replace" and action["changed"] == ["max_model_len"]
    code, report = real.stack.cli_json("status")
    assert code == 0 and report["models"][0]["drift"] is False, report


def test_a_replace_the_engine_refuses_rolls_back(real: Deployed) -> None:
    # A flag spark-stack's newest flag set knows but vLLM 0.32's parser does not.
    real.stack.write(max_model_len=40960, extra_args=[_flag_newer_than_032()])
    done = real.stack.cli("up")
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "unrecognized arguments" in text or "not in this vLLM" in text, text
    assert "rolled back" in text or "rollback" in text, text
    real.stack.write(max_model_len=40960)
    code, report = real.stack.cli_json("status")
    assert code == 0 and report["healthy"] is True, report



def test_down_removes_the_engine_and_status_says_so(real: Deployed) -> None:
    done = real.stack.cli("down")
    assert done.returncode == 0, done.stdout + done.stderr
    client = docker.DockerClient(base_url=real.stack.testhost.local_docker_url, timeout=60)
    try:
        left = client.containers.list(all=True,
                                      filters={"label": f"{LABEL_STACK}={real.stack.name}"})
    finally:
        client.close()
    assert left == []
    code, report = real.stack.cli_json("status")
    assert code != 0 and report["healthy"] is False, report
    assert report["models"][0]["state"] == "missing", report
    assert report["proxy"]["running"] is False, report


def _flag_newer_than_032() -> str:
    """A switch spark-stack's newest flag set (0.33) knows and vLLM 0.32's parser does not,
    and that no stack field renders (validate refuses those in extra_args)."""
    from spark_stack.stack.argv import FIELD_FLAGS
    from spark_stack.vllm.flags import load_flag_set
    from tests.realvllm.engine_argv import real_flags

    newest = load_flag_set("0.33.0")
    missing = sorted(set(newest.flags) - set(real_flags()))
    assert missing, "vLLM 0.33's flag set adds nothing over 0.32's real parser"
    fields = {flag.removeprefix("--").removeprefix("enable-") for flag in FIELD_FLAGS}
    return next(flag for flag in missing
                if flag.removeprefix("--").removeprefix("disable-") not in fields
                and "prefix-caching" not in flag and "prompt-tokens-details" not in flag)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        pytest.param("unknown_flag", r"unrecognized arguments", id="unknown-flag"),
        pytest.param("max_model_len", r"max_model_len .*(?:larger|greater)|max_model_len",
                     id="max-model-len-over-the-model"),
        pytest.param("missing_model", r"model", id="model-path-missing"),
    ],
)
def test_a_failed_start_is_diagnosed_from_the_real_engines_lines(
        testhost: HostInfo, engine: Engine, tmp_path: Path, setting: str,
        expected: str) -> None:
    stack = RealStack(testhost, engine, tmp_path)
    if setting == "unknown_flag":
        stack.write(extra_args=[_flag_newer_than_032()])
    elif setting == "max_model_len":
        stack.write(max_model_len=131072)
    else:
        stack.write(model="/models/not-there")
    try:
        done = stack.cli("up", "--no-proxy")
        text = done.stdout + done.stderr
        assert done.returncode != 0, text
        assert re.search(expected, text, re.IGNORECASE), text
        assert "fix:" in text.lower() or "fix" in text.lower(), text
    finally:
        stack.remove_everything()


def test_a_host_port_in_use_is_named_with_the_fix(testhost: HostInfo, engine: Engine,
                                                  tmp_path: Path) -> None:
    """Something else listens on the model's port on the host: refused before the engine is
    started, with the port and the fix (not a container that dies with an exit code)."""
    stack = RealStack(testhost, engine, tmp_path)
    stack.write()
    holder = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{testhost.netns}", sys.executable, "-c",
         "import socket, time; s = socket.socket(); "
         f"s.bind(('0.0.0.0', {stack.port})); s.listen(); time.sleep(600)"])
    try:
        time.sleep(1.0)
        done = stack.cli("up", "--no-proxy")
        text = done.stdout + done.stderr
        assert done.returncode != 0, text
        assert str(stack.port) in text and re.search(r"in use|already allocated", text), text
        assert "fix" in text.lower(), text
    finally:
        holder.kill()
        stack.remove_everything()


# --- every preset's argv against vLLM 0.32's real parser --------------------------------------

# Values the real parser accepts but this CPU build could not run (no CUDA kernels): listed,
# not hidden. What the presets ask for on a GB10, and why it cannot start here.
CPU_BUILD_CANNOT_RUN = {
    "--attention-backend flashinfer": "FlashInfer is a CUDA kernel library",
    "--moe-backend marlin": "marlin MoE kernels are CUDA-only",
    "--kv-cache-dtype fp8": "the CPU attention kernels have no fp8 KV cache",
    "--load-format fastsafetensors": "fastsafetensors loads straight to GPU memory",
    "--speculative-config": "MTP needs the checkpoint's draft head (and CUDA kernels)",
}


def test_every_presets_argv_is_accepted_by_the_real_parser() -> None:
    from spark_stack.stack.argv import vllm_argv
    from spark_stack.stack.loader import load_stack_text
    from spark_stack.stack.presets import available
    from spark_stack.stack.schema import ContainerModel
    from tests.realvllm.engine_argv import parse_argvs

    rendered: dict[str, list[str]] = {}
    for preset in sorted(name for name, f in available().items() if f.origin == "built-in"):
        text = ("name: t\nhost: {address: gb10}\nmodels:\n  - name: m\n"
                f"    preset: {preset}\n    model: Qwen/Qwen3-8B\n")
        model = load_stack_text(text, filename="s.yaml").stack.models[0]
        assert isinstance(model, ContainerModel)
        rendered[preset] = vllm_argv(model)
    _, results = parse_argvs(list(rendered.values()))
    refused = {preset: result["error"] for preset, result in zip(rendered, results, strict=True)
               if not result["ok"]}
    assert refused == {}, refused
    # The CPU-only list names only values some preset really renders.
    joined = [" ".join(argv) for argv in rendered.values()]
    for value in CPU_BUILD_CANNOT_RUN:
        assert any(value in argv for argv in joined), value


def test_the_parser_refuses_what_it_should_with_argparses_words() -> None:
    from tests.realvllm.engine_argv import parse_argvs

    _, results = parse_argvs([["m", "--no-such-flag"], ["m", "--max-model-len", "lots"]])
    assert results[0] == {"ok": False,
                          "error": "vllm serve: error: unrecognized arguments: --no-such-flag"}
    assert results[1]["ok"] is False and "--max-model-len" in str(results[1]["error"])
