"""The local part of ``up``: each simulator model as a background process, kept while its argv
is unchanged, restarted when it changed, stopped when it left the stack file.

Before a simulator starts, its port must be free (the ``port`` preflight check, as for the
proxy's port); while it starts, only an answer from that very process counts as ready (its pid
in ``/health``), so another server on the port — the demo's simulator — cannot pass for it.

:func:`plan_simulators` is that decision, read-only: ``up`` executes it, ``plan --diff`` shows it,
and drift (``status``) names the same changed settings (:func:`simulator_changes`) as for
containers, never just "command".
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

from ..deployment import Deployment, ModelDeployment
from ..stack.argv import argv_changes
from . import local
from .actions import Action
from .failure import fail
from .host_exec import ProbeFactory
from .preflight import PreflightCheck, raise_failures
from .readiness import Failed, server_pid, wait_ready
from .report import Reporter

# The simulator's own flags, named by the stack fields behind them.
_SIMULATOR_FIELDS = {"--sim-startup-seconds": "startup_seconds"}


def simulator_changes(old: Sequence[str] | None, new: Sequence[str]) -> tuple[str, ...]:
    """The settings whose change makes a running simulator's argv differ from the desired one."""
    if old is None:
        return ("command",)

    def split(argv: Sequence[str]) -> tuple[Sequence[str], Sequence[str]]:
        # [python, -m, spark_stack.simulator, serve] then vLLM's own shape: MODEL --flag value…
        cut = list(argv).index("serve") + 1 if "serve" in argv else 0
        return argv[:cut], argv[cut:]

    (old_launch, old_args), (new_launch, new_args) = split(old), split(new)
    changed = [_SIMULATOR_FIELDS.get(name, name) for name in argv_changes(old_args, new_args)]
    if old_launch != new_launch:
        changed.append("the simulator's interpreter")
    return tuple(changed) or ("command",)


def plan_simulators(deployment: Deployment) -> list[Action]:
    """What ``up`` does with each simulator (create, replace, keep, remove), with its reason."""
    wanted = {m.name: m for m in deployment.of_kind("simulator")}
    actions = [Action("remove", name, "no longer in the stack file")
               for name in local.known_simulators(deployment.stack) if name not in wanted]
    for model in wanted.values():
        process = local.simulator_process(deployment.stack, model.name)
        argv = list(model.simulator_argv or ())
        recorded = local.recorded_argv(process)
        if process.running_pid() is None:
            actions.append(Action("create", model.name, "simulator not running"))
        elif recorded == argv:
            actions.append(Action("keep", model.name, "simulator running"))
        else:
            changed = simulator_changes(recorded, argv)
            actions.append(Action("replace", model.name, f"changed: {', '.join(changed)}",
                                  changed=changed))
    return actions


def apply_simulators(deployment: Deployment, *, timeout: float | None, reporter: Reporter,
                     probe: ProbeFactory, skips: frozenset[str] = frozenset()
                     ) -> tuple[list[Action], dict[str, float]]:
    """The simulators' actions and seconds to ready of those (re)started."""
    models = {m.name: m for m in deployment.of_kind("simulator")}
    actions: list[Action] = []
    ready: dict[str, float] = {}
    for action in plan_simulators(deployment):
        if action.kind == "remove":
            reporter.step(f"stopping simulator {action.model} (no longer in the stack file)")
            local.stop_simulator(deployment.stack, action.model)
            continue
        actions.append(action)
        if action.kind == "keep":
            continue
        model = models[action.model]
        if action.kind == "replace":
            local.stop_simulator(deployment.stack, model.name)
        if "port" not in skips:
            check = port_check(model)
            reporter.check(check)
            raise_failures([check])
        reporter.step(f"starting simulator {model.name} on {model.endpoint.removesuffix('/v1')}")
        argv = list(model.simulator_argv or ())
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
