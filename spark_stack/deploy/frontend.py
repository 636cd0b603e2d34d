"""The front end of ``up``: SSH tunnels to loopback-bound models, the background proxy with
the deployment's config, and the Claude Code launcher."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from ..deployment import Deployment
from ..paths import proxy_state_dir
from ..proxy import control
from ..proxy import daemon as proxy_daemon
from ..proxy.config import ProxyConfig
from . import tunnel
from .report import Reporter
from .session import ssh_host


def ensure_tunnels(deployment: Deployment, reporter: Reporter) -> dict[str, str]:
    """Model → the local end of its tunnel (``bind: loopback`` models only), as an endpoint."""
    loopback = {m.name: m for m in deployment.of_kind("container") if m.via_tunnel}
    for name in tunnel.known_tunnels(deployment.stack):
        if name not in loopback:
            tunnel.stop_tunnel(deployment.stack, name)
    endpoints: dict[str, str] = {}
    for model in loopback.values():
        assert model.host is not None and model.port is not None
        port = tunnel.ensure_tunnel(deployment.stack, model.name, ssh_host(model.host),
                                    model.port)
        reporter.step(f"SSH tunnel 127.0.0.1:{port} -> {model.name} (bind: loopback)")
        endpoints[model.name] = f"http://127.0.0.1:{port}/v1"
    return endpoints


def ensure_proxy(deployment: Deployment, keys: Mapping[str, str | None], token: str | None,
                 endpoints: Mapping[str, str], reporter: Reporter) -> tuple[str | None, bool]:
    """Start the proxy in the background, or keep it when it runs with the same config;
    its URL, and whether it was (re)started (then ``up`` changed something)."""
    state_dir = proxy_state_dir(deployment.stack)
    config = proxy_daemon.with_team_files(deployment.proxy_config(keys, token, endpoints),
                                          state_dir)
    status = proxy_daemon.proxy_status(state_dir)
    running = proxy_daemon.read_config(state_dir)
    if status.running and status.healthy and running == config:
        return status.url, False
    if (status.running and status.healthy and running is not None
            and control.reloadable(running, config) and _reload(config, state_dir)):
        reporter.step("the proxy took over the models' new settings (no restart)")
        return status.url, True
    if status.running:
        reporter.step("restarting the proxy (its configuration changed)")
        proxy_daemon.stop_background(state_dir)
    else:
        reporter.step(f"starting the proxy on {config.host}:{config.port}")
    proxy_daemon.start_background(config, state_dir)
    return proxy_daemon.proxy_status(state_dir).url, True


def _reload(config: ProxyConfig, state_dir: Path) -> bool:
    """Hand the running proxy ``config`` in place; whether it took it within
    :data:`RELOAD_WAIT_S` (a proxy from before control files never does: then a restart)."""
    proxy_daemon.write_config(config, state_dir)
    wanted = control.config_digest(config)
    deadline = time.monotonic() + RELOAD_WAIT_S
    while time.monotonic() < deadline:
        state = control.read_state(state_dir)
        if state is not None and state.config == wanted:
            return True
        time.sleep(control.CONTROL_S / 5)
    return False


RELOAD_WAIT_S = 3.0


def write_launcher(deployment: Deployment, stack_file: str | None, reporter: Reporter) -> Path:
    from ..launcher import write_launcher as write

    path = write(deployment, stack_file=stack_file)
    reporter.step(f"wrote the Claude Code launcher {path}")
    return path
