"""A remote lock per stack, held by an SSH channel: no stale locks after a drop or Ctrl-C.

The host runs ``flock`` on ``~/.cache/spark-stack/locks/<stack>.lock`` and then waits on
stdin; the lock lives exactly as long as our SSH channel. When ``up`` ends, crashes, is
interrupted or loses the network, sshd closes the session and the kernel drops the lock.
The holder's description (user, machine, pid, time) sits in a side file for the error message.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import time

import paramiko

from ..errors import HostUnreachable, LockHeld
from .ssh import SshConnection

LOCK_DIR = ".cache/spark-stack/locks"
_READ_TIMEOUT_SLACK = 15.0


def lock_script(stack: str, holder: str, wait_seconds: float) -> str:
    """The shell snippet that takes the lock (quoting every part) and then holds it."""
    base = f"$HOME/{LOCK_DIR}/"
    lock = base + shlex.quote(f"{stack}.lock")
    owner = base + shlex.quote(f"{stack}.owner")
    wait = f"-w {wait_seconds:g}" if wait_seconds > 0 else "-n"
    return (
        f'mkdir -p "$HOME"/{LOCK_DIR} && exec 9>>{lock} && '
        f"if flock {wait} 9; then printf '%s\\n' {shlex.quote(holder)} > {owner}; "
        "echo LOCKED; exec cat >/dev/null; "
        f"else echo HELD; cat {owner} 2>/dev/null; exit 1; fi"
    )


def describe_holder() -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} since {stamp}"


class StackLock:
    """``with StackLock(conn, stack):`` — the stack is ours inside the block."""

    def __init__(self, conn: SshConnection, stack: str, *, wait_seconds: float = 0.0) -> None:
        self.conn = conn
        self.stack = stack
        self.wait_seconds = wait_seconds
        self._channel: paramiko.Channel | None = None

    def acquire(self) -> None:
        channel = self.conn.exec_channel(
            lock_script(self.stack, describe_holder(), self.wait_seconds))
        channel.settimeout(self.wait_seconds + _READ_TIMEOUT_SLACK)
        reply = b""
        try:
            while b"\n" not in reply:
                chunk = channel.recv(1024)
                if not chunk:
                    break
                reply += chunk
            if reply.startswith(b"HELD"):
                # The side file's line follows once cat ran; wait for the channel to finish.
                while chunk := channel.recv(1024):
                    reply += chunk
        except (TimeoutError, OSError) as exc:
            channel.close()
            raise HostUnreachable(f"taking the lock for stack {self.stack!r} timed out") from exc
        if reply.startswith(b"LOCKED"):
            self._channel = channel
            return
        channel.close()
        if reply.startswith(b"HELD"):
            holder = reply.decode(errors="replace").splitlines()[1:] or ["someone"]
            raise LockHeld(
                f"stack {self.stack!r} is locked by another `up`/`down`: {holder[0].strip()}",
                fix="wait for it to finish (or pass --wait-lock SECONDS); a crashed run "
                "releases the lock by itself",
            )
        raise HostUnreachable(
            f"could not take the lock for stack {self.stack!r} on "
            f"{self.conn.target.hostname}: {reply.decode(errors='replace').strip() or 'no answer'}",
            fix="the host needs `flock` (util-linux) and a writable ~/.cache",
        )

    def release(self) -> None:
        if self._channel is None:
            return
        # EOF ends `cat`; waiting for its exit makes the release visible to the next run.
        try:
            self._channel.shutdown_write()
            deadline = time.monotonic() + 2.0
            while not self._channel.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.01)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        self._channel.close()
        self._channel = None

    def __enter__(self) -> StackLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
