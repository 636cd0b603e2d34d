"""Background processes spark-stack starts and finds again: simulators, SSH tunnels, the proxy.

Each has a pid file, a log (0600) and a small JSON record of what it was started with, all in
one directory under the stack's state dir. A pid counts only while that process is alive and
its command line still names our module (a recycled pid is not ours). Standard library only.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import write_atomic, write_private
from .processes import pid_alive, terminate


@dataclass(frozen=True)
class ManagedProcess:
    """``<directory>/<name>.pid``, ``.log`` and ``.json`` of one process running ``module``."""

    directory: Path
    name: str
    module: str  # ``python -m`` module the process runs: how its command line is recognised

    @property
    def pid_file(self) -> Path:
        return self.directory / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / f"{self.name}.log"

    @property
    def record_file(self) -> Path:
        return self.directory / f"{self.name}.json"

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        return pid if self.module.encode() in cmdline else None

    def record(self) -> Any:
        """What :meth:`start` recorded for the running process (None when unreadable)."""
        try:
            return json.loads(self.record_file.read_text())
        except (OSError, ValueError):
            return None

    def start(self, argv: list[str], record: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` detached, logging to the log file, and record ``record``."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(self.record_file, json.dumps(record))
        with open(self.log_file, "ab") as log:
            os.chmod(self.log_file, 0o600)
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       close_fds=True)
        write_atomic(self.pid_file, f"{process.pid}\n")
        return process

    def stop(self) -> bool:
        """Stop it (SIGTERM, then SIGKILL); False when it was not running."""
        pid = self.running_pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        terminate(pid)
        return True

    def forget(self) -> None:
        self.pid_file.unlink(missing_ok=True)
        self.record_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"


def known(directory: Path) -> list[str]:
    """Names with a pid file in ``directory`` (including ones no longer wanted)."""
    return sorted(p.stem for p in directory.glob("*.pid")) if directory.is_dir() else []
