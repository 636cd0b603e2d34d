"""`spark-stack proxy`: run the translating proxy in the foreground (Ctrl-C stops it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import StackOption, load

if TYPE_CHECKING:
    from ..proxy.config import ProxyConfig


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
    from ..proxy.config import ConfigError, ProxyConfig
    from ..proxy.serve import run_proxy

    if config is None:
        loaded = _config_of_stack(stack)
    else:
        fix = ("pass the proxy.json `up` wrote (<state>/stacks/<stack>/proxy.json), or leave out "
               "--config to use the stack's")
        try:
            loaded = ProxyConfig.from_json(config.read_bytes())
        except OSError as exc:
            raise UsageError(f"cannot read the proxy config {config}: {exc.strerror or exc}",
                             fix=fix) from None
        except ConfigError as exc:
            raise UsageError(f"the proxy config {config} is invalid: {exc}",
                             fix=f"{fix}; `spark-stack up` rewrites it") from None
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


def _config_of_stack(stack: str | None) -> ProxyConfig:
    """The config ``up`` wrote; for a stack with nothing to deploy (remote models and
    simulators only), the one its file describes."""
    from ..claude_env import client_token
    from ..deploy.keys import model_keys
    from ..deploy.session import resolve_for_this_machine
    from ..errors import UsageError
    from ..paths import proxy_state_dir
    from ..proxy.daemon import CONFIG_FILE, read_config, with_team_files

    the_stack = load(stack, lint=False).stack
    state = proxy_state_dir(the_stack.name)
    written = read_config(state)
    if written is not None:
        return written
    if the_stack.container_models():
        raise UsageError(
            f"no proxy config for this stack yet ({state / CONFIG_FILE})",
            fix="run `spark-stack up` first (it deploys the containers), or pass --config FILE",
        )
    deployment = resolve_for_this_machine(the_stack)
    return with_team_files(
        deployment.proxy_config(model_keys(deployment), client_token(the_stack)), state)


def register(app: typer.Typer) -> None:
    app.command("proxy")(proxy)
