"""Where the time of a no-op ``spark-stack up`` goes, phase by phase.

    .venv/bin/python benchmarks/up_noop_bench.py --host fake      # in-memory fake host
    .venv/bin/python benchmarks/up_noop_bench.py --host standin   # the stand-in (sshd+dockerd)
    .venv/bin/python benchmarks/up_noop_bench.py --rounds 7 --baseline 26a87a2

Each round is a fresh process (as a user's ``spark-stack up`` is): it times its imports, then
runs the real CLI (``up``, with the proxy and the launcher) on a stack that is already up, with
every step of ``up`` wrapped by a timer. The stand-in rounds also time the whole process from
the outside (``wall``), which is what a user waits for, and a plain ``spark-stack up`` with no
timers at all. Printed: the median and the minimum of each phase over the rounds, and the
phases' sum against ``up``'s own total (the rest is glue: rendering, reporting). The stack is
brought down at the end. ``--baseline REV`` runs the same rounds, interleaved, with the code of
git revision REV (a temporary worktree), so before/after figures share the machine's noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CODE_ENV = "UPBENCH_CODE"
STARTED = time.perf_counter()
PHASES: dict[str, float] = {}


@contextmanager
def _timed(phase: str) -> Iterator[None]:
    begun = time.perf_counter()
    try:
        yield
    finally:
        PHASES[phase] = PHASES.get(phase, 0.0) + time.perf_counter() - begun


def _wrap(owner: Any, name: str, phase: str) -> None:
    original = getattr(owner, name, None)
    if original is None:  # a revision without this step
        return

    def timed(*args: Any, **kwargs: Any) -> Any:
        with _timed(phase):
            return original(*args, **kwargs)

    setattr(owner, name, timed)


def _instrument() -> None:
    """Wrap each step ``up`` takes (where ``up`` looks the names up)."""
    from spark_stack.cli import cmd_up
    from spark_stack.deploy import connector, frontend, local_lock, lock, readiness, session
    from spark_stack.deploy import up as up_module

    _wrap(cmd_up, "load", "load + validate the stack file")
    _wrap(session, "ssh_dial_name", "read ~/.ssh/config (dial names)")
    _wrap(up_module, "resolve", "resolve the Deployment")
    _wrap(up_module, "container_secrets", "secrets (containers)")
    _wrap(up_module, "model_keys", "secrets (API keys)")
    _wrap(up_module, "ensure_proxy_token", "secrets (proxy token)")
    _wrap(session, "open_session", "connect (SSH + docker API)")
    _wrap(up_module, "observe", "observe the host")
    _wrap(up_module, "plan_host", "plan")
    _wrap(up_module, "settle", "readiness of kept containers")
    _wrap(connector.HostSession, "close", "close the host session")
    _wrap(lock.StackLock, "acquire", "host lock")
    _wrap(local_lock.LocalLock, "__enter__", "local lock")
    _wrap(up_module, "apply_simulators", "simulators")
    _wrap(frontend, "ensure_tunnels", "tunnels")
    _wrap(frontend, "ensure_proxy", "proxy (check or start)")
    _wrap(frontend, "write_launcher", "launcher")
    _wrap(up_module, "up", "up (total, in-process)")
    del readiness


def _fake_edges(home: Path, stack_file: Path) -> Callable[[], None]:
    """Point ``up``'s real edges at an in-memory fake host with the stack already up."""
    from spark_stack.deploy import readiness, session
    from spark_stack.deploy.report import QuietReporter
    from spark_stack.deploy.up import UpOptions, up
    from spark_stack.deployment import as_written
    from spark_stack.stack.loader import load_stack
    from tests.fakes.host import FakeConnection, FakeHost, fake_edges

    (home / "remote").mkdir(exist_ok=True)
    fake = FakeHost(FakeConnection(home=home / "remote"))
    fake.docker.add_image("vllm/vllm-openai:v0.28.0")
    stack = load_stack(stack_file, lint=False).stack
    up(stack, UpOptions(), QuietReporter(), fake_edges(fake))  # the state a no-op up finds
    session.open_session = fake.connect  # type: ignore[assignment]
    session.ssh_dial_name = lambda: as_written
    readiness.HttpProbe = fake.probe  # type: ignore[assignment,misc]

    def down() -> None:
        from spark_stack.deploy.down import down as run_down

        run_down(stack, connect=fake.connect)

    return down


def child(host: str, stack_file: Path) -> None:
    """One round: imports, then the CLI's no-op ``up`` with every phase timed."""
    with _timed("import the CLI and up's modules"):
        import spark_stack.cli
        import spark_stack.cli.cmd_up
        import spark_stack.deploy.session  # noqa: F401
        import spark_stack.deploy.up  # noqa: F401  (up imports these at its first step)
    finish = _fake_edges(Path(os.environ["HOME"]), stack_file) if host == "fake" else None
    _instrument()
    from spark_stack.cli import main

    with _timed("CLI main (total)"):
        code = main(["-s", str(stack_file), "up"])
    report = json.dumps({"code": code, "phases": PHASES})
    if finish is not None:
        finish()
    print(report, file=sys.stderr)


def _write_stack(path: Path, host: str) -> None:
    import yaml

    from tests.helpers import free_port

    if host == "fake":
        model: dict[str, Any] = {"name": "qwen", "image": "vllm/vllm-openai:v0.28.0",
                                 "model": "Qwen/Qwen3-0.6B", "port": 8000,
                                 "max_model_len": 65536, "gpu_memory_utilization": 0.4,
                                 "api_key": "auto"}
        address = "gb10.test"
    else:
        from tests.testhost import ensure_up

        info = ensure_up()
        info.write_ssh_home(Path(os.environ["HOME"]))
        model = {"name": "qwen", "image": info.sim_image, "model": "Qwen/Qwen3-0.6B",
                 "gpus": "none", "port": free_port() % 20000 + 20000, "readiness_timeout": 60,
                 "restart": "no", "cache": {"huggingface": None, "vllm": None,
                                            "flashinfer": None},
                 "env": {"VLLM_SIM_STARTUP_SECONDS": "0.3"}, "api_key": "auto"}
        address = info.ssh_alias
    path.write_text(yaml.safe_dump({
        "name": f"upbench{os.getpid()}", "host": {"address": address}, "models": [model],
        "proxy": {"listen": f"127.0.0.1:{free_port()}"}}, sort_keys=False))


def _cli(stack_file: Path, *args: str, env: dict[str, str], code: Path = REPO) -> float:
    begun = time.perf_counter()
    subprocess.run([sys.executable, "-m", "spark_stack", "-s", str(stack_file), *args],
                   env={**env, "PYTHONPATH": str(code)}, cwd=code, check=True,
                   capture_output=True)
    return time.perf_counter() - begun


def _round(host: str, stack_file: Path, env: dict[str, str], code: Path) -> dict[str, float]:
    begun = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", host, str(stack_file)],
        env={**env, CODE_ENV: str(code), "PYTHONPATH": str(code)}, cwd=code,
        capture_output=True, text=True)
    wall = time.perf_counter() - begun
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "{}"
    try:
        report = json.loads(last)
    except ValueError:
        report = {}
    if report.get("code") != 0:
        raise SystemExit(f"up failed:\n{done.stdout}\n{done.stderr}")
    phases: dict[str, float] = report["phases"]
    if host == "standin":  # a fake-host round also sets its host up and down: not a user's wait
        phases["process wall (a user's wait)"] = wall
    return phases


@contextmanager
def _checkout(revision: str | None) -> Iterator[Path | None]:
    """A temporary worktree of ``revision`` (None: no baseline)."""
    if revision is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="upbench-base-") as tmp:
        path = Path(tmp) / "code"
        subprocess.run(["git", "worktree", "add", "--detach", str(path), revision], cwd=REPO,
                       check=True, capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO,
                           check=True, capture_output=True)


def measure(host: str, rounds: int, baseline: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="upbench-") as tmp, \
            _checkout(baseline) as base:
        home = Path(tmp) / "home"
        home.mkdir(mode=0o700)
        env = {**os.environ, "HOME": str(home), "SPARK_STACK_HOME": str(Path(tmp) / "ss")}
        os.environ.update(HOME=env["HOME"])
        stack_file = Path(tmp) / "stack.yaml"
        _write_stack(stack_file, host)
        codes = {"this tree": REPO, **({f"baseline {baseline}": base} if base else {})}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in codes}
        walls: dict[str, list[float]] = {name: [] for name in codes}
        try:
            if host == "standin":
                _cli(stack_file, "up", env=env)  # the state a no-op up finds
            for _ in range(rounds):
                for name, code in codes.items():
                    results[name].append(_round(host, stack_file, env, code))
                    if host == "standin":
                        walls[name].append(_cli(stack_file, "up", env=env, code=code))
        finally:
            if host == "standin":
                _cli(stack_file, "down", "--purge", env=env)
    for name in codes:
        _print(f"{host} host, {name}", rounds, results[name], walls[name])


def _print(title: str, rounds: int, results: list[dict[str, float]],
           walls: list[float]) -> None:
    names = list(dict.fromkeys(name for r in results for name in r))
    print(f"\nno-op `up`, {title}: median of {rounds} rounds (ms)")
    steps = 0.0
    outside_up = ("total", "wall", "import", "load")
    print(f"  {'phase':<40} {'median':>8} {'min':>8}")
    for name in names:
        value = statistics.median(r.get(name, 0.0) for r in results) * 1000
        least = min(r.get(name, 0.0) for r in results) * 1000
        if not any(word in name for word in outside_up):
            steps += value
        print(f"  {name:<40} {value:8.1f} {least:8.1f}")
    total = statistics.median(r.get("up (total, in-process)", 0.0) for r in results) * 1000
    print(f"  {'(up total − its timed steps: glue)':<40} {total - steps:8.1f}")
    if walls:
        print(f"  `spark-stack up` (plain, no timers): median {statistics.median(walls):.2f} s, "
              f"min {min(walls):.2f} s, max {max(walls):.2f} s")
    print(f"  (load average at the end: {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", choices=("fake", "standin", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", metavar="REV", help="also time git revision REV")
    parser.add_argument("--child", nargs=2, metavar=("HOST", "STACK_FILE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    for host in ("fake", "standin") if args.host == "both" else (args.host,):
        measure(host, args.rounds, args.baseline)


if __name__ == "__main__":
    # The code under test: this tree, or a baseline's worktree (its own spark_stack and tests).
    sys.path.insert(0, os.environ.get(CODE_ENV, str(REPO)))
    main()
