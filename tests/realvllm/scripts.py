"""What the tiny real-engine model answers, and the chat template that chooses the answer (pure).

The model (:mod:`tests.realvllm.make_model`) follows one token with one other: a script is a
trigger token and the pieces of text that follow it. The chat template renders the conversation
as Qwen3's does (ChatML, tools in the system turn, tool results as ``<tool_response>``), then
opens the assistant turn and appends the trigger of the first script whose phrases all appear
in the current turn (the messages after the last assistant message). So the answers are
chosen by what a test or spark-stack itself sends: ``up``'s readiness prompt, every smoke
prompt, each soak step, and a few words for the tests (``[text]``, ``[think]``, ``[tool]``,
``[leak]``, ``[long]``).

Thinking follows Qwen3: with ``enable_thinking`` on (vLLM's default) the prompt ends
``<think>\n`` + the script's thinking trigger, and the answer is a thought, ``</think>``, then
the script's answer (the model tells the scripts apart after ``</think>`` by attention, see
make_model.py); with it off the prompt ends ``<think>\n\n</think>\n\n`` + the trigger, which
vLLM's qwen3 parser reads as "reasoning already ended", and the answer is content alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spark_stack.deploy.readiness import TEST_ANSWER, TEST_PROMPT
from spark_stack.smoke import checks, soak

TEXT_ANSWER = "Hello from a real vLLM."
THINKING = "Let me think."
THINK_ANSWER = " The answer is 204."
AFTER_TOOL_ANSWER = "The tool ran."
SMOKE_FINAL_ANSWER = f"The command printed {checks.TOOL_OUTPUT}."
# A Bash call the hermes parser turns into tool_calls.
TOOL_COMMAND = "ls"
# qwen3_coder markup without <tool_call>: invisible to hermes, so it stays in the text (a leak).
LEAK_TEXT = ("<function=Bash>\n<parameter=command>\nls -la\n</parameter>\n</function>")
LONG_WORDS = 64
LONG_ANSWER = "".join(f" w{i:02d}" for i in range(1, LONG_WORDS + 1)).strip() + "."
MAX_POSITIONS = 65536
SPECIAL_TRIGGERS = ("[text]", "[think]", "[tool]", "[leak]", "[long]")


@dataclass(frozen=True)
class Script:
    name: str
    answer: str
    # Every phrase must be in the current turn's text (empty: only as the fallback).
    phrases: tuple[str, ...] = ()
    thinking_only: bool = False  # only chosen with enable_thinking on
    thought: str = ""  # with thinking on, before </think> (default: one sentence naming it)
    after_tool: bool = False  # only chosen when the turn carries a tool result
    chunk: int = 6  # characters per piece (small: many deltas)
    pieces: tuple[str, ...] = field(default=())
    thought_pieces: tuple[str, ...] = field(default=())

    @property
    def trigger(self) -> str:
        return f"<|s:{self.name}|>"

    @property
    def thinking_trigger(self) -> str:
        return f"<|t:{self.name}|>"

    @property
    def thinking_text(self) -> str:
        return self.thought or f"Thinking about {self.name}."


def hermes_call(name: str, arguments: dict[str, Any]) -> str:
    """A tool call as Qwen3 (JSON, hermes parser) writes it."""
    return f'<tool_call>\n{{"name": "{name}", "arguments": {json.dumps(arguments)}}}\n</tool_call>'


def _scripts() -> list[Script]:
    scripts = [
        Script("think", THINK_ANSWER, ("[think]",), thinking_only=True, thought=THINKING),
        Script("known", f"12*17 = {TEST_ANSWER}.", (TEST_PROMPT,)),
        Script("smoke_final", SMOKE_FINAL_ANSWER, (checks.TOOL_OUTPUT,), after_tool=True),
        Script("smoke_tool", hermes_call("Bash", {"command": checks.TOOL_COMMAND}),
               (f"run: {checks.TOOL_COMMAND}",)),
        Script("tool", hermes_call("Bash", {"command": TOOL_COMMAND}), ("[tool]",)),
        Script("leak", f"Running it now.\n{LEAK_TEXT}", ("[leak]",)),
        Script("long", LONG_ANSWER, ("[long]",), chunk=4),
    ]
    for number, (tool, arguments) in enumerate(soak.STEPS, start=1):
        prompt = soak.turn_prompt(number, tool, arguments)
        scripts.append(Script(f"soak{number}", hermes_call(tool, arguments),
                              (prompt.split(":", 1)[1].strip(),), chunk=12))
    scripts += [
        Script("after_tool", AFTER_TOOL_ANSWER, after_tool=True),
        Script("text", TEXT_ANSWER),
    ]
    return scripts


def split_unique(scripts: list[Script]) -> list[Script]:
    """Each script with its answer and thought cut into pieces no other place uses.

    A token has one successor, so a piece must not repeat: one that does is merged with the
    next (or, at the end, with the one before).
    """
    used: set[str] = set()

    def cut(text: str, size: int) -> tuple[str, ...]:
        pieces: list[str] = []
        buffer = ""
        for chunk in (text[i:i + size] for i in range(0, len(text), size)):
            buffer += chunk
            if buffer not in used and buffer not in pieces:
                pieces.append(buffer)
                buffer = ""
        while buffer:
            if not pieces:
                raise ValueError(f"{text!r} repeats another answer whole")
            buffer = pieces.pop() + buffer
            if buffer not in used and buffer not in pieces:
                pieces.append(buffer)
                buffer = ""
        used.update(pieces)
        return tuple(pieces)

    return [replace(script, pieces=cut(script.answer, script.chunk),
                    thought_pieces=cut(script.thinking_text, script.chunk))
            for script in scripts]


SCRIPTS = split_unique(_scripts())


def _jinja_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Jinja string literal


def chat_template(scripts: list[Script] = SCRIPTS) -> str:
    """A Qwen3-style ChatML template that ends with the chosen script's trigger."""
    choose = []
    for script in scripts:
        conditions = [f"{_jinja_string(p)} in ns.turn" for p in script.phrases]
        if script.thinking_only:
            conditions.append("thinking")
        if script.after_tool:
            conditions.append("ns.tool")
        if not conditions:
            conditions.append("true")
        choose.append(
            f"{{%- if not ns.chosen and {' and '.join(conditions)} %}}"
            f"{{%- set ns.chosen = {_jinja_string(script.name)} %}}{{%- endif %}}"
        )
    return (
        "{%- macro text(c) -%}{%- if c is string -%}{{ c }}{%- elif c -%}"
        "{%- for p in c -%}{%- if p.type == 'text' -%}{{ p.text }}{%- endif -%}{%- endfor -%}"
        "{%- endif -%}{%- endmacro -%}"
        "{%- set thinking = enable_thinking is not defined or enable_thinking -%}"
        "{%- set ns = namespace(turn='', tool=false, last=-1, chosen='') -%}"
        "{%- if tools -%}<|im_start|>system\n"
        "{%- if messages[0].role == 'system' -%}{{ text(messages[0].content) }}\n\n{%- endif -%}"
        "# Tools\n\n<tools>\n{%- for t in tools %}\n{{ t | tojson }}{%- endfor %}\n</tools>"
        "<|im_end|>\n"
        "{%- elif messages[0].role == 'system' -%}"
        "<|im_start|>system\n{{ text(messages[0].content) }}<|im_end|>\n"
        "{%- endif -%}"
        "{%- for m in messages -%}"
        "{%- if m.role == 'assistant' %}{% set ns.last = loop.index0 %}{% endif -%}"
        "{%- if m.role == 'system' and loop.first -%}"
        "{%- elif m.role == 'assistant' -%}<|im_start|>assistant\n{{ text(m.content) }}"
        "{%- for tc in m.tool_calls or [] -%}"
        "{%- set args = tc.function.arguments -%}"
        "{{ '\n' if not loop.first or m.content else '' }}<tool_call>\n"
        "{\"name\": \"{{ tc.function.name }}\", \"arguments\": "
        "{{ args if args is string else args | tojson }}}\n</tool_call>"
        "{%- endfor -%}<|im_end|>\n"
        "{%- elif m.role == 'tool' -%}"
        "<|im_start|>user\n<tool_response>\n{{ text(m.content) }}\n</tool_response><|im_end|>\n"
        "{%- else -%}<|im_start|>{{ m.role }}\n{{ text(m.content) }}<|im_end|>\n"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- for m in messages[ns.last + 1:] -%}"
        "{%- if m.role == 'tool' %}{% set ns.tool = true %}{% endif -%}"
        "{%- set ns.turn = ns.turn + '\n' + text(m.content) -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        + "".join(choose)
        + "<|im_start|>assistant\n"
        "{%- if thinking %}<think>\n{{ '<|t:' + ns.chosen + '|>' }}"
        "{%- else %}<think>\n\n</think>\n\n{{ '<|s:' + ns.chosen + '|>' }}{% endif -%}"
        "{%- endif -%}"
    )


def corpus() -> list[str]:
    """Text the tokenizer's merges are learnt from: Claude Code's own prompts and tools."""
    root = Path(__file__).resolve().parents[1] / "fixtures" / "claude_code"
    lines = [TEST_PROMPT, checks.TOOL_PROMPT, TEXT_ANSWER]
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".md", ".txt"):
            lines += path.read_text(errors="replace").splitlines()
    lines.append(json.dumps(soak.claude_code_tools()))
    return lines


def spec() -> dict[str, Any]:
    """What make_model.py reads."""
    return {
        "chat_template": chat_template(),
        "corpus": corpus(),
        "max_position_embeddings": MAX_POSITIONS,
        "scripts": [{"name": s.name, "trigger": None if s.thinking_only else s.trigger,
                     "thinking_trigger": s.thinking_trigger, "pieces": list(s.pieces),
                     "thought": list(s.thought_pieces)}
                    for s in SCRIPTS],
    }
