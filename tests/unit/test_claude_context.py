"""The context contract: the window Claude Code is told, from the models its names reach."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from spark_stack import claude_env, launcher
from spark_stack.claude_context import ClaudeContext, claude_context
from spark_stack.deployment import resolve
from spark_stack.stack import schema
from spark_stack.stack.loader import load_stack_text


def two_model_stack(claude: str, routes: str = "") -> schema.Stack:
    text = f"""
name: lab
models:
  - name: small
    kind: simulator
    port: 8801
    max_model_len: 40000
  - name: big
    kind: simulator
    port: 8802
    max_model_len: 98304
proxy:
  listen: 127.0.0.1:4000
{routes}
claude:
{claude}
"""
    return load_stack_text(text, lint=False).stack


def test_numbers_for_known_windows() -> None:
    assert claude_context(40000) == ClaudeContext(40000, 10000)
    assert claude_context(40000).compact_at == 17000
    assert claude_context(98304) == ClaudeContext(98304, 24576)
    assert claude_context(98304).compact_at == 98304 - 20000 - 13000
    # Claude Code's own default output (32000) is the ceiling.
    assert claude_context(262144) == ClaudeContext(262144, 32000)


@given(st.integers(min_value=32768, max_value=4_000_000))
def test_the_compacting_request_fits_with_its_whole_output(window: int) -> None:
    context = claude_context(window)
    assert context.compact_at + context.max_output_tokens <= window
    assert context.compact_at >= window - window // 4 - 13000
    assert 0 < context.max_output_tokens <= 32000


def test_the_variables_name_the_window() -> None:
    assert claude_context(40000).variables() == {
        "CLAUDE_CODE_MAX_CONTEXT_TOKENS": "40000",
        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": "40000",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "10000",
    }


def test_every_alias_on_the_big_model_uses_its_window() -> None:
    stack = two_model_stack("  models: {opus: big, sonnet: big, haiku: big}")
    deployment = resolve(stack)
    assert deployment.claude_models == ("big",)
    assert deployment.claude_context == claude_context(98304)


def test_aliases_on_two_models_take_the_smallest_window() -> None:
    stack = two_model_stack("  models: {opus: big, sonnet: big, haiku: small}")
    assert resolve(stack).claude_context == claude_context(40000)


def test_names_go_through_the_routing_table() -> None:
    # `claude-main` is not a model: the proxy routes it by the glob rule, to `small`.
    stack = two_model_stack(
        "  models: {opus: big, sonnet: big, haiku: big}\n  default_model: claude-main",
        routes='  routes: {"claude-*": small}',
    )
    deployment = resolve(stack)
    rule = deployment.route("claude-main")
    assert rule is not None and rule.model == "small"
    assert deployment.claude_models == ("small", "big")
    assert deployment.claude_context == claude_context(40000)


def test_an_unset_alias_counts_every_model_a_glob_reaches() -> None:
    # Without a haiku alias Claude Code sends its own haiku id, which the catch-all (the first
    # model, `small`) answers.
    stack = two_model_stack("  models: {opus: big, sonnet: big}")
    assert resolve(stack).claude_context == claude_context(40000)


def test_the_default_model_counts() -> None:
    stack = two_model_stack(
        "  models: {opus: big, sonnet: big, haiku: big}\n  default_model: small")
    assert resolve(stack).claude_context == claude_context(40000)


def test_no_declared_window_sets_no_window_but_still_disables_1m() -> None:
    text = """
name: lab
models:
  - name: qwen
    kind: remote
    url: http://127.0.0.1:9/v1
claude:
  models: {opus: qwen, sonnet: qwen, haiku: qwen}
"""
    deployment = resolve(load_stack_text(text, lint=False).stack)
    names = {var.name: var.value for var in deployment.launcher_env}
    assert deployment.claude_context is None
    assert "CLAUDE_CODE_MAX_CONTEXT_TOKENS" not in names
    assert names["CLAUDE_CODE_DISABLE_1M_CONTEXT"] == "1"


def test_launcher_print_env_and_settings_all_carry_the_contract(tmp_path: Path) -> None:
    stack = two_model_stack("  models: {opus: big, sonnet: big, haiku: small}")
    expected = {
        "CLAUDE_CODE_DISABLE_1M_CONTEXT": "1",
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
        "CLAUDE_CODE_MAX_RETRIES": "2",
        "CLAUDE_CODE_MAX_CONTEXT_TOKENS": "40000",
        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": "40000",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "10000",
    }
    script = launcher.render_launcher(resolve(stack), token_path=tmp_path / "tok")
    env = claude_env.claude_environment(stack, None)
    settings = json.loads(claude_env.write_settings(stack, tmp_path / "s.json").read_text())
    for name, value in expected.items():
        assert f"export {name}={value}\n" in script
        assert env[name] == value
        assert settings["env"][name] == value


def _aliases(stack: schema.Stack) -> dict[str, str]:
    env = {var.name: var.value for var in resolve(stack).launcher_env}
    return {alias: env[name] for alias, name in
            (("opus", "ANTHROPIC_DEFAULT_OPUS_MODEL"), ("sonnet", "ANTHROPIC_DEFAULT_SONNET_MODEL"),
             ("haiku", "ANTHROPIC_DEFAULT_HAIKU_MODEL")) if name in env}


def test_unset_aliases_name_the_model_the_proxy_routes_claude_codes_own_id_to() -> None:
    # Sub-agents and the background (haiku) model then ask for a served model by its name.
    assert _aliases(two_model_stack("  models: {opus: big}")) == {
        "opus": "big", "sonnet": "small", "haiku": "small"}
    routed = two_model_stack("  models: {}", routes='  routes: {"claude-*haiku*": big}')
    assert _aliases(routed) == {"opus": "small", "sonnet": "small", "haiku": "big"}
    assert resolve(routed).claude_context == claude_context(40000)


def test_an_alias_nothing_answers_stays_unset() -> None:
    stack = two_model_stack("  models: {opus: big}", routes="  fallback: none")
    assert _aliases(stack) == {"opus": "big"}
