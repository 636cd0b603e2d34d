"""Run the proxy in this process (foreground): ``run_proxy(config)``."""

from __future__ import annotations

import errno
import logging
import resource
import socket
import sys
from dataclasses import replace

import uvicorn

from spark_stack.errors import ProxyStartError
from spark_stack.proxy.config import ProxyConfig
from spark_stack.proxy.protocol import protocol_class
from spark_stack.proxy.server import ProxyApp

# File descriptors kept back for the listening socket, logs, upstream pools and imports.
_SPARE_FDS = 64


def check_bindable(config: ProxyConfig) -> None:
    """Refuse to start insecurely or on a taken port, with a message that says what to do."""
    if not config.is_loopback and not config.token:
        raise ProxyStartError(
            f"the proxy would listen on {config.host} without a token",
            fix="set a proxy token, or listen on 127.0.0.1",
        )
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((config.host, config.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ProxyStartError(
                    f"port {config.port} on {config.host} is already in use",
                    fix="stop what listens there (`spark-stack down`?) or choose another port",
                ) from None
            raise ProxyStartError(f"cannot listen on {config.host}:{config.port}: {exc}",
                                  fix="choose another address or port (proxy.listen)") from None


def run_proxy(config: ProxyConfig) -> None:
    """Serve until interrupted (SIGINT/SIGTERM shut down gracefully)."""
    check_bindable(config)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    server = build_server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn has shut down gracefully and re-raised the Ctrl-C it caught: a clean stop.
        return


def build_server(config: ProxyConfig) -> uvicorn.Server:
    """The uvicorn server for ``config`` (not started), with the proxy's connection limits."""
    app = ProxyApp(config)
    limited = replace(config, max_connections=connection_cap(config.max_connections))
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            loop="uvloop",
            http=protocol_class(limited, app),
            ws="none",
            lifespan="on",
            interface="asgi3",
            access_log=False,
            # Nothing here reads the client address: skip the X-Forwarded-For middleware,
            # one more coroutine layer on every request.
            proxy_headers=False,
            log_level="warning",
            server_header=False,
            date_header=False,
            timeout_keep_alive=config.keep_alive_timeout,
        )
    )


def connection_cap(wanted: int) -> int:
    """``wanted``, or fewer when the open-file limit cannot hold that many clients plus their
    upstream connections (two descriptors each). Raises the soft limit to the hard one first:
    the common default of 1024 is low for a server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 16 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(1, min(wanted, (soft - _SPARE_FDS) // 2))
