"""The local part of ``up``: each simulator model as a background process, kept while its argv
is unchanged, restarted when it changed, stopped when it left the stack file."""

from __future__ import annotations

from ..deployment import Deployment, ModelDeployment
from . import local
from .actions import Action, ActionKind
from .failure import fail
from .host_exec import ProbeFactory
from .readiness import Failed, wait_ready
from .report import Reporter


def apply_simulators(deployment: Deployment, *, timeout: float | None, reporter: Reporter,
                     probe: ProbeFactory) -> tuple[list[Action], dict[str, float]]:
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
