"""The README's commands and options are the CLI's: each one it names exists in the real
`--help`, and every command `--help` lists is in the README's command table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spark_stack.cli import main

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
# Arguments after these commands belong to another program (Claude Code), not spark-stack.
PASS_THROUGH = {"claude"}
GROUPS = {"export", "keys"}


def _help(argv: list[str]) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--help"]) == 0, argv
    return out.getvalue()


def _section(text: str, title: str) -> str:
    match = re.search(rf"^{title}:\n((?:  .*\n?|\n)*)", text, flags=re.MULTILINE)
    assert match, f"no {title} section in:\n{text}"
    return match.group(1)


def _help_commands(argv: list[str]) -> list[str]:
    return re.findall(r"^  (\S+)", _section(_help(argv), "Commands"), flags=re.MULTILINE)


def _help_options(argv: list[str]) -> set[str]:
    """Every ``-x``/``--long`` the Options section of ``--help`` lists (not its help text)."""
    options = _section(_help(argv), "Options")
    names = re.findall(r"^\s+(-.*?)(?:  |$)", options, flags=re.MULTILINE)
    return {o for line in names for o in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", line)}


ROOT_OPTIONS = _help_options([])
ALL_COMMANDS = {name: [name] for name in _help_commands([]) if name not in GROUPS}
for _group in GROUPS:
    for _sub in _help_commands([_group]):
        ALL_COMMANDS[f"{_group} {_sub}"] = [_group, _sub]


def _table(header: str) -> list[list[str]]:
    start = README.index(header)
    rows = []
    for line in README[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _invocation(words: list[str]) -> tuple[str, list[str]] | None:
    """(command, options) of ``spark-stack`` words, global options skipped; None if none."""
    while words and words[0] in ("-s", "--stack", "--debug"):
        words = words[2:] if words[0] != "--debug" else words[1:]
    if not words or not re.fullmatch(r"[a-z]+", words[0]):
        return None
    command = words[0]
    rest = words[1:]
    if command in GROUPS and rest:
        command, rest = f"{command} {rest[0]}", rest[1:]
    if command in PASS_THROUGH:
        rest = [w for w in rest if w in ("--print-env", "--write-settings")]
    options = []
    for word in rest:
        if word.startswith(("#", "|", ">", "&&", "$(")):
            break
        word = word.strip("[]").split("=", 1)[0]
        if re.fullmatch(r"--?[a-zA-Z][\w-]*", word):
            options.append(word)
    return command, options


def _readme_invocations() -> list[tuple[str, list[str], str]]:
    found = []
    fence = r"```[a-z]*\n(.*?)```"
    blocks = [line for block in re.findall(fence, README, re.DOTALL)
              for line in block.splitlines()]
    spans = [" ".join(span.split())
             for span in re.findall(r"`([^`]+)`", re.sub(fence, "", README, flags=re.DOTALL))]
    for text in [*spans, *blocks]:
        for command in re.split(r"&&|;|\|", text):
            for match in re.finditer(r"spark-stack((?: [^ `]+)+)", command):
                parsed = _invocation(match.group(1).split())
                if parsed:
                    found.append((*parsed, text.strip()))
    for row in _table("| command | does |"):
        for span in re.findall(r"`([^`]+)`", row[0]):
            parsed = _invocation(span.split())
            if parsed:
                found.append((*parsed, span))
    return found


def test_every_command_in_help_is_in_the_readme_table() -> None:
    table = {words.split()[0] if words.split()[0] not in GROUPS else " ".join(words.split()[:2])
             for row in _table("| command | does |") for words in re.findall(r"`([^`]+)`", row[0])}
    assert set(ALL_COMMANDS) == table


@pytest.mark.parametrize(("command", "options", "where"), _readme_invocations(),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_each_command_and_option_the_readme_names_exists(
    command: str, options: list[str], where: str
) -> None:
    assert command in ALL_COMMANDS, f"README names `spark-stack {command}` ({where})"
    known = _help_options(ALL_COMMANDS[command]) | ROOT_OPTIONS
    unknown = [option for option in options if option not in known]
    assert not unknown, f"{where}: not in `spark-stack {command} --help`: {unknown}"


@pytest.mark.parametrize("command", sorted(ALL_COMMANDS))
def test_every_command_takes_stack(command: str) -> None:
    assert {"-s", "--stack"} <= _help_options(ALL_COMMANDS[command])
