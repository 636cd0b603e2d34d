"""The one error the stand-in host raises: what failed, the log tail, and what to do."""

from __future__ import annotations

from pathlib import Path

from spark_stack.errors import SparkStackError

INSTALL_HINT = "run `bash scripts/test.sh` once (it installs docker.io, openssh-server, iproute2)"


class TestHostError(SparkStackError):
    """The stand-in GB10 host could not be brought up or is not working."""

    __test__ = False  # not a pytest test class despite the name


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a daemon log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return f"--- last lines of {path} ---\n" + "\n".join(tail)
