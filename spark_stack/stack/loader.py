"""Load a stack file: YAML → presets → schema → cross-field checks, every problem located.

``load_stack`` either returns a :class:`LoadedStack` or raises one :class:`StackFileError`
listing every problem found, each with ``file:line:col``, the key path and a fix.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import Problem, StackFileError, UsageError
from . import schema
from .checks import ERROR_CHECKS, LINT_CHECKS
from .loaded import LoadedStack, did_you_mean, located
from .presets import Preset, apply_preset, available, locate, read_preset
from .yamlpos import KeyPath, Positions, parse, render_path

__all__ = [
    "LoadedStack", "did_you_mean", "load_preset", "load_stack", "load_stack_text", "located",
]

DEFAULT_STACK_FILE = "spark-stack.yaml"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "stacks"


def builtin_stack_path(name: str) -> Path | None:
    """``demo`` → the demo stack shipped inside the package."""
    candidate = BUILTIN_DIR / f"{name}.yaml"
    return candidate if candidate.is_file() else None


def resolve_stack_path(value: str | Path | None) -> Path:
    """The stack file to use: the given path, a built-in stack name, or ./spark-stack.yaml."""
    if value is None or str(value) == "":
        return Path(DEFAULT_STACK_FILE)
    path = Path(value).expanduser()
    if not path.exists() and path.suffix == "" and (builtin := builtin_stack_path(str(value))):
        return builtin
    return path


def load_stack(value: str | Path | None = None, *, lint: bool = True) -> LoadedStack:
    """Load and validate a stack file; raises :class:`StackFileError` with every problem."""
    path = resolve_stack_path(value)
    filename = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StackFileError(
            [Problem("stack file not found", file=filename)],
            fix="create one with `spark-stack init`, or pass --stack PATH (or set SPARK_STACK); "
            "`--stack demo` uses the built-in demo stack",
        ) from None
    except IsADirectoryError:
        raise StackFileError(
            [Problem("this is a directory, not a stack file", file=filename)],
            fix=f"pass the YAML file itself, e.g. --stack {path / DEFAULT_STACK_FILE}",
        ) from None
    except UnicodeDecodeError as exc:
        raise StackFileError(
            [Problem(f"the stack file is not UTF-8 text (byte {exc.start})", file=filename)],
            fix="save the file as UTF-8 (a YAML stack file is plain text)",
        ) from None
    except OSError as exc:
        raise StackFileError(
            [Problem(f"cannot read the stack file: {exc.strerror or exc}", file=filename)],
            fix="check the path and its permissions",
        ) from None
    return load_stack_text(text, filename=filename, path=path, lint=lint)


def load_stack_text(
    text: str, *, filename: str = "<stack>", path: Path | None = None, lint: bool = True
) -> LoadedStack:
    data, positions, problems = parse(text, filename)
    if problems and data is None:
        raise StackFileError(problems)
    if data is None:
        raise StackFileError(
            [Problem("the stack file is empty", file=filename, line=1, column=1)],
            fix="start from `spark-stack init` or one of the files in stacks/",
        )
    if not isinstance(data, dict):
        raise StackFileError(
            [located("the stack file must be a mapping of keys (name, host, models, …)", (),
                     positions, filename)],
            fix="start with 'name: my-stack' and 'models:' at the left margin "
            "(`spark-stack init` writes an example)",
        )
    base_dir = (path or Path(filename)).parent
    data, presets, preset_problems, unknown_presets = _apply_presets(
        data, positions, filename, base_dir)
    problems += preset_problems
    # A model with an unknown preset is unknown itself: only its name takes part in checks.
    bad_paths: list[KeyPath] = [("models", index) for index in unknown_presets]
    stand_ins: dict[int, str] = {}
    try:
        stack: schema.Stack | None = schema.Stack.model_validate(data)
    except ValidationError as exc:
        problems += _problems_from_errors(exc.errors(), data, positions, filename)
        bad_paths += [_clean_loc(tuple(err["loc"])) for err in exc.errors()]
    if bad_paths:
        stack, stand_ins = _validate_the_rest(data, bad_paths)
    if stack is None:
        raise StackFileError(problems)
    loaded = LoadedStack(stack, path or Path(filename), positions, presets=presets)
    errors = [p for check in ERROR_CHECKS for p in check(loaded)]
    if problems:
        errors = problems + _follow_ups_dropped(errors, problems, stand_ins)
    if lint:
        loaded.warnings = [p for check in LINT_CHECKS for p in check(loaded)]
    if errors:
        # Warnings too: every problem is listed at once, not the next ones after a fix.
        raise StackFileError(
            errors, warnings=_beside(loaded.warnings, errors, [f"models[{i}]" for i in stand_ins]))
    return loaded


def _beside(warnings: list[Problem], errors: list[Problem], stand_ins: list[str]
            ) -> list[Problem]:
    """The warnings about places no error touches: a value set aside for an error (or a model
    standing in for one that could not be mended) would only give warnings about itself."""
    touched = [error.key_path for error in errors] + stand_ins

    def related(a: str, b: str) -> bool:
        return a == b or a.startswith((f"{b}.", f"{b}[")) or b.startswith((f"{a}.", f"{a}["))

    return [w for w in warnings if not any(related(w.key_path, t) for t in touched if t)]


# Replacements for invalid values whose removal would raise problems of its own (a stack
# without a host, a public proxy without a token).
_PLACEHOLDERS: dict[str, Any] = {"address": "placeholder", "token": "auto"}
_REQUIRED_MODEL_KEYS = ("name", "kind", "url")
_REPAIR_ROUNDS = 4


def _validate_the_rest(
    data: dict[str, Any], bad_paths: list[KeyPath]
) -> tuple[schema.Stack | None, dict[int, str]]:
    """The stack with each invalid value dropped (its default applies), so the cross-field
    checks still run on what the user wrote; ``None`` when even that does not validate.

    A model that cannot be mended (bad name, kind or url) becomes a remote stand-in keeping
    only its name (for the duplicate-name and route checks); the stand-ins' indices are
    returned with those names.
    """
    repaired = copy.deepcopy(data)
    stand_ins: dict[int, str] = {}
    for _ in range(_REPAIR_ROUNDS):
        for bad in bad_paths:
            if not _mend(repaired, bad, stand_ins):
                return None, {}
        try:
            stack = schema.Stack.model_validate(repaired)
        except ValidationError as exc:
            bad_paths = [_clean_loc(tuple(err["loc"])) for err in exc.errors()]
            continue
        models = list(stack.models)
        for index, name in stand_ins.items():
            models[index] = models[index].model_copy(update={"name": name})
        return stack.model_copy(update={"models": models}), stand_ins
    return None, {}


def _mend(data: dict[str, Any], path: KeyPath, stand_ins: dict[int, str]) -> bool:
    """Remove (or replace) the value at ``path`` that failed validation; False if it cannot be."""
    if not path:
        return False
    head = path[0]
    if head == "name":
        data["name"] = "placeholder"
        return True
    if head == "models":
        models = data.get("models")
        if len(path) < 2 or not isinstance(models, list) or not isinstance(path[1], int):
            return False
        index = path[1]
        if index in stand_ins:
            return True
        model = models[index]
        if _mend_replica(model, path[2:]):
            return True
        if len(path) > 2 and isinstance(model, dict) and path[2] not in _REQUIRED_MODEL_KEYS:
            model.pop(path[2], None)
            return True
        name = model.get("name") if isinstance(model, dict) else None
        if not isinstance(name, str):
            return False
        stand_ins[index] = name
        models[index] = {"kind": "remote", "name": "placeholder", "url": "http://placeholder"}
        return True
    # host.<key>, hosts.<name>.<key>, proxy.<key>, claude.<key> or an unknown top-level key
    depth = 3 if head == "hosts" else 2
    section: Any = data
    for part in path[: depth - 1]:
        section = section.get(part) if isinstance(section, dict) else None
    key = path[depth - 1] if len(path) >= depth else path[-1]
    if not isinstance(section, dict) or len(path) < depth:
        section, key = data, head
        if head == "host":
            data["host"] = {"address": _PLACEHOLDERS["address"]}
            return True
    elif key in _PLACEHOLDERS:
        section[key] = _PLACEHOLDERS[key]
        return True
    section.pop(key, None)
    return True


def _mend_replica(model: Any, path: KeyPath) -> bool:
    """A replica refused for its weight stays as its bare host (the host checks still run);
    False when ``path`` is no such entry."""
    if len(path) < 3 or path[0] != "replicas" or not isinstance(path[1], int):
        return False
    entries = model.get("replicas") if isinstance(model, dict) else None
    if not isinstance(entries, list) or not 0 <= path[1] < len(entries):
        return False
    entry = entries[path[1]]
    if not isinstance(entry, dict) or not isinstance(entry.get("host"), str):
        return False
    entries[path[1]] = entry["host"]
    return True


_MODEL_PATH = re.compile(r"^models\[(\d+)\]")


def _follow_ups_dropped(
    errors: list[Problem], problems: list[Problem], stand_ins: dict[int, str]
) -> list[Problem]:
    """Cross-field errors that are not mere consequences of the schema problems: nothing twice
    at one place, nothing about a stand-in but its name, and no "needs image" for a model
    whose preset or keys were refused."""
    reported = {p.key_path for p in problems}
    broken = {m.group(0) for p in problems if (m := _MODEL_PATH.match(p.key_path))}
    kept = []
    for problem in errors:
        match = _MODEL_PATH.match(problem.key_path)
        if problem.key_path in reported or problem.key_path in broken:
            continue
        if match and int(match.group(1)) in stand_ins and problem.key_path != (
            f"{match.group(0)}.name"
        ):
            continue
        kept.append(problem)
    return kept


def load_preset(reference: str, base_dir: Path | None = None) -> Preset:
    """A preset by name or path, checked like a models[] entry; raises :class:`StackFileError`
    with every problem located in its file (an unknown name: the names there are)."""
    file = locate(reference, base_dir)
    if file is None:
        raise UsageError(
            f"unknown preset '{reference}'",
            fix=did_you_mean(reference, list(available()), "preset") + " (`spark-stack "
            "presets` lists them; a file of your own is named by its path: ./mine.yaml)",
        )
    preset = read_preset(file)
    problems = preset.problems or preset_problems(preset)
    if problems:
        raise StackFileError(problems, what="preset file")
    return preset


def preset_problems(preset: Preset) -> list[Problem]:
    """The schema's problems with a preset's keys, located in the preset's file."""
    entry = {"name": "preset", **preset.settings}
    try:
        schema.ContainerModel.model_validate(entry)
    except ValidationError as exc:
        # Checked as models[0] of a stack so the stack file's messages and fixes apply.
        prefix: KeyPath = ("models", 0)
        errors = [{**err, "loc": (*prefix, *err["loc"])} for err in exc.errors()]
        positions = Positions(
            keys={(*prefix, *k): v for k, v in preset.positions.keys.items()},
            values={(*prefix, *k): v for k, v in preset.positions.values.items()},
        )
        problems = _problems_from_errors(errors, {"models": [entry]}, positions,
                                         str(preset.file.path))
        return [dataclasses.replace(p, key_path=p.key_path.removeprefix("models[0]")
                                    .removeprefix(".")) for p in problems]
    return []


def _apply_presets(
    data: dict[str, Any], positions: Positions, filename: str, base_dir: Path
) -> tuple[dict[str, Any], dict[str, Preset], list[Problem], list[int]]:
    """The data with presets merged, the presets by reference, the problems (a broken preset
    file's located in that file), and the indices of models whose preset is unusable."""
    models = data.get("models")
    if not isinstance(models, list):
        return data, {}, [], []
    problems: list[Problem] = []
    presets: dict[str, Preset] = {}
    unknown: list[int] = []
    merged_models: list[Any] = []
    for index, model in enumerate(models):
        reference = model.get("preset") if isinstance(model, dict) else None
        if reference is None:
            merged_models.append(model)
            continue
        preset, broken = _preset_for(str(reference), base_dir, presets)
        if preset is None or broken:
            at = ("models", index, "preset")
            if preset is None:
                broken = [located(
                    f"unknown preset '{reference}'", at, positions, filename,
                    fix=did_you_mean(str(reference), list(available()), "preset")
                    + " (a file of your own is named by its path: ./mine.yaml)")]
            elif not preset.file.path.exists():
                broken = [located(
                    f"preset file {preset.file.path} not found", at, positions, filename,
                    fix="a relative path starts at the stack file's directory")]
            problems += broken
            merged_models.append(model)
            unknown.append(index)
            continue
        merged_models.append(apply_preset(preset.settings, model))
    return {**data, "models": merged_models}, presets, problems, unknown


def _preset_for(
    reference: str, base_dir: Path, seen: dict[str, Preset]
) -> tuple[Preset | None, list[Problem]]:
    """The preset a stack names (read once per load) and its problems."""
    if reference in seen:
        return seen[reference], []
    file = locate(reference, base_dir)
    if file is None:
        return None, []
    preset = read_preset(file)
    problems = preset.problems or preset_problems(preset)
    if not problems:
        seen[reference] = preset
    return preset, problems


def _problems_from_errors(
    errors: list[Any], data: dict[str, Any], positions: Positions, filename: str
) -> list[Problem]:
    """One problem per place: a union's alternatives collapse, and a missing key that an
    unknown key's "did you mean" already names is not reported twice."""
    problems: list[Problem] = []
    seen: set[str] = set()
    suggested: set[tuple[KeyPath, str]] = set()
    for err in errors:
        if err["type"] == "extra_forbidden":
            path = _clean_loc(tuple(err["loc"]))
            close = difflib.get_close_matches(
                str(path[-1]), _allowed_keys(path[:-1], data), n=1, cutoff=0.6
            )
            suggested.update((path[:-1], key) for key in close)
    for err in errors:
        path = _clean_loc(tuple(err["loc"]))
        if err["type"] == "missing" and (path[:-1], str(path[-1])) in suggested:
            continue
        key = render_path(path)
        if key in seen:
            continue
        seen.add(key)
        problems.append(_problem_from_error(err, path, data, positions, filename))
    return problems


def _problem_from_error(
    err: Any, path: KeyPath, data: dict[str, Any], positions: Positions, filename: str
) -> Problem:
    kind = err["type"]
    field = str(path[-1]) if path else ""
    if kind == "value_error" and len(path) >= 2 and path[-2] in _MAP_FIELDS:
        field = str(path[-2])  # an entry the map's own check refused: the map's fix applies
    if kind == "extra_forbidden":
        allowed = _allowed_keys(path[:-1], data)
        return located(
            f"unknown key '{field}'",
            path,
            positions,
            filename,
            fix=did_you_mean(field, allowed, "key"),
            at_key=True,
        )
    if kind == "missing":
        return located(
            f"missing required key '{field}'", path[:-1], positions, filename,
            fix=f"add '{field}:' here", at_key=True,
        )
    if kind == "union_tag_invalid":
        given = err["input"].get("kind") if isinstance(err["input"], dict) else ""
        return located(
            f"unknown model kind '{given}'",
            (*path, "kind"),
            positions,
            filename,
            fix=did_you_mean(str(given), list(schema.MODEL_KINDS), "kind")
            + " (container: vLLM on a host, remote: url of a running server, simulator: "
            "the built-in one)",
        )
    got = err.get("input")
    if field in _FIELD_MESSAGES:
        message, fix = _FIELD_MESSAGES[field]
        return located(f"{message} (got {got!r})", path, positions, filename, fix=fix)
    message = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = message[:1].lower() + message[1:]
    if kind != "value_error" and not isinstance(got, dict | list) and got is not None:
        message += f" (got {got!r})"
    return located(message, path, positions, filename, fix=_fix_for(kind, field, err))


def _fix_for(kind: str, field: str, err: Any) -> str:
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        return did_you_mean(str(err.get("input")), options, "value")
    if kind == "string_pattern_mismatch":
        return _PATTERN_FIXES.get(field, f"names use {schema.NAME_HINT}")
    return _FIELD_FIXES.get(field) or _FIXES.get(kind) or (
        "see the stack file reference in README.md"
    )


# Maps whose entries are checked one by one (an error's path ends in the entry's key).
_MAP_FIELDS = ("env", "ulimits")

# Fields whose errors read better as one sentence than as pydantic's union alternatives.
_FIELD_MESSAGES = {
    "gpus": (
        "gpus must be 'all', 'none', a GPU count or a list of GPU indices",
        "write gpus: all (the Spark's one GPU), or none on a host without GPUs",
    ),
}
_FIELD_FIXES = {
    "api_key": "write e.g. api_key: ${MY_VLLM_KEY} and export MY_VLLM_KEY, or use auto",
    "token": "write e.g. token: ${MY_PROXY_TOKEN} and export it, or use auto",
    "listen": "write HOST:PORT, e.g. 127.0.0.1:4000",
    "shm_size": "write a size such as 16gb",
    "address": "write an IP, a hostname or an ~/.ssh/config alias, e.g. address: spark",
    "user": "write the SSH user name, e.g. user: ubuntu",
    "models": "add at least one model under 'models:'",
    "image": "write e.g. image: vllm/vllm-openai:v0.28.0",
    "env": "rename the variable: letters, digits and '_' (e.g. HF_HUB_OFFLINE)",
    "ulimits": "write e.g. ulimits: {nofile: \"65536:65536\"}",
    "url": "write the URL without user:pass@ and give the server's key as api_key: ${ENV_VAR}",
}
_PATTERN_FIXES = {
    "url": "write the server's OpenAI base URL, e.g. http://192.168.1.20:8000/v1",
    "target": "use an absolute path inside the container, e.g. /data",
}
_FIXES = {
    "int_parsing": "write a whole number without quotes",
    "int_type": "write a whole number",
    "float_parsing": "write a number such as 0.5",
    "float_type": "write a number such as 0.5",
    "bool_parsing": "write true or false",
    "bool_type": "write true or false",
    "string_type": "write a string (quote it if it looks like a number)",
    "list_type": "write a YAML list (lines starting with '- ')",
    "dict_type": "write a mapping of key: value lines",
    "model_type": "write a mapping of key: value lines",
    "model_attributes_type": "write a mapping of key: value lines",
    "greater_than": "use a larger value",
    "less_than_equal": "use a smaller value",
    "less_than": "use a smaller value",
    "greater_than_equal": "use a larger value",
    "too_short": "add at least one entry",
    "string_too_short": "write a non-empty value",
    "number_not_bool": "write a number (e.g. port: 8000); true and false are not numbers",
    "finite_number": "write a finite number",
}


_UNION_TAG = re.compile(
    r"^(literal\[|list\[|dict\[|nullable\[|function-|constrained-|tagged-union\["
    r"|(int|str|float|bool)$)"
)


def _clean_loc(loc: tuple[Any, ...]) -> KeyPath:
    """Drop pydantic's union tags and ``[key]`` markers so the path matches the YAML."""
    cleaned: list[str | int] = []
    for index, part in enumerate(loc):
        if part == "[key]":
            continue
        previous = loc[index - 1] if index else None
        if isinstance(previous, int) and part in schema.MODEL_KINDS and "models" in loc[:index]:
            continue
        # Union alternatives and validator wrappers: "literal[...]", "constrained-int", …
        if isinstance(part, str) and _UNION_TAG.match(part):
            continue
        cleaned.append(part)
    return tuple(cleaned)


def _allowed_keys(path: KeyPath, data: dict[str, Any]) -> list[str]:
    model_class: type[BaseModel] | None = None
    if path == ():
        model_class = schema.Stack
    elif path[0] in ("host",) and len(path) == 1 or path[0] == "hosts" and len(path) == 2:
        model_class = schema.HostConfig
    elif path[0] == "proxy" and len(path) == 1:
        model_class = schema.ProxySection
    elif path[:2] == ("proxy", "limits") and len(path) == 2:
        model_class = schema.ProxyLimits
    elif path[0] == "claude" and len(path) == 1:
        model_class = schema.ClaudeSection
    elif path[0] == "models" and len(path) >= 2 and isinstance(path[1], int):
        raw = data.get("models", [])[path[1]]
        kind = schema._model_kind(raw)
        by_kind: dict[str, type[BaseModel]] = {
            "container": schema.ContainerModel,
            "remote": schema.RemoteModel,
            "simulator": schema.SimulatorModel,
        }
        model_class = by_kind.get(kind, schema.ContainerModel)
        if len(path) == 3:
            nested: dict[str, type[BaseModel]] = {
                "speculative": schema.Speculative,
                "cache": schema.CacheMounts,
            }
            model_class = nested.get(str(path[2]))
        elif len(path) == 4 and path[2] == "mounts":
            model_class = schema.Mount
        elif len(path) > 2:
            model_class = None
    return list(model_class.model_fields) if model_class else []
