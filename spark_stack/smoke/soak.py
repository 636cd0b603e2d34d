"""The tool-call soak: a long agentic session with Claude Code's real tool set, every turn judged.

Each turn asks for one tool with given arguments (``Call the Read tool with the arguments
{…}``: a real model follows it, the simulator's rules answer it), sends back a tool result and
asks for the next. A turn passes when the answer calls that tool, the arguments satisfy the
tool's JSON schema, ``stop_reason`` is ``tool_use`` and the text holds no raw tool-call markup
(``<tool_call>``, ``<function=``: the Spark's silent parser failure). The first turn that fails
ends the session and is named in the reason.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import httpx

from .checks import CheckResult
from .endpoints import Endpoints, ModelTarget
from .schema_check import schema_problems
from .wire import CallResult, anthropic_call

SOAK_MAX_TOKENS = 1024
MARKUP = ("<tool_call>", "<function=")
_WORKDIR = "/tmp/spark-stack-soak"
# (tool, arguments) asked for in turn, round robin; every tool is in Claude Code's set.
STEPS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("Bash", {"command": "ls -la", "description": "List the files"}),
    ("Read", {"file_path": f"{_WORKDIR}/notes.txt"}),
    ("Write", {"file_path": f"{_WORKDIR}/notes.txt", "content": "soak\n"}),
    ("Edit", {"file_path": f"{_WORKDIR}/notes.txt", "old_string": "soak",
              "new_string": "soaked"}),
    ("Bash", {"command": "wc -l notes.txt", "description": "Count the lines", "timeout": 60000}),
    ("Read", {"file_path": f"{_WORKDIR}/notes.txt", "offset": 1, "limit": 20}),
    ("ToolSearch", {"query": "select:Grep", "max_results": 3}),
)


@cache
def claude_code_tools() -> list[dict[str, Any]]:
    """The tool definitions the pinned Claude Code sends (from the recorded fixture)."""
    text = resources.files(__package__).joinpath("claude_code_tools.json").read_text()
    tools: list[dict[str, Any]] = json.loads(text)
    return tools


def turn_prompt(number: int, tool: str, arguments: dict[str, Any]) -> str:
    return (f"Step {number}: Call the {tool} tool with the arguments "
            f"{json.dumps(arguments)}")


def turn_problem(call: CallResult, tool: str, schemas: dict[str, Any]) -> str | None:
    """Why one turn's answer is wrong (None: it is right)."""
    if call.error is not None:
        return call.error
    for marker in MARKUP:
        at = call.text.find(marker)
        if at >= 0:
            return (f"raw tool-call markup in the text (stop_reason {call.stop_reason}): "
                    f"{call.text[at:at + 80]!r}")
    if not call.tool_calls:
        return f"no tool call (stop_reason {call.stop_reason}): {call.text.strip()[:80]!r}"
    first = call.tool_calls[0]
    if first["name"] != tool:
        return f"called {first['name']!r}, expected {tool!r}"
    problems = schema_problems(first["input"], schemas.get(tool))
    if problems:
        return f"arguments of {tool} break its schema: {'; '.join(problems[:3])}"
    if call.stop_reason != "tool_use":
        return f"stop_reason is {call.stop_reason!r}, expected 'tool_use'"
    return None


def tool_soak(
    client: httpx.Client, ends: Endpoints, model: ModelTarget, turns: int
) -> CheckResult:
    """``turns`` tool calls in one growing conversation; see the module doc."""
    tools = claude_code_tools()
    schemas = {tool["name"]: tool.get("input_schema") for tool in tools}
    messages: list[dict[str, Any]] = []
    result: list[dict[str, Any]] = []
    started = None
    first_ttft = None
    last: CallResult | None = None
    for number in range(1, turns + 1):
        tool, arguments = STEPS[(number - 1) % len(STEPS)]
        prompt = {"type": "text", "text": turn_prompt(number, tool, arguments)}
        messages.append({"role": "user", "content": [*result, prompt]})
        body = {"model": model.name, "max_tokens": SOAK_MAX_TOKENS, "stream": True,
                "tools": tools, "messages": messages}
        last = anthropic_call(client, ends.proxy_url, ends.proxy_token, body, model.session)
        started = last.started if started is None else started
        first_ttft = last.ttft_ms if first_ttft is None else first_ttft
        problem = turn_problem(last, tool, schemas)
        if problem is not None:
            return _result(model, last, started, first_ttft,
                           f"turn {number}/{turns} ({tool}): {problem}")
        call = last.tool_calls[0]
        messages.append({"role": "assistant", "content": last.content})
        result = [{"type": "tool_result", "tool_use_id": call["id"],
                   "content": f"step {number} done"}]
    assert last is not None and started is not None
    used = sorted({STEPS[i % len(STEPS)][0] for i in range(turns)})
    return _result(model, last, started, first_ttft, None,
                   f"{turns} turns with {', '.join(used)} of Claude Code's {len(tools)} tools: "
                   "each the tool asked for, schema-valid arguments, stop_reason tool_use, "
                   "no markup in the text")


def _result(model: ModelTarget, last: CallResult, started: float, ttft: float | None,
            problem: str | None, passed: str = "") -> CheckResult:
    return CheckResult("tool_soak", model.name, "proxy", problem is None, problem or passed,
                       (last.finished_at - started) * 1000, ttft, replica=model.replica)
