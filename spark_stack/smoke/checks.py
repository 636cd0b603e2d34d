"""The smoke checks: each sends real requests and judges the answer (one function per check).

The prompts work for a real Qwen3 and match the vLLM simulator's scripted rules: a known
answer (``What is 12*17?`` → 204) and a tool call (``run: <command>`` with a tool offered).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from .endpoints import Endpoints, ModelTarget
from .wire import CallResult, anthropic_call, count_tokens_call, openai_stream_call

KNOWN_PROMPT = "What is 12*17? Answer with the number."
KNOWN_ANSWER = "204"
TOOL_COMMAND = "echo smoke-ok"
TOOL_OUTPUT = "smoke-ok"
# The command ends its line: the simulator takes the rest of the line after "run:".
TOOL_PROMPT = (
    f"Use the Bash tool to run: {TOOL_COMMAND}\n"
    "Then tell me what the command printed."
)
BASH_TOOL: dict[str, Any] = {
    "name": "Bash",
    "description": "Run a shell command and return its output.",
    "input_schema": {
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The command to run"},
            "description": {"type": "string", "description": "What the command does"},
        },
        "required": ["command"],
        "additionalProperties": False,
    },
}
ANSWER_MAX_TOKENS = 256
THINKING_BUDGET = 1024

Via = Literal["proxy", "direct", "deploy"]


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict with its timings (milliseconds)."""

    name: str
    model: str
    via: Via
    ok: bool
    reason: str
    latency_ms: float
    ttft_ms: float | None = None
    skipped: bool = False  # not applicable to the model; ``ok`` so it does not fail the run
    replica: str | None = None  # the replica checked (``qwen@spark-a``) of a replicated model

    @property
    def label(self) -> str:
        """Which model (or replica) and check: ``qwen@spark-a/completion``."""
        where = self.replica or self.model
        return f"{where}/{self.name}" if where else self.name

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else "passed" if self.ok else "failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "via": self.via,
            "status": self.status,
            "ok": self.ok,
            "reason": self.reason,
            "latency_ms": round(self.latency_ms, 1),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 1),
            "replica": self.replica,
        }


def _verdict(
    name: str, model: ModelTarget, via: Via, call: CallResult, problem: str | None, passed: str
) -> CheckResult:
    if call.error is not None:
        problem = call.error
    return CheckResult(
        name=name,
        model=model.name,
        via=via,
        ok=problem is None,
        reason=passed if problem is None else problem,
        latency_ms=call.latency_ms,
        ttft_ms=call.ttft_ms,
        replica=model.replica,
    )


def _answer_problem(text: str) -> str | None:
    if KNOWN_ANSWER in text:
        return None
    return f"expected {KNOWN_ANSWER} in the answer, got {text.strip()[:120]!r}"


def direct_completion(client: httpx.Client, ends: Endpoints, model: ModelTarget) -> CheckResult:
    """The known-answer prompt straight to vLLM (OpenAI chat completions), streamed."""
    body = model.direct_chat_body(KNOWN_PROMPT, ANSWER_MAX_TOKENS)
    call = openai_stream_call(client, model.base_url, model.api_key, body)
    return _verdict(
        "direct_completion", model, "direct", call, _answer_problem(call.text),
        f"answered {KNOWN_ANSWER}",
    )


def _proxy_known_answer(client: httpx.Client, ends: Endpoints, model: ModelTarget) -> CallResult:
    return anthropic_call(
        client,
        ends.proxy_url,
        ends.proxy_token,
        {
            "model": model.name,
            "max_tokens": ANSWER_MAX_TOKENS,
            "stream": True,
            "messages": [{"role": "user", "content": KNOWN_PROMPT}],
        },
        model.session,
    )


def warm_up(client: httpx.Client, ends: Endpoints, model: ModelTarget) -> None:
    """One unmeasured request per path, so neither measured TTFT pays for a cold connection or
    a cold prefix (``proxy_added`` compares like with like)."""
    openai_stream_call(client, model.base_url, model.api_key,
                       model.direct_chat_body(KNOWN_PROMPT, ANSWER_MAX_TOKENS))
    _proxy_known_answer(client, ends, model)


def completion(client: httpx.Client, ends: Endpoints, model: ModelTarget) -> CheckResult:
    """The known-answer prompt through the proxy, streamed as Claude Code does."""
    call = _proxy_known_answer(client, ends, model)
    return _verdict(
        "completion", model, "proxy", call, _answer_problem(call.text),
        f"answered {KNOWN_ANSWER}",
    )


def tool_round_trip(client: httpx.Client, ends: Endpoints, model: ModelTarget) -> CheckResult:
    """A streamed tool call, its result sent back, and the final answer that uses it."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": TOOL_PROMPT}]
    body: dict[str, Any] = {
        "model": model.name,
        "max_tokens": ANSWER_MAX_TOKENS * 2,
        "stream": True,
        "tools": [BASH_TOOL],
        "messages": messages,
    }
    first = anthropic_call(client, ends.proxy_url, ends.proxy_token, body, model.session)
    problem = _tool_call_problem(first)
    if first.error is not None or problem is not None:
        return _verdict("tool_round_trip", model, "proxy", first, problem, "")
    call = first.tool_calls[0]
    messages += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call["id"], "content": TOOL_OUTPUT + "\n"}
            ],
        },
    ]
    body = {**body, "messages": messages}
    second = anthropic_call(client, ends.proxy_url, ends.proxy_token, body, model.session)
    final_problem = None
    if TOOL_OUTPUT not in second.text:
        final_problem = (
            f"final answer does not mention {TOOL_OUTPUT!r}: {second.text.strip()[:120]!r}"
        )
    result = _verdict(
        "tool_round_trip", model, "proxy", second, final_problem,
        f"called Bash({call['input'].get('command')!r}), then answered with its output",
    )
    total = (second.finished_at - first.started) * 1000
    return CheckResult(result.name, result.model, result.via, result.ok, result.reason, total,
                       first.ttft_ms, replica=model.replica)


def _tool_call_problem(call: CallResult) -> str | None:
    if call.error is not None:
        return None
    if not call.tool_calls:
        return f"no tool call (stop_reason {call.stop_reason}): {call.text.strip()[:120]!r}"
    first = call.tool_calls[0]
    if first["name"] != BASH_TOOL["name"]:
        return f"called {first['name']!r}, expected {BASH_TOOL['name']!r}"
    if call.stop_reason != "tool_use":
        return f"stop_reason is {call.stop_reason!r}, expected 'tool_use'"
    command = first["input"].get("command") if isinstance(first["input"], dict) else None
    if not isinstance(command, str) or TOOL_OUTPUT not in command:
        return f"tool input {first['input']!r} does not run {TOOL_COMMAND!r}"
    return None


def count_tokens(client: httpx.Client, ends: Endpoints, model: ModelTarget) -> CheckResult:
    """``count_tokens`` answers a positive integer, and more for a longer prompt."""
    body: dict[str, Any] = {
        "model": model.name,
        "tools": [BASH_TOOL],
        "messages": [{"role": "user", "content": TOOL_PROMPT}],
    }
    short = count_tokens_call(client, ends.proxy_url, ends.proxy_token, body, model.session)
    longer_body = {**body, "messages": [{"role": "user", "content": TOOL_PROMPT * 8}]}
    longer = count_tokens_call(client, ends.proxy_url, ends.proxy_token, longer_body,
                               model.session)
    call = short if short.error else longer
    problem = _count_problem(short.input_tokens or 0, longer.input_tokens or 0)
    how = "estimated by the proxy: the backend's tokenizer did not answer" if (
        short.estimated or longer.estimated
    ) else "counted by the backend"
    result = _verdict(
        "count_tokens", model, "proxy", call, problem,
        f"{short.input_tokens} input tokens (8x prompt: {longer.input_tokens}), {how}",
    )
    total = (longer.finished_at - short.started) * 1000
    return CheckResult(result.name, result.model, result.via, result.ok, result.reason, total,
                       replica=model.replica)


def _count_problem(short: int, longer: int) -> str | None:
    if short <= 0:
        return f"input_tokens is {short}"
    if longer <= short:
        return f"a prompt 8x longer counted {longer} tokens, not more than {short}"
    return None


def thinking(client: httpx.Client, ends: Endpoints, model: ModelTarget) -> CheckResult:
    """With ``thinking`` enabled a reasoning model answers a thinking block, then the answer."""
    call = anthropic_call(
        client,
        ends.proxy_url,
        ends.proxy_token,
        {
            "model": model.name,
            "max_tokens": THINKING_BUDGET * 4,
            "thinking": {"type": "enabled", "budget_tokens": THINKING_BUDGET},
            "messages": [{"role": "user", "content": KNOWN_PROMPT}],
        },
        model.session,
    )
    problem = None
    if not call.thinking.strip():
        kinds = [block.get("type") for block in call.content]
        problem = f"no thinking block in the answer (blocks: {kinds})"
    return _verdict(
        "thinking", model, "proxy", call, problem,
        f"thinking block of {len(call.thinking)} chars, then {call.text.strip()[:40]!r}",
    )


Check = Callable[[httpx.Client, Endpoints, ModelTarget], CheckResult]


def skipped(name: str, reason: str) -> Check:
    """A check that does not apply: reported as skipped with why, so none goes missing."""

    def check(client: httpx.Client, ends: Endpoints, model: ModelTarget) -> CheckResult:
        return CheckResult(name, model.name, "proxy", True, reason, 0.0, skipped=True,
                           replica=model.replica)

    return check


NO_TOOLS = ("the model has no tool_call_parser in the stack file (tools: false for a remote "
            "model), so it cannot call tools")
NO_REASONING = ("the model has no reasoning_parser in the stack file (thinking: none for a "
                "remote model), so it returns no thinking")


def checks_for(model: ModelTarget) -> list[Check]:
    """Every check in order (after :func:`warm_up`); skipped ones say why."""
    return [
        direct_completion,
        completion,
        tool_round_trip if model.tools else skipped("tool_round_trip", NO_TOOLS),
        count_tokens,
        thinking if model.reasoning else skipped("thinking", NO_REASONING),
    ]
