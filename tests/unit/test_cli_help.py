"""`spark-stack --help` starts fast: no heavy library is imported for it."""

from __future__ import annotations

import resource
import subprocess
import sys

HEAVY = ("pydantic", "yaml", "rich", "docker", "paramiko", "httpx", "aiohttp", "uvicorn")
PROBE = (
    "import sys\n"
    "from spark_stack.cli import main\n"
    "main(['--help'])\n"
    f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])\n"
)


def test_help_imports_no_heavy_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "init" in result.stdout and "validate" in result.stdout and "plan" in result.stdout
    assert "LOADED []" in result.stdout


def test_help_is_under_half_a_second() -> None:
    # CPU time of the child, best of five: other suites share this machine, and wall time
    # under their load measures them, not us (unloaded, wall time is ~0.2 s).
    best = float("inf")
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            [sys.executable, "-m", "spark_stack", "--help"], capture_output=True, timeout=60,
            check=True,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = min(best, used)
    assert best < 0.5, f"spark-stack --help used {best:.2f} s of CPU"
