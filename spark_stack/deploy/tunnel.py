"""SSH tunnels for models bound to the host's loopback (``bind: loopback``).

Such a model is not reachable from the LAN, so the proxy reaches it through a background
process (``python -m spark_stack.deploy.tunnel CONFIG``) that holds an SSH connection and
forwards ``127.0.0.1:<local port>`` here to ``127.0.0.1:<port>`` on the host, reconnecting
after a drop. State per model in the stack's dir: ``tunnels/<model>.json`` (host, ports),
``.pid`` and ``.log``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import HostUnreachable, SparkStackError
from ..paths import stack_dir, write_atomic
from ..processes import pid_alive, terminate
from ..stack.schema import HostConfig
from .ssh import backoff, connect, forward_tcp, read_ssh_config, resolve_target

START_TIMEOUT = 15.0


@dataclass(frozen=True)
class TunnelConfig:
    host: dict[str, object]  # HostConfig fields
    remote_port: int
    local_port: int


def tunnel_files(stack: str, model: str) -> tuple[Path, Path, Path]:
    base = stack_dir(stack) / "tunnels"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return base / f"{model}.json", base / f"{model}.pid", base / f"{model}.log"


def _running(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if pid_alive(pid) and b"spark_stack.deploy.tunnel" in cmdline else None


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


def ensure_tunnel(stack: str, model: str, host: HostConfig, remote_port: int) -> int:
    """The local port of a running tunnel to ``remote_port`` on ``host`` (started if needed)."""
    config_file, pid_file, log_file = tunnel_files(stack, model)
    wanted_host = host.model_dump()
    pid = _running(pid_file)
    if pid is not None:
        try:
            current = TunnelConfig(**json.loads(config_file.read_text()))
        except (OSError, ValueError, TypeError):
            current = None
        if current is not None and current.host == wanted_host \
                and current.remote_port == remote_port and _accepts(current.local_port):
            return current.local_port
        terminate(pid)
    config = TunnelConfig(wanted_host, remote_port, _free_port())
    write_atomic(config_file, json.dumps(asdict(config)))
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "spark_stack.deploy.tunnel", str(config_file)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True)
    write_atomic(pid_file, f"{process.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _accepts(config.local_port):
            return config.local_port
        time.sleep(0.05)
    terminate(process.pid)
    tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise HostUnreachable(f"the SSH tunnel for model {model} did not start: {tail[0]}",
                          fix=f"see {log_file}")


def stop_tunnel(stack: str, model: str) -> bool:
    config_file, pid_file, _ = tunnel_files(stack, model)
    pid = _running(pid_file)
    pid_file.unlink(missing_ok=True)
    config_file.unlink(missing_ok=True)
    if pid is None:
        return False
    terminate(pid)
    return True


def known_tunnels(stack: str) -> list[str]:
    base = stack_dir(stack) / "tunnels"
    return sorted(p.stem for p in base.glob("*.pid")) if base.is_dir() else []


def serve(config: TunnelConfig) -> None:
    """Hold the forward, reconnecting with backoff when the connection drops."""
    host = HostConfig.model_validate(config.host)
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
        forwarder, _ = forward_tcp(conn, "127.0.0.1", config.remote_port, config.local_port)
        print(f"tunnel: 127.0.0.1:{config.local_port} -> {target.hostname}:"
              f"127.0.0.1:{config.remote_port}", flush=True)
        try:
            while conn.client.get_transport() is not None \
                    and conn.client.get_transport().is_active():  # type: ignore[union-attr]
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
