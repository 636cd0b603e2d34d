"""The size of a model's files on the Hugging Face Hub, asked from this machine (for the download
progress of `up`). Best effort: offline (``HF_HUB_OFFLINE=1`` or ``SPARK_STACK_OFFLINE=1``), a
gated repo or no network gives None and `up` shows the bytes so far without a total."""

from __future__ import annotations

import os
from collections.abc import Mapping

import httpx

TIMEOUT = 3.0
# The files vLLM loads: the weights dominate; configs and tokenizers are small.
_WEIGHTS = (".safetensors", ".bin", ".pt", ".gguf")


def offline(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return any(env.get(name, "").lower() in ("1", "true", "yes")
               for name in ("HF_HUB_OFFLINE", "SPARK_STACK_OFFLINE"))


def repo_size(repo: str, *, token: str | None = None, environ: Mapping[str, str] | None = None,
              client: httpx.Client | None = None) -> int | None:
    """Bytes of the weight files of ``repo`` (``org/name``) on the Hub, or None."""
    env = os.environ if environ is None else environ
    if offline(env) or "/" not in repo or repo.startswith(("/", ".")):
        return None
    endpoint = env.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    own = client is None
    http = client or httpx.Client(timeout=TIMEOUT)
    try:
        answer = http.get(f"{endpoint}/api/models/{repo}/tree/main", params={"recursive": "1"},
                          headers=headers)
        if answer.status_code != 200:
            return None
        files = answer.json()
    except (httpx.HTTPError, ValueError):
        return None
    finally:
        if own:
            http.close()
    if not isinstance(files, list):
        return None
    total = sum(int(f.get("size") or 0) for f in files
                if isinstance(f, dict) and str(f.get("path", "")).endswith(_WEIGHTS))
    return total or None
