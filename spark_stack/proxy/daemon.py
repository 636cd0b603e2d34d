"""The proxy as a background process for ``up``/``down``/``status``.

State in ``state_dir``: ``proxy.json`` (the config, 0600: it may hold the token and upstream
keys), ``proxy.pid`` and ``proxy.log``.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from spark_stack.errors import ProxyStartError
from spark_stack.paths import write_atomic, write_private
from spark_stack.processes import terminate
from spark_stack.proxy.config import ProxyConfig, dial_host

CONFIG_FILE = "proxy.json"
PID_FILE = "proxy.pid"
LOG_FILE = "proxy.log"
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


def start_background(config: ProxyConfig, state_dir: Path) -> int:
    """Start a detached proxy process and wait until it answers ``GET /health``; its pid.

    Raises :class:`ProxyStartError` when the port is taken or the process dies or stays
    silent, with the tail of its log.
    """
    from spark_stack.proxy.serve import check_bindable

    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_bindable(config)
    config_path = state_dir / CONFIG_FILE
    write_private(config_path, config.to_json())
    log_path = state_dir / LOG_FILE
    with open(log_path, "ab") as log:
        os.chmod(log_path, 0o600)
        process = subprocess.Popen(
            [sys.executable, "-m", "spark_stack.proxy", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    write_atomic(state_dir / PID_FILE, f"{process.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            (state_dir / PID_FILE).unlink(missing_ok=True)
            raise ProxyStartError(
                f"the proxy exited at start (code {process.returncode}): {_tail(log_path)}",
                fix=f"see {log_path}",
            )
        if _health_answers(config) is not None:
            return process.pid
        time.sleep(0.02)
    terminate(process.pid)
    (state_dir / PID_FILE).unlink(missing_ok=True)
    raise ProxyStartError(
        f"the proxy did not answer within {START_TIMEOUT_S:.0f} s: {_tail(log_path)}",
        fix=f"see {log_path}",
    )


def stop_background(state_dir: Path) -> bool:
    """Stop the background proxy; False when none was running."""
    pid = _running_pid(state_dir)
    (state_dir / PID_FILE).unlink(missing_ok=True)
    if pid is None:
        return False
    terminate(pid)
    return True


def proxy_status(state_dir: Path) -> ProxyStatus:
    pid = _running_pid(state_dir)
    log_path = state_dir / LOG_FILE
    if pid is None:
        return ProxyStatus(False, None, None, False, log_path)
    try:
        config = ProxyConfig.from_json((state_dir / CONFIG_FILE).read_bytes())
    except (OSError, ValueError):
        return ProxyStatus(True, pid, None, False, log_path)
    answer = _health_answers(config)
    url = f"http://{dial_host(config.host)}:{config.port}"
    return ProxyStatus(True, pid, url, answer is not None, log_path, answer == 200)


def _running_pid(state_dir: Path) -> int | None:
    """The pid in the pid file, if that process is alive and is our proxy."""
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid
    return pid if b"spark_stack.proxy" in cmdline else None


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


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
