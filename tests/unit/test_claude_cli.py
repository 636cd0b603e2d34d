"""`spark-stack claude` through the real CLI: --print-env, --write-settings, errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from spark_stack import launcher
from spark_stack.cli import main
from spark_stack.cli.common import state as cli_state

STACK = """\
name: lab
models:
  - name: qwen
    kind: simulator
proxy:
  listen: 127.0.0.1:4999
  token: auto
claude:
  models: {opus: qwen, sonnet: qwen}
  default_model: qwen
"""


@pytest.fixture
def stack_file(tmp_path: Path) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(STACK)
    return path


def run(*args: str) -> int:
    cli_state.exit_code = 0
    cli_state.json = False
    return main(list(args))


def test_print_env_evals_to_what_the_launcher_exports(
    stack_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("-s", str(stack_file), "claude", "--print-env") == 0
    out = capsys.readouterr().out
    token = launcher.token_file("lab").read_text().strip()
    shown = subprocess.run(
        ["/bin/bash", "-c", out + 'printf "%s\\n" "$ANTHROPIC_BASE_URL" "$ANTHROPIC_AUTH_TOKEN" '
         '"$ANTHROPIC_DEFAULT_OPUS_MODEL" "$ANTHROPIC_MODEL"'],
        env={}, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert shown == ["http://127.0.0.1:4999", token, "qwen", "qwen"]
    # Asked twice, the same token: `auto` is generated once.
    assert run("-s", str(stack_file), "claude", "--print-env") == 0
    assert f"ANTHROPIC_AUTH_TOKEN={token}" in capsys.readouterr().out


def test_write_settings_merges_into_the_given_file(
    stack_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "proj" / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"permissions": {"deny": ["Bash(rm:*)"]}}))
    assert run("-s", str(stack_file), "claude", "--write-settings", str(settings)) == 0
    data = json.loads(settings.read_text())
    assert data["permissions"] == {"deny": ["Bash(rm:*)"]}
    assert data["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:4999"
    assert data["apiKeyHelper"] == f"cat {launcher.token_file('lab')}"
    token = launcher.token_file("lab").read_text().strip()
    captured = capsys.readouterr()
    assert token not in settings.read_text() + captured.out + captured.err


def test_write_settings_defaults_to_the_projects_claude_dir(
    stack_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("-s", str(stack_file), "claude", "--write-settings") == 0
    assert "env" in json.loads((tmp_path / ".claude" / "settings.json").read_text())


def test_not_installed_names_the_install_command(
    stack_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(launcher.CLAUDE_BIN_ENV, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert run("-s", str(stack_file), "claude", "-p", "hi", "--output-format", "json") == 1
    err = capsys.readouterr().err
    assert "Claude Code (`claude`) is not installed" in err
    assert "npm install -g @anthropic-ai/claude-code" in err


@pytest.mark.parametrize(
    "args",
    [
        ["--print-env", "--write-settings"],
        ["--print-env", "extra"],
        ["--write-settings", "a.json", "b.json"],
    ],
)
def test_bad_combinations_are_usage_errors(
    stack_file: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("-s", str(stack_file), "claude", *args) == 2
    assert "error:" in capsys.readouterr().err


def test_help_says_how_to_pass_claude_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("claude", "--help") == 0
    out = " ".join(capsys.readouterr().out.split())  # undo the help's line wrapping
    assert "--print-env" in out and "--write-settings" in out and "-- --help" in out
