"""Regenerate spark-stack's option set of `vllm serve` for one vLLM release.

    python scripts/regen_vllm_flags.py 0.34.0            # downloads the wheel from PyPI
    python scripts/regen_vllm_flags.py 0.28.0 --wheel vllm-0.28.0-…whl --out /tmp

vLLM is never installed or imported: the aarch64 wheel is downloaded with
``pip download --no-deps --only-binary=:all:`` (~300 MB), only its ``vllm/**/*.py`` files are
read, and Python's ``ast`` finds

* the flags: the literal option strings ``make_arg_parser`` and ``EngineArgs.add_cli_args``
  register, plus the ones generated from config dataclass fields (``--field-name``) where
  ``add_argument`` gets ``**get_kwargs(Config)["field"]``; ``FrontendArgs`` registers every
  field it (and its bases) declare;
* which are switches: fields typed ``bool`` get ``BooleanOptionalAction`` (so ``--no-x`` too),
  as do explicit ``action=argparse.BooleanOptionalAction``/``"store_true"`` arguments;
* the allowed values of the options spark-stack checks (``choices``), from vLLM's ``Literal``
  aliases and parser/loader registries.

The output has the format of ``spark_stack/vllm/data/vllm-flags-*.json``; add the version to
``KNOWN_VERSIONS`` in ``spark_stack/vllm/flags.py`` after reviewing the printed differences.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "spark_stack" / "vllm" / "data"
PLATFORM = "manylinux_2_28_aarch64"  # the DGX Spark's architecture
PYTHON = "3.12"
# Where `vllm serve` builds its parser (make_arg_parser, EngineArgs.add_cli_args).
PARSER_FILES = ("entrypoints/openai/cli_args.py", "engine/arg_utils.py")

# Where each value set spark-stack checks is defined in vLLM's source.
ENFORCEMENT = {
    "moe_backend": "argparse choices (type lower()s and maps - to _), from KernelConfig."
    "moe_backend: MoEBackend Literal in vllm/config/kernel.py",
    "attention_backend": "no argparse choices (type=str); validated at config creation: "
    '"auto" or AttentionBackendEnum[value.upper()] (vllm/v1/attention/backends/registry.py)',
    "kv_cache_dtype": "CacheDType Literal (vllm/config/cache.py)",
    "load_format": "no argparse choices; checked in get_model_loader() against "
    "_LOAD_FORMAT_TO_MODEL_LOADER (+ register_model_loader plugins)",
    "quantization": "no argparse choices; validated in ModelConfig against QuantizationMethods "
    "(+ register_quantization_config plugins)",
    "tool_call_parser": "no argparse choices; checked after parsing against the lazy registry "
    "_TOOL_PARSERS_TO_REGISTER in vllm/tool_parsers/__init__.py (+ --tool-parser-plugin)",
    "reasoning_parser": "no argparse choices; checked after parsing against "
    "_REASONING_PARSERS_TO_REGISTER in vllm/reasoning/__init__.py (+ plugin); none = off",
    "speculative_method": "SpeculativeConfig.method: SpeculativeMethod Literal "
    "(vllm/config/speculative.py), validated by pydantic at engine creation",
}
# value set → (kind of source, name): a Literal alias, a dict's keys or an enum's members.
CHOICE_SOURCES = {
    "moe_backend": ("alias", "MoEBackend"),
    "attention_backend": ("enum", "AttentionBackendEnum"),
    "kv_cache_dtype": ("alias", "CacheDType"),
    "load_format": ("dict", "_LOAD_FORMAT_TO_MODEL_LOADER"),
    "quantization": ("alias", "QuantizationMethods"),
    "tool_call_parser": ("dict", "_TOOL_PARSERS_TO_REGISTER"),
    "reasoning_parser": ("dict", "_REASONING_PARSERS_TO_REGISTER"),
    "speculative_method": ("alias", "SpeculativeMethod"),
    "dtype": ("alias", "ModelDType"),
}


@dataclass
class SourceIndex:
    """What the extraction needs from vLLM's source, by name."""

    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    aliases: dict[str, ast.expr] = field(default_factory=dict)
    dicts: dict[str, ast.Dict] = field(default_factory=dict)
    modules: dict[str, ast.Module] = field(default_factory=dict)


def index_sources(sources: dict[str, str]) -> SourceIndex:
    index = SourceIndex()
    for path, text in sorted(sources.items()):
        try:
            module = ast.parse(text)
        except SyntaxError:
            continue
        index.modules[path] = module
        for node in module.body:
            if isinstance(node, ast.ClassDef):
                index.classes.setdefault(node.name, node)
            target, value = _assignment(node)
            if target is None or value is None:
                continue
            if isinstance(value, ast.Dict):
                index.dicts.setdefault(target, value)
            elif _mentions_literal(value):
                index.aliases.setdefault(target, value)
    return index


def _assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        return (target.id if isinstance(target, ast.Name) else None), node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id, node.value
    return None, None


def _mentions_literal(node: ast.expr) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "Literal" for n in ast.walk(node))


def literal_values(
    node: ast.expr, index: SourceIndex, seen: frozenset[str] = frozenset()
) -> list[str]:
    """The strings a ``Literal[...]`` type (through aliases and unions) allows."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name):
        if node.id in seen or node.id not in index.aliases:
            return []
        return literal_values(index.aliases[node.id], index, seen | {node.id})
    if isinstance(node, ast.BinOp):  # A | B
        return literal_values(node.left, index, seen) + literal_values(node.right, index, seen)
    if isinstance(node, ast.Subscript):
        inner = node.slice
        items = inner.elts if isinstance(inner, ast.Tuple) else [inner]
        return [value for item in items for value in literal_values(item, index, seen)]
    if isinstance(node, ast.Tuple | ast.List):
        return [value for item in node.elts for value in literal_values(item, index, seen)]
    return []


def class_fields(index: SourceIndex, name: str) -> dict[str, str]:
    """Annotated fields of a class and its bases (bases first), as annotation source text."""
    node = index.classes.get(name)
    if node is None:
        return {}
    fields: dict[str, str] = {}
    for base in node.bases:
        if isinstance(base, ast.Name):
            fields.update(class_fields(index, base.id))
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            if "ClassVar" not in ast.unparse(item.annotation):
                fields[item.target.id] = ast.unparse(item.annotation)
    return fields


def field_kind(annotation: str, index: SourceIndex) -> str:
    """How ``get_kwargs`` turns a field into an argparse option (static approximation)."""
    parts = {part.strip() for part in annotation.replace("Optional[", "").split("|")}
    if any(p in index.classes and p.endswith("Config") for p in parts):
        return "json-dataclass"
    if parts == {"bool", "str", "None"}:
        return "optional-valued"
    if "bool" in parts:
        return "bool"
    try:
        expr = ast.parse(annotation, mode="eval").body
    except SyntaxError:
        return "other"
    return "choices" if literal_values(expr, index) else "other"


def _add_argument_calls(node: ast.AST) -> Iterator[ast.Call]:
    for call in ast.walk(node):
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "add_argument"
        ):
            yield call


def _kwargs_vars(function: ast.AST) -> dict[str, str]:
    """``model_kwargs = get_kwargs(ModelConfig)`` → {"model_kwargs": "ModelConfig"}."""
    found = {}
    for node in ast.walk(function):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "get_kwargs"
            and node.value.args
            and isinstance(node.value.args[0], ast.Name)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.args[0].id
    return found


def _field_vars(function: ast.AST, kwargs_vars: dict[str, str]) -> dict[str, tuple[str, str]]:
    """``moe_kwargs = kernel_kwargs["moe_backend"]`` → {"moe_kwargs": ("KernelConfig", …)}."""
    found = {}
    for node in ast.walk(function):
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Subscript)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id in kwargs_vars
            and isinstance(node.value.slice, ast.Constant)
        ):
            found[node.targets[0].id] = (
                kwargs_vars[node.value.value.id], str(node.value.slice.value)
            )
    return found


def _field_ref(
    call: ast.Call, kwargs_vars: dict[str, str], field_vars: dict[str, tuple[str, str]]
) -> tuple[str, str] | None:
    """The (Config class, field) a ``**x_kwargs["field"]`` argument expands."""
    for keyword in call.keywords:
        if keyword.arg is not None:
            continue
        if isinstance(keyword.value, ast.Name) and keyword.value.id in field_vars:
            return field_vars[keyword.value.id]
        for node in ast.walk(keyword.value):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Name)
                and node.value.id in kwargs_vars
                and isinstance(node.slice, ast.Constant)
            ):
                return kwargs_vars[node.value.id], str(node.slice.value)
    return None


def _action(call: ast.Call) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == "action":
            text = ast.unparse(keyword.value)
            return "bool" if "BooleanOptionalAction" in text else f"action:{text}"
    return None


@dataclass
class Extraction:
    details: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, options: list[str], detail: dict[str, str]) -> None:
        longs = [o for o in options if o.startswith("--")]
        primary = longs[0] if longs else options[0]
        for option in options:
            self.details.setdefault(option, {**detail, "primary": primary})
        if detail.get("kind") == "bool":
            for option in longs:
                negated = "--no-" + option[2:]
                self.details.setdefault(
                    negated, {**detail, "primary": primary, "negated_of": option}
                )


def extract_flags(index: SourceIndex) -> Extraction:
    out = Extraction()
    for path, module in index.modules.items():
        for function in ast.walk(module):
            if not isinstance(function, ast.FunctionDef):
                continue
            if function.name not in ("make_arg_parser", "add_cli_args"):
                continue
            if not path.endswith(PARSER_FILES):
                continue
            kwargs_vars = _kwargs_vars(function)
            field_vars = _field_vars(function, kwargs_vars)
            for call in _add_argument_calls(function):
                options = [
                    a.value for a in call.args
                    if isinstance(a, ast.Constant) and isinstance(a.value, str)
                    and a.value.startswith("-")
                ]
                if not options:
                    continue
                detail: dict[str, str] = {}
                ref = _field_ref(call, kwargs_vars, field_vars)
                if ref is not None:
                    config, name = ref
                    annotation = class_fields(index, config).get(name, "")
                    detail = {"source": f"{config}.{name}", "annotation": annotation,
                              "kind": field_kind(annotation, index)}
                action = _action(call)
                if action is not None:
                    detail["kind"] = action
                out.add(options, detail)
    # FrontendArgs registers each of its fields as --field-name (plus any "flags" extras).
    for name, annotation in class_fields(index, "FrontendArgs").items():
        option = "--" + name.replace("_", "-")
        out.add([option], {"source": f"FrontendArgs.{name}", "annotation": annotation,
                           "kind": field_kind(annotation, index)})
    return out


def extract_choices(index: SourceIndex) -> dict[str, list[str]]:
    choices: dict[str, list[str]] = {}
    for key, (kind, name) in CHOICE_SOURCES.items():
        values: list[str] = []
        if kind == "alias" and name in index.aliases:
            values = literal_values(index.aliases[name], index)
        elif kind == "dict" and name in index.dicts:
            values = [
                k.value for k in index.dicts[name].keys
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            ]
        elif kind == "enum" and name in index.classes:
            # "auto" first, then the member names vLLM matches case-insensitively
            values = ["auto"] + sorted(
                target.id
                for item in index.classes[name].body if isinstance(item, ast.Assign)
                for target in item.targets if isinstance(target, ast.Name)
                and target.id.isupper()
            )
        if values:
            choices[key] = values if kind == "enum" else sorted(set(values))
    return choices


def extract(sources: dict[str, str], version: str, source_name: str) -> dict[str, object]:
    index = index_sources(sources)
    flags = extract_flags(index)
    details = dict(sorted(flags.details.items()))
    # BooleanOptionalAction switches; store_true ones are told apart by their kind.
    bools = sorted(f for f, d in details.items() if d.get("kind") == "bool")
    return {
        "version": version,
        "source": f"{source_name} (static AST extraction)",
        "flags": sorted(details),
        "bool_flags": bools,
        "choices": extract_choices(index),
        "choice_enforcement": ENFORCEMENT,
        "flag_details": details,
    }


def read_wheel_sources(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        return {
            name: archive.read(name).decode("utf-8", errors="replace")
            for name in archive.namelist()
            if name.startswith("vllm/") and name.endswith(".py")
        }


def download_wheel(version: str, into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--platform", PLATFORM, "--python-version", PYTHON, f"vllm=={version}",
         "-d", str(into)],
        check=True,
    )
    wheels = sorted(into.glob(f"vllm-{version}-*.whl"))
    if not wheels:
        raise SystemExit(f"pip downloaded no vllm {version} wheel into {into}")
    return wheels[0]


def compare(new: dict[str, object], old_path: Path) -> list[str]:
    """Lines describing what changed against an existing set."""
    old = json.loads(old_path.read_text(encoding="utf-8"))
    lines = [f"against {old_path.name}:"]
    for key in ("flags", "bool_flags"):
        before, after = set(old[key]), set(new[key])  # type: ignore[call-overload]
        lines.append(f"  {key}: {len(after)} (+{len(after - before)} -{len(before - after)})")
        lines += [f"    + {f}" for f in sorted(after - before)]
        lines += [f"    - {f}" for f in sorted(before - after)]
    choices_new = new["choices"]
    assert isinstance(choices_new, dict)
    for key, values in choices_new.items():
        before, after = set(old["choices"].get(key, [])), set(values)
        if before != after:
            lines.append(f"  choices.{key}: +{sorted(after - before)} -{sorted(before - after)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("version", help="vLLM release, e.g. 0.34.0")
    parser.add_argument("--wheel", type=Path, help="use this wheel instead of downloading it")
    parser.add_argument("--out", type=Path, default=DATA, help="output directory")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vllm-wheel-") as tmp:
        wheel = args.wheel or download_wheel(args.version, Path(tmp))
        data = extract(read_wheel_sources(wheel), args.version, wheel.name)
    target = args.out / f"vllm-flags-{args.version}.json"
    same = DATA / target.name
    previous = sorted(DATA.glob("vllm-flags-*.json"))
    reference = same if same.exists() else (previous[-1] if previous else None)
    report = compare(data, reference) if reference else []
    args.out.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {target}: {len(data['flags'])} flags")  # type: ignore[arg-type]
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
