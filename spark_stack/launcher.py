"""What Claude Code needs to talk to the stack: its environment and the launcher script (pure).

Claude Code reads ``ANTHROPIC_BASE_URL`` (the proxy, without ``/v1``), ``ANTHROPIC_AUTH_TOKEN``
(sent as ``Authorization: Bearer``), ``ANTHROPIC_DEFAULT_{OPUS,SONNET,HAIKU}_MODEL`` (the alias
targets; the default main model is the opus alias) and ``ANTHROPIC_MODEL``. The source
document's ``apiBaseUrl``/``apiKey`` settings are not Claude Code settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .stack import schema

# Claude Code refuses to start ("Not logged in") without some credential; when the proxy needs
# no token any placeholder works.
PLACEHOLDER_TOKEN = "spark-stack-local"
ALIAS_ENV = {
    "opus": "ANTHROPIC_DEFAULT_OPUS_MODEL",
    "sonnet": "ANTHROPIC_DEFAULT_SONNET_MODEL",
    "haiku": "ANTHROPIC_DEFAULT_HAIKU_MODEL",
}
HERMETIC_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}


@dataclass(frozen=True)
class LauncherVar:
    name: str
    value: str
    secret: bool = False  # the value is read at run time from a 0600 file, never written here

    def shown(self) -> str:
        return "***" if self.secret else self.value


def proxy_base_url(stack: schema.Stack) -> str:
    """The URL Claude Code uses to reach the proxy (a wildcard bind is reached on loopback)."""
    host = stack.proxy.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{stack.proxy.port}"


def default_launcher_path(stack: schema.Stack) -> Path:
    if stack.claude.launcher:
        return Path(stack.claude.launcher).expanduser()
    return Path.home() / ".local" / "bin" / f"claude-{stack.name}"


def launcher_environment(stack: schema.Stack) -> list[LauncherVar]:
    """The variables the launcher exports, in order; the token only as a secret marker."""
    vars_ = [
        LauncherVar("ANTHROPIC_BASE_URL", proxy_base_url(stack)),
        LauncherVar(
            "ANTHROPIC_AUTH_TOKEN",
            PLACEHOLDER_TOKEN if stack.proxy.token is None else "",
            secret=stack.proxy.token is not None,
        ),
    ]
    for alias, target in sorted(stack.claude.models.items()):
        vars_.append(LauncherVar(ALIAS_ENV[alias], target))
    if stack.claude.default_model:
        vars_.append(LauncherVar("ANTHROPIC_MODEL", stack.claude.default_model))
    vars_ += [LauncherVar(name, value) for name, value in HERMETIC_ENV.items()]
    return vars_
