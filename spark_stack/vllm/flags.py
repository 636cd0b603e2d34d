"""What `vllm serve` accepts, by vLLM version, and a checker for a rendered argv (pure).

The option sets in ``data/vllm-flags-<version>.json`` were extracted from vLLM's own wheels
(``scripts/regen_vllm_flags.py``). An image tag maps to one of them; ``check_argv`` reports every
unknown flag, missing or unexpected value and unknown enumerated value with a "did you mean",
normalising the way vLLM's parser does (``--x=y``, ``_`` for ``-``, case where vLLM folds it).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

KNOWN_VERSIONS = ("0.24.0", "0.28.0", "0.33.0")
_SOURCE = "spark-stack's flag sets, extracted from vLLM's wheels"
NEWEST = KNOWN_VERSIONS[-1]
UPSTREAM_IMAGE = "vllm/vllm-openai"
# The stale CUDA 13 tag stopped moving at 0.19.x (vllm issue #42738).
STALE_TAGS = {"cu130-nightly": "0.19.0"}
_VERSION_TAG = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[.-].*)?$")
_NEGATIVE_NUMBER = re.compile(r"^-\d")
# ``--flag value`` → which value set (key of ``choices``) and how vLLM folds the value first.
_VALUE_CHECKS: dict[str, tuple[str, str]] = {
    "--moe-backend": ("moe_backend", "lower_underscore"),
    "--attention-backend": ("attention_backend", "upper"),
    "--kv-cache-dtype": ("kv_cache_dtype", "exact"),
    "--load-format": ("load_format", "lower"),
    "--quantization": ("quantization", "exact"),
    "--tool-call-parser": ("tool_call_parser", "exact"),
    "--reasoning-parser": ("reasoning_parser", "exact"),
    "--dtype": ("dtype", "exact"),
    "--spec-method": ("speculative_method", "exact"),
}
# A plugin can register more parsers: their names cannot be checked then.
_PLUGIN_FLAGS = {
    "tool_call_parser": "--tool-parser-plugin",
    "reasoning_parser": "--reasoning-parser-plugin",
}
# Values vLLM accepts beyond the registry (the reasoning parser's "off").
_ALWAYS_OK = {"reasoning_parser": {"none", ""}}


@dataclass(frozen=True)
class FlagSet:
    """The options of `vllm serve` in one vLLM release."""

    version: str
    flags: frozenset[str]
    bool_flags: frozenset[str]
    choices: dict[str, tuple[str, ...]]
    details: dict[str, dict[str, Any]]

    def primary(self, flag: str) -> str:
        """The option a flag sets (``--no-x`` and ``-tp`` name the same one as ``--x``)."""
        return str(self.details.get(flag, {}).get("primary", flag))

    def takes_value(self, flag: str) -> bool:
        kind = str(self.details.get(flag, {}).get("kind", ""))
        return flag not in self.bool_flags and "store_true" not in kind

    def takes_many(self, flag: str) -> bool:
        """``nargs='+'`` options (``--served-model-name a b``): a list annotation."""
        return "list[" in str(self.details.get(flag, {}).get("annotation", ""))

    def value_optional(self, flag: str) -> bool:
        return self.details.get(flag, {}).get("kind") == "optional-valued"

    def is_json_option(self, flag: str) -> bool:
        return self.details.get(flag, {}).get("kind") == "json-dataclass"


@dataclass(frozen=True)
class VersionChoice:
    """The flag set an image is checked against, and why when it is a guess."""

    version: str
    note: str | None = None


@dataclass(frozen=True)
class ArgGroup:
    """One flag as written (``--x``, ``--x=y`` or ``--x y``) with its values and first index."""

    index: int
    flag: str  # as written, without an ``=value``
    values: tuple[str, ...]
    inline: bool


@dataclass(frozen=True)
class FlagIssue:
    """One problem in an argv: ``index`` is the token it concerns."""

    index: int
    message: str
    fix: str
    detail: str | None = None  # a key inside a JSON value (``method`` of --speculative-config)


@cache
def load_flag_set(version: str) -> FlagSet:
    """The packaged option set of vLLM ``version`` (one of :data:`KNOWN_VERSIONS`)."""
    if version not in KNOWN_VERSIONS:
        raise ValueError(f"no vLLM flag set for {version}; known: {', '.join(KNOWN_VERSIONS)}")
    text = (
        resources.files("spark_stack.vllm")
        .joinpath("data", f"vllm-flags-{version}.json")
        .read_text(encoding="utf-8")
    )
    raw = json.loads(text)
    return FlagSet(
        version=str(raw["version"]),
        flags=frozenset(raw["flags"]),
        bool_flags=frozenset(raw["bool_flags"]),
        choices={key: tuple(values) for key, values in raw["choices"].items()},
        details=dict(raw["flag_details"]),
    )


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = _VERSION_TAG.match(text)
    if match is None:
        return None
    major, minor, patch = match.groups()
    return (int(major), int(minor), int(patch or 0))


def _as_tuple(version: str) -> tuple[int, int, int]:
    parsed = parse_version(version)
    assert parsed is not None, version
    return parsed


def split_image(image: str) -> tuple[str, str]:
    """``registry/repo:tag`` → (``registry/repo``, ``tag``); digests and no tag give ``latest``."""
    name = image.split("@", 1)[0]
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, "latest"
    return repo, tag


def image_vllm_version(image: str) -> tuple[int, int, int] | None:
    """The vLLM release an upstream image tag names (``v0.28.0`` → 0.28.0), else None."""
    repo, tag = split_image(image)
    if repo.removeprefix("docker.io/") != UPSTREAM_IMAGE:
        return None
    if tag in STALE_TAGS:
        return _as_tuple(STALE_TAGS[tag])
    return parse_version(tag) if tag.startswith("v") else None


def version_for_image(image: str) -> VersionChoice:
    """Which packaged flag set checks ``image``; a note says when it is not an exact match."""
    repo, tag = split_image(image)
    version = image_vllm_version(image)
    if repo.removeprefix("docker.io/") != UPSTREAM_IMAGE:
        return VersionChoice(
            NEWEST, f"'{image}' is not the upstream {UPSTREAM_IMAGE} image; its flags were "
            f"checked against vLLM {NEWEST} (the newest known; source: {_SOURCE})",
        )
    if version is None:
        return VersionChoice(
            NEWEST, f"tag '{tag}' names no vLLM release; its flags were checked against vLLM "
            f"{NEWEST} (the newest known; source: {_SOURCE})",
        )
    text = ".".join(str(part) for part in version)
    if text in KNOWN_VERSIONS:
        return VersionChoice(text)
    known = [_as_tuple(v) for v in KNOWN_VERSIONS]
    older = [v for v in known if v <= version]
    chosen = max(older) if older else min(known)
    chosen_text = ".".join(str(part) for part in chosen)
    runs = (f"tag '{tag}' runs vLLM {version[0]}.{version[1]} (a stale tag)" if tag in STALE_TAGS
            else f"this image runs vLLM {text}")
    why = ("the closest older release packaged" if older
           else "the oldest packaged: a flag newer than this vLLM still passes")
    return VersionChoice(
        chosen_text, f"{runs}, which has no flag set; its flags were checked against vLLM "
        f"{chosen_text} ({why}; source: {_SOURCE})",
    )


def flag_set_for_image(image: str | None) -> FlagSet:
    return load_flag_set(version_for_image(image).version if image else NEWEST)


def canonical_flag(flags: FlagSet, written: str) -> str:
    """The option name vLLM's parser sees: ``=`` split off, ``_`` → ``-``, prefixes expanded."""
    name = written.split("=", 1)[0]
    if name.startswith("--"):
        name = "--" + name[2:].replace("_", "-")
        base = name.split(".", 1)[0]
        if "." in name and flags.is_json_option(base):
            return base
        if name not in flags.flags:
            expanded = [f for f in flags.flags if f.startswith(name)]
            if len(expanded) == 1:
                return expanded[0]
    elif re.fullmatch(r"-O(\d*|\.[\w.-]+)", name):
        return "--optimization-level" if name[2:3] != "." else "--compilation-config"
    return name


def group_args(
    argv: Sequence[str], start: int = 0, breaks: Collection[int] = ()
) -> tuple[list[ArgGroup], list[int]]:
    """Split argv into flag groups (a flag and the values after it) and stray positionals.

    No group spans a ``breaks`` index (where the user's own items start).
    """
    groups: list[ArgGroup] = []
    strays: list[int] = []
    current: tuple[int, str, list[str], bool] | None = None
    for index, token in enumerate(argv[start:], start):
        if index in breaks and current is not None:
            groups.append(_group(current))
            current = None
        if token.startswith("-") and token != "-" and not _NEGATIVE_NUMBER.match(token):
            if current is not None:
                groups.append(_group(current))
            name, sep, value = token.partition("=")
            if re.fullmatch(r"-O\d+", name):  # -O3 is --optimization-level 3
                name, value, sep = "-O", name[2:], "="
            current = (index, name, [value] if sep else [], bool(sep))
        elif current is not None:
            current[2].append(token)
        else:
            strays.append(index)
    if current is not None:
        groups.append(_group(current))
    return groups, strays


def _group(current: tuple[int, str, list[str], bool]) -> ArgGroup:
    index, name, values, inline = current
    return ArgGroup(index, name, tuple(values), inline)


def dedupe(argv: Sequence[str], flags: FlagSet, start: int = 1) -> list[str]:
    """``argv`` with each option kept once: its last occurrence wins, as in vLLM's parser."""
    groups, _ = group_args(argv, start)
    last: dict[str, int] = {}
    for group in groups:
        last[flags.primary(canonical_flag(flags, group.flag))] = group.index
    dropped: set[int] = set()
    for group in groups:
        if last[flags.primary(canonical_flag(flags, group.flag))] != group.index:
            count = 1 if group.inline else 1 + len(group.values)
            dropped.update(range(group.index, group.index + count))
    return [token for index, token in enumerate(argv) if index not in dropped]


def check_argv(
    argv: Sequence[str], flags: FlagSet, start: int = 1, breaks: Collection[int] = ()
) -> list[FlagIssue]:
    """Every problem vLLM ``flags.version`` would find in ``argv`` (after the positional model)."""
    groups, strays = group_args(argv, start, breaks)
    issues = [
        FlagIssue(
            index, f"unexpected argument '{argv[index]}'",
            "each item is one flag or one value; put the value after its flag",
        )
        for index in strays
    ]
    present = {canonical_flag(flags, g.flag) for g in groups}
    for group in groups:
        found = _check_group(group, flags, present)
        issues += found
        flag = canonical_flag(flags, group.flag)
        if found or group.inline or flag not in flags.flags or flags.takes_many(flag):
            continue
        allowed = 1 if flags.takes_value(flag) else 0
        issues += [
            FlagIssue(
                group.index + 1 + offset, f"unexpected argument '{value}' after '{group.flag}'",
                f"'{group.flag}' takes {'one value' if allowed else 'no value'}; "
                "remove the extra item",
            )
            for offset, value in enumerate(group.values) if offset >= allowed
        ]
    return sorted(issues, key=lambda issue: issue.index)


def abbreviations(argv: Sequence[str], flags: FlagSet, start: int = 1) -> list[tuple[int, str]]:
    """(index, full flag) of each flag written as a prefix, which vLLM's parser expands."""
    groups, _ = group_args(argv, start)
    found = []
    for group in groups:
        written = "--" + group.flag[2:].replace("_", "-")
        full = canonical_flag(flags, group.flag)
        if group.flag.startswith("--") and "." not in written and full != written:
            found.append((group.index, full))
    return found


def _check_group(group: ArgGroup, flags: FlagSet, present: set[str]) -> list[FlagIssue]:
    written = group.flag
    if " " in written:
        head = written.split()[0]
        return [FlagIssue(
            group.index, f"'{written}' holds a flag and its value in one item",
            f"write them as two items: '{head}' then the value",
        )]
    flag = canonical_flag(flags, written)
    version = flags.version
    if flag not in flags.flags:
        elsewhere = [v for v in KNOWN_VERSIONS if flag in load_flag_set(v).flags]
        fix = did_you_mean(flag, sorted(f for f in flags.flags if f.startswith("--")), "flag")
        if elsewhere:
            fix = (f"it exists in vLLM {', '.join(elsewhere)}: remove it, or use an image of "
                   "that version")
        return [FlagIssue(
            group.index, f"unknown vLLM flag '{written}' (not in vLLM {version})", fix,
        )]
    if not flags.takes_value(flag):
        if group.values:
            off = flags.details.get(flag, {}).get("negated_of") or flag
            return [FlagIssue(
                group.index, f"'{written}' is a switch and takes no value "
                f"(got '{' '.join(group.values)}')",
                f"remove the value; '--no-{off.removeprefix('--')}' turns it off"
                if flag in flags.bool_flags else "remove the value",
            )]
        return []
    if not group.values:
        if flags.value_optional(flag):
            return []
        return [FlagIssue(
            group.index, f"'{written}' needs a value", "put its value in the next item",
        )]
    return _check_values(group, flag, flags, present)


def _check_values(
    group: ArgGroup, flag: str, flags: FlagSet, present: set[str]
) -> list[FlagIssue]:
    value = group.values[0]
    if flags.is_json_option(flag) and "." not in group.flag:
        return _check_json(group, flag, value, flags)
    check = _VALUE_CHECKS.get(flags.primary(flag))
    if check is None:
        return []
    key, fold = check
    plugin = _PLUGIN_FLAGS.get(key)
    if plugin is not None and plugin in present:
        return []
    problem = value_problem(key, value, flags, fold)
    if problem is None:
        return []
    message, fix = problem
    return [FlagIssue(group.index, f"{message} for '{flag}'", fix)]


def _check_json(group: ArgGroup, flag: str, value: str, flags: FlagSet) -> list[FlagIssue]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        return [FlagIssue(
            group.index, f"'{flag}' needs JSON: {exc.msg} at character {exc.pos + 1}",
            "write a JSON object in single quotes in YAML, e.g. '{\"method\": \"mtp\"}'",
        )]
    if flag != "--speculative-config" or not isinstance(parsed, dict):
        return []
    issues = []
    for key, choice, fold in (
        ("method", "speculative_method", "exact"),
        ("moe_backend", "moe_backend", "lower_underscore"),
    ):
        if isinstance(parsed.get(key), str):
            problem = value_problem(choice, parsed[key], flags, fold)
            if problem is not None:
                issues.append(FlagIssue(
                    group.index, f"{problem[0]} for '{flag}' {key}", problem[1], detail=key
                ))
    return issues


def value_problem(
    key: str, value: str, flags: FlagSet, fold: str = "exact"
) -> tuple[str, str] | None:
    """(message, fix) when ``value`` is not one of vLLM's ``key`` values, else None."""
    allowed = flags.choices.get(key)
    if not allowed or value in _ALWAYS_OK.get(key, set()):
        return None
    folded = _fold(value, fold)
    if folded in {_fold(choice, fold) for choice in allowed}:
        return None
    return (
        f"'{value}' is not a valid {key} in vLLM {flags.version}",
        did_you_mean(folded, list(allowed), "value", fold=fold),
    )


def _fold(value: str, fold: str) -> str:
    if fold == "lower_underscore":
        return value.lower().replace("-", "_")
    if fold == "lower":
        return value.lower()
    if fold == "upper":
        return "auto" if value.lower() == "auto" else value.upper()
    return value


def did_you_mean(word: str, options: list[str], what: str, *, fold: str = "exact") -> str:
    # Case-insensitive: the nearest spelling, whatever case the user typed.
    folded = {_fold(option, fold).lower(): option for option in options}
    close = difflib.get_close_matches(word.lower(), list(folded), n=1, cutoff=0.6)
    if close:
        return f"did you mean '{folded[close[0]]}'?"
    if len(options) <= 40:
        return f"use one of: {', '.join(sorted(options))}"
    return f"see `vllm serve --help` for the {what}s of this version"
