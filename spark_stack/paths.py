"""Where spark-stack keeps its local state.

Everything spark-stack writes lives under one directory: ``$SPARK_STACK_HOME`` when set
(hermetic tests), else the platform's user state dir. Files holding secrets are written
0600 through :func:`write_private`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def state_home() -> Path:
    """The root of spark-stack's local state, created on first use (mode 0700)."""
    env = os.environ.get("SPARK_STACK_HOME")
    if env:
        root = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "spark-stack"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root


def stack_dir(stack_name: str) -> Path:
    """The state directory of one stack (pid files, logs, secrets)."""
    path = state_home() / "stacks" / stack_name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def proxy_state_dir(stack_name: str) -> Path:
    """Where the stack's background proxy keeps its config, pid and log files.

    Shared by `up` (which writes the config) and `spark-stack claude` (which restarts from it).
    """
    return stack_dir(stack_name)


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` atomically (temp file + rename) with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private(path: Path, text: str) -> None:
    """Write a file that holds a secret: mode 0600, atomically."""
    write_atomic(path, text, mode=0o600)
