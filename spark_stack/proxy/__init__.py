"""The translating proxy: Anthropic Messages in, vLLM's OpenAI Chat Completions out.

Layout (each module one job):
    config               ProxyConfig / Upstream / Route, JSON in and out
    routing              model name → upstream (exact names, then globs in order)
    dispatch             then: the replica (by session), a slot (fair queue by key), limits
    keyfile              the team's keys (hashes), re-read when the file changes
    usage                per-request usage rows → SQLite (WAL), from a writer thread
    translate_request    Anthropic request → OpenAI request (pure, validating)
    stream               OpenAI chunks → Anthropic SSE events (pure state machine)
    translate_response   non-streaming completion → Anthropic message (pure)
    repair               safe repair of invalid tool-call JSON
    errors               Anthropic error envelope and backend-error mapping
    upstream             aiohttp client towards vLLM (chat, /tokenize, /health)
    server               the raw ASGI app; metrics: Prometheus text
    serve                ``run_proxy(config)`` on uvicorn (httptools + uvloop)
    daemon               ``start_background`` / ``stop_background`` / ``proxy_status``

``python -m spark_stack.proxy --config FILE.json`` runs it in the foreground. Importing this
package is cheap: the server parts load only when used.
"""

from __future__ import annotations

from typing import Any

from spark_stack.proxy.config import ProxyConfig, Route, Upstream

__all__ = [
    "ProxyConfig",
    "Route",
    "Upstream",
    "proxy_status",
    "run_proxy",
    "start_background",
    "stop_background",
]

_LAZY = {
    "run_proxy": "spark_stack.proxy.serve",
    "start_background": "spark_stack.proxy.daemon",
    "stop_background": "spark_stack.proxy.daemon",
    "proxy_status": "spark_stack.proxy.daemon",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)
