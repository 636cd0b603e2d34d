"""Check each managed model's rendered vLLM argv against the flags its image's vLLM accepts.

Errors point at the field that produced a bad flag or value, or at the ``extra_args`` item
(a preset's own arguments point at ``preset``). The version note (an image that names no known
release) is a warning.
"""

from __future__ import annotations

from ..errors import Problem
from ..vllm.flags import (
    abbreviations,
    canonical_flag,
    check_argv,
    flag_set_for_image,
    group_args,
    version_for_image,
)
from . import schema
from .argv import FIELD_FLAGS, ArgSource, vllm_argv_sources
from .loaded import LoadedStack
from .yamlpos import KeyPath


def source_path(
    loaded: LoadedStack, index: int, model: schema.ContainerModel, source: ArgSource
) -> KeyPath:
    """The key path in the file a token came from: the user's key, else the preset."""
    base: KeyPath = ("models", index)
    if source.field == "extra_args" and source.item is not None:
        from_preset = _preset_extra_count(loaded, model)
        if source.item >= from_preset:
            return (*base, "extra_args", source.item - from_preset)
        return (*base, "preset")
    return field_path(loaded, index, model, source.field)


def extra_arg_path(
    loaded: LoadedStack, index: int, model: schema.ContainerModel, item: int
) -> KeyPath:
    """Where item ``item`` of the merged ``extra_args`` (preset's first) was written."""
    return source_path(loaded, index, model, ArgSource("extra_args", item))


def field_path(
    loaded: LoadedStack, index: int, model: schema.ContainerModel, field: str
) -> KeyPath:
    path: KeyPath = ("models", index, field)
    if path in loaded.positions.keys:
        return path
    if model.preset is not None:
        return ("models", index, "preset")
    return ("models", index)


def _preset_extra_count(loaded: LoadedStack, model: schema.ContainerModel) -> int:
    preset = loaded.presets.get(model.preset or "")
    extra = preset.settings.get("extra_args", []) if preset else []
    return len(extra) if isinstance(extra, list) else 0


def vllm_flags(loaded: LoadedStack) -> list[Problem]:
    problems: list[Problem] = []
    for index, model in enumerate(loaded.stack.models):
        if isinstance(model, schema.ContainerModel) and model.model and model.image:
            problems += _check_model(loaded, index, model)
    return problems


def _check_model(loaded: LoadedStack, index: int, model: schema.ContainerModel) -> list[Problem]:
    flags = flag_set_for_image(model.image)
    sources = vllm_argv_sources(model)
    tokens = [token for token, _ in sources]
    problems: list[Problem] = []
    claimed: set[int] = set()
    first_extra = next(
        (i for i, (_, src) in enumerate(sources) if src.field == "extra_args"), len(sources)
    )
    groups, _ = group_args(tokens, first_extra)
    for group in groups:
        field = FIELD_FLAGS.get(flags.primary(canonical_flag(flags, group.flag)))
        if field is None:
            continue
        claimed.add(group.index)
        path = source_path(loaded, index, model, sources[group.index][1])
        problems.append(loaded.problem(
            f"'{group.flag}' in extra_args duplicates the '{field}' setting",
            path,
            fix=f"set {field} instead" if field not in ("bind", "port") else
            "remove it: spark-stack sets vLLM's --host/--port (use 'port' for the host port "
            "and 'bind' for the address)",
        ))
    for issue in check_argv(tokens, flags, breaks={first_extra}):
        if issue.index in claimed:
            continue
        path = source_path(loaded, index, model, sources[issue.index][1])
        if issue.detail and path[-1] == "speculative":
            path = (*path, issue.detail)
        problems.append(loaded.problem(issue.message, path, fix=issue.fix))
    return problems


def abbreviated_flags(loaded: LoadedStack) -> list[Problem]:
    """Warn about flags written as prefixes: vLLM expands them, a reader may not."""
    problems = []
    for index, model in enumerate(loaded.stack.models):
        if not isinstance(model, schema.ContainerModel) or not model.model or not model.image:
            continue
        sources = vllm_argv_sources(model)
        flags = flag_set_for_image(model.image)
        for token_index, full in abbreviations([t for t, _ in sources], flags):
            problems.append(loaded.problem(
                f"'{sources[token_index][0]}' is an abbreviation that vLLM {flags.version} "
                f"expands to '{full}' (source: argparse's prefix matching in vLLM's parser)",
                source_path(loaded, index, model, sources[token_index][1]),
                fix=f"write '{full}' in full (a typo could expand to a different flag)",
            ))
    return problems


def flag_set_notes(loaded: LoadedStack) -> list[Problem]:
    """Warn when an image's flags were checked against a guessed vLLM version."""
    problems = []
    for index, model in enumerate(loaded.stack.models):
        if not isinstance(model, schema.ContainerModel) or not model.image:
            continue
        note = version_for_image(model.image).note
        if note:
            problems.append(loaded.problem(
                note, field_path(loaded, index, model, "image"),
                fix="pin an upstream release tag such as vllm/vllm-openai:v0.28.0 so flags "
                "are checked against the vLLM that runs",
            ))
    return problems
