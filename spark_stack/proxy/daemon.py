"""The proxy as a background process for ``up``/``down``/``status``.

State in ``state_dir`` (a :class:`~spark_stack.managed.ManagedProcess` named ``proxy``):
``proxy.json`` (the config, 0600: it may hold the token and upstream keys), ``proxy.pid`` and
``proxy.log``.
"""

from __future__ import annotations

import http.client
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from spark_stack.errors import ProxyStartError
from spark_stack.managed import ManagedProcess
from spark_stack.proxy.config import ConfigError, ProxyConfig, dial_host
from spark_stack.proxy.control import CONFIG_FILE as CONFIG_FILE
from spark_stack.proxy.keyfile import KEY_FILE
from spark_stack.proxy.usage import USAGE_DB

MODULE = "spark_stack.proxy"
START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class ProxyStatus:
    """What ``status`` shows about the background proxy."""

    running: bool
    pid: int | None
    url: str | None
    healthy: bool  # the proxy answers GET /health
    log_file: Path
    upstreams_healthy: bool = False  # ... and every upstream answered its own /health


def proxy_process(state_dir: Path) -> ManagedProcess:
    return ManagedProcess(state_dir, "proxy", MODULE)


def read_config(state_dir: Path) -> ProxyConfig | None:
    """The config the last ``up`` handed the proxy (None: never started, or unreadable).

    The one reader of ``proxy.json``: ``up``, ``status``, ``smoke``, ``bench`` and
    ``spark-stack claude`` all come here.
    """
    try:
        return ProxyConfig.from_json((state_dir / CONFIG_FILE).read_bytes())
    except (OSError, ConfigError):
        return None


def with_team_files(config: ProxyConfig, state_dir: Path) -> ProxyConfig:
    """``config`` reading the team's keys and writing usage in the stack's ``state_dir``."""
    return replace(config, keys_file=str(state_dir / KEY_FILE),
                   usage_db=str(state_dir / USAGE_DB), control_dir=str(state_dir))


def start_background(config: ProxyConfig, state_dir: Path) -> int:
    """Start a detached proxy process and wait until it answers ``GET /health``; its pid.

    Raises :class:`ProxyStartError` when the port is taken or the process dies or stays
    silent, with the tail of its log.
    """
    from spark_stack.proxy.serve import check_bindable

    check_bindable(config)
    process = proxy_process(state_dir)
    child = process.start(
        [sys.executable, "-m", MODULE, "--config", str(process.record_file)],
        orjson.loads(config.to_json()),
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            process.pid_file.unlink(missing_ok=True)
            raise ProxyStartError(
                f"the proxy exited at start (code {child.returncode}): {process.log_tail()}",
                fix=f"see {process.log_file}",
            )
        if _health_answers(config) is not None:
            return child.pid
        time.sleep(0.02)
    process.stop()
    raise ProxyStartError(
        f"the proxy did not answer within {START_TIMEOUT_S:.0f} s: {process.log_tail()}",
        fix=f"see {process.log_file}",
    )


def write_config(config: ProxyConfig, state_dir: Path) -> None:
    """Rewrite the running proxy's config file (it takes over what it can: control.py)."""
    from spark_stack.paths import write_private

    write_private(proxy_process(state_dir).record_file, config.to_json())


def stop_background(state_dir: Path) -> bool:
    """Stop the background proxy; False when none was running."""
    return proxy_process(state_dir).stop()


def proxy_status(state_dir: Path) -> ProxyStatus:
    process = proxy_process(state_dir)
    pid = process.running_pid()
    if pid is None:
        return ProxyStatus(False, None, None, False, process.log_file)
    config = read_config(state_dir)
    if config is None:
        return ProxyStatus(True, pid, None, False, process.log_file)
    answer = _health_answers(config)
    url = config.url
    return ProxyStatus(True, pid, url, answer is not None, process.log_file, answer == 200)


def _health_answers(config: ProxyConfig) -> int | None:
    """The HTTP status of ``GET /health``, or None if nothing answers."""
    connection = http.client.HTTPConnection(dial_host(config.host).strip("[]"), config.port,
                                            timeout=5)
    headers = {"x-api-key": config.token} if config.token else {}
    try:
        connection.request("GET", "/health", headers=headers)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()
