"""Model presets (recipes as data): the right vLLM settings for known checkpoints.

A preset is a YAML file: the keys of one ``models[]`` entry (the same schema, checked by
:func:`spark_stack.stack.loader.load_preset`) plus ``description``, ``vllm_version`` (the vLLM
release it was checked with) and ``sources``. Its ``name`` is the model name ``init`` writes.
Where they come from, first match wins:

- a path (``./mine.yaml``, ``~/recipes/x.yml``, anything with ``/`` or a YAML suffix), relative
  to the stack file's directory (``preset:``) or the current one (``--preset``);
- ``$XDG_CONFIG_HOME/spark-stack/presets/NAME.yaml`` (else ``~/.config/…``): the user's own, which
  replace a built-in one of the same name (and are reported as doing so);
- ``spark_stack/presets/NAME.yaml``, shipped in the package.

A model with ``preset:`` starts from the preset's settings; every key the user writes wins
(``extra_args`` and ``env`` are merged, the user's entries last). This module finds and reads
the files (YAML with positions, the description keys); the schema check is the loader's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Problem
from .yamlpos import Positions, parse

# Pinned, multi-arch CUDA 13 upstream image; NVFP4 on the GB10 needs vLLM >= 0.28.0
# (vllm-project/recipes Qwen3.6-35B-A3B: FlashInfer's SM120 decode kernel is selected from 0.28).
RECOMMENDED_IMAGE = "vllm/vllm-openai:v0.28.0"
DEFAULT_PRESET = "qwen3.6-35b-a3b-nvfp4-redhat"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "presets"
SUFFIXES = (".yaml", ".yml")
# The keys a preset adds to a models[] entry's, and the entry keys a preset may not set.
DESCRIPTION_KEYS = ("description", "vllm_version", "sources")
PLACEMENT_KEYS = {
    "preset": "a preset cannot start from another preset: copy its keys in",
    "host": "a preset says how to serve a model, not where: set host: in the stack file",
    "hosts": "a preset says how to serve a model, not where: set hosts: in the stack file",
}


@dataclass(frozen=True)
class PresetFile:
    """Where a preset lives: ``builtin``, a user's (``replaces_builtin`` when it shadows one),
    or a path named directly."""

    name: str
    path: Path
    origin: str  # "built-in", "user" or "path"
    replaces_builtin: bool = False

    @property
    def where(self) -> str:
        """How ``spark-stack presets`` names its origin."""
        if self.origin == "built-in":
            return "built-in"
        note = " (replaces the built-in one)" if self.replaces_builtin else ""
        return f"{self.path}{note}"


@dataclass
class Preset:
    """A preset file read: its entry keys, description, and the problems found reading it."""

    file: PresetFile
    settings: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    vllm_version: str | None = None
    sources: tuple[str, ...] = ()
    positions: Positions = field(default_factory=Positions)
    problems: list[Problem] = field(default_factory=list)
    text: str = ""

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def model_name(self) -> str:
        """The models[] name ``init`` writes for this preset."""
        value = self.settings.get("name")
        return value if isinstance(value, str) else "model"


def user_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME")
    root = Path(xdg) if xdg else Path.home() / ".config"
    return root / "spark-stack" / "presets"


def is_path(reference: str) -> bool:
    """``./mine.yaml``, ``~/x.yml``, ``recipes/x``: a file; ``qwen3.5-27b``: a name."""
    return "/" in reference or reference.startswith("~") or reference.endswith(SUFFIXES)


def _files_in(directory: Path) -> dict[str, Path]:
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return {}
    return {p.stem: p for p in entries if p.suffix in SUFFIXES and p.is_file()}


def available() -> dict[str, PresetFile]:
    """Every preset by name, built-in ones first, a user's replacing a built-in one."""
    builtin = _files_in(BUILTIN_DIR)
    found = {name: PresetFile(name, path, "built-in") for name, path in builtin.items()}
    for name, path in _files_in(user_dir()).items():
        found[name] = PresetFile(name, path, "user", replaces_builtin=name in builtin)
    return found


def locate(reference: str, base_dir: Path | None = None) -> PresetFile | None:
    """The file a ``preset:`` value (or ``--preset``) names; None for an unknown name.

    A path that does not exist is still returned: reading it reports where it was looked for.
    """
    if is_path(reference):
        path = Path(reference).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return PresetFile(path.stem, path, "path")
    return available().get(reference)


def read_preset(file: PresetFile) -> Preset:
    """Read a preset file: YAML with positions and the description keys (not the schema)."""
    preset = Preset(file)
    filename = str(file.path)
    try:
        preset.text = file.path.read_text(encoding="utf-8")
    except FileNotFoundError:
        preset.problems.append(Problem("preset file not found", file=filename,
                                       fix="check the path (relative paths start at the stack "
                                       "file's directory, or the current one for --preset)"))
        return preset
    except (OSError, UnicodeDecodeError) as exc:
        preset.problems.append(Problem(f"cannot read the preset file: {exc}", file=filename,
                                       fix="check the path, its permissions and that it is "
                                       "UTF-8 YAML"))
        return preset
    data, preset.positions, problems = parse(preset.text, filename)
    preset.problems += problems
    if data is None:
        if not problems:
            preset.problems.append(Problem(
                "the preset file is empty", file=filename, line=1, column=1,
                fix="write the keys of one models[] entry and a description "
                "(`spark-stack presets show NAME` prints a built-in one)"))
        return preset
    if not isinstance(data, dict):
        preset.problems.append(_at(preset, (), "a preset must be a mapping of keys "
                                   "(description, image, model, …)",
                                   "write the keys of one models[] entry at the left margin"))
        return preset
    settings = dict(data)
    description = settings.pop("description", None)
    if not isinstance(description, str) or not description.strip():
        preset.problems.append(_at(preset, ("description",) if "description" in data else (),
                                   "a preset needs a one-line description",
                                   "add e.g. description: Qwen3-8B for a quick test"))
    else:
        preset.description = description.strip().splitlines()[0]
    version = settings.pop("vllm_version", None)
    if version is not None and not isinstance(version, str | int | float):
        preset.problems.append(_at(preset, ("vllm_version",), "vllm_version must be a version",
                                   "write e.g. vllm_version: 0.28.0"))
    elif version is not None:
        preset.vllm_version = str(version)
    sources = settings.pop("sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        preset.problems.append(_at(preset, ("sources",), "sources must be a list of strings",
                                   "write e.g. sources: [https://github.com/vllm-project/"
                                   "recipes]"))
    else:
        preset.sources = tuple(sources)
    for key, fix in PLACEMENT_KEYS.items():
        if key in settings:
            preset.problems.append(_at(preset, (key,), f"a preset cannot set '{key}'", fix,
                                       at_key=True))
            settings.pop(key)
    preset.settings = settings
    return preset


def _at(preset: Preset, path: tuple[str, ...], message: str, fix: str, *,
        at_key: bool = False) -> Problem:
    pos = preset.positions.of_key(path) if at_key else preset.positions.of_value(path)
    return Problem(message, file=str(preset.file.path), line=pos.line if pos else None,
                   column=pos.column if pos else None, key_path=".".join(path), fix=fix)


def apply_preset(preset: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """The preset's settings overlaid by the user's (lists and env merged, the user's last).

    The preset's ``name`` is only what ``init`` writes: the model's own name always applies.
    """
    base = {k: v for k, v in preset.items() if k != "name"}
    merged = {**base, **user}
    if "extra_args" in base and "extra_args" in user and isinstance(user["extra_args"], list):
        merged["extra_args"] = [*base["extra_args"], *user["extra_args"]]
    if "env" in base and isinstance(user.get("env"), dict):
        merged["env"] = {**base["env"], **user["env"]}
    if isinstance(base.get("speculative"), dict) and isinstance(user.get("speculative"), dict):
        merged["speculative"] = {**base["speculative"], **user["speculative"]}
    return merged
