"""`spark-stack smoke`: prove a deployed stack works end to end, with a machine-readable result.

Through the proxy, in the Anthropic wire format Claude Code speaks: a known-answer completion
(streamed), a streamed tool-call round trip, count_tokens, and a thinking request when the
model reasons; and the known-answer prompt straight to vLLM for comparison.

    wire       timed HTTP calls in both wire formats (httpx), shared with `bench`
    endpoints  the proxy and each model's endpoint, from the config `up` wrote
    checks     one function per check
    report     SmokeReport and its JSON shape
    run        run_smoke()
"""

from __future__ import annotations

from .checks import CheckResult
from .endpoints import (
    Endpoints,
    ImageInfo,
    ModelTarget,
    endpoints_from_proxy_config,
    running_endpoints,
)
from .report import SmokeReport
from .run import run_smoke

__all__ = [
    "CheckResult",
    "Endpoints",
    "ImageInfo",
    "ModelTarget",
    "SmokeReport",
    "endpoints_from_proxy_config",
    "running_endpoints",
    "run_smoke",
]
