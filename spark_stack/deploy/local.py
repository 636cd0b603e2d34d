"""Models that are not containers: the ``simulator`` kind as a local background process, and
``remote`` servers that already run (only checked).

A simulator's state lives in the stack's state dir: ``simulator/<model>.pid``, ``.log`` and
``.argv`` (the command it runs, so a changed stack restarts it and an unchanged one keeps it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..paths import stack_dir, write_atomic
from ..processes import pid_alive, terminate
from ..spec import served_name
from ..stack import schema
from .readiness import ProcessState


@dataclass(frozen=True)
class SimulatorFiles:
    pid: Path
    log: Path
    argv: Path


def simulator_files(stack: str, model: str) -> SimulatorFiles:
    base = stack_dir(stack) / "simulator"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SimulatorFiles(base / f"{model}.pid", base / f"{model}.log", base / f"{model}.argv")


def simulator_argv(model: schema.SimulatorModel) -> list[str]:
    """The command line of the simulator process (pure)."""
    argv = [sys.executable, "-m", "spark_stack.simulator", "serve", model.model,
            "--host", "127.0.0.1", "--port", str(model.port),
            "--served-model-name", served_name(model),
            "--sim-startup-seconds", f"{model.startup_seconds:g}"]
    if model.max_model_len is not None:
        argv += ["--max-model-len", str(model.max_model_len)]
    if model.tool_call_parser:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", model.tool_call_parser]
    if model.reasoning_parser:
        argv += ["--reasoning-parser", model.reasoning_parser]
    return argv


def simulator_base_url(model: schema.SimulatorModel) -> str:
    return f"http://127.0.0.1:{model.port}/v1"


def running_pid(files: SimulatorFiles) -> int | None:
    try:
        pid = int(files.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid
    return pid if b"spark_stack.simulator" in cmdline else None


def recorded_argv(files: SimulatorFiles) -> list[str] | None:
    try:
        value = json.loads(files.argv.read_text())
    except (OSError, ValueError):
        return None
    return [str(v) for v in value] if isinstance(value, list) else None


def start_simulator(stack: str, model: schema.SimulatorModel) -> subprocess.Popen[bytes]:
    files = simulator_files(stack, model.name)
    argv = simulator_argv(model)
    with open(files.log, "wb") as log:
        os.chmod(files.log, 0o600)
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   close_fds=True)
    write_atomic(files.pid, f"{process.pid}\n")
    write_atomic(files.argv, json.dumps(argv))
    return process


def stop_simulator(stack: str, model: str) -> bool:
    """Stop the model's simulator; False when none ran."""
    files = simulator_files(stack, model)
    pid = running_pid(files)
    files.pid.unlink(missing_ok=True)
    files.argv.unlink(missing_ok=True)
    if pid is None:
        return False
    terminate(pid)
    return True


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
    """Models with simulator state files (including ones no longer in the stack file)."""
    base = stack_dir(stack) / "simulator"
    if not base.is_dir():
        return []
    return sorted(p.stem for p in base.glob("*.pid"))
