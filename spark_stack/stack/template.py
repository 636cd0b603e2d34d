"""The commented stack file `spark-stack init` writes (pure: text in, text out)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from .presets import DEFAULT_PRESET as DEFAULT_PRESET
from .presets import Preset, available
from .schema import DEFAULT_LISTEN

# Not a preset file: a stack whose model is the built-in simulator on this machine (no host).
SIMULATOR = "simulator"
DEFAULT_HOST = "spark"


def template_choices() -> list[str]:
    """Every preset name ``init --preset`` takes (a path is taken too)."""
    return [*available(), SIMULATOR]


def preset_reference(preset: Preset, stack_dir: Path) -> str:
    """How a stack file in ``stack_dir`` (absolute) names ``preset``: by name, or a file by
    its path relative to the stack file (as ``preset:`` reads it)."""
    if preset.file.origin != "path":
        return preset.name
    relative = os.path.relpath(preset.file.path, stack_dir)
    return relative if "/" in relative else f"./{relative}"


def stack_name_for(stem: str) -> str:
    """A valid stack name from a file name (``spark-stack`` itself gives ``spark``)."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", stem.lower()).strip("-._")[:63]
    return "spark" if name in ("", "spark-stack") else name


def stack_template(
    preset: Preset | None, host: str | None = None, name: str = "spark", *,
    reference: str | None = None, user: str | None = None, image: str | None = None,
    listen: str = DEFAULT_LISTEN, written_by: str | None = None,
) -> str:
    """A commented stack file for ``preset`` (None: the built-in simulator) that validates.

    ``reference`` is how the stack file names the preset (a path relative to it for a file);
    ``user`` and ``image`` are written when given (the image then wins over the preset's).
    """
    if preset is None:
        model, shown = "qwen3.6-sim", SIMULATOR
        body = _simulator_model(model)
    else:
        model, shown = preset.model_name, reference or preset.name
        body = _host_block(host or DEFAULT_HOST, user) + _container_model(
            preset, shown, model, image)
    command = written_by or f"spark-stack init --preset {shown}"
    return (_HEADER.format(command=command) + f"name: {name}\n\n" + body
            + _tail(model, name, listen))


_HEADER = """\
# spark-stack stack file, written by `{command}`.
# Every key is described in README.md ("Stack file reference").
#   spark-stack validate   check this file (errors exit 2, warnings exit 0)
#   spark-stack plan       see the exact docker run, vLLM flags, routes and launcher
#   spark-stack up         deploy
# Secrets go in only as ${{ENV_VAR}} references, read from your environment when used.
"""


def _host_block(host: str, user: str | None = None) -> str:
    user_line = f"user: {user}" if user else "# user: ubuntu"
    return f"""\
# The DGX Spark (GB10), reached over SSH: an IP, a hostname or an ~/.ssh/config alias.
host:
  address: {host}
  {user_line}
  # port: 22
  # identity_file: ~/.ssh/id_ed25519

"""


def _container_model(preset: Preset, reference: str, model: str, image: str | None) -> str:
    checkpoint = ""
    if image:
        checkpoint += f"    image: {_scalar(image)}\n"
    if "model" not in preset.settings:
        checkpoint += (
            "    model: Qwen/Qwen3-30B-A3B-Instruct-2507   # the Hugging Face repo to serve\n"
        )
    port = "" if "port" in preset.settings else (
        "    port: 8000                       # on the Spark\n")
    return f"""\
models:
  - name: {model}
    # The preset sets the image, checkpoint, parsers, backends and serving flags;
    # any key written here wins over it (`spark-stack plan` shows the result).
    preset: {_scalar(reference)}
{checkpoint}{port}    # max_model_len: 131072
    # gpu_memory_utilization: 0.5    # keep it at or below 0.6 on the Spark's unified memory
    # env:
    #   HF_TOKEN: ${{HF_TOKEN}}       # only for gated models
    # extra_args: ["--max-num-seqs", "8"]
    api_key: auto                    # vLLM's key: generated, kept 0600 on this machine
    bind: lan                        # or loopback (then only reachable through SSH)

"""


def _simulator_model(model: str) -> str:
    return f"""\
# No host: the built-in vLLM simulator runs on this machine (no GPU, SSH or docker).
models:
  - name: {model}
    kind: simulator
    served_name: qwen3.6-35b-a3b
    port: 8811

"""


def _tail(model: str, name: str, listen: str) -> str:
    return f"""\
proxy:
  listen: {listen}          # where Claude Code connects
  routes:
    "*": {model}                   # every Claude model name goes to this model

claude:
  # launcher: ~/.local/bin/claude-{name}   # the default
  models:
    opus: {model}
    sonnet: {model}
    haiku: {model}
"""


def _scalar(text: str) -> str:
    """``text`` as a YAML scalar: plain when it reads back unchanged, else double-quoted."""
    plain = re.fullmatch(r"[A-Za-z0-9_./~-][A-Za-z0-9_./~@:-]*", text) and text[-1] != ":"
    # `0`, `true`, `null`, `1e3` are plain characters YAML reads as other types.
    return text if plain and yaml.safe_load(text) == text else json.dumps(text, ensure_ascii=False)
