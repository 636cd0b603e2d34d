"""Directories spark-stack creates are never group/world-writable, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from spark_stack import paths
from spark_stack.deployment import resolve
from spark_stack.launcher import write_launcher
from spark_stack.stack.loader import load_stack_text


@pytest.fixture
def lax_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_dirs_under_umask_000(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lax_umask: None
) -> None:
    monkeypatch.delenv("SPARK_STACK_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg" / "state"))
    stack = paths.stack_dir("lab")
    assert stack == tmp_path / "xdg" / "state" / "spark-stack" / "stacks" / "lab"
    assert _mode(stack) == _mode(stack.parent) == _mode(stack.parent.parent) == 0o700
    assert _mode(tmp_path / "xdg") == _mode(tmp_path / "xdg" / "state") == 0o755


def test_the_launchers_directory_under_umask_000(
    tmp_path: Path, fake_home: Path, lax_umask: None
) -> None:
    stack = load_stack_text("name: lab\nmodels:\n  - {name: m, kind: simulator}\n").stack
    target = write_launcher(resolve(stack))
    assert target == fake_home / ".local" / "bin" / "claude-lab"
    for directory in (fake_home / ".local", fake_home / ".local" / "bin"):
        assert _mode(directory) == 0o755, directory
    assert _mode(target) == 0o755
