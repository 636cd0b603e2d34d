"""Running Claude Code against a stack: the proxy check and a hermetic headless run.

``spark-stack claude`` and ``spark-stack demo`` share these: ask the proxy's ``/health`` (which
also asks every upstream), and run ``claude -p … --output-format json`` with a fresh ``HOME``
so that a user's own Claude Code login and settings never leak into the run.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import paths
from .claude_env import read_proxy_token
from .errors import NotHealthy, SparkStackError
from .launcher import proxy_base_url
from .stack import schema

HEALTH_TIMEOUT = 10.0
# What a headless run needs so that it talks only to the proxy (claude-code-wire.md).
HERMETIC_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_MAX_RETRIES": "1",
}


@dataclass(frozen=True)
class Health:
    """The proxy's answer to ``GET /health``; ``status`` is None when nothing answered."""

    status: int | None
    body: dict[str, Any]

    @property
    def answers(self) -> bool:
        return self.status is not None

    def unhealthy_upstreams(self) -> dict[str, str]:
        """Upstream name → why it is not healthy (empty when all are)."""
        report = self.body.get("upstreams")
        if not isinstance(report, dict):
            return {}
        bad: dict[str, str] = {}
        for name, result in report.items():
            if isinstance(result, dict) and not result.get("ok"):
                reason = result.get("error") or f"HTTP {result.get('status')}"
                bad[str(name)] = str(reason)
        return bad


def proxy_auth_headers(token: str | None) -> dict[str, str]:
    """How a client presents the proxy token."""
    return {"x-api-key": token} if token else {}


def proxy_health(base_url: str, token: str | None, timeout: float = HEALTH_TIMEOUT) -> Health:
    try:
        response = httpx.get(f"{base_url}/health", headers=proxy_auth_headers(token),
                             timeout=timeout)
    except httpx.HTTPError:
        return Health(None, {})
    try:
        body = response.json()
    except ValueError:
        body = {}
    return Health(response.status_code, body if isinstance(body, dict) else {})


def require_healthy(health: Health, base_url: str, *, up_hint: str = "spark-stack up") -> None:
    """Raise a one-line :class:`NotHealthy` unless the proxy and every upstream are healthy:
    which model, what is wrong and the command that brings it back."""
    if health.status == 200:
        return
    if health.status is None:
        raise NotHealthy(
            f"the proxy at {base_url} does not answer",
            fix=f"run `{up_hint}` (it starts the model and the proxy)",
        )
    if health.status == 401:
        raise NotHealthy(
            f"the proxy at {base_url} refused the stack's token",
            fix=f"run `{up_hint}` again so the proxy and the token file agree",
        )
    bad = health.unhealthy_upstreams()
    detail = "; ".join(f"model {name} is not serving ({why})" for name, why in sorted(bad.items()))
    raise NotHealthy(
        detail or f"the proxy's health check answered HTTP {health.status}",
        fix=f"run `{up_hint}` (it restarts the model); `spark-stack status` and "
        "`spark-stack logs` show why it stopped",
    )


def restart_proxy(stack: schema.Stack, *, up_hint: str = "spark-stack up") -> str | None:
    """Make sure the stack's proxy answers, restarting it from its last config; the token.

    The config is the one ``up`` handed the proxy, so a restart serves what ``up`` deployed.
    """
    from .proxy import daemon

    token = read_proxy_token(stack)
    base_url = proxy_base_url(stack)
    if proxy_health(base_url, token).answers:
        return token
    state = paths.proxy_state_dir(stack.name)
    config = daemon.read_config(state)
    if config is None:
        raise NotHealthy(
            f"the proxy of stack '{stack.name}' is not running and `up` never started it "
            f"(or its config {state / daemon.CONFIG_FILE} is unreadable)",
            fix=f"run `{up_hint}`",
        )
    daemon.start_background(config, state)
    return token


def hermetic_environment(
    base: Mapping[str, str], claude_env: Mapping[str, str], home: Path
) -> dict[str, str]:
    """``base`` plus the stack's Claude Code variables, the hermetic ones and a fresh ``HOME``."""
    env = {key: value for key, value in base.items() if not key.startswith("ANTHROPIC_")}
    env.update(claude_env)
    env.update(HERMETIC_ENV)
    env["HOME"] = str(home)
    return env


def prepare_home(home: Path) -> Path:
    """A ``HOME`` where Claude Code starts with no onboarding and no user settings."""
    (home / ".claude").mkdir(parents=True, exist_ok=True, mode=0o700)
    state = home / ".claude.json"
    if not state.exists():
        state.write_text(json.dumps({"hasCompletedOnboarding": True}), encoding="utf-8")
    return home


@dataclass(frozen=True)
class HeadlessResult:
    """One ``claude -p --output-format json`` run."""

    exit_code: int
    result: str
    is_error: bool
    num_turns: int | None
    stderr: str


def headless_args(prompt: str, *, max_turns: int = 3, tools: str = "Bash") -> list[str]:
    return [
        "-p", prompt, "--output-format", "json", "--max-turns", str(max_turns),
        "--allowedTools", tools,
    ]


def run_headless(
    command: list[str], env: Mapping[str, str], *, cwd: Path, timeout: float
) -> HeadlessResult:
    """Run a headless Claude Code command and read its JSON result."""
    try:
        done = subprocess.run(
            command, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise SparkStackError(
            f"Claude Code did not finish within {timeout:.0f} s",
            fix="see `spark-stack status`; the proxy log is in the stack's state directory",
        ) from None
    return parse_headless(done.returncode, done.stdout, done.stderr)


def parse_headless(exit_code: int, stdout: str, stderr: str) -> HeadlessResult:
    """Claude Code's ``--output-format json`` result (the last JSON line on stdout)."""
    data: dict[str, Any] = {}
    for line in reversed(stdout.strip().splitlines()):
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            data = parsed
            break
    result = data.get("result")
    text = result if isinstance(result, str) else (stderr.strip() or stdout.strip())
    turns = data.get("num_turns")
    return HeadlessResult(
        exit_code=exit_code,
        result=text,
        is_error=bool(data.get("is_error", exit_code != 0)),
        num_turns=turns if isinstance(turns, int) else None,
        stderr=stderr,
    )


def exec_claude(claude_bin: str, args: list[str], env: Mapping[str, str]) -> None:
    """Replace this process with Claude Code (never returns)."""
    os.execve(claude_bin, [claude_bin, *args], dict(env))
