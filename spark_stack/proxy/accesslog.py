"""The per-request log line, bounded: values truncated, the log file rotated by size.

The background proxy's stderr *is* its log file (``daemon`` opens it and hands it over), so
rotation happens here, in the process that writes: when stderr is a regular file that grew past
``max_bytes``, it becomes ``<file>.1`` (older ones shift up to ``.<backups>``, the oldest goes)
and a fresh file takes its place on fd 1 and 2. A terminal or a pipe is never rotated.
"""

from __future__ import annotations

import os
import stat
import sys
import time

# Longest value (model name, path) a log line repeats: a client chooses them.
MAX_VALUE_CHARS = 120


def clip(value: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``value`` cut to ``limit`` characters, saying how long it was."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}…({len(value)} chars)"


class AccessLog:
    """Writes log lines to stderr and rotates it when it is a file that grew too large."""

    def __init__(self, max_bytes: int, backups: int) -> None:
        self.max_bytes = max_bytes
        self.backups = backups
        self.path = _stderr_file()

    def write(self, line: str) -> None:
        """Write one line (a timestamp and the logger's name go first)."""
        # Written directly: a logging.LogRecord per request costs more than the translation.
        sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} spark_stack.proxy {line}\n")
        if self.path is not None and os.fstat(2).st_size > self.max_bytes:
            self.rotate()

    def rotate(self) -> None:
        assert self.path is not None
        sys.stderr.flush()
        sys.stdout.flush()
        try:
            for index in range(self.backups - 1, 0, -1):
                older = f"{self.path}.{index}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            # Keep serving and keep writing where we were; say it once.
            sys.stderr.write(f"spark_stack.proxy cannot rotate {self.path}: {exc}\n")
            self.path = None
            return
        try:
            if os.path.sameopenfile(1, 2):
                os.dup2(fd, 1)
        except OSError:  # no stdout at all
            pass
        os.dup2(fd, 2)
        os.close(fd)


def _stderr_file() -> str | None:
    """The path of the regular file stderr writes to, if it is one we can find again."""
    try:
        if not stat.S_ISREG(os.fstat(2).st_mode):
            return None
        path = os.readlink("/proc/self/fd/2")
    except OSError:
        return None
    if not os.path.isabs(path) or not os.path.exists(path):
        return None  # e.g. "… (deleted)", or no /proc
    return path
