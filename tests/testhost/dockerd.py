"""A stand-in's docker daemon: a real dockerd inside its namespace, beside anything else.

Its own data root (images survive between runs), exec root, pidfile and socket, so a daemon
the machine may run on /var/run/docker.sock, or the other stand-in's, is never touched.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import docker
from docker.errors import DockerException

from .errors import INSTALL_HINT, TestHostError, log_tail
from .layout import HOST1, Layout
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


def dockerd_argv(dockerd: str, layout: Layout = HOST1) -> list[str]:
    return [
        dockerd,
        f"--data-root={layout.docker_data_root}",
        f"--exec-root={layout.docker_exec_root}",
        f"--pidfile={layout.docker_pidfile}",
        f"--host=unix://{layout.docker_sock}",
        # No default route inside: containers must reach nothing, so no masquerading either.
        "--ip-masq=false",
        f"--label={layout.daemon_label}",
        "--shutdown-timeout=3",
    ]


@contextmanager
def client(timeout: int = 60, layout: Layout = HOST1) -> Iterator[docker.DockerClient]:
    """A docker SDK client on the stand-in daemon's own socket, closed afterwards."""
    daemon = docker.DockerClient(base_url=f"unix://{layout.docker_sock}", timeout=timeout)
    try:
        yield daemon
    finally:
        daemon.close()


def _answers(layout: Layout) -> bool:
    if not layout.docker_sock.exists():
        return False
    try:
        with client(timeout=2, layout=layout) as probe:
            return bool(probe.ping())
    except DockerException:
        return False


def ensure(layout: Layout = HOST1) -> str:
    """Start dockerd unless it runs with the current arguments; return its daemon ID."""
    dockerd = find_command("dockerd")
    if dockerd is None:
        raise TestHostError("dockerd is not installed", fix=INSTALL_HINT)
    argv = dockerd_argv(dockerd, layout)
    args_changed = write_if_changed(layout.docker_args_file, "\n".join(argv) + "\n")
    pid = running_pid(layout.docker_pidfile, "dockerd")
    if pid is not None and (args_changed or not in_stand_in_netns(pid, layout.netns_path)):
        stop(pid)
        pid = None
    if pid is None:
        _start(argv, layout)
        _remove_leftover_containers(layout)
    elif not wait_for(lambda: _answers(layout), 10.0):
        raise TestHostError(
            f"the stand-in dockerd (pid {pid}) does not answer on {layout.docker_sock}\n"
            + log_tail(layout.docker_log),
            fix="python -m tests.testhost down, then run the tests again",
        )
    with client(layout=layout) as daemon:
        return str(daemon.info()["ID"])


def _start(argv: list[str], layout: Layout) -> None:
    layout.docker_data_root.mkdir(parents=True, exist_ok=True)
    layout.docker_exec_root.mkdir(parents=True, exist_ok=True)
    with open_log(layout.docker_log) as log:
        # setsid -f: dockerd outlives this process, in its own session, holding no pipe of ours.
        subprocess.run(
            ["setsid", "-f", *layout.in_netns_argv(argv)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            check=True,
        )
    if not wait_for(lambda: _answers(layout), START_TIMEOUT, interval=0.1):
        raise TestHostError(
            f"dockerd did not come up on {layout.docker_sock} within {START_TIMEOUT:.0f}s\n"
            + log_tail(layout.docker_log),
            fix="read the log above; `python -m tests.testhost down` clears a stuck stand-in",
        )


def _remove_leftover_containers(layout: Layout) -> None:
    """A daemon that just started serves no test yet: containers it has are a dead run's."""
    with client(layout=layout) as daemon:
        for container in daemon.containers.list(all=True):
            container.remove(force=True)


def remove(layout: Layout = HOST1) -> None:
    """Stop the daemon (containers stop with it); its images stay in the data root."""
    pid = running_pid(layout.docker_pidfile, "dockerd")
    if pid is not None:
        stop(pid, timeout=30.0)
