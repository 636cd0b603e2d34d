"""Bring the stand-in GB10 hosts up, check they really work, describe them, take them down.

Host 1 alone is what the single-Spark tests use (``ensure_up()``); ``ensure_pair_up()`` adds
host 2 and the CX7 link between them for the two-Spark tests. Each host has its own lock, so
bringing host 2 up or down never waits for or touches host 1's daemons.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko

from . import dockerd, image, link, netns, sshd
from .errors import INSTALL_HINT, TestHostError, log_tail
from .layout import (
    HOST1,
    HOST2,
    HOSTS,
    SIM_IMAGE,
    SSH_PORT,
    SSH_USER,
    VLLM_IMAGE,
    HostInfo,
    Layout,
    write_ssh_home,
)
from .link import LinkInfo
from .procs import find_command, in_stand_in_netns, running_pid, wait_for

REQUIRED_COMMANDS = (
    "ip", "nsenter", "setsid", "docker", "dockerd", "containerd", "runc", "sshd", "ldd",
)
# A cold bring-up builds images; a second test run waits for it rather than racing it.
LOCK_TIMEOUT = 600.0


@contextmanager
def _locked(layout: Layout = HOST1) -> Iterator[None]:
    """One bring-up or teardown of a host at a time per machine (pytest runs may share it)."""
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    with layout.lock_file.open("w") as handle:
        if not wait_for(lambda: _try_lock(handle.fileno()), LOCK_TIMEOUT, interval=0.1):
            raise TestHostError(
                f"another process has held {layout.lock_file} for {LOCK_TIMEOUT:.0f}s",
                fix="wait for the other test run, or find it with `fuser -v` on that file",
            )
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise TestHostError("the stand-in host needs root (network namespaces, dockerd)")
    missing = [cmd for cmd in REQUIRED_COMMANDS if find_command(cmd) is None]
    if missing:
        raise TestHostError(f"missing for the stand-in host: {', '.join(missing)}",
                            fix=INSTALL_HINT)


def remote_daemon_id(layout: Layout = HOST1) -> str:
    """Ask over real ssh which daemon the host's ``docker`` talks to."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(layout.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            layout.address, port=SSH_PORT, username=SSH_USER,
            key_filename=str(layout.client_key), look_for_keys=False, allow_agent=False,
            timeout=10, banner_timeout=10, auth_timeout=10,
        )
        _, stdout, stderr = client.exec_command("docker info --format '{{.ID}}'", timeout=30)
        out = stdout.read().decode().strip()
        if stdout.channel.recv_exit_status() != 0:
            raise TestHostError(f"`docker info` over ssh failed: {stderr.read().decode().strip()}")
        return out
    except (paramiko.SSHException, OSError) as exc:
        raise TestHostError(f"ssh to {SSH_USER}@{layout.address}:{SSH_PORT} failed: {exc}\n"
                            + log_tail(layout.sshd_log)) from exc
    finally:
        client.close()


def info(daemon_id: str, layout: Layout = HOST1) -> HostInfo:
    return HostInfo(
        address=layout.address,
        port=SSH_PORT,
        user=SSH_USER,
        ssh_alias=layout.ssh_alias,
        key_path=layout.client_key,
        known_hosts_path=layout.known_hosts,
        ssh_config_path=layout.ssh_config,
        docker_sock_path=layout.docker_sock,
        sim_image=SIM_IMAGE,
        vllm_image=VLLM_IMAGE,
        netns=layout.netns,
        host_side_address=layout.host_side_address,
        daemon_id=daemon_id,
    )


def ensure_up(layout: Layout = HOST1) -> HostInfo:
    """Bring up whatever part of a host is missing and prove the whole chain works (fast when
    warm). Without an argument: host 1, the single-Spark stand-in."""
    check_prerequisites()
    with _locked(layout):
        netns.ensure(layout)
        daemon_id = dockerd.ensure(layout)
        sshd.ensure(layout)
        with dockerd.client(timeout=300, layout=layout) as client:
            image.ensure_sim(client, layout.build_dir)
        seen = remote_daemon_id(layout)
        if seen != daemon_id:
            raise TestHostError(
                f"`docker` over ssh reaches daemon {seen or '(none)'}, not the stand-in's "
                f"{daemon_id}",
                fix="check DOCKER_HOST in the stand-in's sshd_config (SetEnv)",
            )
        return info(daemon_id, layout)


@dataclass(frozen=True)
class HostPair:
    """Two stand-in Sparks cabled together: host 1 is the head, host 2 the worker."""

    head: HostInfo
    worker: HostInfo
    link: LinkInfo

    @property
    def hosts(self) -> tuple[HostInfo, HostInfo]:
        return (self.head, self.worker)

    def link_address(self, host: HostInfo) -> str:
        """``host``'s address on the CX7 link."""
        return self.link.addresses[self.hosts.index(host)]

    def link_interface(self, host: HostInfo) -> str:
        """``host``'s CX7 interface name (what NCCL_SOCKET_IFNAME would name)."""
        return self.link.interfaces[self.hosts.index(host)]

    def write_ssh_home(self, home: Path) -> Path:
        """``home/.ssh`` reaching both hosts by alias and address, with one key."""
        return write_ssh_home(home, self.hosts)


def ensure_pair_up() -> HostPair:
    """Host 1, host 2 and the link between them, each part brought up when missing; the
    link's MTU is set back to its default (9000)."""
    head = ensure_up(HOST1)
    worker = ensure_up(HOST2)
    with _locked(HOST2):
        link.ensure()
        return HostPair(head=head, worker=worker, link=link.info())


def down(numbers: tuple[int, ...] = (1, 2)) -> None:
    """Stop the hosts' sshd and dockerd and delete their namespaces (the link goes with
    either); images stay for the next bring-up. By default both hosts."""
    for layout in sorted((h for h in HOSTS if h.number in numbers), key=lambda h: -h.number):
        with _locked(layout):
            if layout is HOST2:
                link.remove()
            sshd.remove(layout)
            dockerd.remove(layout)
            netns.remove(layout)


def status(layout: Layout = HOST1) -> dict[str, str]:
    """Each part's state, without changing anything."""
    parts: dict[str, str] = {"netns": "up" if netns.is_up(layout) else "down"}
    for name, pidfile in (("dockerd", layout.docker_pidfile), ("sshd", layout.sshd_pidfile)):
        pid = running_pid(pidfile, name)
        if pid is None:
            parts[name] = "down"
        else:
            where = (f"in {layout.netns}" if in_stand_in_netns(pid, layout.netns_path)
                     else "in a stale namespace")
            parts[name] = f"running (pid {pid}, {where})"
    if layout is HOST2:
        parts["link"] = f"up (mtu {link.mtu()})" if link.is_up() else "down"
    return parts
