"""The SSH edge speaks one line: paramiko's own logging never reaches the terminal."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A 127.0.0.1 port that accepts TCP connections and never sends an SSH banner."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=2)
    for conn in accepted:
        conn.close()
    listener.close()


# A real process, so that nothing (pytest's log capture included) stands between paramiko's
# logging and stderr; timeouts and backoff shortened so three attempts take about a second.
SCRIPT = """
import sys
from spark_stack.deploy import ssh
ssh.CONNECT_TIMEOUT = 0.3
ssh.backoff = lambda attempt, base=0.5: 0.0
from spark_stack.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["up", "status"])
def test_a_port_without_ssh_banner_gives_one_line_not_paramiko_tracebacks(
    command: str, silent_port: int, tmp_path: Path, fake_home: Path
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text(
        "name: quiet\n"
        f"host: {{address: 127.0.0.1, port: {silent_port}, user: me}}\n"
        "models:\n  - name: m\n    preset: qwen3.6-35b-a3b-nvfp4-redhat\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, command, "-s", str(stack)],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert "Error reading SSH protocol banner" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if command == "up":
        assert len(lines) == 2, done.stderr
        assert lines[0].startswith("error: ") and "SSH handshake" in lines[0]
        assert lines[1].startswith("fix: ")
    else:  # status reports the unreachable host in its table, on stdout
        assert lines == [], done.stderr
        assert "did not complete the SSH handshake" in done.stdout
