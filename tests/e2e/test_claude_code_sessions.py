"""Claude Code sessions that last: the real pinned CLI through the launcher `up` writes and
through `spark-stack claude`, against a local simulator stack with a small window.

- the context contract: Claude Code believes the stack's window (not 1,000,000 for `qwen[1m]`);
- a stopped model: both entry points stop at once naming the model and `spark-stack up`, and
  the next run after `up` answers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import REPO_ROOT
from tests.helpers import CLAUDE_HERMETIC_ENV, free_port

WINDOW = 40000
CLAUDE_OWN_WINDOW = 200_000  # what the pinned Claude Code assumes for its own models
CLAUDE_TIMEOUT = 120
# What the test's own shell exports; everything about the stack comes from the launcher.
HERMETIC = CLAUDE_HERMETIC_ENV


@dataclass
class SimStack:
    stack_file: Path
    launcher: Path
    state: Path
    home: Path
    claude_bin: Path
    workdir: Path

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(REPO_ROOT),  # this checkout's spark_stack, whatever is installed
            "HOME": str(self.home),
            "SPARK_STACK_HOME": str(self.state),
            "SPARK_STACK_CLAUDE_BIN": str(self.claude_bin),
            **HERMETIC,
        }

    def spark_stack(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spark_stack", "-s", str(self.stack_file), *args],
            env=self.env(), cwd=self.workdir, capture_output=True, text=True,
            timeout=CLAUDE_TIMEOUT, stdin=subprocess.DEVNULL,
        )

    def launch(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/bash", str(self.launcher), *args], env=self.env(), cwd=self.workdir,
            capture_output=True, text=True, timeout=CLAUDE_TIMEOUT, stdin=subprocess.DEVNULL,
        )

    def simulator_pid(self) -> int:
        stack = yaml.safe_load(self.stack_file.read_text())["name"]
        pid_file = self.state / "stacks" / stack / "simulator" / "qwen.pid"
        return int(pid_file.read_text().split()[0])


@pytest.fixture
def sim_stack(tmp_path: Path, claude_bin: Path, claude_home: Path) -> Iterator[SimStack]:
    yield from _sim_stack(tmp_path, claude_bin, claude_home,
                          {"opus": "qwen", "sonnet": "qwen", "haiku": "qwen"})


def _sim_stack(tmp_path: Path, claude_bin: Path, claude_home: Path,
               aliases: dict[str, str] | None) -> Iterator[SimStack]:
    document: dict[str, Any] = {
        "name": "sessions",
        "models": [{"name": "qwen", "kind": "simulator", "served_name": "qwen3.6-35b-a3b",
                    "port": free_port(), "max_model_len": WINDOW}],
        "proxy": {"listen": f"127.0.0.1:{free_port()}"},
        "claude": {"launcher": str(tmp_path / "claude-sessions"),
                   **({"models": aliases} if aliases else {})},
    }
    stack_file = tmp_path / "stack.yaml"
    stack_file.write_text(yaml.safe_dump(document, sort_keys=False))
    workdir = tmp_path / "project"
    workdir.mkdir()
    stack = SimStack(stack_file, tmp_path / "claude-sessions", tmp_path / "state", claude_home,
                     claude_bin, workdir)
    up = stack.spark_stack("up")
    assert up.returncode == 0, up.stdout + up.stderr
    yield stack
    stack.spark_stack("down")


def result_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stdout + done.stderr
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return data


@pytest.fixture
def sim_stack_without_aliases(tmp_path: Path, claude_bin: Path,
                              claude_home: Path) -> Iterator[SimStack]:
    yield from _sim_stack(tmp_path, claude_bin, claude_home, None)


def test_without_aliases_claude_code_reports_its_own_window(
    sim_stack_without_aliases: SimStack,
) -> None:
    # README ("The context window"): without claude.models Claude Code sends its own claude-…
    # id, which it recognises, so it reports that model's window, not the stack's.
    usage = result_of(sim_stack_without_aliases.launch("-p", "hi", "--output-format", "json"))
    [(model, figures)] = usage["modelUsage"].items()
    assert model.startswith("claude-")
    assert figures["contextWindow"] == CLAUDE_OWN_WINDOW


def test_claude_code_believes_the_stacks_window(sim_stack: SimStack) -> None:
    for done in (sim_stack.launch("-p", "hi", "--output-format", "json"),
                 sim_stack.spark_stack("claude", "-p", "hi", "--output-format", "json")):
        usage = result_of(done)["modelUsage"]
        # Before the contract: {"qwen[1m]": {"contextWindow": 1000000, ...}}.
        assert list(usage) == ["qwen"]
        assert usage["qwen"]["contextWindow"] == WINDOW


def test_a_stopped_model_stops_both_entry_points_at_once(sim_stack: SimStack) -> None:
    os.kill(sim_stack.simulator_pid(), signal.SIGTERM)
    time.sleep(0.3)
    up_hint = f"spark-stack -s {sim_stack.stack_file} up"
    for run in (lambda: sim_stack.launch("-p", "hi"),
                lambda: sim_stack.spark_stack("claude", "-p", "hi")):
        started = time.monotonic()
        done = run()
        elapsed = time.monotonic() - started
        assert done.returncode != 0
        assert elapsed < 2.0, f"took {elapsed:.2f} s"
        assert "model qwen is not serving" in done.stderr
        assert up_hint in done.stderr

    up = sim_stack.spark_stack("up")
    assert up.returncode == 0, up.stdout + up.stderr
    answer = result_of(sim_stack.launch("-p", "What is 12*17?", "--output-format", "json"))
    assert "204" in answer["result"]


# Thirty commands with ~1,000-token outputs: with Claude Code's ~12,000-token prompt they
# overflow a 40,000-token window unless the session compacts on the way. (The window leaves
# 17,000 tokens before a compaction, so each compaction buys a few turns: much bigger outputs
# would make Claude Code stop as "thrashing".)
BIG = "python3 -c \"print('x' * 4000)\""
TASK = "run each: " + " | ".join([BIG] * 30)


def _sim_prefix_hits(stack: SimStack) -> int:
    port = yaml.safe_load(stack.stack_file.read_text())["models"][0]["port"]
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = re.search(r"^vllm:prefix_cache_hits_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    assert found, text[:2000]
    return int(float(found.group(1)))


def _proxy_log(stack: SimStack) -> Path:
    name = yaml.safe_load(stack.stack_file.read_text())["name"]
    return stack.state / "stacks" / name / "proxy.log"


def test_a_session_that_fills_the_window_compacts_and_finishes(sim_stack: SimStack) -> None:
    """Through the launcher Claude Code compacts before vLLM's limit: no request is refused,
    and every turn's upstream prompt extends the previous one (the prefix cache serves all of
    it but the last block; `cache_read_input_tokens` equals what the simulator reused).
    Without the launcher's variables (it believes 1,000,000 tokens) the same session runs into
    "prompt is too long" — Claude Code 2.1.332 then compacts after the fact and carries on, but
    only because the refused request was retried; the contract avoids the refusal."""
    log = _proxy_log(sim_stack)
    args = ["-p", TASK, "--output-format", "json", "--max-turns", "80",
            "--allowedTools", "Bash"]
    start = log.stat().st_size
    hits_before = _sim_prefix_hits(sim_stack)
    result = result_of(sim_stack.launch(*args))
    assert "All 30 commands ran. TASK DONE" in result["result"], result
    with_contract = log.read_text()[start:]
    sizes = [int(n) for n in re.findall(r" in=(\d+) ", with_contract)]
    drops = sum(1 for before, after in zip(sizes, sizes[1:], strict=False) if after < before)
    assert max(sizes) <= WINDOW and drops >= 2, sizes  # it compacted, more than once
    assert "status=400" not in with_contract, with_contract
    # vLLM reuses KV only for a byte-identical prefix: every turn must extend the one before
    # (all but the last block and the re-rendered generation prompt are served from the cache),
    # and a compacted session still reuses the system prompt and tools.
    turns = [(int(i), int(c)) for i, c in re.findall(r" in=(\d+) cached=(\d+) ", with_contract)]
    assert len(turns) >= 30
    for (before, _), (after, cached) in zip(turns, turns[1:], strict=False):
        if after > before:
            assert cached >= before - 32, (before, after, cached)
        else:  # the turn after a compaction
            assert cached >= 9000, (before, after, cached)
    # What the proxy reported as cache_read_input_tokens is what the simulator reused.
    assert sum(c for _, c in turns) == _sim_prefix_hits(sim_stack) - hits_before
    # The same session with only the proxy's address and models (no context variables).
    printed = sim_stack.spark_stack("claude", "--print-env")
    assert printed.returncode == 0, printed.stderr
    env = sim_stack.env()
    for line in printed.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if name.startswith("ANTHROPIC_"):
            env[name] = value.strip("'")
    start = log.stat().st_size
    plain = subprocess.run([str(sim_stack.claude_bin), *args], env=env, cwd=sim_stack.workdir,
                           capture_output=True, text=True, timeout=CLAUDE_TIMEOUT,
                           stdin=subprocess.DEVNULL)
    without = log.read_text()[start:]
    assert re.search(r"status=400 .*prompt is too long: \d+ tokens > 40000 maximum", without), \
        plain.stdout + plain.stderr
