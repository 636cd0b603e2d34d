"""The stand-in's docker daemon: a real dockerd inside the namespace, beside anything else.

Its own data root (images survive between runs), exec root, pidfile and socket, so a daemon
the machine may run on /var/run/docker.sock is never touched.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import docker
from docker.errors import DockerException

from .errors import INSTALL_HINT, TestHostError, log_tail
from .layout import (
    DAEMON_LABEL,
    DOCKER_ARGS_FILE,
    DOCKER_DATA_ROOT,
    DOCKER_EXEC_ROOT,
    DOCKER_LOG,
    DOCKER_PIDFILE,
    DOCKER_SOCK,
    in_netns_argv,
)
from .procs import (
    find_command,
    in_stand_in_netns,
    open_log,
    running_pid,
    stop,
    wait_for,
    write_if_changed,
)

START_TIMEOUT = 60.0


def dockerd_argv(dockerd: str) -> list[str]:
    return [
        dockerd,
        f"--data-root={DOCKER_DATA_ROOT}",
        f"--exec-root={DOCKER_EXEC_ROOT}",
        f"--pidfile={DOCKER_PIDFILE}",
        f"--host=unix://{DOCKER_SOCK}",
        # No default route inside: containers must reach nothing, so no masquerading either.
        "--ip-masq=false",
        f"--label={DAEMON_LABEL}",
        "--shutdown-timeout=3",
    ]


@contextmanager
def client(timeout: int = 60) -> Iterator[docker.DockerClient]:
    """A docker SDK client on the stand-in daemon's own socket, closed afterwards."""
    daemon = docker.DockerClient(base_url=f"unix://{DOCKER_SOCK}", timeout=timeout)
    try:
        yield daemon
    finally:
        daemon.close()


def _answers() -> bool:
    if not DOCKER_SOCK.exists():
        return False
    try:
        with client(timeout=2) as probe:
            return bool(probe.ping())
    except DockerException:
        return False


def ensure() -> str:
    """Start dockerd unless it runs with the current arguments; return its daemon ID."""
    dockerd = find_command("dockerd")
    if dockerd is None:
        raise TestHostError("dockerd is not installed", fix=INSTALL_HINT)
    argv = dockerd_argv(dockerd)
    args_changed = write_if_changed(DOCKER_ARGS_FILE, "\n".join(argv) + "\n")
    pid = running_pid(DOCKER_PIDFILE, "dockerd")
    if pid is not None and (args_changed or not in_stand_in_netns(pid)):
        stop(pid)
        pid = None
    if pid is None:
        _start(argv)
        _remove_leftover_containers()
    elif not wait_for(_answers, 10.0):
        raise TestHostError(
            f"the stand-in dockerd (pid {pid}) does not answer on {DOCKER_SOCK}\n"
            + log_tail(DOCKER_LOG),
            fix="python -m tests.testhost down, then run the tests again",
        )
    with client() as daemon:
        return str(daemon.info()["ID"])


def _start(argv: list[str]) -> None:
    DOCKER_DATA_ROOT.mkdir(parents=True, exist_ok=True)
    DOCKER_EXEC_ROOT.mkdir(parents=True, exist_ok=True)
    with open_log(DOCKER_LOG) as log:
        # setsid -f: dockerd outlives this process, in its own session, holding no pipe of ours.
        subprocess.run(
            ["setsid", "-f", *in_netns_argv(argv)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            check=True,
        )
    if not wait_for(_answers, START_TIMEOUT, interval=0.1):
        raise TestHostError(
            f"dockerd did not come up on {DOCKER_SOCK} within {START_TIMEOUT:.0f}s\n"
            + log_tail(DOCKER_LOG),
            fix="read the log above; `python -m tests.testhost down` clears a stuck stand-in",
        )


def _remove_leftover_containers() -> None:
    """A daemon that just started serves no test yet: containers it has are a dead run's."""
    with client() as daemon:
        for container in daemon.containers.list(all=True):
            container.remove(force=True)


def remove() -> None:
    """Stop the daemon (containers stop with it); its images stay in the data root."""
    pid = running_pid(DOCKER_PIDFILE, "dockerd")
    if pid is not None:
        stop(pid, timeout=30.0)
