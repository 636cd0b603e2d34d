"""The streaming state machine: vLLM's OpenAI chunks in, Anthropic SSE events out (pure).

Feed it one parsed ``chat.completion.chunk`` at a time; it returns the Anthropic events that
chunk completes, in order. Guarantees, whatever the chunks look like: ``message_start`` and
``ping`` first; content blocks strictly one after another with indices 0, 1, 2 …, each
started, given deltas and stopped; then ``message_delta`` and ``message_stop`` — or a single
``error`` event, after which nothing more is emitted.

Usage: ``message_delta`` carries vLLM's final counts as Anthropic counts them:
``cache_read_input_tokens`` is ``prompt_tokens_details.cached_tokens`` (the prompt tokens
vLLM's prefix cache served) and ``input_tokens`` the rest of the prompt.

Leaked tool calls (``markup.py``): text deltas are scanned for ``<tool_call>`` / ``<function=``
(two substring searches a delta, nothing more while no ``<`` comes). From a marker on, the text
is also kept; at the end of the text it is parsed, and well-formed calls count as a leak. With
``repair_markup`` the text from a marker on (and a delta's last characters that could begin
one) is held back instead of sent, and goes out as ``tool_use`` blocks when it parses, as the
text it was otherwise.

Tool calls: the block starts as soon as the call's name is known (the client sees the call
begin at once); its arguments are collected and sent as one ``input_json_delta`` when the
block closes, because only the whole text can be checked and, when safe, repaired (see
``repair.py``) — fragments already sent could not be taken back. vLLM's qwen3_coder parser
sends each parameter as one fragment anyway, so little streaming is lost. Calls whose
fragments interleave (several indices in one chunk, ids re-sent) are kept apart by index and
emitted in order.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from spark_stack.proxy.markup import marker_index, parse_calls, partial_marker
from spark_stack.proxy.repair import repair_arguments

Event = dict[str, Any]

_STOP_REASONS = {"length": "max_tokens", "content_filter": "refusal"}
_FAILED_FINISHES = frozenset({"abort", "error"})


class _Call:
    __slots__ = ("id", "name", "args", "block", "closed")

    def __init__(self, call_id: str) -> None:
        self.id = call_id
        self.name = ""
        self.args: list[str] = []
        self.block = -1
        self.closed = False


class StreamTranslator:
    """One streamed response; see the module docstring for the guarantees."""

    def __init__(
        self,
        model: str,
        message_id: str,
        input_tokens: int,
        *,
        repair_markup: bool = False,
        tools: list[Any] | None = None,
    ) -> None:
        self.model = model
        self.message_id = message_id
        self.input_tokens = input_tokens
        self.prompt_tokens = input_tokens  # the whole prompt, cached part included
        self.cached_tokens = 0
        self.output_tokens = 0
        self.repair_markup = repair_markup
        self.leaked_calls = 0  # tool calls found as markup in the text
        self._tools = tools
        self._carry = ""  # the end of the text so far that could begin a marker
        self._held: list[str] | None = None  # the text from a marker on
        self._ticks = 0  # backticks in the text before the marker (code spans)
        self.failed = False
        self.finished = False
        self.finish_reason: str | None = None
        self._stop_sequence: str | None = None
        self._usage: dict[str, Any] | None = None
        self._next_index = 0
        self._open: str | _Call | None = None
        self._calls: dict[int, _Call] = {}
        self._queue: list[_Call] = []
        self._thinking_hash: Any = None
        self._deltas = 0
        self.tool_calls = 0

    @property
    def has_content(self) -> bool:
        """Whether a content block has started (the client has its first token)."""
        return self._next_index > 0

    @property
    def deltas(self) -> int:
        """Content deltas relayed so far (the output-token count when usage is missing)."""
        return self._deltas

    def start(self) -> list[Event]:
        """``message_start`` and a ``ping``: sent as soon as the backend accepted the request."""
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        }
        return [{"type": "message_start", "message": message}, {"type": "ping"}]

    def feed(self, chunk: Any) -> list[Event]:
        """Translate one parsed chunk."""
        if self.failed or self.finished:
            return []
        if not isinstance(chunk, dict):
            return self.fail("api_error", "upstream sent a malformed stream chunk")
        error = chunk.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            return self.fail("api_error", f"upstream error: {message}")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return []
        choice = choices[0]
        if not isinstance(choice, dict):
            return self.fail("api_error", "upstream sent a malformed stream chunk")
        events: list[Event] = []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning") or delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                self._thinking(reasoning, events)
            content = delta.get("content")
            if isinstance(content, str) and content and not self.failed:
                self._text(content, events)
            calls = delta.get("tool_calls")
            if isinstance(calls, list) and calls and not self.failed:
                for call in calls:
                    if isinstance(call, dict) and not self.failed:
                        self._tool_delta(call, events)
                self._advance(events)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and self.finish_reason is None and not self.failed:
            if finish in _FAILED_FINISHES:
                return events + self.fail("api_error", f"upstream ended the response ({finish})")
            self.finish_reason = finish
            stop = choice.get("stop_reason")
            if isinstance(stop, str):
                self._stop_sequence = stop
            self._flush(events)
        return events

    def finish(self) -> list[Event]:
        """The end of the upstream stream (``[DONE]``): ``message_delta`` and ``message_stop``."""
        if self.failed or self.finished:
            return []
        events: list[Event] = []
        self._flush(events)
        if self.failed:
            return events
        self.finished = True
        usage: dict[str, Any] = {"output_tokens": self._deltas}
        if self._usage is not None:
            prompt = self._usage.get("prompt_tokens")
            completion = self._usage.get("completion_tokens")
            if isinstance(prompt, int):
                cached = cached_tokens(self._usage, prompt)
                usage["input_tokens"] = prompt - cached
                if cached:  # else message_start's 0 stands
                    usage["cache_read_input_tokens"] = cached
                self.input_tokens = prompt - cached
                self.prompt_tokens = prompt
                self.cached_tokens = cached
            if isinstance(completion, int):
                usage["output_tokens"] = completion
        self.output_tokens = usage["output_tokens"]
        stop_reason, stop_sequence = self.stop_reason()
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage,
            }
        )
        events.append({"type": "message_stop"})
        return events

    def fail(self, error_type: str, message: str) -> list[Event]:
        """End the stream with an ``error`` event (the backend died or sent nonsense)."""
        if self.failed or self.finished:
            return []
        self.failed = True
        return [{"type": "error", "error": {"type": error_type, "message": message}}]

    def stop_reason(self) -> tuple[str, str | None]:
        return map_stop_reason(self.finish_reason, self._stop_sequence, self.tool_calls > 0)

    def _open_block(self, block: dict[str, Any], kind: str | _Call, events: list[Event]) -> int:
        index = self._next_index
        self._next_index += 1
        self._open = kind
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        return index

    def _thinking(self, text: str, events: list[Event]) -> None:
        if self._open != "thinking":
            self._flush(events)
            if self.failed:
                return
            block = {"type": "thinking", "thinking": "", "signature": ""}
            self._open_block(block, "thinking", events)
            self._thinking_hash = hashlib.blake2b(digest_size=16)
        self._thinking_hash.update(text.encode())
        self._deltas += 1
        events.append(
            {
                "type": "content_block_delta",
                "index": self._next_index - 1,
                "delta": {"type": "thinking_delta", "thinking": text},
            }
        )

    def _text(self, text: str, events: list[Event]) -> None:
        """Scan a text delta for leaked tool-call markup, then send what may go out now."""
        if self._held is not None:
            self._held.append(text)
            if not self.repair_markup:
                self._send_text(text, events)
            return
        if not self._carry and "<" not in text:
            if "`" in text:
                self._ticks += text.count("`")
            self._send_text(text, events)
            return
        window = self._carry + text
        self._carry = ""
        start = marker_index(window)
        held = carry = ""
        if start >= 0 and (self._ticks + window[:start].count("`")) % 2 == 0:
            ready, held = window[:start], window[start:]
        else:
            keep = partial_marker(window) if start < 0 else 0
            ready, carry = window[: len(window) - keep], window[len(window) - keep :]
        self._ticks += ready.count("`")
        # Sent before the state changes: opening the text block may close another one.
        if not self.repair_markup:
            self._send_text(text, events)
        elif ready:
            self._send_text(ready, events)
        self._carry = carry
        if held:
            self._held = [held]

    def _settle_text(self, events: list[Event]) -> None:
        """The text has ended: parse what followed a marker; with ``repair_markup`` send it as
        ``tool_use`` blocks when it is well-formed calls, as text otherwise."""
        held, rest = self._held, self._carry
        self._held, self._carry = None, ""
        calls = parse_calls("".join(held), self._tools) if held else None
        if calls:
            self.leaked_calls += len(calls)
        if not self.repair_markup:
            return
        if not calls:
            rest += "".join(held or ())
            if rest:
                self._send_text(rest, events)
            return
        self._close_block(events)
        for number, leaked in enumerate(calls):
            call = _Call(f"toolu_{self.message_id[-12:]}m{number:02d}")
            call.name = leaked.name
            call.args = [leaked.arguments]
            self._start_call(call, events)
            self._close_call(call, events)

    def _send_text(self, text: str, events: list[Event]) -> None:
        if self._open != "text":
            self._flush(events)
            if self.failed:
                return
            self._open_block({"type": "text", "text": ""}, "text", events)
        self._deltas += 1
        events.append(
            {
                "type": "content_block_delta",
                "index": self._next_index - 1,
                "delta": {"type": "text_delta", "text": text},
            }
        )

    def _tool_delta(self, delta: dict[str, Any], events: list[Event]) -> None:
        index = delta.get("index", 0)
        if not isinstance(index, int):
            index = 0
        call = self._calls.get(index)
        if call is None:
            call_id = delta.get("id")
            if not isinstance(call_id, str) or not call_id:
                call_id = f"toolu_{self.message_id[-12:]}{len(self._calls):02d}"
            call = _Call(call_id)
            self._calls[index] = call
            self._queue.append(call)
        function = delta.get("function")
        if not isinstance(function, dict):
            return
        name = function.get("name")
        if isinstance(name, str) and name and not call.name:
            call.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            if call.closed:
                message = "upstream sent tool-call arguments out of order"
                events.extend(self.fail("api_error", message))
                return
            call.args.append(arguments)
            self._deltas += 1

    def _advance(self, events: list[Event]) -> None:
        """Start the next call once the one before it is complete (or nothing else is open)."""
        while not self.failed:
            pending = [call for call in self._queue if not call.closed and call is not self._open]
            if not pending or not pending[0].name:
                return
            current = self._open
            if isinstance(current, _Call):
                if _loads_object("".join(current.args)) is None:
                    return
                self._close_call(current, events)
            else:
                self._close_open(events)
            if self.failed:
                return
            self._start_call(pending[0], events)

    def _start_call(self, call: _Call, events: list[Event]) -> None:
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        call.block = self._open_block(block, call, events)
        self.tool_calls += 1

    def _close_call(self, call: _Call, events: list[Event]) -> None:
        call.closed = True
        self._open = None
        arguments = repair_arguments("".join(call.args))
        if arguments is None:
            events.extend(
                self.fail(
                    "api_error",
                    f"the model produced invalid JSON arguments for tool {call.name!r}",
                )
            )
            return
        if arguments != "{}":
            events.append(
                {
                    "type": "content_block_delta",
                    "index": call.block,
                    "delta": {"type": "input_json_delta", "partial_json": arguments},
                }
            )
        events.append({"type": "content_block_stop", "index": call.block})

    def _close_open(self, events: list[Event]) -> None:
        if self._held is not None or self._carry:
            self._settle_text(events)
        self._close_block(events)

    def _close_block(self, events: list[Event]) -> None:
        current = self._open
        if current is None:
            return
        if isinstance(current, _Call):
            self._close_call(current, events)
            return
        index = self._next_index - 1
        if current == "thinking":
            signature = self._thinking_hash.hexdigest()
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": signature},
                }
            )
        events.append({"type": "content_block_stop", "index": index})
        self._open = None

    def _flush(self, events: list[Event]) -> None:
        """Close the open block and emit every call still waiting, in order."""
        self._close_open(events)
        for call in self._queue:
            if self.failed:
                return
            if call.closed:
                continue
            if not call.name:
                events.extend(self.fail("api_error", "upstream sent a tool call without a name"))
                return
            self._start_call(call, events)
            self._close_call(call, events)


def cached_tokens(usage: dict[str, Any], prompt: int) -> int:
    """The prompt tokens vLLM's prefix cache served (``--enable-prompt-tokens-details``; vLLM
    leaves the field out when there were none), never more than the prompt."""
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if not isinstance(cached, int) or cached < 0:
        return 0
    return min(cached, prompt)


def _loads_object(text: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def map_stop_reason(
    finish_reason: str | None, stop_string: str | None, called_tools: bool
) -> tuple[str, str | None]:
    """OpenAI ``finish_reason`` (+ vLLM's ``stop_reason``) → Anthropic's stop reason and
    sequence. vLLM reports the matched stop string in ``stop_reason`` (an int there is a stop
    token id, i.e. an ordinary end of turn)."""
    if finish_reason == "length":
        return "max_tokens", None
    if called_tools and finish_reason in (None, "stop", "tool_calls"):
        return "tool_use", None
    if finish_reason == "stop" and stop_string is not None:
        return "stop_sequence", stop_string
    return _STOP_REASONS.get(finish_reason or "", "end_turn"), None


def encode_events(events: list[Event]) -> bytes:
    """Anthropic's SSE framing: ``event: <type>`` then ``data: <json>``."""
    parts: list[bytes] = []
    for event in events:
        kind = event["type"]
        head = _EVENT_HEADS.get(kind)
        if head is None:
            head = b"event: " + kind.encode() + b"\ndata: "
        parts += (head, orjson.dumps(event), b"\n\n")
    return b"".join(parts)


# Every relayed token is one event: its framing is looked up, not built.
_EVENT_HEADS = {
    kind: b"event: " + kind.encode() + b"\ndata: "
    for kind in (
        "message_start", "ping", "content_block_start", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop", "error",
    )
}
