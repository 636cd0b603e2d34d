"""The SSH connector: ~/.ssh/config resolution, one-line error translation, real sockets."""

from __future__ import annotations

import errno
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from spark_stack.deploy.ssh import (
    SshHost,
    SshTarget,
    backoff,
    connect,
    fingerprint,
    is_transient,
    keygen_remove_command,
    keyscan_command,
    resolve_target,
    translate_error,
)
from spark_stack.errors import AuthenticationError, HostKeyError, HostUnreachable

CONFIG = """
Host spark
    HostName 192.0.2.10
    User alice
    Port 2222
    IdentityFile ~/.ssh/spark_key
    IdentitiesOnly yes
    UserKnownHostsFile ~/.ssh/spark_known ~/.ssh/other_known
    ProxyJump bastion

Host *
    User default-user
"""

TARGET = SshTarget(alias="spark", hostname="192.0.2.10", port=2222, user="alice",
                   identity_files=("/home/a/.ssh/k",))


def test_an_alias_resolves_through_the_ssh_config(fake_home: Path) -> None:
    target = resolve_target(SshHost(address="spark"), CONFIG)
    assert target == SshTarget(
        alias="spark", hostname="192.0.2.10", port=2222, user="alice",
        identity_files=(str(fake_home / ".ssh/spark_key"),), identities_only=True,
        known_hosts_files=(str(fake_home / ".ssh/spark_known"),
                           str(fake_home / ".ssh/other_known")),
        proxy_jump="bastion")
    assert target.display == "alice@192.0.2.10:2222"
    assert target.known_hosts_name == "[192.0.2.10]:2222"


def test_the_stack_file_overrides_the_ssh_config(fake_home: Path) -> None:
    host = SshHost(address="spark", user="bob", port=22, identity_file="/keys/id")
    target = resolve_target(host, CONFIG)
    assert (target.user, target.port, target.identity_files) == ("bob", 22, ("/keys/id",))
    assert target.known_hosts_name == "192.0.2.10"


def test_a_plain_address_gets_defaults(fake_home: Path) -> None:
    target = resolve_target("10.0.0.5", CONFIG)
    assert (target.hostname, target.port, target.user, target.proxy_jump) == (
        "10.0.0.5", 22, "default-user", None)
    assert target.known_hosts_files == (str(fake_home / ".ssh/known_hosts"),
                                        str(fake_home / ".ssh/known_hosts2"))
    assert resolve_target("10.0.0.5", "", local_user="carol").user == "carol"


def test_fixes_name_the_exact_commands() -> None:
    assert keyscan_command(TARGET) == (
        "mkdir -p -m 700 ~/.ssh && ssh-keyscan -p 2222 192.0.2.10 >> ~/.ssh/known_hosts")
    assert keygen_remove_command(TARGET) == "ssh-keygen -R '[192.0.2.10]:2222'"
    on_22 = SshTarget(alias="h", hostname="h.lan", port=22, user="u")
    assert keyscan_command(on_22) == (
        "mkdir -p -m 700 ~/.ssh && ssh-keyscan h.lan >> ~/.ssh/known_hosts")
    assert keygen_remove_command(on_22) == "ssh-keygen -R h.lan"


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    key = paramiko.Ed25519Key.from_private_key_file(str(_write_key(tmp_path)))
    pub = tmp_path / "key.pub"
    pub.write_text(f"{key.get_name()} {key.get_base64()}\n")
    listed = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                            check=True).stdout
    assert fingerprint(key) == listed.split()[1]


def _write_key(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = tmp_path / "key"
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    return path


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (socket.gaierror(-2, "Name or service not known"), HostUnreachable,
         "Could not resolve hostname 192.0.2.10: Name or service not known"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), HostUnreachable,
         "Connection refused on port 2222 of 192.0.2.10"),
        (paramiko.ssh_exception.NoValidConnectionsError(
            {("192.0.2.10", 2222): ConnectionRefusedError(errno.ECONNREFUSED, "x")}),
         HostUnreachable, "Connection refused on port 2222 of 192.0.2.10"),
        (TimeoutError("timed out"), HostUnreachable, "Timed out connecting to 192.0.2.10:2222"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), HostUnreachable,
         "No route to host 192.0.2.10 (No route to host)"),
        (paramiko.AuthenticationException("Authentication failed."), AuthenticationError,
         "Authentication failed for alice@192.0.2.10 with key /home/a/.ssh/k"),
        (EOFError(), HostUnreachable,
         "the SSH connection to 192.0.2.10:2222 was closed unexpectedly"),
        (paramiko.SSHException("Error reading SSH protocol banner"), HostUnreachable,
         "192.0.2.10:2222 did not complete the SSH handshake (no SSH banner in time)"),
        (paramiko.SSHException("No existing session"), HostUnreachable,
         "192.0.2.10:2222 did not complete the SSH handshake (no SSH banner in time)"),
        (paramiko.SSHException("Incompatible ssh peer"), HostUnreachable,
         "SSH error with 192.0.2.10:2222: Incompatible ssh peer"),
        (FileNotFoundError(2, "No such file", "/home/a/.ssh/k"), AuthenticationError,
         "identity file not found: /home/a/.ssh/k"),
    ],
)
def test_every_error_becomes_one_line(error: BaseException, kind: type, message: str) -> None:
    translated = translate_error(error, TARGET)
    assert type(translated) is kind
    assert translated.message == message
    assert "\n" not in translated.message
    assert translated.exit_code == 3


def test_a_changed_host_key_names_both_commands(tmp_path: Path) -> None:
    key = paramiko.Ed25519Key.from_private_key_file(str(_write_key(tmp_path)))
    error = paramiko.BadHostKeyException("192.0.2.10", key, key)
    translated = translate_error(error, TARGET)
    assert isinstance(translated, HostKeyError)
    assert fingerprint(key) in translated.message and "CHANGED" in translated.message
    assert translated.fix is not None
    assert "ssh-keygen -R '[192.0.2.10]:2222'" in translated.fix
    assert "ssh-keyscan -p 2222 192.0.2.10" in translated.fix


def test_only_transient_errors_are_retried_with_growing_jittered_backoff() -> None:
    assert is_transient(TimeoutError()) and is_transient(ConnectionResetError())
    assert is_transient(paramiko.SSHException("Error reading SSH protocol banner"))
    assert not is_transient(paramiko.AuthenticationException())
    assert not is_transient(ConnectionRefusedError())
    for attempt in range(4):
        delays = {backoff(attempt) for _ in range(20)}
        assert min(delays) >= 0.25 * 2**attempt and max(delays) <= 0.75 * 2**attempt
        assert len(delays) > 1


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts and never speaks (no SSH banner)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_silent_server_times_out_after_retries(silent_server: int, fake_home: Path) -> None:
    target = SshTarget(alias="x", hostname="127.0.0.1", port=silent_server, user="u")
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as caught:
        connect(target, timeout=0.3, attempts=2, ssh_config_text="")
    elapsed = time.monotonic() - started
    assert caught.value.message == (
        f"127.0.0.1:{silent_server} did not complete the SSH handshake (no SSH banner in time)")
    assert 0.5 < elapsed < 10  # two attempts and a backoff, bounded


def test_a_closed_port_is_refused_at_once(fake_home: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = SshTarget(alias="x", hostname="127.0.0.1", port=port, user="u")
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as caught:
        connect(target, ssh_config_text="")
    assert caught.value.message == f"Connection refused on port {port} of 127.0.0.1"
    assert time.monotonic() - started < 2  # refused is not retried


def test_ssh_command_keeps_the_stacks_port_user_and_key() -> None:
    from spark_stack.deploy.ssh import ssh_command

    assert ssh_command(TARGET) == "ssh -p 2222 -i /home/a/.ssh/k alice@spark"
    assert ssh_command(SshTarget(alias="h.lan", hostname="h.lan", port=22, user="u")) == (
        "ssh u@h.lan")


def test_a_host_without_docker_daemon_says_how_to_start_it() -> None:
    from spark_stack.deploy.docker_host import DockerHost

    class NoDocker:
        """An SSH connection on which `docker system dial-stdio` cannot start."""

        target = SshTarget(alias="spark", hostname="192.0.2.10", port=2222, user="alice")

        def exec_channel(self, command: str) -> paramiko.Channel:
            raise HostUnreachable("docker: command not found")

    docker = DockerHost(NoDocker())  # type: ignore[arg-type]
    try:
        with pytest.raises(HostUnreachable) as caught:
            docker.stack_containers("lab")
    finally:
        docker.close()
    assert caught.value.exit_code == 3
    assert caught.value.fix is not None
    assert "`ssh -p 2222 alice@spark sudo systemctl start docker`" in caught.value.fix
    assert "spark-stack up" not in caught.value.fix


def test_invoke_is_imported_only_for_a_match_exec_line() -> None:
    """paramiko imports invoke (and with it unittest.mock and asyncio) for `Match exec` alone:
    ~40 ms of every SSH command. Deferred, a `Match exec` line still works."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from spark_stack.deploy.ssh import resolve_target\n"
        "print(sorted(m for m in ('invoke.tasks', 'unittest.mock', 'asyncio') "
        "if m in sys.modules))\n"
        "config = 'Match exec \"true\"\\n  User bob\\nHost box\\n  HostName 10.0.0.9\\n'\n"
        "target = resolve_target('box', config)\n"
        "print(target.user, target.hostname, 'invoke.tasks' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.splitlines() == ["[]", "bob 10.0.0.9 True"], done.stderr
