"""SSH tunnels for models bound to the host's loopback (``bind: loopback``).

Such a model is not reachable from the LAN, so the proxy reaches it through a background
process (``python -m spark_stack.deploy.tunnel CONFIG``) that holds an SSH connection and
forwards ``127.0.0.1:<local port>`` here to ``127.0.0.1:<port>`` on the host, reconnecting
after a drop. State per model: a :class:`~spark_stack.managed.ManagedProcess` under the
stack's ``tunnels/`` dir whose record is the :class:`TunnelConfig`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import managed
from ..errors import HostUnreachable, SparkStackError
from ..managed import ManagedProcess
from ..paths import stack_dir
from .ssh import SshHost, backoff, connect, read_ssh_config, resolve_target

START_TIMEOUT = 15.0


@dataclass(frozen=True)
class TunnelConfig:
    host: dict[str, object]  # SshHost fields
    remote_port: int
    local_port: int


MODULE = "spark_stack.deploy.tunnel"


def tunnel_dir(stack: str) -> Path:
    return stack_dir(stack) / "tunnels"


def tunnel_process(stack: str, model: str) -> ManagedProcess:
    return ManagedProcess(tunnel_dir(stack), model, MODULE)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def ensure_tunnel(stack: str, model: str, host: SshHost, remote_port: int) -> int:
    """The local port of a running tunnel to ``remote_port`` on ``host`` (started if needed)."""
    process = tunnel_process(stack, model)
    wanted_host = asdict(host)
    if process.running_pid() is not None:
        try:
            current: TunnelConfig | None = TunnelConfig(**process.record())
        except TypeError:
            current = None
        if current is not None and current.host == wanted_host \
                and current.remote_port == remote_port and _accepts(current.local_port):
            return current.local_port
        process.stop()
    config = TunnelConfig(wanted_host, remote_port, _free_port())
    child = process.start([sys.executable, "-m", MODULE, str(process.record_file)],
                          asdict(config))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if child.poll() is not None:
            break
        if _accepts(config.local_port):
            return config.local_port
        time.sleep(0.05)
    process.stop()
    raise HostUnreachable(
        f"the SSH tunnel for model {model} did not start: {process.log_tail(1)}",
        fix=f"see {process.log_file}")


def stop_tunnel(stack: str, model: str) -> bool:
    process = tunnel_process(stack, model)
    stopped = process.stop()
    process.forget()
    return stopped


def known_tunnels(stack: str) -> list[str]:
    return managed.known(tunnel_dir(stack))


def serve(config: TunnelConfig) -> None:
    """Hold the forward, reconnecting with backoff when the connection drops."""
    host = SshHost(**config.host)  # type: ignore[arg-type]
    target = resolve_target(host, read_ssh_config())
    attempt = 0
    while True:
        try:
            conn = connect(target)
        except SparkStackError as exc:
            print(f"tunnel: {exc.message}", flush=True)
            time.sleep(min(30.0, backoff(attempt)))
            attempt += 1
            continue
        attempt = 0
        forwarder, _ = conn.forward("127.0.0.1", config.remote_port, config.local_port)
        print(f"tunnel: 127.0.0.1:{config.local_port} -> {target.hostname}:"
              f"127.0.0.1:{config.remote_port}", flush=True)
        try:
            while conn.is_active():
                time.sleep(1.0)
        finally:
            forwarder.close()
            conn.close()
        print("tunnel: connection lost; reconnecting", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m spark_stack.deploy.tunnel CONFIG.json", file=sys.stderr)
        return 2
    config = TunnelConfig(**json.loads(Path(argv[0]).read_text()))
    os.umask(0o077)
    try:
        serve(config)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
