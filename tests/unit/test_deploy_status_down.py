"""`down` says what it keeps; `down --purge` also removes the launcher and the local state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from spark_stack.cli import main
from tests.helpers import free_port


@pytest.fixture
def stack_file(tmp_path: Path, fake_home: Path) -> Iterator[Path]:
    path = tmp_path / "spark-stack.yaml"
    path.write_text(
        "name: downer\n"
        "models:\n"
        f"  - {{name: sim, kind: simulator, port: {free_port()}, startup_seconds: 0}}\n"
        f"proxy: {{listen: '127.0.0.1:{free_port()}'}}\n"
    )
    yield path
    main(["-s", str(path), "down"])


def test_down_keeps_launcher_and_secrets_and_says_so(
    stack_file: Path, fake_home: Path, spark_stack_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    launcher = fake_home / ".local" / "bin" / "claude-downer"
    state = spark_stack_home / "stacks" / "downer"
    assert main(["-s", str(stack_file), "up"]) == 0
    assert launcher.is_file() and any(state.iterdir())
    capsys.readouterr()
    assert main(["-s", str(stack_file), "down"]) == 0
    out = capsys.readouterr().out
    assert "1 simulator(s) stopped, proxy stopped" in out
    assert f"kept: the Claude Code launcher {launcher}; the stack's secrets and state in {state}" \
        in out
    assert "`down --purge`" in out
    assert launcher.is_file() and any(state.iterdir())


def test_down_purge_removes_launcher_and_local_state(
    stack_file: Path, fake_home: Path, spark_stack_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    launcher = fake_home / ".local" / "bin" / "claude-downer"
    state = spark_stack_home / "stacks" / "downer"
    assert main(["-s", str(stack_file), "up"]) == 0
    capsys.readouterr()
    assert main(["-s", str(stack_file), "down", "--purge", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["purged"] == [str(launcher), str(state)]
    assert result["kept"] == []  # a simulator stack has no host caches
    assert not launcher.exists() and not state.exists()


def test_purge_never_removes_a_launcher_path_it_did_not_write(
    stack_file: Path, fake_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = fake_home / ".local" / "bin" / "claude-downer"
    mine.parent.mkdir(parents=True)
    mine.write_text("#!/bin/sh\necho my own script\n")
    assert main(["-s", str(stack_file), "down", "--purge"]) == 0
    assert f"removed {mine}" not in capsys.readouterr().out
    assert mine.read_text() == "#!/bin/sh\necho my own script\n"


def test_down_after_purge_does_not_make_the_state_directory_again(
    stack_file: Path, fake_home: Path, spark_stack_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = spark_stack_home / "stacks" / "downer"
    assert main(["-s", str(stack_file), "up"]) == 0
    assert main(["-s", str(stack_file), "down", "--purge"]) == 0
    assert not state.exists()
    capsys.readouterr()
    assert main(["-s", str(stack_file), "down"]) == 0
    assert main(["-s", str(stack_file), "down", "--purge"]) == 0
    assert not state.exists()
    assert "state in" not in capsys.readouterr().out  # nothing kept: there is nothing
