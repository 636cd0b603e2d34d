"""Usage errors through the real CLI: exit 2 with click's message, never an "internal error"."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_stack import __version__
from spark_stack.cli import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--bogus"], "No such option: --bogus"),
        (["nosuch"], "No such command 'nosuch'"),
        (["plan", "extra", "-s", "demo"], "unexpected extra argument"),
        (["bench", "-n", "0", "-s", "demo"], "Invalid value for '--requests'"),
    ],
)
def test_usage_errors_exit_2_without_internal_error(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "internal error" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"spark-stack {__version__}"


def test_bare_command_prints_help_and_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr()
    assert "Usage: spark-stack" in out.out + out.err
    assert "validate" in out.out + out.err


def test_debug_is_accepted_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--debug", "-s", "demo"]) == 0
    assert "stack 'demo'" in capsys.readouterr().out


def test_debug_shows_the_traceback_of_a_stack_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "-s", str(tmp_path / "missing.yaml"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "stack file not found" in err


def test_a_directory_is_not_a_stack_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "-s", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory, not a stack file" in err
    assert f"--stack {tmp_path / 'spark-stack.yaml'}" in err.replace("\n", "")


def test_a_binary_file_is_not_a_stack_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "stack.yaml"
    path.write_bytes(b"name: x\n\xff\xfe\x00models: []\n")
    assert main(["validate", "-s", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8 text" in err and "save the file as UTF-8" in err
