"""Claude Code's environment outside the launcher: the proxy token, ``--print-env``, settings.

The proxy token lives in one 0600 file per stack (:func:`spark_stack.launcher.token_file`):
``up`` writes it (:func:`ensure_proxy_token`), the proxy, the launcher and
``spark-stack claude`` read it. ``--write-settings`` never copies the token into a project's
``.claude/settings.json``: it points Claude Code's ``apiKeyHelper`` at a command that prints
the file. Only ``--print-env`` prints the value, because ``eval`` needs it and the user asked.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import paths
from .claude_context import TOKEN_ENV
from .errors import ClaudeNotInstalled, SparkStackError
from .launcher import CLAUDE_BIN_ENV, INSTALL_COMMAND, launcher_environment, token_file
from .stack import schema
from .stack.secrets import resolve

DEFAULT_SETTINGS_PATH = Path(".claude") / "settings.json"


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def ensure_proxy_token(
    stack: str, setting: str | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The proxy's token (``None`` when it has none), kept current in ``stack``'s token file.

    ``setting`` is the stack's ``proxy.token`` (:attr:`.deployment.ProxySettings.token`):
    ``auto`` keeps the token generated the first time; ``${VAR}`` is resolved now, so the
    launcher works later from a shell where the variable is not exported.
    """
    path = token_file(stack)
    if setting is None:
        path.unlink(missing_ok=True)
        return None
    if setting == "auto":
        current = read_token_file(path)
        token = current or generate_token()
    else:
        token = resolve(setting, environ, where="proxy.token")
        current = read_token_file(path)
    if token != current:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths.write_private(path, token + "\n")
    return token


def client_token(stack: schema.Stack, environ: Mapping[str, str] | None = None) -> str | None:
    """The token clients send: the one ``up`` gave the proxy, else (before any ``up``) the one
    the next ``up`` will use."""
    if stack.proxy.token is None:
        return None
    return read_token_file(token_file(stack.name)) or ensure_proxy_token(
        stack.name, stack.proxy.token, environ)


def read_proxy_token(stack: schema.Stack) -> str | None:
    """The token a client must send; raises when the stack has one but ``up`` never wrote it."""
    if stack.proxy.token is None:
        return None
    path = token_file(stack.name)
    token = read_token_file(path)
    if token is None:
        raise SparkStackError(
            f"the proxy token file {path} is missing",
            fix="run `spark-stack up` (it writes the token), then try again",
        )
    return token


def read_token_file(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def claude_environment(stack: schema.Stack, token: str | None) -> dict[str, str]:
    """The variables Claude Code needs, with the token's value (for exec and ``eval``)."""
    env: dict[str, str] = {}
    for var in launcher_environment(stack):
        env[var.name] = (token or "") if var.secret else var.value
    return env


def export_lines(env: Mapping[str, str]) -> str:
    """``export NAME=value`` lines a POSIX shell can ``eval``."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def api_key_helper_command(path: Path) -> str:
    return f"cat {shlex.quote(str(path))}"


def settings_env(stack: schema.Stack) -> tuple[dict[str, str], str | None]:
    """The ``env`` block and the ``apiKeyHelper`` for a settings file; never the token itself."""
    env: dict[str, str] = {}
    helper: str | None = None
    for var in launcher_environment(stack):
        if var.secret:
            helper = api_key_helper_command(token_file(stack.name))
        else:
            env[var.name] = var.value
    return env, helper


def merge_settings(
    existing: Mapping[str, Any], env: Mapping[str, str], api_key_helper: str | None
) -> dict[str, Any]:
    """``existing`` with our ``env`` entries set and every other key kept as it was.

    With a helper the token comes from it, so a stale ``ANTHROPIC_AUTH_TOKEN`` in the block
    (which Claude Code would send too) is dropped.
    """
    merged = dict(existing)
    old_env = existing.get("env")
    block = dict(old_env) if isinstance(old_env, Mapping) else {}
    if api_key_helper is not None:
        block.pop(TOKEN_ENV, None)
        merged["apiKeyHelper"] = api_key_helper
    block.update(env)
    merged["env"] = block
    return merged


def write_settings(stack: schema.Stack, path: Path | None = None) -> Path:
    """Merge the stack's Claude Code settings into ``path`` (default ./.claude/settings.json)."""
    target = path or DEFAULT_SETTINGS_PATH
    existing: Any = {}
    if target.exists():
        try:
            existing = json.loads(target.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError) as exc:
            raise SparkStackError(
                f"cannot read {target} as JSON: {exc}",
                fix="fix or move the file, then run the command again",
            ) from None
        if not isinstance(existing, dict):
            raise SparkStackError(
                f"{target} does not hold a JSON object",
                fix="fix or move the file, then run the command again",
            )
    env, helper = settings_env(stack)
    merged = merge_settings(existing, env, helper)
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    paths.write_atomic(target, json.dumps(merged, indent=2) + "\n", mode=mode)
    return target


def find_claude(environ: Mapping[str, str] | None = None) -> str:
    """The Claude Code executable: ``$SPARK_STACK_CLAUDE_BIN``, else ``claude`` on PATH."""
    env = os.environ if environ is None else environ
    wanted = env.get(CLAUDE_BIN_ENV) or "claude"
    found = shutil.which(wanted, path=env.get("PATH"))
    if found is None:
        where = f" ({CLAUDE_BIN_ENV}={wanted})" if env.get(CLAUDE_BIN_ENV) else ""
        raise ClaudeNotInstalled(
            f"Claude Code (`claude`) is not installed{where}",
            fix=f"install it with: {INSTALL_COMMAND}",
        )
    return found
