"""`claude.launcher` pointed at something spark-stack did not write: `up` refuses before it
starts anything, `down --purge` leaves it, and a directory is a clear error, not a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spark_stack.deployment import resolve
from tests.helpers import free_port, run_cli

USERS_SCRIPT = "#!/bin/sh\necho my own script\n"


def _stack(tmp_path: Path, launcher_path: Path) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(
        "name: lablauncher\n"
        f"models:\n  - name: sim\n    kind: simulator\n    port: {free_port()}\n"
        f"proxy:\n  listen: 127.0.0.1:{free_port()}\n"
        f"claude:\n  launcher: {launcher_path}\n"
    )
    return path


@pytest.fixture()
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "claude-lab"
    path.parent.mkdir()
    path.write_text(USERS_SCRIPT)
    path.chmod(0o644)
    return path


def test_up_refuses_a_file_it_did_not_write_before_starting_anything(
    tmp_path: Path, users_file: Path, spark_stack_home: Path, fake_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack = _stack(tmp_path, users_file)
    try:
        code, out, err = run_cli(capsys, "-s", str(stack), "up")
        assert code == 2, err
        assert f"{users_file} holds a file spark-stack did not write" in err
        assert "fix: point claude.launcher in the stack file elsewhere" in err
        assert users_file.read_text() == USERS_SCRIPT
        assert users_file.stat().st_mode & 0o777 == 0o644
        # Nothing started: no simulator, no proxy.
        assert not list(spark_stack_home.rglob("*.pid"))

        code, out, _ = run_cli(capsys, "-s", str(stack), "up", "--json")
        error = json.loads(out)["error"]
        assert code == 2 and error["exit_code"] == 2 and str(users_file) in error["message"]

        code, out, err = run_cli(capsys, "-s", str(stack), "down", "--purge")
        assert code == 0, err
        assert users_file.read_text() == USERS_SCRIPT
    finally:
        run_cli(capsys, "-s", str(stack), "down")


def test_up_at_a_directory_says_so(
    tmp_path: Path, fake_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "bin"
    directory.mkdir()
    stack = _stack(tmp_path, directory)
    try:
        code, out, err = run_cli(capsys, "-s", str(stack), "up")
        assert code == 2, err
        assert "internal error" not in err
        assert f"launcher path {directory} is a directory" in err
        assert "at a file path such as" in err
    finally:
        run_cli(capsys, "-s", str(stack), "down")


def test_its_own_launcher_is_rewritten_and_purged(
    tmp_path: Path, fake_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spark_stack import launcher
    from spark_stack.errors import LauncherPathTaken
    from spark_stack.stack.loader import load_stack

    target = tmp_path / "claude-lab"
    stack = load_stack(_stack(tmp_path, target), lint=False).stack
    launcher.write_launcher(resolve(stack), path=target)
    launcher.write_launcher(resolve(stack), path=target)  # its own: rewritten without a word
    assert launcher.written_by_spark_stack(target)
    target.write_text(USERS_SCRIPT)
    with pytest.raises(LauncherPathTaken):
        launcher.write_launcher(resolve(stack), path=target)
    assert target.read_text() == USERS_SCRIPT
