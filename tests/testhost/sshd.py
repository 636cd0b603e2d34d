"""A stand-in's sshd: real OpenSSH on its address, port 22, key-only, own config and keys.

Remote sessions get ``DOCKER_HOST`` pointing at that host's dockerd (sshd's ``SetEnv``), so
both ``docker …`` over ``exec_command`` and the docker SDK's ``docker system dial-stdio`` reach
the test daemon and never a daemon the machine itself may run.
"""

from __future__ import annotations

import socket
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import INSTALL_HINT, TestHostError, log_tail
from .layout import HOST1, SSH_PORT, SSHD_PRIVSEP_DIR, Layout, client_ssh_config
from .procs import (
    find_command,
    in_stand_in_netns,
    open_log,
    run,
    running_pid,
    stop,
    wait_for,
    write_if_changed,
)

START_TIMEOUT = 15.0


def sshd_config(layout: Layout = HOST1) -> str:
    return (
        f"ListenAddress {layout.address}:{SSH_PORT}\n"
        f"HostKey {layout.sshd_host_key}\n"
        f"PidFile {layout.sshd_pidfile}\n"
        f"AuthorizedKeysFile {layout.authorized_keys}\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        # The key files live in a directory root shares with the test tooling.
        "StrictModes no\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "AllowTcpForwarding yes\n"
        f"SetEnv DOCKER_HOST=unix://{layout.docker_sock}\n"
        "Subsystem sftp internal-sftp\n"
        "LogLevel VERBOSE\n"
        # Not read by sshd: a change of how it is started (its /proc/meminfo) restarts it.
        f"# /proc/meminfo is {layout.meminfo}\n"
    )


def _pub(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def _generate_key(path: Path) -> None:
    """An unencrypted ed25519 key pair in OpenSSH format at ``path`` and ``path.pub``."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(private)
    path.chmod(0o600)
    _pub(path).write_bytes(public + b" spark-stack-testhost\n")


def ensure_keys(layout: Layout = HOST1) -> bool:
    """Host key, client key, authorized_keys, known_hosts and ssh_config (kept between runs).

    Returns whether the host key is new: a running sshd still serves the old one.
    """
    layout.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    new_host_key = False
    for key in (layout.sshd_host_key, layout.client_key):
        if not key.exists() or not _pub(key).exists():
            _generate_key(key)
            new_host_key = new_host_key or key == layout.sshd_host_key
    write_if_changed(layout.authorized_keys, _pub(layout.client_key).read_text(), 0o600)
    host_key = " ".join(_pub(layout.sshd_host_key).read_text().split()[:2])
    write_if_changed(layout.known_hosts, f"{layout.address},{layout.ssh_alias} {host_key}\n")
    write_if_changed(
        layout.ssh_config,
        client_ssh_config(layout.client_key, layout.known_hosts, layout.ssh_alias,
                          layout.address),
    )
    return new_host_key


def _listening(layout: Layout) -> bool:
    try:
        with socket.create_connection((layout.address, SSH_PORT), timeout=1.0) as conn:
            return conn.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def ensure(layout: Layout = HOST1) -> None:
    """Start sshd in the namespace unless it already runs with the current config."""
    sshd = find_command("sshd")
    if sshd is None:
        raise TestHostError("sshd is not installed", fix=INSTALL_HINT)
    new_host_key = ensure_keys(layout)
    config_changed = write_if_changed(layout.sshd_config, sshd_config(layout))
    pid = running_pid(layout.sshd_pidfile, "sshd")
    if pid is not None and (
        new_host_key or config_changed or not in_stand_in_netns(pid, layout.netns_path)
    ):
        stop(pid)
        pid = None
    if pid is None:
        SSHD_PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        open_log(layout.sshd_log).close()
        if not layout.meminfo.exists():
            reset_meminfo(layout)
        # Without -D sshd checks its config, daemonizes and detaches from our pipes. Its own
        # mount namespace shows the host's meminfo file as /proc/meminfo to every session,
        # and a sysfs of its network namespace (/sys/class/net lists the host's interfaces,
        # cx7a/cx7b with their MTU, not this machine's).
        start = f"mount --bind {layout.meminfo} /proc/meminfo && mount -t sysfs sysfs /sys " \
            f"&& exec {sshd} -f {layout.sshd_config} -E {layout.sshd_log}"
        run(layout.in_netns_argv(["unshare", "--mount", "--propagation", "private",
                                  "sh", "-c", start]))
    # The pidfile shows it is our sshd that listens (sshd forks before it binds).
    if not wait_for(
        lambda: running_pid(layout.sshd_pidfile, "sshd") is not None and _listening(layout),
        START_TIMEOUT,
    ):
        raise TestHostError(
            f"sshd does not answer on {layout.address}:{SSH_PORT}\n" + log_tail(layout.sshd_log),
            fix="read the log above; `python -m tests.testhost down` clears a stuck stand-in",
        )


def reset_meminfo(layout: Layout = HOST1) -> None:
    """The stand-in reports this machine's real memory again."""
    layout.meminfo.parent.mkdir(parents=True, exist_ok=True)
    layout.meminfo.write_text(Path("/proc/meminfo").read_text())


def set_mem_available(kib: int, layout: Layout = HOST1) -> None:
    """Make the stand-in report ``kib`` of MemAvailable (until :func:`reset_meminfo`)."""
    lines = [f"MemAvailable:   {kib} kB" if line.startswith("MemAvailable:") else line
             for line in Path("/proc/meminfo").read_text().splitlines()]
    layout.meminfo.write_text("\n".join(lines) + "\n")


def remove(layout: Layout = HOST1) -> None:
    pid = running_pid(layout.sshd_pidfile, "sshd")
    if pid is not None:
        stop(pid)
