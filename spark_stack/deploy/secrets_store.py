"""Generated secrets (vLLM API keys, the proxy token): 0600 files under the stack's state dir.

A secret is generated once and reused, so an unchanged stack keeps its containers; deleting
the file rotates it on the next ``up``.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from ..paths import stack_dir, write_private

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def secrets_dir(stack: str) -> Path:
    path = stack_dir(stack) / "secrets"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def secret_path(stack: str, name: str) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"bad secret name {name!r}")
    return secrets_dir(stack) / name


def read_secret(stack: str, name: str) -> str | None:
    try:
        value = secret_path(stack, name).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return value or None


def get_or_create(stack: str, name: str, *, prefix: str = "sk-spark-") -> str:
    """The stored secret ``name`` of ``stack``, generating (and saving 0600) a new one once."""
    existing = read_secret(stack, name)
    if existing is not None:
        return existing
    value = prefix + secrets.token_urlsafe(32)
    write_private(secret_path(stack, name), value + "\n")
    return value


def api_key_name(model: str) -> str:
    return f"vllm-api-key-{model}"

