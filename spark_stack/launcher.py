"""The Claude Code launcher script of a stack.

It exports the stack's Claude Code environment (:mod:`spark_stack.claude_context`, through the
resolved :class:`~spark_stack.deployment.Deployment`). The source document's
``apiBaseUrl``/``apiKey`` settings are not Claude Code settings.

Everything here is pure except :func:`write_launcher`, the one edge that writes the script.
The script never holds the proxy token: it reads the stack's 0600 token file when it runs, and
hands it on only through the environment or a pipe, never a command line (any local user can
read every process's argv in ``/proc/*/cmdline``).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from . import paths
from .claude_context import LauncherVar, picker_settings
from .claude_context import default_launcher_path as default_launcher_path
from .errors import LauncherPathTaken

if TYPE_CHECKING:  # annotations only: importing pydantic would slow `spark-stack --help`
    from .deployment import Deployment
    from .stack import schema

CLAUDE_BIN_ENV = "SPARK_STACK_CLAUDE_BIN"
INSTALL_COMMAND = "npm install -g @anthropic-ai/claude-code"
# Cleared before Claude Code starts: the stack's token is the only credential it sends.
UNSET_ENV = ("ANTHROPIC_API_KEY",)
TOKEN_FILE_NAME = "proxy-token"
# The header line that marks a launcher as spark-stack's own, to rewrite or remove.
WRITTEN_BY = "# Written by `spark-stack up`"
# Seconds the launcher waits for the proxy's answer before it gives up with a hint.
PROBE_TIMEOUT = 3


def proxy_base_url(stack: schema.Stack) -> str:
    """The URL Claude Code uses to reach the proxy (a wildcard bind is reached on loopback)."""
    from .proxy.config import listen_url

    return listen_url(stack.proxy.host, stack.proxy.port)


def token_file(stack_name: str) -> Path:
    """Where ``up`` keeps the proxy's resolved token for a stack (0600, under the state dir).

    The same file as the deploy engine's secret store entry ``proxy-token``.
    """
    return paths.stack_dir(stack_name) / "secrets" / TOKEN_FILE_NAME


def launcher_environment(stack: schema.Stack) -> tuple[LauncherVar, ...]:
    """The variables the launcher exports: the stack's resolved :class:`Deployment`'s."""
    from .deployment import resolve  # pydantic-backed: not on `spark-stack --help`'s path

    return resolve(stack).launcher_env


def claude_settings(deployment: Deployment) -> str:
    """The ``--settings`` JSON Claude Code starts with: its ``/model`` picker lists the
    models the stack's requests reach, by their names (:func:`.claude_context.picker_settings`)."""
    return json.dumps(picker_settings(deployment.model_picker), separators=(",", ":"))


def up_command(stack_file: str | None) -> str:
    """The command that brings this stack up, as the user would type it."""
    if not stack_file:
        return "spark-stack up"
    return f"spark-stack -s {shlex.quote(stack_file)} up"


def render_launcher(
    deployment: Deployment, *, token_path: Path, stack_file: str | None = None
) -> str:
    """The launcher script's text: exports, a proxy probe, then ``exec claude "$@"``."""
    name = f"claude-{deployment.stack}"
    q = shlex.quote
    base_url = deployment.proxy.url
    down = (
        f"the spark-stack proxy at {base_url} does not answer; "
        f"start the stack with: {up_command(stack_file)}"
    )
    tcp_open = f"exec 3<>/dev/tcp/{_probe_host(base_url)}/{deployment.proxy.port}"
    lines = [
        "#!/usr/bin/env bash",
        f"# {name}: Claude Code on spark-stack stack '{deployment.stack}'.",
        f"{WRITTEN_BY} and rewritten on every up: edit the stack file instead.",
        "set -euo pipefail",
        "# A user's own Anthropic key must not travel to the proxy (nor make Claude Code ask).",
        f"unset {' '.join(UNSET_ENV)}",
    ]
    for var in deployment.launcher_env:
        if var.secret:
            token_hint = f"{name}: no proxy token at {token_path}; run: {up_command(stack_file)}"
            lines += [
                f"token_file={q(str(token_path))}",
                'if [ ! -r "$token_file" ]; then',
                f"  echo {q(token_hint)} >&2",
                "  exit 1",
                "fi",
                f'{var.name}=$(cat "$token_file")',
                f"export {var.name}",
            ]
        else:
            lines.append(f"export {var.name}={q(var.value)}")
    up = up_command(stack_file)
    refused = f"the proxy at {base_url} refused the stack's token; run: {up}"
    lines += [
        "",
        "# Ask the proxy's /health first (it asks every model): a stopped stack or model gets one",
        "# clear line at once, not minutes of Claude Code's retries.",
        "stack_problem() {",
        "  if command -v python3 >/dev/null 2>&1; then",
        "    python3 - <<'PY'",
        "import json, os, sys, urllib.error, urllib.request",
        "token = os.environ['ANTHROPIC_AUTH_TOKEN']",
        "url = os.environ['ANTHROPIC_BASE_URL'] + '/health'",
        "request = urllib.request.Request(url, headers={'x-api-key': token})",
        "try:",
        f"    urllib.request.urlopen(request, timeout={PROBE_TIMEOUT})",
        "except urllib.error.HTTPError as error:",
        "    if error.code == 401:",
        f"        print({refused!r})",
        "        sys.exit()",
        "    try:",
        "        upstreams = json.load(error).get('upstreams') or {}",
        "    except (ValueError, AttributeError):",
        "        upstreams = {}",
        "    bad = [f\"model {name} is not serving ({r.get('error') or r.get('status')})\"",
        "           for name, r in upstreams.items() if isinstance(r, dict) and not r.get('ok')]",
        "    bad = bad or [f'the proxy answered HTTP {error.code}']",
        f"    print('; '.join(bad) + {'; start it with: ' + up!r})",
        "except OSError:",
        f"    print({down!r})",
        "PY",
        "  elif command -v curl >/dev/null 2>&1; then",
        "    local out code",
        "    # The header comes on stdin (printf is bash's own): curl's argv never holds it.",
        '    out=$(printf \'x-api-key: %s\\n\' "$ANTHROPIC_AUTH_TOKEN" \\',
        f"      | curl -s -H @- -w '\\n%{{http_code}}' --max-time {PROBE_TIMEOUT} \\",
        '      "$ANTHROPIC_BASE_URL/health") || true',
        "    code=${out##*$'\\n'}",
        '    case "$code" in',
        "      200) ;;",
        f"      401) echo {q(refused)} ;;",
        f"      000|'') echo {q(down)} ;;",
        "      *) echo \"a model is not serving: ${out%$'\\n'*}; start it with: \"" + q(up) + " ;;",
        "    esac",
        "  elif command -v timeout >/dev/null 2>&1; then",
        f'    timeout {PROBE_TIMEOUT} "$BASH" -c {q(tcp_open)} 2>/dev/null || echo {q(down)}',
        "  else",
        f"    ( {tcp_open} ) 2>/dev/null || echo {q(down)}",
        "  fi",
        "}",
        "problem=$(stack_problem)",
        'if [ -n "$problem" ]; then',
        f'  echo {q(name + ": ")}"$problem" >&2',
        "  exit 1",
        "fi",
        "",
        f'claude_bin="${{{CLAUDE_BIN_ENV}:-claude}}"',
        'if ! command -v "$claude_bin" >/dev/null 2>&1; then',
        f"  echo {q(f'{name}: Claude Code is not installed; install it with: {INSTALL_COMMAND}')}"
        " >&2",
        "  exit 127",
        "fi",
        "# The stack's models in Claude Code's /model picker; your own --settings come after.",
        f'exec "$claude_bin" --settings {q(claude_settings(deployment))} "$@"',
        "",
    ]
    return "\n".join(lines)


def write_launcher(
    deployment: Deployment,
    *,
    path: Path | None = None,
    stack_file: str | None = None,
    token_path: Path | None = None,
) -> Path:
    """Write the stack's launcher atomically, mode 0755; returns its path.

    Raises :class:`LauncherPathTaken` rather than replace what spark-stack did not write.
    """
    target = path or deployment.launcher_path
    check_launcher_path(target)
    if stack_file and Path(stack_file).is_file():
        # The launcher runs from any directory: name the stack file absolutely in its hints.
        stack_file = str(Path(stack_file).resolve())
    text = render_launcher(
        deployment, token_path=token_path or token_file(deployment.stack), stack_file=stack_file
    )
    paths.write_atomic(target, text, mode=0o755)
    return target


def _probe_host(base_url: str) -> str:
    host = base_url.removeprefix("http://").rpartition(":")[0]
    return host.strip("[]")


def written_by_spark_stack(path: Path) -> bool:
    """Whether ``path`` is a file holding a launcher spark-stack wrote (its header says so)."""
    try:
        with path.open("rb") as script:
            head = script.read(512).decode("utf-8", errors="replace")
    except OSError:
        return False
    return WRITTEN_BY in head


def check_launcher_path(path: Path) -> None:
    """Refuse a launcher path that holds something spark-stack must not replace."""
    setting = "point claude.launcher in the stack file elsewhere"
    if path.is_dir():
        raise LauncherPathTaken(
            f"the Claude Code launcher path {path} is a directory",
            fix=f"{setting}, at a file path such as {path / 'claude-stack'}",
        )
    if (path.exists() or path.is_symlink()) and not written_by_spark_stack(path):
        raise LauncherPathTaken(
            f"the Claude Code launcher path {path} holds a file spark-stack did not write; "
            "it is left as it is",
            fix=f"{setting}, or move that file away if it is not needed",
        )
