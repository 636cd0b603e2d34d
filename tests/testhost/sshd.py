"""The stand-in's sshd: real OpenSSH on 10.213.0.2:22, key-only, with its own config and keys.

Remote sessions get ``DOCKER_HOST`` pointing at the stand-in's dockerd (sshd's ``SetEnv``), so
both ``docker …`` over ``exec_command`` and the docker SDK's ``docker system dial-stdio`` reach
the test daemon and never a daemon the machine itself may run.
"""

from __future__ import annotations

import socket
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import INSTALL_HINT, TestHostError, log_tail
from .layout import (
    ADDRESS,
    AUTHORIZED_KEYS,
    CLIENT_KEY,
    DOCKER_SOCK,
    KNOWN_HOSTS,
    MEMINFO,
    SSH_ALIAS,
    SSH_CONFIG,
    SSH_DIR,
    SSH_PORT,
    SSHD_CONFIG,
    SSHD_HOST_KEY,
    SSHD_LOG,
    SSHD_PIDFILE,
    SSHD_PRIVSEP_DIR,
    client_ssh_config,
    in_netns_argv,
)
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


def sshd_config() -> str:
    return (
        f"ListenAddress {ADDRESS}:{SSH_PORT}\n"
        f"HostKey {SSHD_HOST_KEY}\n"
        f"PidFile {SSHD_PIDFILE}\n"
        f"AuthorizedKeysFile {AUTHORIZED_KEYS}\n"
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
        f"SetEnv DOCKER_HOST=unix://{DOCKER_SOCK}\n"
        "Subsystem sftp internal-sftp\n"
        "LogLevel VERBOSE\n"
        # Not read by sshd: a change of how it is started (its /proc/meminfo) restarts it.
        f"# /proc/meminfo is {MEMINFO}\n"
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
    path.write_bytes(private)
    path.chmod(0o600)
    _pub(path).write_bytes(public + b" spark-stack-testhost\n")


def ensure_keys() -> bool:
    """Host key, client key, authorized_keys, known_hosts and ssh_config (kept between runs).

    Returns whether the host key is new: a running sshd still serves the old one.
    """
    SSH_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    new_host_key = False
    for key in (SSHD_HOST_KEY, CLIENT_KEY):
        if not key.exists() or not _pub(key).exists():
            _generate_key(key)
            new_host_key = new_host_key or key == SSHD_HOST_KEY
    write_if_changed(AUTHORIZED_KEYS, _pub(CLIENT_KEY).read_text(), 0o600)
    host_key = " ".join(_pub(SSHD_HOST_KEY).read_text().split()[:2])
    write_if_changed(KNOWN_HOSTS, f"{ADDRESS},{SSH_ALIAS} {host_key}\n")
    write_if_changed(SSH_CONFIG, client_ssh_config(CLIENT_KEY, KNOWN_HOSTS))
    return new_host_key


def _listening() -> bool:
    try:
        with socket.create_connection((ADDRESS, SSH_PORT), timeout=1.0) as conn:
            return conn.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def ensure() -> None:
    """Start sshd in the namespace unless it already runs with the current config."""
    sshd = find_command("sshd")
    if sshd is None:
        raise TestHostError("sshd is not installed", fix=INSTALL_HINT)
    new_host_key = ensure_keys()
    config_changed = write_if_changed(SSHD_CONFIG, sshd_config())
    pid = running_pid(SSHD_PIDFILE, "sshd")
    if pid is not None and (new_host_key or config_changed or not in_stand_in_netns(pid)):
        stop(pid)
        pid = None
    if pid is None:
        SSHD_PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        open_log(SSHD_LOG).close()
        if not MEMINFO.exists():
            reset_meminfo()
        # Without -D sshd checks its config, daemonizes and detaches from our pipes. Its own
        # mount namespace shows MEMINFO as /proc/meminfo to every session.
        start = f"mount --bind {MEMINFO} /proc/meminfo && exec {sshd} -f {SSHD_CONFIG} " \
            f"-E {SSHD_LOG}"
        run(in_netns_argv(["unshare", "--mount", "--propagation", "private",
                           "sh", "-c", start]))
    # The pidfile shows it is our sshd that listens (sshd forks before it binds).
    if not wait_for(
        lambda: running_pid(SSHD_PIDFILE, "sshd") is not None and _listening(),
        START_TIMEOUT,
    ):
        raise TestHostError(
            f"sshd does not answer on {ADDRESS}:{SSH_PORT}\n" + log_tail(SSHD_LOG),
            fix="read the log above; `python -m tests.testhost down` clears a stuck stand-in",
        )


def reset_meminfo() -> None:
    """The stand-in reports this machine's real memory again."""
    MEMINFO.write_text(Path("/proc/meminfo").read_text())


def set_mem_available(kib: int) -> None:
    """Make the stand-in report ``kib`` of MemAvailable (until :func:`reset_meminfo`)."""
    lines = [f"MemAvailable:   {kib} kB" if line.startswith("MemAvailable:") else line
             for line in Path("/proc/meminfo").read_text().splitlines()]
    MEMINFO.write_text("\n".join(lines) + "\n")


def remove() -> None:
    pid = running_pid(SSHD_PIDFILE, "sshd")
    if pid is not None:
        stop(pid)
