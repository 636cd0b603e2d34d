"""Where spark-stack keeps its local state.

Everything spark-stack writes lives under one directory: ``$SPARK_STACK_HOME`` when set
(hermetic tests), else the platform's user state dir. Files holding secrets are written
0600 through :func:`write_private`.
"""

from __future__ import annotations

import os
import stat
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
    make_dirs(root.parent)
    make_dirs(root, mode=0o700)
    return root


def stack_dir(stack_name: str, *, create: bool = True) -> Path:
    """The state directory of one stack (pid files, logs, secrets); made unless ``create`` is
    false (``down`` asks without making it again after a purge)."""
    path = state_home() / "stacks" / stack_name
    if create:
        make_dirs(path, mode=0o700)
    return path


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """Create ``path`` and its missing parents with ``mode``, never group/world-writable.

    ``Path.mkdir(parents=True)`` gives parents 0777 minus the umask: 0777 itself under
    ``umask 000``. Each directory created here is chmod-ed to ``mode`` minus the umask and minus
    group/other write, so a lax umask cannot open spark-stack's directories (or the launcher's)
    to other users; directories that already exist are left as they are.
    """
    missing: list[Path] = []
    cursor = path
    while not cursor.exists() and cursor != cursor.parent:
        missing.append(cursor)
        cursor = cursor.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=mode)
        except FileExistsError:
            continue
        current = stat.S_IMODE(directory.stat().st_mode)
        os.chmod(directory, current & mode & ~0o022)


def proxy_state_dir(stack_name: str) -> Path:
    """Where the stack's background proxy keeps its config, pid and log files.

    Shared by `up` (which writes the config) and `spark-stack claude` (which restarts from it).
    """
    return stack_dir(stack_name)


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` atomically (temp file + rename) with ``mode``."""
    make_dirs(path.parent)
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
