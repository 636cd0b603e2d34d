"""A hand-built Claude Code-shaped request body (per research/claude-code-wire.md, CLI 2.1.x),
shared by the proxy tests and the benchmark: larger than the real one (24 tools, ~78 KB), with a
``run:`` prompt the simulator answers with a tool call. What the pinned CLI really sends is
recorded in tests/fixtures/claude_code/; this body keeps that recording's shape."""

from __future__ import annotations

from typing import Any

SCHEMA = "https://json-schema.org/draft/2020-12/schema"
TOOL_NAMES = [
    "Task", "Bash", "Glob", "Grep", "ExitPlanMode", "Read", "Edit", "MultiEdit", "Write",
    "NotebookEdit", "WebFetch", "TodoWrite", "WebSearch", "BashOutput", "KillShell",
    "SlashCommand", "ListMcpResources", "ReadMcpResource", "AskUserQuestion", "Skill",
    "EnterPlanMode", "LSP", "ToolSearch", "TaskOutput",
]
PARAGRAPH = (
    "Executes the given command in a persistent shell session with optional timeout, ensuring "
    "proper handling and security measures. Before executing, verify the directory exists; "
    "always quote file paths that contain spaces; prefer dedicated tools for file search. "
)


def _schema(name: str, i: int) -> dict[str, Any]:
    return {
        "$schema": SCHEMA,
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "command" if name == "Bash" else "input": {"type": "string",
                                                        "description": f"The {name} input"},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 600000},
            "mode": {"anyOf": [{"const": "fast"}, {"const": "thorough"}, {"type": "null"}]},
            "url": {"type": "string", "format": "uri"},
            "options": {"type": "object", "propertyNames": {"pattern": "^[a-z_]+$"},
                        "additionalProperties": {"type": "string"}},
            "items": {"type": "array", "minItems": 1,
                      "items": {"type": "object", "properties": {
                          "content": {"type": "string", "minLength": 1},
                          "status": {"type": "string",
                                     "enum": ["pending", "in_progress", "completed"]}},
                          "required": ["content", "status"], "additionalProperties": False}},
            f"flag_{i}": {"type": "boolean", "default": False},
        },
        "required": ["command" if name == "Bash" else "input"],
    }


def claude_code_body(prompt: str = "run: git status") -> dict[str, Any]:
    """~78 KB: 3 system blocks (billing line first), 24 tools, adaptive thinking, a
    mid-conversation system message, context_management and metadata."""
    tools = []
    for i, name in enumerate(TOOL_NAMES):
        # One description is ~19 KB in the real CLI (Bash); the rest a few KB each.
        repeats = 80 if name == "Bash" else 5
        tools.append({"name": name, "description": f"{name}: " + PARAGRAPH * repeats,
                      "input_schema": _schema(name, i)})
    return {
        "model": "claude-opus-4-5",
        "max_tokens": 32000,
        "stream": True,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": '{"device_id":"0f3c","account_uuid":"","session_id":"9a1e"}'},
        "system": [
            {"type": "text",
             "text": "x-anthropic-billing-header: cc_version=2.1.197.8f2; cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "You are an interactive CLI tool. " + PARAGRAPH * 20,
             "cache_control": {"type": "ephemeral"}},
        ],
        "tools": tools,
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>\nAs you answer the user's "
                 "questions, you can use the following context.\n</system-reminder>"},
                {"type": "text", "text": "What does this repo do?"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Look at the README.", "signature": "abc"},
                {"type": "text", "text": "It deploys vLLM on a DGX Spark."}]},
            {"role": "system", "content": "The user switched to plan mode."},
            {"role": "user", "content": [
                {"type": "text", "text": prompt, "cache_control": {"type": "ephemeral"}}]},
        ],
    }
