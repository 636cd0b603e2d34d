"""The local part of ``up``: each simulator model as a background process, kept while its argv
is unchanged, restarted when it changed, stopped when it left the stack file.

Before a simulator starts, its port must be free (the ``port`` preflight check, as for the
proxy's port); while it starts, only an answer from that very process counts as ready (its pid
in ``/health``), so another server on the port — the demo's simulator — cannot pass for it.
"""

from __future__ import annotations

import errno
import socket

from ..deployment import Deployment, ModelDeployment
from . import local
from .actions import Action, ActionKind
from .failure import fail
from .host_exec import ProbeFactory
from .preflight import PreflightCheck, raise_failures
from .readiness import Failed, server_pid, wait_ready
from .report import Reporter


def apply_simulators(deployment: Deployment, *, timeout: float | None, reporter: Reporter,
                     probe: ProbeFactory, skips: frozenset[str] = frozenset()
                     ) -> tuple[list[Action], dict[str, float]]:
    """The simulators' actions and seconds to ready of those (re)started."""
    wanted = {m.name: m for m in deployment.of_kind("simulator")}
    for name in local.known_simulators(deployment.stack):
        if name not in wanted:
            reporter.step(f"stopping simulator {name} (no longer in the stack file)")
            local.stop_simulator(deployment.stack, name)
    actions: list[Action] = []
    ready: dict[str, float] = {}
    for model in wanted.values():
        process = local.simulator_process(deployment.stack, model.name)
        running = process.running_pid() is not None
        argv = list(model.simulator_argv or ())
        if running and local.recorded_argv(process) == argv:
            actions.append(Action("keep", model.name, "simulator running"))
            continue
        kind: ActionKind = "replace" if running else "create"
        actions.append(Action(kind, model.name, "simulator"))
        if running:
            local.stop_simulator(deployment.stack, model.name)
        if "port" not in skips:
            check = port_check(model)
            reporter.check(check)
            raise_failures([check])
        reporter.step(f"starting simulator {model.name} on {model.endpoint.removesuffix('/v1')}")
        ready[model.name] = _start(deployment.stack, model, argv, timeout, reporter, probe)
    return actions, ready


def _start(stack: str, model: ModelDeployment, argv: list[str], timeout: float | None,
           reporter: Reporter, probe_for: ProbeFactory) -> float:
    process = local.simulator_process(stack, model.name)
    child = local.start_simulator(stack, model.name, argv)
    probe = probe_for(model.endpoint, model.served_name, None)
    try:
        outcome = wait_ready(
            state=lambda: local.process_state(child),
            logs=lambda: local.read_log_lines(process.log_file),
            probe=probe,
            identity=lambda: server_pid(model.endpoint) == child.pid,
            timeout=timeout or model.readiness_timeout,
            on_progress=lambda progress: reporter.progress(model.name, progress),
        )
    finally:
        probe.close()
    if isinstance(outcome, Failed):
        text = "\n".join(local.read_log_lines(process.log_file, limit=100_000))
        local.stop_simulator(stack, model.name)
        fail(stack, model.name, text, outcome, reporter)
    return outcome.elapsed


def port_check(model: ModelDeployment) -> PreflightCheck:
    """The ``port`` check of a simulator: nothing listens on its port on this machine."""
    port = int(model.endpoint.rsplit(":", 1)[1].split("/")[0])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            taken = False
        except OSError as exc:
            taken = exc.errno == errno.EADDRINUSE
    return PreflightCheck(
        "port", not taken,
        f"port {port} on this machine is {'in use' if taken else 'free'} (simulator "
        f"{model.name})",
        f"stop what listens on port {port} (`ss -ltnp 'sport = :{port}'`; another stack's "
        "simulator: `spark-stack -s STACK down`, the demo's: `spark-stack -s demo down`), or "
        "change the model's port")
