"""Turn a Plan into the token-by-token deltas vLLM's parsers would emit (pure).

One delta is one decoding step (one toy token): a slice of `chunk_chars` characters of
reasoning or content, or one qwen3_coder tool-call event (header, `{`, one completed
parameter, `}`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from .script import Plan, ToolCallPlan


@dataclass(frozen=True)
class ToolDelta:
    """A piece of one tool call; `name` is set only on the header."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Delta:
    """What one decoding step adds to the message."""

    reasoning: str | None = None
    content: str | None = None
    tool_calls: tuple[ToolDelta, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Request and server settings that shape the generation."""

    reasoning_parser: bool = True
    thinking: bool = True
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    multi_index_chunk: bool = False
    named_tool_choice: bool = False


@dataclass(frozen=True)
class Outcome:
    """The generated message, step by step and in total."""

    deltas: tuple[Delta, ...]
    finish_reason: str
    stop_reason: str | None
    # vLLM sends the finish_reason with the last token's text when generation was cut
    # (length, stop string); after an EOS token it comes in a chunk of its own.
    finish_on_last: bool
    reasoning: str | None
    content: str | None
    tool_calls: tuple[tuple[str, str, str], ...]  # (id, name, arguments)
    completion_tokens: int
    reasoning_tokens: int


def prefill_seconds(prompt_tokens: int, cached_tokens: int, ms_per_1k: float) -> float:
    """Time to compute the prompt tokens the prefix cache did not serve."""
    return max(0, prompt_tokens - cached_tokens) * ms_per_1k / 1_000_000


def make_tool_call_id() -> str:
    return f"chatcmpl-tool-{uuid.uuid4().hex}"


def _slices(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def tool_call_steps(index: int, call_id: str, call: ToolCallPlan) -> list[ToolDelta]:
    """The argument fragments qwen3_coder streams for one call: header, `{`, params, `}`."""
    steps = [ToolDelta(index, "", call_id, call.name), ToolDelta(index, "{")]
    for n, (key, value) in enumerate(call.arguments.items()):
        sep = "" if n == 0 else ", "
        steps.append(
            ToolDelta(index, f"{sep}{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
        )
    steps.append(ToolDelta(index, "}"))
    return steps


def _find_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    found: tuple[int, str] | None = None
    for stop in stops:
        if not stop:
            continue
        pos = text.find(stop)
        if pos >= 0 and (found is None or pos < found[0]):
            found = (pos, stop)
    return found


def generate(plan: Plan, settings: Settings, ids: Sequence[str] = ()) -> Outcome:
    """Run the plan through the 'engine': apply thinking, stop strings and max_tokens."""
    reasoning = plan.reasoning if settings.thinking else ""
    content = plan.content
    if reasoning and not settings.reasoning_parser:
        # Without a reasoning parser the thinking stays in the text, closed by </think>.
        content = f"{reasoning}\n</think>\n\n{content}"
        reasoning = ""
    calls = plan.tool_calls
    stop_reason: str | None = None
    hit = _find_stop(reasoning, settings.stop)
    if hit:
        reasoning, content, calls, stop_reason = reasoning[: hit[0]], "", (), hit[1]
    else:
        hit = _find_stop(content, settings.stop)
        if hit:
            content, calls, stop_reason = content[: hit[0]], (), hit[1]

    call_ids = [ids[i] if i < len(ids) else make_tool_call_id() for i in range(len(calls))]
    steps: list[Delta] = [Delta(reasoning=s) for s in _slices(reasoning, plan.chunk_chars)]
    steps += [Delta(content=s) for s in _slices(content, plan.chunk_chars)]
    for index, call in enumerate(calls):
        call_steps = tool_call_steps(index, call_ids[index], call)
        if settings.multi_index_chunk and index > 0 and steps and steps[-1].tool_calls:
            # Speculative decoding can finish one call and start the next in one step.
            steps[-1] = Delta(tool_calls=steps[-1].tool_calls + (call_steps[0],))
            call_steps = call_steps[1:]
        steps += [Delta(tool_calls=(s,)) for s in call_steps]

    if settings.max_tokens is not None and len(steps) > settings.max_tokens:
        steps = steps[: settings.max_tokens]
        finish, stop_reason, on_last, eos = "length", None, True, 0
    elif stop_reason is not None:
        finish, on_last, eos = "stop", bool(steps), 0
    else:
        tool_finish = calls and not settings.named_tool_choice
        finish, on_last, eos = ("tool_calls" if tool_finish else "stop"), False, 1
    return _outcome(steps, finish, stop_reason, on_last, eos, settings.reasoning_parser,
                    settings.named_tool_choice)


def _outcome(
    steps: list[Delta],
    finish: str,
    stop_reason: str | None,
    on_last: bool,
    eos: int,
    reasoning_parser: bool,
    named_tool_choice: bool = False,
) -> Outcome:
    reasoning = "".join(d.reasoning for d in steps if d.reasoning)
    content = "".join(d.content for d in steps if d.content)
    names: dict[int, tuple[str, str]] = {}
    args: dict[int, list[str]] = {}
    for d in steps:
        for t in d.tool_calls:
            if t.name is not None and t.id is not None:
                names[t.index] = (t.id, t.name)
            args.setdefault(t.index, []).append(t.arguments)
    calls = tuple((names[i][0], names[i][1], "".join(args[i])) for i in sorted(names))
    # The parsers return None for an empty part; plain text output stays a string, and so
    # does the text beside a call forced by a named tool_choice (vLLM 0.32 answers "").
    empty_content_is_none = (reasoning_parser or bool(calls)) and not (
        named_tool_choice and calls)
    return Outcome(
        deltas=tuple(steps),
        finish_reason=finish,
        stop_reason=stop_reason,
        finish_on_last=on_last,
        reasoning=reasoning or None,
        content=content if content or not empty_content_is_none else None,
        tool_calls=calls,
        completion_tokens=len(steps) + eos,
        reasoning_tokens=sum(1 for d in steps if d.reasoning),
    )
