"""A lock on this machine per stack, held by ``up`` and ``down`` from their first step to their
last: two of them never interleave (two proxies, or a ``down`` between an ``up``'s containers
and its proxy). ``flock`` on a file in the stack's state dir: the kernel drops it when the
process ends, however it ends. The holder (user, machine, pid, time) sits in a side file for
the error message, as for the host's lock (:mod:`.lock`)."""

from __future__ import annotations

import fcntl
import os
import time
from types import TracebackType

from ..errors import LockHeld
from ..paths import stack_dir, write_private
from .lock import describe_holder


class LocalLock:
    def __init__(self, stack: str, *, wait_seconds: float = 0.0) -> None:
        self.path = stack_dir(stack) / "local.lock"
        self.owner = self.path.with_suffix(".owner")
        self.stack = stack
        self.wait_seconds = wait_seconds
        self._fd: int | None = None

    def __enter__(self) -> LocalLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockHeld(
                        f"stack {self.stack!r} is locked by another `up`/`down` on this "
                        f"machine: {self._holder()}",
                        fix="wait for it to finish (or pass --wait-lock SECONDS); a crashed run "
                        "releases the lock by itself",
                    ) from None
                time.sleep(0.05)
        self._fd = fd
        write_private(self.owner, describe_holder() + "\n")
        return self

    def _holder(self) -> str:
        try:
            return self.owner.read_text().strip() or "someone"
        except OSError:
            return "someone"

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
