"""Fixtures for end-to-end tests: the stand-in GB10 host and the pinned Claude Code CLI.

Every test in this directory is marked ``e2e``. Missing prerequisites fail (never skip) with
the command that installs them.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.two_hosts import host_pair  # noqa: F401  (a fixture)
from tests.testhost import HostInfo, TestHostError, ensure_up

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parents[1]
LOCAL_CLAUDE = REPO_ROOT / ".testhost" / "claude" / "node_modules" / ".bin" / "claude"
TEST_SH = REPO_ROOT / "scripts" / "test.sh"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items: mark only the ones under tests/e2e.
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def testhost() -> HostInfo:
    """The running stand-in GB10 host (brought up once per session, reused when warm)."""
    try:
        return ensure_up()
    except TestHostError as exc:
        message = f"stand-in GB10 host unavailable: {exc.message}"
        if exc.fix:
            message += f"\nfix: {exc.fix}"
        pytest.fail(message, pytrace=False)


@pytest.fixture
def ssh_home(testhost: HostInfo, fake_home: Path) -> Path:
    """A fresh ``HOME`` whose ``~/.ssh`` reaches the stand-in, as a user's machine would."""
    testhost.write_ssh_home(fake_home)
    return fake_home


def pinned_claude_version() -> str:
    """The Claude Code version scripts/test.sh pins (one place to bump it)."""
    match = re.search(r"^CLAUDE_CODE_VERSION=(\S+)$", TEST_SH.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no CLAUDE_CODE_VERSION= line in {TEST_SH}")
    return match.group(1)


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The pinned Claude Code CLI that scripts/test.sh installs into .testhost/claude."""
    hint = (
        "run `bash scripts/test.sh` once (it installs the pinned @anthropic-ai/claude-code "
        "into .testhost/claude)"
    )
    configured = os.environ.get("SPARK_STACK_CLAUDE_BIN")
    path = Path(configured) if configured else LOCAL_CLAUDE
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"Claude Code CLI not found at {path}; {hint}", pytrace=False)
    done = subprocess.run(
        [str(path), "--version"], capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )
    pinned = pinned_claude_version()
    if done.returncode != 0 or not done.stdout.startswith(f"{pinned} "):
        pytest.fail(
            f"{path} is not Claude Code {pinned}: {(done.stdout or done.stderr).strip()}; {hint}",
            pytrace=False,
        )
    return path


@pytest.fixture
def claude_home(fake_home: Path) -> Path:
    """A fresh ``HOME`` in which Claude Code starts without onboarding or network checks."""
    from spark_stack.claude_run import prepare_home

    return prepare_home(fake_home)
