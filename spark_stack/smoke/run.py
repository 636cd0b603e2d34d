"""``run_smoke``: every check for every model of a running stack, one report."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from ..stack.loader import LoadedStack
from .checks import NO_TOOLS, CheckResult, checks_for, skipped, warm_up
from .endpoints import Endpoints
from .report import SmokeReport
from .soak import tool_soak

# A real model on a Spark answers the longest check (thinking) well within this.
DEFAULT_TIMEOUT_S = 120.0


def run_smoke(
    loaded: LoadedStack,
    endpoints: Endpoints,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    models: list[str] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    transport: httpx.BaseTransport | None = None,
    soak: int | None = None,
) -> SmokeReport:
    """Run the checks (all models, or those named in ``models``) and report every verdict;
    with ``soak``, the tool-call soak of that many turns last.

    ``on_result`` sees each verdict as it comes (for live output); ``transport`` lets tests
    replace the network.
    """
    report = SmokeReport(loaded.stack.name, endpoints)
    started = time.perf_counter()
    targets = [m for m in endpoints.models if models is None or m.name in models]
    if not targets:
        report.error = "no model of the stack has an endpoint to check"
    with httpx.Client(timeout=timeout, transport=transport, trust_env=False) as client:
        # A replicated model is checked on each replica: its own endpoint for the direct
        # checks, and through the proxy with a session the proxy routes to that replica.
        for model in [copy for target in targets for copy in target.copies()]:
            warm_up(client, endpoints, model)  # its failures show in the measured checks
            for check in checks_for(model):
                result = check(client, endpoints, model)
                report.checks.append(result)
                if on_result is not None:
                    on_result(result)
            if soak:
                if model.tools:
                    result = tool_soak(client, endpoints, model, soak)
                else:
                    result = skipped("tool_soak", NO_TOOLS)(client, endpoints, model)
                report.checks.append(result)
                if on_result is not None:
                    on_result(result)
    report.total_ms = (time.perf_counter() - started) * 1000
    return report
