"""Parse a `vllm serve` command line the way vLLM's argparse does (pure).

Without a flag file every ``--flag`` is accepted; with one (the JSON of
``spark_stack/vllm/data/vllm-flags-*.json``) an option that is not in it is an error worded
like argparse's. Values are kept as raw strings; the config module interprets the few the
simulator uses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

USAGE = "usage: vllm serve [model_tag] [options]"
PROG = "vllm serve"

# The usual boolean flags of `vllm serve`, used when no flag file says which take no value.
BUILTIN_BOOL_FLAGS = frozenset(
    {
        "--enable-auto-tool-choice",
        "--trust-remote-code",
        "--enable-prefix-caching",
        "--enable-chunked-prefill",
        "--async-scheduling",
        "--enforce-eager",
        "--disable-log-requests",
        "--disable-log-stats",
        "--enable-log-requests",
        "--disable-uvicorn-access-log",
        "--disable-fastapi-docs",
        "--disable-custom-all-reduce",
        "--enable-expert-parallel",
        "--enable-sleep-mode",
        "--enable-lora",
        "--enable-prompt-tokens-details",
        "--enable-force-include-usage",
        "--enable-server-load-tracking",
        "--enable-request-id-headers",
        "--enable-log-outputs",
        "--headless",
        "--skip-tokenizer-init",
        "--disable-sliding-window",
        "--disable-cascade-attn",
        "--allow-credentials",
        "--return-tokens-as-token-ids",
        "--enable-tokenizer-info-endpoint",
        "--sim-reasoning-content",
    }
)

# Flags that take one or more values (argparse nargs="+") when no flag file says so.
BUILTIN_MULTI_VALUE_FLAGS = frozenset(
    {
        "--served-model-name",
        "--api-key",
        "--middleware",
        "--allowed-origins",
        "--allowed-methods",
        "--allowed-headers",
        "--cudagraph-capture-sizes",
        "--lora-modules",
    }
)

# Flags the simulator reads, which always take a value.
VALUED_FLAGS = frozenset(
    {
        "--model",
        "--host",
        "--port",
        "--served-model-name",
        "--max-model-len",
        "--api-key",
        "--reasoning-parser",
        "--tool-call-parser",
        "--default-chat-template-kwargs",
        "--gpu-memory-utilization",
        "--sim-flags-file",
        "--sim-quirks",
        "--sim-startup-seconds",
        "--sim-prefill-ms-per-1k-tokens",
        "--nnodes",
        "--node-rank",
        "--master-addr",
        "--master-port",
        "--tensor-parallel-size",
        "--pipeline-parallel-size",
        "--distributed-executor-backend",
    }
)

# Options of the simulator itself, always accepted whatever the flag file says.
SIM_FLAGS = frozenset(
    {"--sim-flags-file", "--sim-quirks", "--sim-startup-seconds", "--sim-reasoning-content",
     "--sim-prefill-ms-per-1k-tokens"}
)


class UsageError(Exception):
    """The command line is not one `vllm serve` accepts (argparse exits 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def render(self) -> str:
        """The two lines argparse prints to stderr."""
        return f"{USAGE}\n{PROG}: error: {self.message}\n"


@dataclass(frozen=True)
class FlagSpec:
    """Which options a vLLM version accepts, and how they take values."""

    flags: frozenset[str]
    bool_flags: frozenset[str]
    multi_value_flags: frozenset[str]
    aliases: Mapping[str, str] = field(default_factory=dict)
    version: str | None = None

    def knows(self, option: str) -> bool:
        return option in self.flags or option in SIM_FLAGS


def builtin_spec() -> FlagSpec:
    """Accept anything; know only the usual booleans and list-valued flags."""
    return FlagSpec(frozenset(), BUILTIN_BOOL_FLAGS, BUILTIN_MULTI_VALUE_FLAGS)


def spec_from_json(data: Mapping[str, object]) -> FlagSpec:
    """Build a spec from a `vllm-flags-*.json` document."""
    flags = frozenset(_strings(data.get("flags")))
    bools = set(_strings(data.get("bool_flags"))) or set(BUILTIN_BOOL_FLAGS)
    details = data.get("flag_details")
    multi: set[str] = set()
    aliases: dict[str, str] = {}
    if isinstance(details, Mapping):
        for option, info in details.items():
            if not isinstance(info, Mapping):
                continue
            # Plain argparse switches (--headless, --disable-log-stats) are not in
            # bool_flags, which lists the BooleanOptionalAction pairs only.
            if str(info.get("kind", "")).startswith("action:'store_"):
                bools.add(option)
            if "list[" in str(info.get("annotation", "")):
                multi.add(option)
            primary = info.get("primary")
            if isinstance(primary, str) and primary != option:
                aliases[option] = primary
    version = data.get("version")
    return FlagSpec(
        flags=flags,
        bool_flags=frozenset(bools | {"--sim-reasoning-content"}),
        multi_value_flags=frozenset(multi) or BUILTIN_MULTI_VALUE_FLAGS,
        aliases=aliases,
        version=version if isinstance(version, str) else None,
    )


def load_spec(path: str | Path) -> FlagSpec:
    """Read a flag file; a missing or malformed file is a usage error."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read flags file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"flags file {path} is not a JSON object")
    return spec_from_json(data)


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


@dataclass(frozen=True)
class ServeArgs:
    """A parsed command line: the model tag and every option with its raw values."""

    model: str | None
    options: Mapping[str, tuple[str, ...]]

    def value(self, option: str) -> str | None:
        values = self.options.get(option)
        return values[-1] if values else None

    def values(self, option: str) -> tuple[str, ...]:
        return self.options.get(option, ())

    def has(self, option: str) -> bool:
        return option in self.options


def normalize_option(option: str) -> str:
    """vLLM accepts `_` for `-` in option names."""
    if option.startswith("--"):
        return "--" + option[2:].replace("_", "-")
    return option


def _is_option(token: str) -> bool:
    if not token.startswith("-") or token == "-":
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def _expand_prefix(option: str, spec: FlagSpec) -> str:
    """argparse accepts an unambiguous prefix of a long option."""
    if not option.startswith("--"):
        return option
    matches = sorted(f for f in spec.flags if f.startswith(option) and f.startswith("--"))
    if len(matches) > 1:
        raise UsageError(f"ambiguous option: {option} could match {', '.join(matches)}")
    return matches[0] if matches else option


def find_flags_file(argv: Sequence[str]) -> str | None:
    """The `--sim-flags-file` value, looked up before the full parse needs it."""
    for i, token in enumerate(argv):
        if token.startswith("--sim-flags-file="):
            return token.split("=", 1)[1]
        if token == "--sim-flags-file" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def parse_serve_args(argv: Sequence[str], spec: FlagSpec | None = None) -> ServeArgs:
    """Parse the arguments after `vllm serve`; raise UsageError like argparse would."""
    spec = spec or builtin_spec()
    check = bool(spec.flags)
    model: str | None = None
    options: dict[str, tuple[str, ...]] = {}
    unrecognized: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not _is_option(token):
            if model is None:
                model = token
            else:
                unrecognized.append(token)
            continue
        name, sep, rest = token.partition("=")
        inline = rest if sep else None
        option = normalize_option(name)
        negated = option.startswith("--no-") and ("--" + option[5:]) in spec.bool_flags
        if check and not spec.knows(option):
            option = _expand_prefix(option, spec)
        if check and not spec.knows(option):
            unrecognized.append(token)
            while inline is None and i < len(argv) and not _is_option(argv[i]):
                unrecognized.append(argv[i])
                i += 1
            continue
        option = spec.aliases.get(option, option)
        if option in spec.bool_flags or negated:
            if inline is not None:
                raise UsageError(f"argument {name}: ignored explicit argument '{inline}'")
            options[option] = ("false",) if negated else ("true",)
            continue
        if inline is not None:
            values: list[str] = [inline]
        else:
            values = []
            while i < len(argv) and not _is_option(argv[i]):
                values.append(argv[i])
                i += 1
                if option not in spec.multi_value_flags:
                    break
            if not values and not check and option not in VALUED_FLAGS:
                # Without a flag file we cannot know it needs a value: take it as a boolean.
                options[option] = ("true",)
                continue
            if not values:
                many = (
                    "at least one argument" if option in spec.multi_value_flags else "one argument"
                )
                raise UsageError(f"argument {name}: expected {many}")
        options[option] = tuple(values)
    if unrecognized:
        raise UsageError("unrecognized arguments: " + " ".join(unrecognized))
    if model is None and options.get("--model"):
        model = options["--model"][-1]
    return ServeArgs(model=model, options=options)
