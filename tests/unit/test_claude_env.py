"""The proxy token file, `--print-env` output and the `.claude/settings.json` merge."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_stack import claude_context, claude_env, launcher
from spark_stack.errors import ClaudeNotInstalled, SparkStackError
from tests.unit.test_launcher import SENTINEL, make_stack


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_auto_token_is_generated_once_0600_and_kept() -> None:
    stack = make_stack(token="auto")
    first = claude_env.ensure_proxy_token(stack.name, stack.proxy.token)
    assert first is not None and len(first) >= 32
    path = launcher.token_file(stack.name)
    assert mode_of(path) == 0o600
    assert path.read_text() == first + "\n"
    assert claude_env.ensure_proxy_token(stack.name, stack.proxy.token) == first
    assert claude_env.read_proxy_token(stack) == first


def test_referenced_token_is_resolved_into_the_0600_file() -> None:
    stack = make_stack(token="${LAB_PROXY_TOKEN}")
    token = claude_env.ensure_proxy_token(stack.name, stack.proxy.token,
                                          {"LAB_PROXY_TOKEN": SENTINEL})
    assert token == SENTINEL
    path = launcher.token_file(stack.name)
    assert mode_of(path) == 0o600
    assert path.read_text().strip() == SENTINEL
    # A rotated value replaces the old one.
    assert claude_env.ensure_proxy_token(stack.name, stack.proxy.token,
                                         {"LAB_PROXY_TOKEN": "rotated"}) == "rotated"
    assert claude_env.read_proxy_token(stack) == "rotated"


def test_unset_token_variable_is_named_not_shown() -> None:
    stack = make_stack(token="${LAB_PROXY_TOKEN}")
    with pytest.raises(SparkStackError, match="LAB_PROXY_TOKEN is not set"):
        claude_env.ensure_proxy_token(stack.name, stack.proxy.token, {})


def test_client_token_prefers_what_up_wrote() -> None:
    stack = make_stack(token="${LAB_PROXY_TOKEN}")
    claude_env.ensure_proxy_token(stack.name, stack.proxy.token, {"LAB_PROXY_TOKEN": SENTINEL})
    # Later, in a shell without the variable, clients still get the proxy's token.
    assert claude_env.client_token(stack, {}) == SENTINEL
    assert claude_env.client_token(make_stack(token=None), {}) is None
    fresh = make_stack(token="auto").model_copy(update={"name": "other"})
    token = claude_env.client_token(fresh, {})
    assert token is not None and claude_env.read_proxy_token(fresh) == token


def test_no_token_removes_a_stale_file() -> None:
    path = launcher.token_file("lab")
    path.parent.mkdir(parents=True)
    path.write_text("old")
    assert claude_env.ensure_proxy_token("lab", None) is None
    assert not path.exists()
    assert claude_env.read_proxy_token(make_stack(token=None)) is None


def test_missing_token_file_says_to_run_up() -> None:
    with pytest.raises(SparkStackError) as info:
        claude_env.read_proxy_token(make_stack(token="auto"))
    assert info.value.fix is not None and "spark-stack up" in info.value.fix


def test_print_env_lines_eval_to_the_launcher_environment() -> None:
    stack = make_stack(models={"opus": "qwen it's", "haiku": "small"}, default_model="qwen")
    env = claude_env.claude_environment(stack, SENTINEL)
    text = claude_env.export_lines(env)
    assert text.splitlines()[0] == "export ANTHROPIC_BASE_URL=http://127.0.0.1:4000"
    # A real shell evals the lines back to exactly these values (quoting included).
    shown = subprocess.run(
        ["/bin/bash", "-c", text + "env -0"], env={}, capture_output=True, text=True, check=True
    ).stdout
    seen = dict(item.split("=", 1) for item in shown.split("\0") if "=" in item)
    for name, value in env.items():
        assert seen[name] == value
    assert seen["ANTHROPIC_AUTH_TOKEN"] == SENTINEL
    assert seen["ANTHROPIC_DEFAULT_OPUS_MODEL"] == "qwen it's"
    assert seen["ANTHROPIC_MODEL"] == "qwen"
    assert seen["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"


def test_settings_block_references_the_token_file_never_the_token() -> None:
    stack = make_stack(token="auto", models={"sonnet": "qwen"})
    token = claude_env.ensure_proxy_token(stack.name, stack.proxy.token)
    env, helper = claude_env.settings_env(stack)
    assert helper == f"cat {launcher.token_file(stack.name)}"
    assert "ANTHROPIC_AUTH_TOKEN" not in env
    assert env["ANTHROPIC_DEFAULT_SONNET_MODEL"] == "qwen"
    assert token not in json.dumps(env)
    # The helper command prints the token, which Claude Code then sends.
    out = subprocess.run(["/bin/sh", "-c", helper], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == token


def test_settings_without_token_use_the_placeholder() -> None:
    env, helper = claude_env.settings_env(make_stack(token=None))
    assert helper is None
    assert env["ANTHROPIC_AUTH_TOKEN"] == claude_context.PLACEHOLDER_TOKEN


def test_merge_keeps_every_other_key() -> None:
    existing = {
        "permissions": {"allow": ["Bash(ls:*)"]},
        "env": {"KEEP": "1", "ANTHROPIC_BASE_URL": "http://old", "ANTHROPIC_AUTH_TOKEN": "stale"},
        "model": "x",
    }
    merged = claude_env.merge_settings(
        existing, {"ANTHROPIC_BASE_URL": "http://127.0.0.1:4000"}, "cat /t"
    )
    assert merged == {
        "permissions": {"allow": ["Bash(ls:*)"]},
        "env": {"KEEP": "1", "ANTHROPIC_BASE_URL": "http://127.0.0.1:4000"},
        "model": "x",
        "apiKeyHelper": "cat /t",
    }
    assert existing["env"]["ANTHROPIC_AUTH_TOKEN"] == "stale"  # the input is not mutated


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(
    existing=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    env=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=4),
    helper=st.none() | st.text(min_size=1, max_size=8),
)
def test_merge_only_touches_env_and_api_key_helper(
    existing: dict[str, Any], env: dict[str, str], helper: str | None
) -> None:
    merged = claude_env.merge_settings(existing, env, helper)
    for key, value in existing.items():
        if key not in ("env", "apiKeyHelper"):
            assert merged[key] == value
    for name, value in env.items():
        assert merged["env"][name] == value
    old_env = existing.get("env")
    if isinstance(old_env, dict):
        for name, value in old_env.items():
            if name not in env and not (helper and name == "ANTHROPIC_AUTH_TOKEN"):
                assert merged["env"][name] == value
    if helper is not None:
        assert merged["apiKeyHelper"] == helper
    elif "apiKeyHelper" in existing:
        assert merged["apiKeyHelper"] == existing["apiKeyHelper"]


def test_write_settings_creates_and_merges_a_file(tmp_path: Path) -> None:
    stack = make_stack(token="auto")
    claude_env.ensure_proxy_token(stack.name, stack.proxy.token)
    target = tmp_path / "proj" / ".claude" / "settings.json"
    assert claude_env.write_settings(stack, target) == target
    first = json.loads(target.read_text())
    assert first["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:4000"
    assert first["apiKeyHelper"].startswith("cat ")
    target.write_text(json.dumps({**first, "hooks": {"Stop": []}, "env": {"A": "b"}}))
    target.chmod(0o640)
    claude_env.write_settings(stack, target)
    second = json.loads(target.read_text())
    assert second["hooks"] == {"Stop": []}
    assert second["env"]["A"] == "b"
    assert second["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:4000"
    assert mode_of(target) == 0o640
    token = claude_env.read_proxy_token(stack)
    assert token is not None and token not in target.read_text()


def test_write_settings_refuses_a_broken_file(tmp_path: Path) -> None:
    target = tmp_path / "settings.json"
    target.write_text("{not json")
    with pytest.raises(SparkStackError, match="cannot read"):
        claude_env.write_settings(make_stack(token=None), target)
    assert target.read_text() == "{not json"
    target.write_text("[1]")
    with pytest.raises(SparkStackError, match="JSON object"):
        claude_env.write_settings(make_stack(token=None), target)


def test_find_claude_prefers_the_env_override(tmp_path: Path) -> None:
    exe = tmp_path / "my-claude"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    env = {"PATH": "/nonexistent", launcher.CLAUDE_BIN_ENV: str(exe)}
    assert claude_env.find_claude(env) == str(exe)
    (tmp_path / "claude").symlink_to(exe)
    assert claude_env.find_claude({"PATH": str(tmp_path)}) == str(tmp_path / "claude")


def test_find_claude_not_installed_names_the_install_command() -> None:
    with pytest.raises(ClaudeNotInstalled) as info:
        claude_env.find_claude({"PATH": "/nonexistent"})
    assert info.value.fix == f"install it with: {launcher.INSTALL_COMMAND}"
    assert os.environ.get("PATH")  # the process PATH was not consulted or changed
