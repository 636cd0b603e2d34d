"""What Claude Code is told about a stack: its environment and the context contract (pure).

Claude Code reads ``ANTHROPIC_BASE_URL`` (the proxy, without ``/v1``), ``ANTHROPIC_AUTH_TOKEN``
(sent as ``Authorization: Bearer``), ``ANTHROPIC_DEFAULT_{OPUS,SONNET,HAIKU}_MODEL`` (the alias
targets; the default main model is the opus alias) and ``ANTHROPIC_MODEL``.

**The context contract** (:func:`claude_context`). Claude Code does not know a local model's
window: for an id it does not recognise it assumes 200,000 tokens, or 1,000,000 when the id
carries ``[1m]`` (which it appends to the opus alias by itself), so it would compact long after
vLLM answers "prompt is too long". Read from the pinned CLI (2.1.332) and checked by running it:

- ``CLAUDE_CODE_DISABLE_1M_CONTEXT=1`` stops the ``[1m]`` id and the 1M assumption;
- ``CLAUDE_CODE_MAX_CONTEXT_TOKENS`` is the window of a model it does not recognise (what
  ``--output-format json`` reports as ``modelUsage.*.contextWindow``; it also silences the
  "doesn't recognize the model … assumes a context window" notice);
- ``CLAUDE_CODE_AUTO_COMPACT_WINDOW`` caps the window auto-compaction works against (the
  effective window is the smaller of the two; values below 100,000 are read as 100,000, so for
  small windows ``CLAUDE_CODE_MAX_CONTEXT_TOKENS`` is what binds);
- it compacts when the conversation reaches ``window − min(max_output, 20000) − 13000`` tokens,
  and asks for ``CLAUDE_CODE_MAX_OUTPUT_TOKENS`` (default 32,000) per request.

So the window is the real ``max_model_len``, and the output is capped to a quarter of it (at
most Claude Code's own 32,000): the request that reaches the compaction threshold still fits
with its whole output (``compact_at + max_output ≤ window``), and the conversation keeps
``window − max_output − 13,000`` tokens before it is compacted (17,000 of a 40,000 window,
65,304 of 98,304).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing pydantic would slow `spark-stack --help`
    from .stack import schema

# Claude Code refuses to start ("Not logged in") without some credential; when the proxy needs
# no token any placeholder works.
PLACEHOLDER_TOKEN = "spark-stack-local"
TOKEN_ENV = "ANTHROPIC_AUTH_TOKEN"
ALIAS_ENV = {
    "opus": "ANTHROPIC_DEFAULT_OPUS_MODEL",
    "sonnet": "ANTHROPIC_DEFAULT_SONNET_MODEL",
    "haiku": "ANTHROPIC_DEFAULT_HAIKU_MODEL",
}
HERMETIC_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}
# A down model is reported at once by the proxy (529 with its reason): Claude Code's default
# retries hide that for minutes. Two retries (about 1.5 s of back-off) still ride out a blip.
RETRY_ENV = {"CLAUDE_CODE_MAX_RETRIES": "2"}
# The per-request billing line changes every turn; the proxy drops it, and without it the
# system prompt is byte-identical across turns (vLLM's prefix cache keeps hitting).
ATTRIBUTION_ENV = {"CLAUDE_CODE_ATTRIBUTION_HEADER": "0"}

# Claude Code 2.1.332's own constants (see the module doc).
CLAUDE_DEFAULT_MAX_OUTPUT = 32000
CLAUDE_OUTPUT_RESERVE_CAP = 20000
CLAUDE_COMPACT_BUFFER = 13000
OUTPUT_SHARE = 4  # at most a quarter of the window for one answer


@dataclass(frozen=True)
class LauncherVar:
    name: str
    value: str
    secret: bool = False  # the value is read at run time from a 0600 file, never written here

    def shown(self) -> str:
        return "***" if self.secret else self.value


@dataclass(frozen=True)
class ClaudeContext:
    """The window Claude Code is told about and the output it may ask for."""

    window: int
    max_output_tokens: int

    @property
    def compact_at(self) -> int:
        """Where Claude Code starts auto-compacting (its own formula)."""
        reserve = min(self.max_output_tokens, CLAUDE_OUTPUT_RESERVE_CAP)
        return self.window - reserve - CLAUDE_COMPACT_BUFFER

    def variables(self) -> dict[str, str]:
        return {
            "CLAUDE_CODE_MAX_CONTEXT_TOKENS": str(self.window),
            "CLAUDE_CODE_AUTO_COMPACT_WINDOW": str(self.window),
            "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(self.max_output_tokens),
        }


def claude_context(window: int) -> ClaudeContext:
    """The contract for a model window of ``window`` tokens (module doc: why these numbers)."""
    return ClaudeContext(window, min(CLAUDE_DEFAULT_MAX_OUTPUT, window // OUTPUT_SHARE))


def claude_variables(
    stack: schema.Stack, proxy_url: str, context: ClaudeContext | None,
    aliases: Mapping[str, str] | None = None,
) -> list[LauncherVar]:
    """The variables the launcher exports, in order; the token only as a secret marker.

    ``context`` is None when no model Claude Code reaches declares its window. ``aliases``
    are the alias targets (:func:`spark_stack.deployment.alias_targets`: the stack's, else
    where the proxy routes Claude Code's own id for the alias), default ``claude.models``.
    """
    vars_ = [
        LauncherVar("ANTHROPIC_BASE_URL", proxy_url),
        LauncherVar(
            TOKEN_ENV,
            PLACEHOLDER_TOKEN if stack.proxy.token is None else "",
            secret=stack.proxy.token is not None,
        ),
    ]
    for alias, target in sorted((stack.claude.models if aliases is None else aliases).items()):
        vars_.append(LauncherVar(ALIAS_ENV[alias], target))
    if stack.claude.default_model:
        vars_.append(LauncherVar("ANTHROPIC_MODEL", stack.claude.default_model))
    fixed: Mapping[str, str] = {
        **HERMETIC_ENV, **RETRY_ENV, **ATTRIBUTION_ENV, "CLAUDE_CODE_DISABLE_1M_CONTEXT": "1",
    }
    vars_ += [LauncherVar(name, value) for name, value in fixed.items()]
    if context is not None:
        vars_ += [LauncherVar(name, value) for name, value in context.variables().items()]
    return vars_


# An id Claude Code sends for each alias when the stack leaves it unset (its 2.1.332
# defaults' families): the route table tells which model answers it.
ALIAS_IDS = {
    "opus": "claude-opus-4-8",
    "sonnet": "claude-sonnet-4-6",
    "haiku": "claude-haiku-4-5",
}


@dataclass(frozen=True)
class PickerRow:
    """One row of Claude Code's ``/model`` picker: a stack model by its name."""

    model: str
    description: str


def picker_description(served_name: str, where: str, window: int | None) -> str:
    """``qwen3.6-35b-a3b · vLLM on spark · 262,144-token window``."""
    parts = [served_name, where]
    if window is not None:
        parts.append(f"{window:,}-token window")
    return " · ".join(parts)


def picker_settings(rows: tuple[PickerRow, ...]) -> dict[str, object]:
    """Claude Code settings whose ``/model`` picker lists only the stack's models.

    ``modelPicker`` (read from the pinned 2.1.332: rows ``{model, label, description,
    behavesAs}``, honoured from ``--settings``, user and managed settings, not a project's):
    with ``replaceBuiltInOptions`` the picker shows its Default row and these. No
    ``behavesAs``: it would make Claude Code treat the model as an Anthropic one (its prompt,
    64,000 output tokens) and override the context contract.
    """
    return {"modelPicker": {
        "options": [{"model": r.model, "label": r.model, "description": r.description}
                    for r in rows],
        "replaceBuiltInOptions": True,
    }}


def default_launcher_path(stack: schema.Stack) -> Path:
    if stack.claude.launcher:
        return Path(stack.claude.launcher).expanduser()
    return Path.home() / ".local" / "bin" / f"claude-{stack.name}"
