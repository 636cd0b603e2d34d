"""Simulator models as local background processes (:class:`~spark_stack.managed.ManagedProcess`
under the stack's ``simulator/`` dir; the record holds the argv, so a changed stack restarts a
simulator and an unchanged one keeps it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .. import managed
from ..managed import ManagedProcess
from ..paths import stack_dir
from .readiness import ProcessState

MODULE = "spark_stack.simulator"


def simulator_dir(stack: str) -> Path:
    return stack_dir(stack) / "simulator"


def simulator_process(stack: str, model: str) -> ManagedProcess:
    return ManagedProcess(simulator_dir(stack), model, MODULE)


def recorded_argv(process: ManagedProcess) -> list[str] | None:
    value = process.record()
    return [str(v) for v in value] if isinstance(value, list) else None


def start_simulator(stack: str, model: str, argv: list[str]) -> subprocess.Popen[bytes]:
    return simulator_process(stack, model).start(argv, argv)


def stop_simulator(stack: str, model: str) -> bool:
    """Stop the model's simulator; False when none ran."""
    process = simulator_process(stack, model)
    stopped = process.stop()
    process.forget()
    return stopped


def process_state(process: subprocess.Popen[bytes]) -> ProcessState:
    code = process.poll()
    return ProcessState(alive=code is None, exit_code=code,
                        status="running" if code is None else "exited")


def read_log_lines(path: Path, limit: int = 400) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-limit:]
    except OSError:
        return []


def known_simulators(stack: str) -> list[str]:
    """Models with simulator state (including ones no longer in the stack file)."""
    return managed.known(simulator_dir(stack))
