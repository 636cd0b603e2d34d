"""The simulator held to vLLM's real engine: one request set sent to both, and what spark-stack
depends on compared (issue 19, item 5).

Compared, because the proxy, ``up``, ``top`` and ``smoke`` read it:

- the field names and JSON types of every answer: non-streamed bodies, and each kind of stream
  chunk (role, reasoning, content, tool-call header, tool-call arguments, finish, usage);
- the order of a stream's events (consecutive chunks of one kind count once, a chunk carrying
  two kinds counts as both) and ``[DONE]``;
- finish and stop reasons, what the message holds (reasoning, text, tool calls with their
  names and parsed arguments);
- usage: its fields, ``prompt_tokens_details.cached_tokens`` on a repeated prompt, the completion
  tokens of an answer cut by ``max_tokens``, and ``/tokenize``'s count against the same prompt's
  ``usage.prompt_tokens`` (the proxy's ``count_tokens`` and its clamp rely on it);
- errors: status, body shape, ``type``/``param``/``code``, the message with its numbers blanked
  and what the proxy makes of it (:func:`spark_stack.proxy.errors.from_backend`: Anthropic
  status and type, and the "prompt is too long" wording Claude Code compacts on);
- ``/metrics``: every sample ``top`` reads, with its labels and bucket bounds, and that the
  simulator invents no ``vllm:`` sample the engine lacks; ``/tokenize``, ``/v1/models``,
  ``/health``, unknown routes and methods.

The two models say different words: the simulator's answers are scripted by ``SIM_SCRIPT:`` in
the prompt, the tiny model's by a trigger word (:mod:`tests.realvllm.scripts`). Every request
carries both, so both servers answer with the same kind of message (which kind depends on the
tool parser: the tiny model writes hermes JSON calls for ``[tool]`` and qwen3_coder markup for
``[leak]``, see :func:`cases`). Texts and token counts are not compared, their shapes are.

Everything but :func:`fetch`, :func:`observe`, :func:`served_max_model_len`, :func:`compare`
and :func:`compare_all` is pure.
:data:`ACCEPTED` lists the differences that are known and why they stay; any other is a
failure whose text names the case and the field, event or metric.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from spark_stack.proxy.errors import from_backend
from spark_stack.top import figures
from spark_stack.top.promtext import Scrape
from spark_stack.top.promtext import parse as parse_metrics

from . import scripts

# -- what a server answered, and where two disagree -------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One server's answer to one case: status, content type, the body (parsed JSON, or the
    text when it is not JSON) and, for a stream, its ``data:`` events (parsed chunks, the
    string ``"[DONE]"`` as it is)."""

    status: int
    content_type: str = ""
    body: Any = None
    events: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Difference:
    """One place where the simulator and the engine disagree."""

    case: str
    where: str  # a field path, a chunk kind's field, "events", a metric
    sim: str
    real: str
    reason: str | None = None  # why it is accepted (set by :func:`classify`)

    def __str__(self) -> str:
        text = f"{self.case}: {self.where}: simulator {self.sim}, real vLLM {self.real}"
        return f"{text} [accepted: {self.reason}]" if self.reason else text


@dataclass(frozen=True)
class Accepted:
    """A known difference that stays: glob patterns for the case and the place, and why."""

    case: str
    where: str
    reason: str

    def matches(self, diff: Difference) -> bool:
        return fnmatch.fnmatchcase(diff.case, self.case) and fnmatch.fnmatchcase(
            diff.where, self.where)


ACCEPTED: tuple[Accepted, ...] = (
    Accepted("message without a role", "error.message", (
        "pydantic tries every message type of the union and vLLM lists its errors (more than "
        "ten); "
        "the simulator names the first (same status, type and param), which is all the proxy "
        "(which never sends a message without a role) could show")),
    Accepted("tool (qwen3_coder)", "*content", (
        "vLLM 0.32's qwen3_coder parser drops a <tool_call> block it cannot read (here the "
        "tiny model's hermes JSON, no <function=…>) from a non-streamed message: content null, "
        "no tool_calls, while the stream shows it as text. A Qwen3.5/3.6 model under "
        "qwen3_coder writes <function=…> calls, which both parse; the simulator does not "
        "model the drop")),
    *(Accepted("tool named by tool_choice*(qwen3_coder)", where, (
        "model behaviour: under qwen3_coder a named tool_choice constrains decoding to the "
        "qwen3_coder call format, which the tiny model's successor table follows into its "
        "[leak] answer (text first, then Bash ls -la; under load sometimes cut by max_tokens); "
        "a trained model writes the named call, as the simulator does. The chunk shapes are "
        "still compared"))
      for where in ("events", "content", "tool_calls", "finish_reason",
                    "body.choices[*].message.content")),
    Accepted("tool_choice none*", "*content", (
        "model behaviour, not the server's: with tool_choice none vLLM neither constrains the "
        "model nor runs the tool parser, so the tiny model's scripted <tool_call> comes back "
        "as text in content; the simulator's model obeys and writes nothing. The server side "
        "(no tool_calls, finish_reason stop) is compared and agrees")),
)


def classify(
    diffs: Iterable[Difference], accepted: Sequence[Accepted] | None = None
) -> tuple[list[Difference], list[Difference]]:
    """(failures, accepted differences with their reason)."""
    table = ACCEPTED if accepted is None else accepted
    failures: list[Difference] = []
    known: list[Difference] = []
    for diff in diffs:
        rule = next((a for a in table if a.matches(diff)), None)
        if rule is None:
            failures.append(diff)
        else:
            known.append(Difference(diff.case, diff.where, diff.sim, diff.real, rule.reason))
    return failures, known


# -- the request set --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request, sent alike to both servers."""

    name: str
    path: str = "/v1/chat/completions"
    body: Any = None  # a JSON value, or a str sent as it is
    method: str = "POST"
    repeat: bool = False  # sent twice and the second answer compared (the prefix cache)
    completion_tokens: int | None = None  # both must report exactly this many
    same_prompt_as: str | None = None  # a /tokenize case: its count must be that case's prompt
    key: str | None = None  # sent as the bearer token instead of the servers' --api-key


TOOLS = [{
    "type": "function",
    "function": {
        "name": "Bash",
        "description": "Run a shell command.",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                       "required": ["command"]},
    },
}]
THINKING_OFF = {"enable_thinking": False}
USAGE = {"include_usage": True}
NAMED = {"type": "function", "function": {"name": "Bash"}}


def _thought(name: str) -> str:
    return next(s for s in scripts.SCRIPTS if s.name == name).thinking_text


def say(trigger: str, script: Mapping[str, Any]) -> str:
    """A user message both models answer alike: the simulator's script and the tiny model's
    trigger word."""
    return f"SIM_SCRIPT: {json.dumps(script)} {trigger}"


TEXT = say("[text]", {"reasoning": _thought("text"), "content": scripts.TEXT_ANSWER})
THINK = say("[think]", {"reasoning": scripts.THINKING, "content": scripts.THINK_ANSWER})
TOOL = say("[tool]", {"reasoning": _thought("tool"), "tool_calls": [
    {"name": "Bash", "arguments": {"command": scripts.TOOL_COMMAND}}]})
LEAK = say("[leak]", {"reasoning": _thought("leak"),
                      "content": f"Running it now.\n{scripts.LEAK_TEXT}"})
# The same two answers as qwen3_coder's parser reads them: the hermes call (JSON in
# <tool_call>) is text to it, and the "leaked" <function=…> markup is a call.
TOOL_AS_TEXT = say("[tool]", {"reasoning": _thought("tool"), "content": scripts.hermes_call(
    "Bash", {"command": scripts.TOOL_COMMAND})})
LEAK_AS_CALL = say("[leak]", {"reasoning": _thought("leak"), "content": "Running it now.\n",
                              "tool_calls": [{"name": "Bash",
                                              "arguments": {"command": "ls -la"}}]})
TOOL_PARSERS = ("hermes", "qwen3_coder")
LONG = say("[long]", {"reasoning": _thought("long"), "content": scripts.LONG_ANSWER})
AFTER_TOOL = say("[tool]", {
    "tool_calls": [{"name": "Bash", "arguments": {"command": scripts.TOOL_COMMAND}}],
    "after_tool": {"reasoning": _thought("after_tool"), "content": scripts.AFTER_TOOL_ANSWER}})
# A prompt of a few thousand tokens on both (several of the engine's 128-token KV blocks).
PREFIX_TEXT = say("[text]", {"reasoning": _thought("text"), "content": scripts.TEXT_ANSWER}) + (
    " context" * 1500)
MAX_MODEL_LEN = 32768


def cases(model: str, max_model_len: int = MAX_MODEL_LEN,
          tool_parser: str = "hermes") -> list[Case]:
    """Every request, in the order sent (the metrics are read after the last), for servers
    of this ``max_model_len`` and ``--tool-call-parser`` (one of :data:`TOOL_PARSERS`)."""
    if tool_parser not in TOOL_PARSERS:
        raise ValueError(f"no request set for the {tool_parser} tool parser")
    tool_text, leak_text = (TOOL, LEAK) if tool_parser == "hermes" else (TOOL_AS_TEXT,
                                                                         LEAK_AS_CALL)
    # The tool cases' names say the parser when it is not hermes (ACCEPTED tells them apart).
    parser = "" if tool_parser == "hermes" else f" ({tool_parser})"
    # Longer than the context on both tokenizers: the tiny model's is 2 tokens a word, the
    # simulator's 4 bytes a token (1.25 a word).
    too_long = "word " * max_model_len
    def chat(text: str, **extra: Any) -> dict[str, Any]:
        return {"model": model, "messages": [{"role": "user", "content": text}],
                "max_tokens": 200, **extra}

    def stream(text: str, **extra: Any) -> dict[str, Any]:
        return chat(text, stream=True, stream_options=USAGE, **extra)

    after_tool_messages = [
        {"role": "user", "content": AFTER_TOOL},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "Bash", "arguments": json.dumps({"command": "ls"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
    ]
    return [
        Case("text", body=chat(TEXT)),
        Case("text stream", body=stream(TEXT)),
        Case("text thinking off", body=chat(TEXT, chat_template_kwargs=THINKING_OFF)),
        Case("text thinking off stream",
             body=stream(TEXT, chat_template_kwargs=THINKING_OFF)),
        Case("text stream without usage", body=chat(TEXT, stream=True)),
        Case("text stream with continuous usage", body=chat(
            TEXT, stream=True, stream_options={**USAGE, "continuous_usage_stats": True})),
        Case("think", body=chat(THINK)),
        Case("think stream", body=stream(THINK)),
        Case(f"tool{parser}",
             body=chat(tool_text, tools=TOOLS, chat_template_kwargs=THINKING_OFF)),
        Case(f"tool stream{parser}",
             body=stream(tool_text, tools=TOOLS, chat_template_kwargs=THINKING_OFF)),
        Case(f"tool thinking stream{parser}", body=stream(tool_text, tools=TOOLS)),
        Case(f"tool named by tool_choice{parser}", body=chat(
            TOOL, tools=TOOLS, chat_template_kwargs=THINKING_OFF, tool_choice=NAMED)),
        Case(f"tool named by tool_choice stream{parser}", body=stream(
            TOOL, tools=TOOLS, chat_template_kwargs=THINKING_OFF, tool_choice=NAMED)),
        Case(f"tool_choice none{parser}", body=chat(
            TOOL, tools=TOOLS, chat_template_kwargs=THINKING_OFF, tool_choice="none")),
        Case("tool result", body={"model": model, "messages": after_tool_messages,
                                  "tools": TOOLS, "max_tokens": 200}),
        Case("tool result stream", body={"model": model, "messages": after_tool_messages,
                                         "tools": TOOLS, "max_tokens": 200, "stream": True,
                                         "stream_options": USAGE}),
        Case(f"leak{parser}",
             body=chat(leak_text, tools=TOOLS, chat_template_kwargs=THINKING_OFF)),
        Case(f"leak stream{parser}",
             body=stream(leak_text, tools=TOOLS, chat_template_kwargs=THINKING_OFF)),
        Case("length", body=chat(LONG, max_tokens=5, chat_template_kwargs=THINKING_OFF),
             completion_tokens=5),
        Case("length stream", completion_tokens=5,
             body=stream(LONG, max_tokens=5, chat_template_kwargs=THINKING_OFF)),
        Case("length stream without usage", body=chat(
            LONG, max_tokens=5, stream=True, chat_template_kwargs=THINKING_OFF)),
        Case("stop string", body=chat(TEXT, stop=["real"], chat_template_kwargs=THINKING_OFF)),
        Case("stop string stream",
             body=stream(TEXT, stop=["real"], chat_template_kwargs=THINKING_OFF)),
        Case("max_tokens beyond the room left", body=chat(TEXT, max_tokens=max_model_len - 8)),
        Case("repeated prompt", body=chat(PREFIX_TEXT), repeat=True),
        Case("repeated prompt stream", body=stream(PREFIX_TEXT), repeat=True),
        Case("tokenize chat", path="/tokenize", same_prompt_as="text",
             body={"model": model, "messages": [{"role": "user", "content": TEXT}],
                   "add_generation_prompt": True}),
        Case(f"tokenize chat with tools{parser}", path="/tokenize",
             same_prompt_as=f"tool{parser}",
             body={"model": model, "messages": [{"role": "user", "content": tool_text}],
                   "tools": TOOLS, "add_generation_prompt": True,
                   "chat_template_kwargs": THINKING_OFF}),
        Case("tokenize prompt", path="/tokenize", body={"model": model, "prompt": "hello"}),
        Case("tokenize neither prompt nor messages", path="/tokenize", body={"model": model}),
        Case("tokenize unknown model", path="/tokenize",
             body={"model": "no-such-model", "prompt": "hello"}),
        Case("unknown model", body={**chat(TEXT), "model": "no-such-model"}),
        Case("no messages", body={"model": model}),
        Case("messages not a list", body={"model": model, "messages": "hello"}),
        Case("empty messages", body={"model": model, "messages": []}),
        Case("invalid JSON", body="{not json"),
        Case("body not an object", body="[1]"),
        Case("max_tokens 0", body=chat(TEXT, max_tokens=0)),
        Case("max_tokens negative", body=chat(TEXT, max_tokens=-1)),
        Case("max_tokens not a number", body=chat(TEXT, max_tokens="many")),
        Case("max_tokens beyond max_model_len",
             body=chat(TEXT, max_tokens=max_model_len + 1)),
        Case("max_completion_tokens beyond max_model_len",
             body=chat(TEXT, max_completion_tokens=max_model_len + 1)),
        Case("prompt too long", body=chat(too_long, max_tokens=10)),
        Case("prompt too long stream", body=stream(too_long, max_tokens=10)),
        Case("stream_options without stream", body=chat(TEXT, stream_options=USAGE)),
        Case("stream as a word", body=chat(TEXT, stream="yes", stream_options=USAGE)),
        Case("stream not a boolean", body=chat(TEXT, stream=[1])),
        Case("stop not a string or list", body=chat(TEXT, stop=5)),
        Case("max_tokens fractional", body=chat(TEXT, max_tokens=2.5)),
        Case("max_tokens as a numeric string", body=chat(TEXT, max_tokens="7")),
        Case("message without a role", body={"model": model,
                                             "messages": [{"content": TEXT}]}),
        Case("tools not a list", body=chat(TEXT, tools="Bash")),
        Case("models", path="/v1/models", method="GET"),
        Case("models with a wrong key", path="/v1/models", method="GET", key="not-the-key"),
        Case("chat with a wrong key", body=chat(TEXT), key="not-the-key"),
        Case("health", path="/health", method="GET"),
        Case("version", path="/version", method="GET"),
        Case("unknown route", path="/v1/nothing-here", method="GET"),
        Case("wrong method", path="/v1/chat/completions", method="GET"),
    ]


# -- facts: what is compared of one answer (pure) ---------------------------------------------


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def shape(value: Any, prefix: str = "") -> dict[str, str]:
    """Every field path of a JSON value and its type; a list's items share the path ``[*]``
    (their types joined with ``|`` when they differ)."""
    out: dict[str, str] = {prefix or "$": type_name(value)}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(shape(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list):
        merged: dict[str, set[str]] = {}
        for item in value:
            for path, kind in shape(item, f"{prefix}[*]").items():
                merged.setdefault(path, set()).add(kind)
        out.update({path: "|".join(sorted(kinds)) for path, kinds in merged.items()})
    return out


def shape_differences(case: str, where: str, sim: Mapping[str, str],
                      real: Mapping[str, str]) -> list[Difference]:
    """Paths whose type differs (a path inside one already reported is not repeated)."""
    out: list[Difference] = []
    reported: list[str] = []
    for path in sorted(set(sim) | set(real)):
        if any(path.startswith((p + ".", p + "[")) for p in reported):
            continue
        s, r = sim.get(path, "absent"), real.get(path, "absent")
        if s != r:
            reported.append(path)
            label = f"{where}{path}" if path != "$" else (where.rstrip(".") or "$")
            out.append(Difference(case, label, s, r))
    return out


def event_kind(chunk: Any) -> str:
    """What one stream event carries: ``role``, ``reasoning``, ``content``, ``tool_header``,
    ``tool_args``, ``finish:<reason>`` (joined with ``+``), or ``usage``, ``done``, ``error``."""
    if chunk == "[DONE]":
        return "done"
    if not isinstance(chunk, dict):
        return "not-json"
    if "error" in chunk:
        return "error"
    choices = chunk.get("choices")
    if not choices:
        return "usage" if chunk.get("usage") else "empty"
    choice = choices[0] if isinstance(choices[0], dict) else {}
    delta = choice.get("delta") or {}
    parts = []
    if "role" in delta:
        parts.append("role")
    if delta.get("reasoning") or delta.get("reasoning_content"):
        parts.append("reasoning")
    if delta.get("content"):
        parts.append("content")
    for call in delta.get("tool_calls") or []:
        function = call.get("function") or {} if isinstance(call, dict) else {}
        kind = "tool_header" if function.get("name") else "tool_args"
        if kind not in parts:
            parts.append(kind)
    if choice.get("finish_reason"):
        parts.append(f"finish:{choice['finish_reason']}")
    return "+".join(parts) or "nothing"


def event_order(events: Sequence[Any]) -> list[str]:
    """The kinds of a stream's events, consecutive repeats counted once. A chunk that carries
    two kinds counts as both in turn: the engine sends the finish with the last text, or the
    end of the reasoning with the start of the text, whenever two tokens come out of one step
    (a loaded machine, speculative decoding), so the proxy must read either."""
    order: list[str] = []
    for chunk in events:
        for kind in event_kind(chunk).split("+"):
            if not order or order[-1] != kind:
                order.append(kind)
    return order


def chunk_shapes(events: Sequence[Any]) -> dict[str, dict[str, str]]:
    """Each kind of chunk's field paths and types, over every chunk of that kind."""
    merged: dict[str, dict[str, set[str]]] = {}
    for chunk in events:
        if not isinstance(chunk, dict):
            continue
        paths = merged.setdefault(event_kind(chunk), {})
        for path, kind in shape(chunk).items():
            paths.setdefault(path, set()).add(kind)
    return {kind: {p: "|".join(sorted(k)) for p, k in paths.items()}
            for kind, paths in merged.items()}


@dataclass
class Message:
    """A chat answer folded from a body or a stream."""

    reasoning: str | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: Any = None
    stop_reason: Any = None
    usage: Any = None


def fold_body(body: Mapping[str, Any]) -> Message:
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    calls = [{"name": (c.get("function") or {}).get("name"),
              "arguments": (c.get("function") or {}).get("arguments"), "id": c.get("id")}
             for c in message.get("tool_calls") or []]
    return Message(message.get("reasoning") or message.get("reasoning_content"),
                   message.get("content"), calls, choice.get("finish_reason"),
                   choice.get("stop_reason"), body.get("usage"))


def fold_stream(events: Sequence[Any]) -> Message:
    folded = Message()
    calls: dict[int, dict[str, Any]] = {}
    for chunk in events:
        if not isinstance(chunk, dict):
            continue
        if chunk.get("usage"):
            folded.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            if reasoning:
                folded.reasoning = (folded.reasoning or "") + reasoning
            if delta.get("content"):
                folded.content = (folded.content or "") + delta["content"]
            for call in delta.get("tool_calls") or []:
                entry = calls.setdefault(int(call.get("index", 0)),
                                         {"name": None, "arguments": "", "id": None})
                function = call.get("function") or {}
                entry["id"] = entry["id"] or call.get("id")
                entry["name"] = entry["name"] or function.get("name")
                entry["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                folded.finish_reason = choice["finish_reason"]
                folded.stop_reason = choice.get("stop_reason")
    folded.tool_calls = [calls[i] for i in sorted(calls)]
    return folded


def _text_kind(text: Any) -> str:
    if text is None:
        return "null"
    return "text" if text else "empty"


def _arguments(raw: Any) -> Any:
    try:
        return json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return f"not JSON: {raw!r}"


def message_facts(message: Message, case: Case) -> dict[str, str]:
    facts = {
        "finish_reason": repr(message.finish_reason),
        "stop_reason": repr(message.stop_reason),
        "reasoning": _text_kind(message.reasoning),
        "content": _text_kind(message.content),
        "tool_calls": json.dumps([[c["name"], _arguments(c["arguments"]), bool(c["id"])]
                                  for c in message.tool_calls]),
    }
    usage = message.usage if isinstance(message.usage, dict) else None
    facts["usage"] = "present" if usage else "absent"
    if usage:
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        total = usage.get("total_tokens")
        ok = (isinstance(prompt, int) and isinstance(completion, int)
              and total == prompt + completion)
        facts["usage.total_tokens = prompt + completion"] = "yes" if ok else f"no: {usage}"
        if case.completion_tokens is not None:
            facts["usage.completion_tokens"] = repr(completion)
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        if case.repeat:
            facts["usage.prompt_tokens_details.cached_tokens > 0 on a repeat"] = (
                "yes" if isinstance(cached, int) and cached > 0 else f"no: {cached!r}")
    return facts


def normalize_message(text: str) -> str:
    """An error message with its numbers blanked (token counts differ between tokenizers)."""
    return re.sub(r"\d+", "N", text)


def error_facts(answer: Answer) -> dict[str, str]:
    body = answer.body
    raw = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
    mapped = from_backend(answer.status, raw, "upstream")
    facts = {"proxy answers": f"{mapped.status} {mapped.error_type}"}
    if mapped.message.startswith("prompt is too long"):
        facts["proxy answers"] += " 'prompt is too long'"
    inner = body.get("error") if isinstance(body, dict) else None
    if isinstance(inner, dict):
        for key in ("type", "param", "code"):
            facts[f"error.{key}"] = repr(inner.get(key))
        facts["error.message"] = normalize_message(str(inner.get("message")))
    elif isinstance(body, dict) and "detail" in body:
        facts["detail"] = repr(body["detail"])
    return facts


def answer_facts(case: Case, answer: Answer) -> dict[str, str]:
    """What is compared of one answer besides its shapes."""
    facts = {"status": str(answer.status),
             "content-type": answer.content_type.split(";")[0].strip()}
    if answer.status >= 400:
        facts.update(error_facts(answer))
        return facts
    if answer.events is not None:
        facts["events"] = " → ".join(event_order(answer.events))
        ids = {c.get("id") for c in answer.events if isinstance(c, dict)}
        facts["one id for every chunk"] = "yes" if len(ids) == 1 else f"no: {sorted(map(str, ids))}"
        facts.update(message_facts(fold_stream(answer.events), case))
    elif case.path == "/v1/chat/completions" and isinstance(answer.body, dict):
        facts.update(message_facts(fold_body(answer.body), case))
    elif case.path == "/v1/models" and isinstance(answer.body, dict):
        cards = answer.body.get("data") or []
        facts["ids"] = repr([c.get("id") for c in cards])
        facts["max_model_len"] = repr([c.get("max_model_len") for c in cards])
    elif case.path == "/health":
        facts["body"] = repr(answer.body)
    return facts


def compare_answers(case: Case, sim: Answer, real: Answer) -> list[Difference]:
    """Every difference between the two answers to one case."""
    out: list[Difference] = []
    sim_facts, real_facts = answer_facts(case, sim), answer_facts(case, real)
    for name in list(dict.fromkeys([*real_facts, *sim_facts])):
        s, r = sim_facts.get(name, "absent"), real_facts.get(name, "absent")
        if s != r:
            out.append(Difference(case.name, name, s, r))
    if sim.events is not None and real.events is not None:
        sim_kinds, real_kinds = chunk_shapes(sim.events), chunk_shapes(real.events)
        for kind in sorted(set(sim_kinds) & set(real_kinds)):
            out += shape_differences(case.name, f"chunk[{kind}].", sim_kinds[kind],
                                     real_kinds[kind])
    elif sim.events is None and real.events is None and case.path != "/version":
        out += shape_differences(case.name, "body.", shape(sim.body), shape(real.body))
    return out


def consistency_facts(results: Mapping[str, Answer], all_cases: Sequence[Case]) -> dict[str, str]:
    """Facts across one server's answers: /tokenize's count is the chat's prompt_tokens."""
    facts: dict[str, str] = {}
    for case in all_cases:
        if case.same_prompt_as is None:
            continue
        tokenized, chat = results.get(case.name), results.get(case.same_prompt_as)
        if tokenized is None or chat is None or not isinstance(tokenized.body, dict):
            continue
        usage = chat.body.get("usage") if isinstance(chat.body, dict) else None
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        count = tokenized.body.get("count")
        facts[f"'{case.name}' count = '{case.same_prompt_as}' usage.prompt_tokens"] = (
            "yes" if count == prompt else f"no: {count} and {prompt}")
    return facts


# -- /metrics (pure) --------------------------------------------------------------------------

# The samples top reads (figures.py), by their current names.
TOP_SAMPLES = (
    figures.RUNNING, figures.WAITING, figures.KV_USAGE[0], figures.PREFIX_QUERIES[0],
    figures.PREFIX_HITS[0], figures.PROMPT_TOKENS, figures.GENERATION_TOKENS,
    figures.REQUESTS_DONE, f"{figures.TTFT}_bucket", f"{figures.TTFT}_count",
    f"{figures.TTFT}_sum",
)
# Counters that must have grown after the request set.
GROWN = (figures.PREFIX_QUERIES[0], figures.PREFIX_HITS[0], figures.PROMPT_TOKENS,
         figures.GENERATION_TOKENS, figures.REQUESTS_DONE, f"{figures.TTFT}_count")


def metric_facts(scrape: Scrape) -> dict[str, str]:
    facts: dict[str, str] = {}
    for name in TOP_SAMPLES:
        samples = list(scrape.select(name))
        keys = sorted({k for s in samples for k in s.labels})
        facts[f"{name} labels"] = ",".join(keys) if samples else "absent"
    for name in GROWN:
        total = scrape.total(name)
        facts[f"{name} > 0 after the requests"] = "yes" if total else f"no: {total}"
    reasons = sorted({s.labels.get("finished_reason", "") for s in
                      scrape.select(figures.REQUESTS_DONE)})
    facts[f"{figures.REQUESTS_DONE} finished_reason values"] = ",".join(reasons)
    bounds = sorted(scrape.buckets(figures.TTFT))
    facts[f"{figures.TTFT} bucket bounds"] = ",".join(f"{b:g}" for b in bounds)
    return facts


def compare_metrics(sim_text: str, real_text: str) -> list[Difference]:
    """What top reads, and no ``vllm:`` sample the engine does not have."""
    try:
        sim, real = parse_metrics(sim_text), parse_metrics(real_text)
    except ValueError as exc:
        return [Difference("metrics", "/metrics", "parsed", f"not Prometheus text: {exc}")]
    out: list[Difference] = []
    sim_facts, real_facts = metric_facts(sim), metric_facts(real)
    for name in list(dict.fromkeys([*real_facts, *sim_facts])):
        s, r = sim_facts.get(name, "absent"), real_facts.get(name, "absent")
        if s != r:
            out.append(Difference("metrics", name, s, r))
    real_names = {s.name for s in real.samples}
    for name in sorted({s.name for s in sim.samples if s.name.startswith("vllm:")} - real_names):
        out.append(Difference("metrics", name, "present", "absent"))
    return out


def compare_results(
    all_cases: Sequence[Case], sim: Mapping[str, Answer], real: Mapping[str, Answer],
    sim_metrics: str, real_metrics: str,
) -> list[Difference]:
    """Every difference between two servers' answers to the request set (pure)."""
    out: list[Difference] = []
    for case in all_cases:
        if case.name in sim and case.name in real:
            out += compare_answers(case, sim[case.name], real[case.name])
    sim_facts, real_facts = consistency_facts(sim, all_cases), consistency_facts(real, all_cases)
    for name in list(dict.fromkeys([*real_facts, *sim_facts])):
        s, r = sim_facts.get(name, "absent"), real_facts.get(name, "absent")
        if s != r:
            out.append(Difference("consistency", name, s, r))
    return out + compare_metrics(sim_metrics, real_metrics)


# -- the network edge -------------------------------------------------------------------------

TIMEOUT = httpx.Timeout(120.0, connect=10.0)


def parse_sse(text: str) -> tuple[Any, ...]:
    events: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            try:
                events.append(payload if payload == "[DONE]" else json.loads(payload))
            except ValueError:
                events.append(payload)
    return tuple(events)


def fetch(client: httpx.Client, base_url: str, case: Case, api_key: str | None = None
          ) -> Answer:
    """Send one case to one server (twice when it repeats) and read the whole answer."""
    root = base_url.rstrip("/").removesuffix("/v1")
    headers = {"content-type": "application/json"}
    key = case.key or api_key
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = case.body if isinstance(case.body, str) else (
        None if case.body is None else json.dumps(case.body))
    response: httpx.Response | None = None
    for _ in range(2 if case.repeat else 1):
        response = client.request(case.method, root + case.path, content=data, headers=headers)
    assert response is not None
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        return Answer(response.status_code, content_type, None, parse_sse(response.text))
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return Answer(response.status_code, content_type, body)


def _auth(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def observe(base_url: str, all_cases: Sequence[Case],
            api_key: str | None = None) -> tuple[dict[str, Answer], str]:
    """One server's answers to every case, then its /metrics."""
    root = base_url.rstrip("/").removesuffix("/v1")
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
        answers = {case.name: fetch(client, root, case, api_key) for case in all_cases}
        metrics = client.get(root + "/metrics", headers=_auth(api_key)).text
    return answers, metrics


def served_max_model_len(base_url: str, api_key: str | None = None) -> int:
    """The context length a server's /v1/models gives (the request set is sized by it)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    cards = httpx.get(root + "/v1/models", headers=_auth(api_key), timeout=TIMEOUT,
                      trust_env=False).json()["data"]
    return int(cards[0]["max_model_len"])


def compare_all(
    sim_base_url: str, real_base_url: str, served_name: str, *,
    tool_parser: str = "hermes", api_key: str | None = None,
) -> tuple[list[Difference], list[Difference]]:
    """(failures, accepted differences) between the simulator and the engine, both serving
    ``served_name`` on the tiny model with the same flags: ``--tool-call-parser``
    ``tool_parser`` (hermes or qwen3_coder) ``--enable-auto-tool-choice --reasoning-parser
    qwen3 --enable-prompt-tokens-details``, one ``--max-model-len`` (read from the engine; the
    simulator's is compared with it) and, when given, one ``--api-key``."""
    all_cases = cases(served_name, served_max_model_len(real_base_url, api_key), tool_parser)
    sim, sim_metrics = observe(sim_base_url, all_cases, api_key)
    real, real_metrics = observe(real_base_url, all_cases, api_key)
    return classify(compare_results(all_cases, sim, real, sim_metrics, real_metrics))


def compare(sim_base_url: str, real_base_url: str, served_name: str, *,
            tool_parser: str = "hermes", api_key: str | None = None) -> list[Difference]:
    """The differences that are not :data:`ACCEPTED` (empty: the simulator conforms)."""
    return compare_all(sim_base_url, real_base_url, served_name, tool_parser=tool_parser,
                       api_key=api_key)[0]
