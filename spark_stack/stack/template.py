"""The commented stack file `spark-stack init` writes (pure: text in, text out)."""

from __future__ import annotations

import re

from .presets import PRESETS
from .schema import DEFAULT_LISTEN

SIMULATOR = "simulator"
DEFAULT_PRESET = "qwen3.6-35b-a3b-nvfp4-redhat"
DEFAULT_HOST = "spark"
_MODEL_NAMES = {
    "qwen3.6-35b-a3b-nvfp4-nvidia": "qwen3.6-35b",
    "qwen3.6-35b-a3b-nvfp4-redhat": "qwen3.6-35b",
    "qwen3.5-27b": "qwen3.5-27b",
    "openai-compatible": "model",
    SIMULATOR: "qwen3.6-sim",
}


def template_choices() -> list[str]:
    return [*PRESETS, SIMULATOR]


def stack_name_for(stem: str) -> str:
    """A valid stack name from a file name (``spark-stack`` itself gives ``spark``)."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", stem.lower()).strip("-._")[:63]
    return "spark" if name in ("", "spark-stack") else name


def stack_template(preset: str, host: str | None = None, name: str = "spark") -> str:
    """A commented stack file for ``preset`` (or the built-in simulator) that validates."""
    model = _MODEL_NAMES.get(preset, "model")
    if preset == SIMULATOR:
        body = _simulator_model(model)
    else:
        body = _host_block(host or DEFAULT_HOST) + _container_model(preset, model)
    return _HEADER.format(preset=preset) + f"name: {name}\n\n" + body + _tail(model, name)


_HEADER = """\
# spark-stack stack file, written by `spark-stack init --preset {preset}`.
# Every key is described in README.md ("Stack file reference").
#   spark-stack validate   check this file (errors exit 2, warnings exit 0)
#   spark-stack plan       see the exact docker run, vLLM flags, routes and launcher
#   spark-stack up         deploy
# Secrets go in only as ${{ENV_VAR}} references, read from your environment when used.
"""


def _host_block(host: str) -> str:
    return f"""\
# The DGX Spark (GB10), reached over SSH: an IP, a hostname or an ~/.ssh/config alias.
host:
  address: {host}
  # user: ubuntu
  # port: 22
  # identity_file: ~/.ssh/id_ed25519

"""


def _container_model(preset: str, model: str) -> str:
    checkpoint = ""
    if "model" not in PRESETS[preset]:
        checkpoint = (
            "    model: Qwen/Qwen3-30B-A3B-Instruct-2507   # the Hugging Face repo to serve\n"
        )
    return f"""\
models:
  - name: {model}
    # The preset sets the image, checkpoint, parsers, backends and serving flags;
    # any key written here wins over it (`spark-stack plan` shows the result).
    preset: {preset}
{checkpoint}    port: 8000                       # on the Spark
    # max_model_len: 131072
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


def _tail(model: str, name: str) -> str:
    return f"""\
proxy:
  listen: {DEFAULT_LISTEN}          # where Claude Code connects
  routes:
    "*": {model}                   # every Claude model name goes to this model

claude:
  # launcher: ~/.local/bin/claude-{name}   # the default
  models:
    opus: {model}
    sonnet: {model}
    haiku: {model}
"""
