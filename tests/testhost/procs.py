"""Small process helpers: run a command, find a daemon by pidfile, stop it, wait for things."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from .errors import TestHostError
from .layout import NETNS_PATH


def run(argv: Sequence[str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; raise :class:`TestHostError` with its output when it fails."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise TestHostError(f"command not found: {argv[0]}") from exc
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        raise TestHostError(f"`{' '.join(argv)}` failed (exit {done.returncode}): {output}")
    return done


def find_command(name: str) -> str | None:
    """``name`` on PATH, or in the sbin dirs a non-login root shell may lack."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(pidfile: Path, name: str) -> int | None:
    """The pid in ``pidfile`` if that process is alive and is ``name`` (pids get reused)."""
    pid = read_pid(pidfile)
    if pid is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    argv0 = cmdline[0].decode(errors="replace") if cmdline else ""
    # sshd retitles itself "sshd: /usr/sbin/sshd -f … [listener]".
    if Path(argv0).name != name and not argv0.startswith(f"{name}:"):
        return None
    return pid


def in_stand_in_netns(pid: int, netns_path: Path = NETNS_PATH) -> bool:
    """Whether ``pid`` lives in the current namespace at ``netns_path`` (not a deleted older
    one); by default the first host's ``sparkhost``."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns_path).st_ino
    except OSError:
        return False


def stop(pid: int, *, timeout: float = 20.0) -> None:
    """SIGTERM ``pid``, then SIGKILL if it is still there after ``timeout`` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if wait_for(lambda: not _alive(pid), timeout):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_for(lambda: not _alive(pid), 5.0)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; return the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` to ``path`` unless it already holds it; return whether it changed."""
    try:
        if path.read_text() == text:
            path.chmod(mode)
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)
    return True


def open_log(path: Path, max_bytes: int = 10 * 1024 * 1024) -> BinaryIO:
    """Open a daemon log for appending, starting it afresh once it has grown past ``max_bytes``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        too_big = path.stat().st_size > max_bytes
    except OSError:
        too_big = False
    return path.open("wb" if too_big else "ab")
