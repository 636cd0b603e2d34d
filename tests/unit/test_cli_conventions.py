"""CLI conventions: whole command summaries, plain placeholders, one meaning per short option,
shell completion."""

from __future__ import annotations

import re

import pytest
import typer

from spark_stack.cli import _register_commands, app, main

_register_commands()
ROOT = typer.main.get_command(app)
COMMANDS = [[name] for name in ROOT.commands if name != "export"] + [["export", "litellm"]]


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main([*argv, "--help"]) == 0
    return capsys.readouterr().out


@pytest.fixture(autouse=True)
def eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")


def test_command_summaries_are_whole_sentences(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help([], capsys)
    commands = text.split("Commands:\n", 1)[1]
    assert "..." not in commands and "…" not in commands
    summaries = re.split(r"\n  (?=\S)", "\n" + commands.rstrip())[1:]
    assert len(summaries) == len(ROOT.commands)
    for summary in summaries:
        assert " ".join(summary.split()).endswith("."), summary


@pytest.mark.parametrize("argv", [[], *COMMANDS], ids=lambda a: " ".join(a) or "root")
def test_placeholders_are_names_not_python_types(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help(argv, capsys)
    assert not re.search(r"<[a-z][a-z\[\] ,]*>", text), text


def test_each_short_option_has_one_meaning() -> None:
    meanings: dict[str, set[str]] = {}

    def walk(command: typer.core.TyperGroup | typer.core.TyperCommand) -> None:
        for param in command.params:
            shorts = [o for o in param.opts if not o.startswith("--")]
            longs = [o for o in param.opts if o.startswith("--")]
            for short in shorts:
                meanings.setdefault(short, set()).update(longs)
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(ROOT)
    assert meanings["-p"] == {"--port"}
    assert meanings["-s"] == {"--stack"}


def test_shell_completion_is_offered(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--install-completion" in _help([], capsys)
    with pytest.raises(SystemExit) as done:  # typer's completion callbacks exit themselves
        main(["--show-completion", "bash"])
    assert done.value.code in (0, None)
    assert "_SPARK_STACK_COMPLETE" in capsys.readouterr().out


def test_a_command_builds_only_itself_and_help_still_lists_every_command_in_order() -> None:
    """Building all fifteen commands' options cost more than a no-op `up`'s own work."""
    import subprocess
    import sys

    def run(script: str) -> str:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=60, env={"COLUMNS": "80", "PATH": ""})
        return done.stdout

    prelude = "from spark_stack.cli import COMMAND_MODULES, _registered, main\n"
    after_a_command = run(prelude + "main(['-s', 'nowhere.yaml', 'validate'])\n"
                          "print(list(_registered))\nmain(['--help'])\n")
    first, _, help_after = after_a_command.partition("\n")
    assert first == "['validate']", after_a_command
    assert help_after == run(prelude + "main(['--help'])\n")
    assert "export" in help_after and "demo" in help_after
