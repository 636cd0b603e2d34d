"""A program in a pseudo-terminal with its screen emulated (pyte): what a person would see."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pyte

KEY_DOWN = "\x1b[B"
KEY_ENTER = "\r"
KEY_ESCAPE = "\x1b"
CTRL_C = "\x03"


class Terminal:
    """``argv`` running in a pseudo-terminal of ``columns`` × ``rows``."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path,
                 columns: int = 140, rows: int = 50) -> None:
        self.screen = pyte.Screen(columns, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.transcript = b""
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the program
            os.chdir(cwd)
            os.execvpe(argv[0], list(argv), dict(env))
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def _pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.1))
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.transcript += chunk
            self.stream.feed(chunk)

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, wanted: str, timeout: float = 30.0) -> str:
        """The screen once it shows ``wanted``; AssertionError with the screen otherwise."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self._pump(0.2)
            if wanted in self.text():
                return self.text()
        raise AssertionError(f"the screen never showed {wanted!r}:\n{self.text()}")

    def send(self, keys: str, settle: float = 0.3) -> None:
        os.write(self.fd, keys.encode())
        self._pump(settle)

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self._pump(0.5)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        os.close(self.fd)
