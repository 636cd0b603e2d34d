"""Decide what the simulated model answers to a chat request (pure, deterministic).

The rules, first match wins, are documented in the package docstring.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .tokenizer import text_of, tool_call_markup

SCRIPT_MARKER = "SIM_SCRIPT:"
DEFAULT_CHUNK_CHARS = 4
_RUN = re.compile(r"run:\s*(.+)")
# A task of several commands: "run each: A | B | C" (one tool call per step, in order).
_TASK = re.compile(r"run each:\s*(.+)")
# What a summary keeps of the task's progress, so a compacted session resumes where it was.
_PROGRESS = re.compile(r"\[sim-progress (\d+)\]")
# The start of Claude Code's compaction instruction (2.1.x).
COMPACT_PROMPT = "create a detailed summary of"
_CALL = re.compile(r"Call the (\w+) tool with the arguments (\{.*\})")


class ScriptError(ValueError):
    """A SIM_SCRIPT directive that is not valid JSON of the documented shape."""


@dataclass(frozen=True)
class ToolCallPlan:
    """One tool call the model will make."""

    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class Plan:
    """What the model will say, and how the stream should be shaped."""

    reasoning: str = ""
    content: str = ""
    tool_calls: tuple[ToolCallPlan, ...] = ()
    chunk_chars: int = DEFAULT_CHUNK_CHARS
    delay_ms: float = 0.0
    die_after_chunks: int | None = None
    http_status: int | None = None
    error_message: str | None = None
    error_type: str | None = None
    resend_id: bool | None = None
    multi_index_chunk: bool | None = None
    reasoning_content: bool | None = None
    prompt_tokens: int | None = None
    after_tool: Mapping[str, Any] | None = field(default=None, compare=False)


def last_of_role(messages: Sequence[Any], role: str) -> Mapping[str, Any] | None:
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == role:
            return message
    return None


def tool_names(tools: Sequence[Any] | None) -> list[str]:
    names = []
    for tool in tools or []:
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            names.append(fn["name"])
    return names


def parse_script(text: str) -> Plan:
    """The Plan of the JSON object that follows SIM_SCRIPT: in `text`."""
    start = text.index(SCRIPT_MARKER) + len(SCRIPT_MARKER)
    brace = text.find("{", start)
    if brace < 0:
        raise ScriptError("SIM_SCRIPT: must be followed by a JSON object")
    try:
        data, _ = json.JSONDecoder().raw_decode(text, brace)
    except ValueError as exc:
        raise ScriptError(f"SIM_SCRIPT: invalid JSON: {exc}") from exc
    return plan_from_mapping(data)


def _opt_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScriptError(f"SIM_SCRIPT: {key} must be an integer")
    return value


def _opt_bool(data: Mapping[str, Any], key: str) -> bool | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ScriptError(f"SIM_SCRIPT: {key} must be true or false")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ScriptError(f"SIM_SCRIPT: {key} must be a string")
    return value


def _tool_call(raw: Any) -> ToolCallPlan:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise ScriptError("SIM_SCRIPT: each tool call needs a string name")
    args = raw.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError as exc:
            raise ScriptError(f"SIM_SCRIPT: tool arguments are not JSON: {exc}") from exc
    if not isinstance(args, Mapping):
        raise ScriptError("SIM_SCRIPT: tool arguments must be an object")
    return ToolCallPlan(raw["name"], dict(args))


def plan_from_mapping(data: Any) -> Plan:
    """Validate a script object and turn it into a Plan."""
    if not isinstance(data, Mapping):
        raise ScriptError("SIM_SCRIPT: must be a JSON object")
    calls = data.get("tool_calls") or []
    if not isinstance(calls, list):
        raise ScriptError("SIM_SCRIPT: tool_calls must be a list")
    chunk_chars = _opt_int(data, "chunk_chars") or DEFAULT_CHUNK_CHARS
    delay = data.get("delay_ms", 0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise ScriptError("SIM_SCRIPT: delay_ms must be a non-negative number")
    after_tool = data.get("after_tool")
    if after_tool is not None and not isinstance(after_tool, Mapping):
        raise ScriptError("SIM_SCRIPT: after_tool must be an object")
    return Plan(
        reasoning=_opt_str(data, "reasoning") or "",
        content=_opt_str(data, "content") or "",
        tool_calls=tuple(_tool_call(c) for c in calls),
        chunk_chars=max(1, chunk_chars),
        delay_ms=float(delay),
        die_after_chunks=_opt_int(data, "die_after_chunks"),
        http_status=_opt_int(data, "http_status"),
        error_message=_opt_str(data, "error_message"),
        error_type=_opt_str(data, "error_type"),
        resend_id=_opt_bool(data, "resend_id"),
        multi_index_chunk=_opt_bool(data, "multi_index_chunk"),
        reasoning_content=_opt_bool(data, "reasoning_content"),
        prompt_tokens=_opt_int(data, "prompt_tokens"),
        after_tool=after_tool,
    )


def bench_plan(chunks: int) -> Plan:
    """A fixed answer of exactly `chunks` content chunks, for benchmarks."""
    return Plan(content="bench " * chunks, chunk_chars=len("bench "))


def _run_plan(command: str, tools: Sequence[Any] | None) -> Plan:
    names = tool_names(tools)
    name = "Bash" if "Bash" in names else names[0]
    return Plan(
        reasoning=f"The user wants me to run `{command}`. I will use the {name} tool.",
        tool_calls=(
            ToolCallPlan(name, {"command": command, "description": f"Run the command: {command}"}),
        ),
    )


def _call_plan(name: str, arguments: str) -> Plan:
    try:
        args = json.loads(arguments)
    except ValueError as exc:
        raise ScriptError(f"the arguments for {name} are not JSON: {exc}") from exc
    if not isinstance(args, Mapping):
        raise ScriptError(f"the arguments for {name} must be a JSON object")
    return Plan(
        reasoning=f"The user asks for the {name} tool with given arguments. I will call it.",
        tool_calls=(ToolCallPlan(name, dict(args)),),
    )


def _default_plan(model: str, user_text: str) -> Plan:
    words = len(user_text.split())
    return Plan(
        reasoning="The user sent a message. I will reply with a short greeting.",
        content=f"Hello from the vLLM simulator ({model}). Your message had {words} words.",
    )


def _is_carried_note(message: Any) -> bool:
    """A mid-conversation system message the proxy carried as a user note: not the user's words
    (Claude Code's holds skill descriptions such as "… to run, start, or …")."""
    if not isinstance(message, Mapping) or message.get("role") != "user":
        return False
    text = text_of(message.get("content")).strip()
    return text.startswith("<system-reminder>") and text.endswith("</system-reminder>")


def _task_plan(messages: Sequence[Any], tools: Sequence[Any] | None) -> Plan | None:
    """The next step of a "run each:" task, from its progress so far: tool results in this
    conversation plus what a compaction summary recorded (``[sim-progress N]``)."""
    texts = [text_of(m.get("content")) for m in messages
             if isinstance(m, Mapping) and m.get("role") in ("user", "assistant")]
    task = next((found[-1] for text in texts if (found := _TASK.findall(text))), None)
    if task is None:
        return None
    steps = [step.strip() for step in task.split("|") if step.strip()]
    before = max((int(n) for text in texts for n in _PROGRESS.findall(text)), default=0)
    done = before + sum(1 for m in messages if isinstance(m, Mapping) and m.get("role") == "tool")
    last = texts[-1] if texts else ""
    if COMPACT_PROMPT in last:
        return Plan(content=f"Summary: the user asked: run each: {task}. {done} of "
                    f"{len(steps)} commands have run. [sim-progress {done}]")
    if done >= len(steps) or not tool_names(tools):
        return Plan(content=f"All {len(steps)} commands ran. TASK DONE")
    return _run_plan(steps[done], tools)


def plan_for(request: Mapping[str, Any], model: str) -> Plan:
    """The scripted answer for a chat request."""
    messages = [m for m in request.get("messages") or [] if not _is_carried_note(m)]
    tools = request.get("tools") or None
    last = messages[-1] if messages and isinstance(messages[-1], Mapping) else {}
    user = last_of_role(messages, "user")
    user_text = text_of(user.get("content")) if user else ""
    task = _task_plan(messages, tools)
    if task is not None:
        return task
    script = parse_script(user_text) if SCRIPT_MARKER in user_text else None
    if last.get("role") == "tool":
        if script is not None and script.after_tool is not None:
            return plan_from_mapping(script.after_tool)
        result = text_of(last.get("content")).strip()
        return Plan(
            reasoning="The tool returned its output. I will report it.",
            content=f"The command printed: {result}",
        )
    if script is not None:
        return script
    call = _CALL.search(user_text)
    if call and call.group(1) in tool_names(tools):
        return _call_plan(call.group(1), call.group(2))
    commands = _RUN.findall(user_text)
    if commands and tool_names(tools):
        return _run_plan(commands[-1].strip(), tools)
    if "What is 12*17?" in user_text:
        return Plan(reasoning="12*17 = 12*10 + 12*7 = 120 + 84 = 204.", content="204")
    return _default_plan(model, user_text)


def apply_tool_choice(plan: Plan, tool_choice: Any, tools: Sequence[Any] | None) -> Plan:
    """Make the plan obey `tool_choice` the way constrained decoding would."""
    if tool_choice == "none":
        return replace(plan, tool_calls=())
    forced: str | None = None
    if isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function")
        forced = fn.get("name") if isinstance(fn, Mapping) else None
    elif tool_choice == "required" and not plan.tool_calls:
        names = tool_names(tools)
        forced = names[0] if names else None
    if forced is None:
        return plan
    calls = plan.tool_calls or (ToolCallPlan(forced, {}),)
    return replace(plan, tool_calls=tuple(replace(c, name=forced) for c in calls[:1]))


def apply_quirks(plan: Plan, quirks: frozenset[str], tools: Sequence[Any] | None) -> Plan:
    """Tool-call failures seen on real deployments, for soak tests to catch:

    - ``wrong_tool``: every call goes to another offered tool (the first one whose name differs);
    - ``leak_markup``: the parser misses the calls (MTP with prefix caching on the Spark): they
      come out as qwen3_coder markup in the text, and the answer ends with ``stop``.
    """
    if not plan.tool_calls:
        return plan
    if "wrong_tool" in quirks:
        names = tool_names(tools)
        calls = []
        for call in plan.tool_calls:
            other = next((n for n in names if n != call.name), call.name)
            calls.append(replace(call, name=other))
        plan = replace(plan, tool_calls=tuple(calls))
    if "leak_markup" in quirks:
        markup = "\n".join(tool_call_markup(c.name, c.arguments) for c in plan.tool_calls)
        content = f"{plan.content}\n\n{markup}" if plan.content else markup
        plan = replace(plan, content=content, tool_calls=())
    return plan
