"""The README's list of what is stored resolved matches where the code writes it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from spark_stack import paths
from spark_stack.claude_env import ensure_proxy_token
from spark_stack.deploy.secrets_store import api_key_name, secret_path
from spark_stack.launcher import token_file
from spark_stack.proxy.daemon import CONFIG_FILE
from spark_stack.stack.loader import load_stack_text

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
SENTINEL = "sentinel-token-4f1c"


def _security_notes() -> str:
    start = README.index("## Security notes")
    return README[start: README.index("\n## ", start + 1)]


def test_the_readme_names_the_files_that_hold_resolved_secrets() -> None:
    notes = _security_notes()
    state = paths.stack_dir("lab")
    for path in (token_file("lab"), secret_path("lab", api_key_name("m")),
                 state / CONFIG_FILE):
        shown = str(path.relative_to(state)).replace("-m", "-<model>")
        assert f"`{shown}`" in notes, shown
    assert "proxy.token: ${VAR}" in notes and "never stored resolved" not in README


def test_a_proxy_token_reference_is_stored_resolved_0600_as_the_readme_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("T", SENTINEL)
    stack = load_stack_text(
        "name: lab\nmodels:\n  - {name: m, kind: simulator}\nproxy: {token: '${T}'}\n"
    ).stack
    assert ensure_proxy_token(stack.name, stack.proxy.token) == SENTINEL
    path = token_file("lab")
    assert path.read_text(encoding="utf-8").strip() == SENTINEL
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_state_directory_is_where_the_readme_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_home: Path
) -> None:
    notes = _security_notes()
    assert ("`<state>` is `$SPARK_STACK_HOME`, else\n  `$XDG_STATE_HOME/spark-stack`, else "
            "`~/.local/state/spark-stack`") in notes
    monkeypatch.setenv("SPARK_STACK_HOME", str(tmp_path / "own"))
    assert paths.state_home() == tmp_path / "own"
    monkeypatch.delenv("SPARK_STACK_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert paths.state_home() == tmp_path / "xdg" / "spark-stack"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert paths.state_home() == fake_home / ".local" / "state" / "spark-stack"
