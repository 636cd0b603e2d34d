"""`status` against a host whose SSH key is unknown gives the fix `up` gives (`ssh-keyscan`),
in text and in `status --json` — against a real SSH server (paramiko's, on loopback)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.helpers import run_cli


@pytest.fixture(scope="module")
def ssh_server() -> Iterator[int]:
    """An SSH server with a fresh host key nobody knows; it only gets as far as the handshake."""
    key = paramiko.RSAKey.generate(2048)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            transport = paramiko.Transport(conn)
            transport.add_server_key(key)
            transports.append(transport)
            try:
                transport.start_server(server=paramiko.ServerInterface())
            except (paramiko.SSHException, EOFError, OSError):
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for transport in transports:
        transport.close()
    listener.close()


def test_status_names_the_ssh_keyscan_fix_for_an_unknown_host_key(
    ssh_server: int, tmp_path: Path, fake_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text(f"name: hk\nhost: {{address: 127.0.0.1, port: {ssh_server}, user: me}}\n"
                     "models:\n  - name: m\n    preset: qwen3.6-35b-a3b-nvfp4-redhat\n")
    keyscan = f"ssh-keyscan -p {ssh_server} 127.0.0.1 >> ~/.ssh/known_hosts"

    code, out, err = run_cli(capsys, "-s", str(stack), "up")
    assert code == 3 and keyscan in err  # what `up` says

    code, out, err = run_cli(capsys, "-s", str(stack), "status")
    assert code == 3
    assert "unreachable" in out and "fix:" in out and keyscan in out, out

    code, out, err = run_cli(capsys, "-s", str(stack), "status", "--json")
    [host] = json.loads(out)["hosts"]
    assert host["reachable"] is False and keyscan in host["fix"]
