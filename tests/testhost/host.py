"""Bring the stand-in GB10 host up, check it really works, describe it, take it down."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

import paramiko

from . import dockerd, image, netns, sshd
from .errors import INSTALL_HINT, TestHostError, log_tail
from .layout import (
    ADDRESS,
    CLIENT_KEY,
    DOCKER_PIDFILE,
    DOCKER_SOCK,
    HOST_SIDE_ADDRESS,
    KNOWN_HOSTS,
    LOCK_FILE,
    NETNS,
    RUN_DIR,
    SIM_IMAGE,
    SSH_ALIAS,
    SSH_CONFIG,
    SSH_PORT,
    SSH_USER,
    SSHD_LOG,
    SSHD_PIDFILE,
    VLLM_IMAGE,
    HostInfo,
)
from .procs import find_command, in_stand_in_netns, running_pid, wait_for

REQUIRED_COMMANDS = (
    "ip", "nsenter", "setsid", "docker", "dockerd", "containerd", "runc", "sshd", "ldd",
)
# A cold bring-up builds images; a second test run waits for it rather than racing it.
LOCK_TIMEOUT = 600.0


@contextmanager
def _locked() -> Iterator[None]:
    """One bring-up or teardown at a time per machine (several pytest runs may share it)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as handle:
        if not wait_for(lambda: _try_lock(handle.fileno()), LOCK_TIMEOUT, interval=0.1):
            raise TestHostError(
                f"another process has held {LOCK_FILE} for {LOCK_TIMEOUT:.0f}s",
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


def remote_daemon_id() -> str:
    """Ask over real ssh which daemon the host's ``docker`` talks to."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(KNOWN_HOSTS))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            ADDRESS, port=SSH_PORT, username=SSH_USER, key_filename=str(CLIENT_KEY),
            look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=10,
            auth_timeout=10,
        )
        _, stdout, stderr = client.exec_command("docker info --format '{{.ID}}'", timeout=30)
        out = stdout.read().decode().strip()
        if stdout.channel.recv_exit_status() != 0:
            raise TestHostError(f"`docker info` over ssh failed: {stderr.read().decode().strip()}")
        return out
    except (paramiko.SSHException, OSError) as exc:
        raise TestHostError(f"ssh to {SSH_USER}@{ADDRESS}:{SSH_PORT} failed: {exc}\n"
                            + log_tail(SSHD_LOG)) from exc
    finally:
        client.close()


def info(daemon_id: str) -> HostInfo:
    return HostInfo(
        address=ADDRESS,
        port=SSH_PORT,
        user=SSH_USER,
        ssh_alias=SSH_ALIAS,
        key_path=CLIENT_KEY,
        known_hosts_path=KNOWN_HOSTS,
        ssh_config_path=SSH_CONFIG,
        docker_sock_path=DOCKER_SOCK,
        sim_image=SIM_IMAGE,
        vllm_image=VLLM_IMAGE,
        netns=NETNS,
        host_side_address=HOST_SIDE_ADDRESS,
        daemon_id=daemon_id,
    )


def ensure_up() -> HostInfo:
    """Bring up whatever part is missing and prove the whole chain works (fast when warm)."""
    check_prerequisites()
    with _locked():
        netns.ensure()
        daemon_id = dockerd.ensure()
        sshd.ensure()
        with dockerd.client(timeout=300) as client:
            image.ensure_sim(client)
        seen = remote_daemon_id()
        if seen != daemon_id:
            raise TestHostError(
                f"`docker` over ssh reaches daemon {seen or '(none)'}, not the stand-in's "
                f"{daemon_id}",
                fix="check DOCKER_HOST in the stand-in's sshd_config (SetEnv)",
            )
        return info(daemon_id)


def down() -> None:
    """Stop sshd and dockerd and delete the namespace; images stay for the next bring-up."""
    with _locked():
        sshd.remove()
        dockerd.remove()
        netns.remove()


def status() -> dict[str, str]:
    """Each part's state, without changing anything."""
    parts: dict[str, str] = {"netns": "up" if netns.is_up() else "down"}
    for name, pidfile in (("dockerd", DOCKER_PIDFILE), ("sshd", SSHD_PIDFILE)):
        pid = running_pid(pidfile, name)
        if pid is None:
            parts[name] = "down"
        else:
            where = "in sparkhost" if in_stand_in_netns(pid) else "in a stale namespace"
            parts[name] = f"running (pid {pid}, {where})"
    return parts
