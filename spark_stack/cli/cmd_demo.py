"""`spark-stack demo`: the whole product on this machine, no Spark needed.

Validates the built-in demo stack (the vLLM simulator and the proxy), brings it up, shows what
runs, sends one Anthropic Messages request through the proxy, then has the real Claude Code CLI
run a Bash tool round trip through the generated launcher. The stack keeps running afterwards
(``--down`` stops it); every step that fails makes the command exit non-zero.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import console, relpath, stack_path

if TYPE_CHECKING:
    import httpx
    from rich.console import Console

    from ..stack.loader import LoadedStack

DEMO_STACK = "demo"
PROXY_PROMPT = "What is 12*17?"
CLAUDE_PROMPT = "run: echo hello from Claude Code"
REQUEST_TIMEOUT = 30.0
CLAUDE_TIMEOUT = 120.0
STEPS = 5


def demo(
    stack: Annotated[
        str | None,
        typer.Option("--stack", "-s", metavar="PATH",
                     help="The stack to demonstrate (default: the global --stack or "
                     "SPARK_STACK, else the built-in demo).", show_default=False),
    ] = None,
    down: Annotated[
        bool, typer.Option("--down", help="Tear the demo stack down at the end.")
    ] = False,
) -> None:
    """Try spark-stack without a Spark: simulator, proxy, a request and real Claude Code."""
    from ..stack.loader import load_stack

    stack = stack_path(stack) or DEMO_STACK
    out = console()
    _step(out, 1, f"validate the stack ({stack})")
    loaded = load_stack(stack)
    out.print(f"  ok: {relpath(loaded.path)}", markup=False)
    try:
        launcher_path = _up(out, loaded, stack)
        _step(out, 3, "what runs")
        from ..deployment import resolve
        from ..render import plan_document
        from .cmd_plan import print_plan

        print_plan(plan_document(loaded, resolve(loaded.stack)), out)
        _step(out, 4, "a request through the proxy (Anthropic Messages wire format)")
        _ask_proxy(out, loaded)
        _step(out, 5, "Claude Code through the launcher")
        _run_claude(out, loaded, launcher_path)
    finally:
        if down:
            _down(out, loaded)
    _next_steps(out, loaded, stack, launcher_path, stopped=down)


def _step(out: Console, number: int, title: str) -> None:
    out.print(f"\n[bold][{number}/{STEPS}][/] [bold]{title}[/]", markup=True, highlight=False)


def _up(out: Console, loaded: LoadedStack, stack_arg: str) -> Path:
    from ..deploy.up import UpOptions, up
    from ..errors import SparkStackError
    from .progress import RichReporter

    _step(out, 2, f"spark-stack -s {stack_arg} up")
    result = up(loaded.stack, UpOptions(stack_file=stack_arg), RichReporter(out))
    if result.launcher is None:
        raise SparkStackError("`up` wrote no Claude Code launcher",
                              fix="run `spark-stack -s demo up` and read what it says")
    state = "up to date" if not result.changed else "ready"
    out.print(f"  [green]{state}[/] ({result.elapsed:.1f} s); proxy {result.proxy_url}",
              markup=True)
    return result.launcher


def _ask_proxy(out: Console, loaded: LoadedStack) -> None:
    import httpx

    from ..claude_env import read_proxy_token
    from ..claude_run import proxy_auth_headers
    from ..errors import NotHealthy
    from ..launcher import proxy_base_url

    stack = loaded.stack
    base_url = proxy_base_url(stack)
    model = stack.claude.models.get("sonnet") or stack.models[0].name
    body = {
        "model": model,
        "max_tokens": 512,
        "messages": [{"role": "user", "content": PROXY_PROMPT}],
    }
    headers = {"anthropic-version": "2023-06-01", **proxy_auth_headers(read_proxy_token(stack))}
    out.print(f"  POST {base_url}/v1/messages  model={model}  \"{PROXY_PROMPT}\"", markup=False)
    started = time.monotonic()
    try:
        response = httpx.post(
            f"{base_url}/v1/messages", json=body, headers=headers, timeout=REQUEST_TIMEOUT
        )
    except httpx.HTTPError as exc:
        raise NotHealthy(
            f"the proxy at {base_url} did not answer: {exc}",
            fix="see `spark-stack -s demo status` and `spark-stack -s demo logs`",
        ) from None
    elapsed = time.monotonic() - started
    message = _json_object(response)
    if response.status_code != 200:
        error = message.get("error")
        detail = error.get("message") if isinstance(error, dict) else response.text[:200]
        raise NotHealthy(
            f"the proxy answered HTTP {response.status_code}: {detail}",
            fix="see `spark-stack -s demo logs` and the proxy log in the stack's state dir",
        )
    blocks = message.get("content")
    texts = [
        str(block.get("text", ""))
        for block in (blocks if isinstance(blocks, list) else [])
        if isinstance(block, dict) and block.get("type") == "text"
    ]
    answer = "".join(texts).strip()
    if not answer:
        raise NotHealthy("the proxy's answer had no text", fix="see `spark-stack -s demo logs`")
    out.print(f"  answer: [bold]{_escape(answer)}[/]  [dim]({elapsed * 1000:.0f} ms, "
              f"stop_reason {message.get('stop_reason')})[/]", markup=True)


def _json_object(response: httpx.Response) -> dict[str, object]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _run_claude(out: Console, loaded: LoadedStack, launcher_path: Path) -> None:
    from ..claude_env import find_claude
    from ..claude_run import (
        headless_args,
        hermetic_environment,
        prepare_home,
        run_headless,
    )
    from ..errors import ClaudeNotInstalled, SparkStackError
    from ..launcher import CLAUDE_BIN_ENV, INSTALL_COMMAND
    from ..paths import stack_dir

    try:
        claude_bin = find_claude()
    except ClaudeNotInstalled:
        out.print("  Claude Code is not installed, so this step is skipped. Install it with:",
                  markup=False)
        out.print(f"    {INSTALL_COMMAND}", markup=False)
        out.print(f"  then run: {launcher_path.name} -p {shlex.quote(CLAUDE_PROMPT)} "
                  "--allowedTools Bash", markup=False)
        return
    workdir = stack_dir(loaded.stack.name) / "claude-demo"
    home = prepare_home(workdir / "home")
    env = hermetic_environment(os.environ, {CLAUDE_BIN_ENV: claude_bin}, home)
    args = headless_args(CLAUDE_PROMPT)
    shown = " ".join(shlex.quote(a) for a in [launcher_path.name, *args])
    out.print(f"  {shown}", markup=False)
    out.print(f"  [dim](Claude Code {claude_bin}; fresh HOME {home})[/]", markup=True)
    started = time.monotonic()
    result = run_headless(
        [str(launcher_path), *args], env, cwd=workdir, timeout=CLAUDE_TIMEOUT
    )
    elapsed = time.monotonic() - started
    if result.exit_code != 0 or result.is_error:
        raise SparkStackError(
            f"Claude Code failed (exit {result.exit_code}): {_one_line(result.result)}",
            fix=f"run {launcher_path} -p 'hi' yourself to see it; "
            "`spark-stack -s demo logs` shows the simulator",
        )
    out.print(f"  Claude Code answered: [bold]{_escape(result.result)}[/]  "
              f"[dim]({elapsed:.1f} s, {result.num_turns} turns)[/]", markup=True)


def _down(out: Console, loaded: LoadedStack) -> None:
    from ..deploy.down import down

    out.print("\n[bold]tearing the demo stack down[/]", markup=True)
    result = down(loaded.stack)
    stopped = [*result.stopped_local, *(["proxy"] if result.proxy_stopped else [])]
    out.print(f"  stopped: {', '.join(stopped) or 'nothing was running'}", markup=False)


def _next_steps(
    out: Console, loaded: LoadedStack, stack_arg: str, launcher_path: Path, *, stopped: bool
) -> None:
    flag = f"-s {shlex.quote(stack_arg)}"
    program = _program_name()
    out.print("\n[bold green]the demo works.[/]", markup=True)
    if stopped:
        out.print(f"  start it again: {program} demo   (or {program} {flag} up)",
                  markup=False)
        return
    on_path = shutil.which(launcher_path.name) == str(launcher_path)
    launcher = launcher_path.name if on_path else str(launcher_path)
    commands = [
        (f"{program} {flag} status", "what runs and whether it is healthy"),
        (f"{launcher} -p {shlex.quote(PROXY_PROMPT)}", "Claude Code on the demo stack"),
        (f"{program} {flag} claude", "the same, started through spark-stack"),
        (f"{program} {flag} down", "stop it"),
    ]
    width = max(len(command) for command, _ in commands)
    out.print("The demo stack keeps running. Next:", markup=False)
    for command, why in commands:
        out.print(f"  {command:<{width}}  # {why}", markup=False)
    if not on_path:
        out.print(f"  (add {launcher_path.parent} to PATH to type {launcher_path.name})",
                  markup=False)


def _program_name() -> str:
    """How the user can type spark-stack again: plain when on PATH, else the path they ran
    (the README's quickstart runs `.venv/bin/spark-stack`, which is not on PATH)."""
    found = shutil.which("spark-stack")
    invoked = Path(sys.argv[0])
    if invoked.name != "spark-stack" or (found and Path(found).resolve() == invoked.resolve()):
        return "spark-stack"
    try:
        return str(invoked.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(invoked)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
