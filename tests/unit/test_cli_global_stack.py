"""`--stack/-s` before the command and `$SPARK_STACK` choose the stack of every command."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_stack.cli import main

COMMANDS = [
    ["validate"], ["plan"], ["up"], ["down"], ["status"], ["logs"], ["smoke"], ["bench"],
    ["export", "litellm"], ["claude"], ["demo"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
@pytest.mark.parametrize("how", ["top-level -s", "SPARK_STACK"])
def test_every_command_uses_the_chosen_stack(
    command: list[str], how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "chosen.yaml"
    monkeypatch.chdir(tmp_path)
    if how == "SPARK_STACK":
        monkeypatch.setenv("SPARK_STACK", str(missing))
        argv = command
    else:
        monkeypatch.delenv("SPARK_STACK", raising=False)
        argv = ["-s", str(missing), *command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "chosen.yaml" in err and "not found" in err
