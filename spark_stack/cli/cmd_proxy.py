"""`spark-stack proxy`: run the translating proxy in the foreground (Ctrl-C stops it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from .common import StackOption, load


def proxy(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="A proxy config JSON file (default: the one "
                     "`up` wrote for the stack).", show_default=False),
    ] = None,
    stack: StackOption = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Listen address (default from the config).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", "-p", help="Listen port (default from the config).")
    ] = None,
    log_prompts: Annotated[
        bool, typer.Option("--log-prompts", help="Also log request bodies (prompt text).")
    ] = False,
) -> None:
    """Serve Anthropic's Messages API for Claude Code, translated to the stack's vLLM."""
    from ..errors import UsageError
    from ..paths import stack_dir
    from ..proxy.config import ConfigError, ProxyConfig
    from ..proxy.daemon import CONFIG_FILE
    from ..proxy.serve import run_proxy

    path = config
    if path is None:
        path = stack_dir(load(stack, lint=False).stack.name) / CONFIG_FILE
        if not path.is_file():
            raise UsageError(
                f"no proxy config for this stack yet ({path})",
                fix="run `spark-stack up` first, or pass --config FILE.json",
            )
    try:
        loaded = ProxyConfig.from_json(path.read_bytes())
    except (OSError, ConfigError) as exc:
        raise UsageError(f"cannot read the proxy config {path}: {exc}") from None
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if log_prompts:
        overrides["log_prompts"] = True
    loaded = dataclasses.replace(loaded, **overrides)  # type: ignore[arg-type]
    typer.echo(f"proxy on http://{loaded.host}:{loaded.port} "
               f"-> {', '.join(sorted(loaded.upstreams)) or 'no upstreams'} (Ctrl-C stops)",
               err=True)
    run_proxy(loaded)


def register(app: typer.Typer) -> None:
    app.command("proxy")(proxy)
