"""Usage per key and model, in SQLite (WAL) in the stack's state directory, written off the
request path.

The server appends one tuple per answered request to a deque (thread-safe, ~50 ns); a writer
thread moves what has gathered into the database every :data:`FLUSH_S` seconds in one
transaction, and once more on a clean stop. A crash loses at most the last flush interval.
Nothing here may fail a request: a database that is locked keeps its rows for the next flush
(bounded), one that is corrupt or unreadable is logged and the usage marked incomplete (a
``usage.incomplete`` file next to it says since when and why; ``spark-stack usage`` shows it).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
from collections import deque
from pathlib import Path

USAGE_DB = "usage.db"
INCOMPLETE_FILE = "usage.incomplete"
FLUSH_S = 0.5
MAX_PENDING = 100_000  # rows held while the database is locked (~10 MB)

# ts, key, model, status, input_tokens, cached_tokens, output_tokens, error, wait_s, duration_s
Row = tuple[float, str, str, int, int, int, int, int, float, float]

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    ts REAL NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    status INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    error INTEGER NOT NULL,
    wait_s REAL NOT NULL,
    duration_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
"""
_INSERT = "INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

log = logging.getLogger("spark_stack.proxy")


def connect(path: Path) -> sqlite3.Connection:
    """The usage database at ``path``, created 0600 with its table; WAL, synchronous=NORMAL
    (a process crash loses nothing committed)."""
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PermissionError(f"{path} has mode {mode:04o} (fix: chmod 600 {path})")
    else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    connection = sqlite3.connect(path, timeout=0.2, isolation_level=None,
                                 check_same_thread=False)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(SCHEMA)
    except BaseException:
        connection.close()
        raise
    return connection


class UsageWriter:
    """Collects rows on the event loop and writes them from its own thread."""

    def __init__(self, path: Path | None, flush_s: float = FLUSH_S) -> None:
        self.path = path
        self.flush_s = flush_s
        self.rows: deque[Row] = deque()
        self.complete = True
        self._held: list[Row] = []  # taken from ``rows`` but not yet written (a locked db)
        self._connection: sqlite3.Connection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._complaint = ""

    def record(self, row: Row) -> None:
        if self.path is not None:
            self.rows.append(row)

    def start(self) -> None:
        if self.path is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write what is left and stop (a clean stop loses nothing)."""
        if self.path is None:
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None
        else:
            self.flush()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()
        self.flush()

    def flush(self) -> None:
        """Write the rows gathered so far in one transaction; never raises."""
        assert self.path is not None
        rows = self._held
        self._held = []
        for _ in range(len(self.rows)):
            rows.append(self.rows.popleft())
        if not rows:
            return
        try:
            if self._connection is None:
                self._connection = connect(self.path)
            with self._connection:
                self._connection.execute("BEGIN")
                self._connection.executemany(_INSERT, rows)
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                self._complain(f"usage database {self.path} is locked ({exc}); will retry")
                kept = rows[-MAX_PENDING:]
                if len(kept) < len(rows):
                    self._incomplete(f"{len(rows) - len(kept)} rows dropped while locked")
                self._held = kept
                return
            self._failed(exc, len(rows))
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc, len(rows))
        else:
            self._complaint = ""

    def _failed(self, exc: BaseException, lost: int) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._complain(f"cannot write usage to {self.path}: {exc}; serving on, usage "
                       "marked incomplete")
        self._incomplete(f"{lost} requests not recorded: {exc}")

    def _complain(self, message: str) -> None:
        if message != self._complaint:
            self._complaint = message
            log.error("%s", message)

    def _incomplete(self, reason: str) -> None:
        self.complete = False
        assert self.path is not None
        marker = self.path.with_name(INCOMPLETE_FILE)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.write(f"{stamp} {reason}\n")
        except OSError:
            pass  # said in the log already


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text
