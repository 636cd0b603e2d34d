"""A smoke deployment as a CI pipeline runs it: bring the stack up if needed, check, tear down.

``smoke`` on a stack that is not up (its proxy does not run: ``up`` always starts it and
``down`` always stops it) runs ``up`` first and ``down`` at the end, unless ``keep``.
``up --smoke`` always runs ``up`` and leaves the stack running. A failed ``up`` or ``down``
is a failed check of the report, so a pipeline's JSON always names what failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..deploy.report import QuietReporter, Reporter
from ..deploy.up import UpOptions
from ..deployment import Deployment
from ..errors import SparkStackError
from ..launcher import proxy_base_url
from ..stack import schema
from ..stack.loader import LoadedStack
from .checks import CheckResult
from .endpoints import Endpoints, ImageInfo, running_endpoints
from .report import SmokeReport
from .run import DEFAULT_TIMEOUT_S, run_smoke

BringUp = Literal["auto", "always"]


@dataclass(frozen=True)
class SmokeOptions:
    bring_up: BringUp = "auto"
    keep: bool = False
    up: UpOptions = UpOptions()
    timeout: float = DEFAULT_TIMEOUT_S
    soak: int | None = None  # turns of the tool-call soak (None: no soak)


def stack_is_up(stack: schema.Stack) -> bool:
    from ..paths import proxy_state_dir
    from ..proxy.daemon import proxy_status

    return proxy_status(proxy_state_dir(stack.name)).running


def image_infos(deployment: Deployment, trust_host_key: bool) -> dict[str, ImageInfo]:
    """Image, digest and drift of each model, from ``status`` (empty when unreachable)."""
    from ..deploy.status import status

    try:
        report = status(deployment, trust_host_key=trust_host_key)
    except SparkStackError:
        return {}
    return {
        str(entry["name"]): ImageInfo(
            entry["image"], entry["image_digest"], entry["image_id"],
            tuple(entry["drift_fields"] or ()),
        )
        for entry in report["models"]
    }


def _no_endpoints(stack: schema.Stack) -> Endpoints:
    hosts = list(stack.all_hosts().values())
    return Endpoints(proxy_base_url(stack), None, (), hosts[0].address if hosts else None)


def _step_failure(name: str, exc: SparkStackError, elapsed_ms: float) -> CheckResult:
    reason = exc.message if not exc.fix else f"{exc.message} (fix: {exc.fix})"
    return CheckResult(name, "", "deploy", False, reason, elapsed_ms)


def smoke_deployment(
    loaded: LoadedStack,
    options: SmokeOptions,
    *,
    reporter: Reporter | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> SmokeReport:
    """Up (when needed), every check, down (when this run brought the stack up)."""
    from ..deploy.down import down
    from ..deploy.session import resolve_for_this_machine
    from ..deploy.up import up

    stack = loaded.stack
    reporter = reporter or QuietReporter()
    brought_up = options.bring_up == "always" or not stack_is_up(stack)
    up_ms: float | None = None
    if brought_up:
        started = time.perf_counter()
        try:
            up(stack, options.up, reporter)
        except SparkStackError as exc:
            up_ms = (time.perf_counter() - started) * 1000
            failure = _step_failure("up", exc, up_ms)
            if on_result is not None:
                on_result(failure)
            report = SmokeReport(stack.name, _no_endpoints(stack))
            report.checks.append(failure)
            report.up_ms = up_ms
            report.failure_exit_code = exc.exit_code
            return report
        up_ms = (time.perf_counter() - started) * 1000
    deployment = resolve_for_this_machine(stack)
    images = image_infos(deployment, options.up.trust_host_key)
    endpoints = running_endpoints(deployment, images)
    if endpoints is None:
        report = SmokeReport(stack.name, _no_endpoints(stack))
        report.error = "the stack's proxy config is missing: `up` did not start the proxy"
    else:
        report = run_smoke(loaded, endpoints, timeout=options.timeout, on_result=on_result,
                           soak=options.soak)
    report.up_ms = up_ms
    if brought_up and not options.keep and options.bring_up == "auto":
        started = time.perf_counter()
        try:
            down(stack, trust_host_key=options.up.trust_host_key, reporter=reporter)
        except SparkStackError as exc:
            failure = _step_failure("down", exc, (time.perf_counter() - started) * 1000)
            report.checks.append(failure)
            if on_result is not None:
                on_result(failure)
    return report
