"""A lock on this machine per stack: the local steps of ``up``/``down`` (simulators, tunnels,
the proxy) never run twice at once, so two ``up`` cannot start two proxies. ``flock`` on a file
in the stack's state dir: the kernel drops it when the process ends, however it ends."""

from __future__ import annotations

import fcntl
import os
import time
from types import TracebackType

from ..errors import LockHeld
from ..paths import stack_dir


class LocalLock:
    def __init__(self, stack: str, *, wait_seconds: float = 0.0) -> None:
        self.path = stack_dir(stack) / "local.lock"
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
                        f"another spark-stack command on this machine is changing stack "
                        f"{self.stack!r}",
                        fix="wait for it to finish (or pass --wait-lock SECONDS)",
                    ) from None
                time.sleep(0.05)
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
