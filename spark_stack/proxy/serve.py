"""Run the proxy in this process (foreground): ``run_proxy(config)``."""

from __future__ import annotations

import errno
import logging
import socket
import sys

import uvicorn

from spark_stack.errors import ProxyStartError
from spark_stack.proxy.config import ProxyConfig
from spark_stack.proxy.server import ProxyApp


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
            raise ProxyStartError(f"cannot listen on {config.host}:{config.port}: {exc}") from None


def run_proxy(config: ProxyConfig) -> None:
    """Serve until interrupted (SIGINT/SIGTERM shut down gracefully)."""
    check_bindable(config)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    server = uvicorn.Server(
        uvicorn.Config(
            ProxyApp(config),
            host=config.host,
            port=config.port,
            loop="uvloop",
            http="httptools",
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
            timeout_keep_alive=75,
        )
    )
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn has shut down gracefully and re-raised the Ctrl-C it caught: a clean stop.
        return
