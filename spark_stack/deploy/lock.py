"""A remote lock per stack, held by an SSH channel: no stale locks after a drop or Ctrl-C.

The host runs ``flock`` on ``~/.cache/spark-stack/locks/<stack>@<host>.lock`` and then waits
on stdin; the lock lives exactly as long as our SSH channel. ``<host>`` is the host's name in
the stack: a model across hosts locks every host, and hosts may share one home directory (NFS,
or two stand-ins on one machine), where one file for the stack would lock us out of our own
second host. When ``up`` ends, crashes, is
interrupted or loses the network, sshd closes the session and the kernel drops the lock.
The holder's description (user, machine, pid, time) sits in a side file for the error message.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import time

from ..errors import HostUnreachable, LockHeld
from .connector import Held, HostConnection

LOCK_DIR = ".cache/spark-stack/locks"
_READ_TIMEOUT_SLACK = 15.0


def lock_name(stack: str, host: str) -> str:
    """The lock's file name (without suffix) for ``stack`` on the stack's host ``host``."""
    return f"{stack}@{host}"


def lock_script(name: str, holder: str, wait_seconds: float) -> str:
    """The shell snippet that takes the lock ``name`` (quoting every part) and holds it."""
    base = f"$HOME/{LOCK_DIR}/"
    lock = base + shlex.quote(f"{name}.lock")
    owner = base + shlex.quote(f"{name}.owner")
    wait = f"-w {wait_seconds:g}" if wait_seconds > 0 else "-n"
    # `down --purge` deletes the file while holding it: a waiter that then gets the lock of
    # the deleted file must take the path's new one instead (`-ef`: the same file).
    return (
        f'mkdir -p "$HOME"/{LOCK_DIR} && while :; do exec 9>>{lock} && '
        f"if flock {wait} 9; then [ {lock} -ef /proc/$$/fd/9 ] && break; "
        f"else echo HELD; cat {owner} 2>/dev/null; exit 1; fi; done; "
        f"printf '%s\\n' {shlex.quote(holder)} > {owner}; echo LOCKED; exec cat >/dev/null"
    )


def remove_lock_script(name: str) -> str:
    """Delete the lock ``name``'s files (run while holding it: ``down --purge``)."""
    base = f"$HOME/{LOCK_DIR}/"
    return (f"rm -f {base}{shlex.quote(f'{name}.lock')} {base}{shlex.quote(f'{name}.owner')}; "
            f"rmdir \"$HOME\"/{LOCK_DIR} 2>/dev/null; true")


def describe_holder() -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} since {stamp}"


class StackLock:
    """``with StackLock(conn, stack, host=key):`` — the stack is ours on that host inside
    the block."""

    def __init__(self, conn: HostConnection, stack: str, *, host: str,
                 wait_seconds: float = 0.0) -> None:
        self.conn = conn
        self.stack = stack
        self.host = host
        self.wait_seconds = wait_seconds
        self._held: Held | None = None

    def acquire(self) -> None:
        held = self.conn.hold(lock_script(lock_name(self.stack, self.host), describe_holder(),
                                          self.wait_seconds))
        timeout = self.wait_seconds + _READ_TIMEOUT_SLACK
        try:
            reply = held.read_line(timeout)
            # The holder's line follows once `cat` ran; wait for the command to finish.
            holder = held.read_rest(timeout) if reply == "HELD" else ""
        except TimeoutError as exc:
            held.release()
            raise HostUnreachable(f"taking the lock for stack {self.stack!r} timed out",
                                  fix="check the host answers (`ssh` to it), then run again"
                                  ) from exc
        if reply == "LOCKED":
            self._held = held
            return
        held.release()
        if reply == "HELD":
            raise LockHeld(
                f"stack {self.stack!r} is locked by another `up`/`down`: "
                f"{(holder.strip().splitlines() or ['someone'])[0]}",
                fix="wait for it to finish (or pass --wait-lock SECONDS); a crashed run "
                "releases the lock by itself",
            )
        raise HostUnreachable(
            f"could not take the lock for stack {self.stack!r} on "
            f"{self.conn.display}: {reply.strip() or 'no answer'}",
            fix="the host needs `flock` (util-linux) and a writable ~/.cache",
        )

    def release(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None

    def __enter__(self) -> StackLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
