"""The SSH edge: one paramiko connection per command, honouring ``~/.ssh/config``.

:func:`resolve_target` turns a stack's host (an address or an ``~/.ssh/config`` alias plus
optional overrides) into an :class:`SshTarget` (pure). :func:`connect` opens one
:class:`SshConnection` (through ``ProxyJump`` hosts when configured) with timeouts,
keepalives, retries of transient errors with jitter, and known_hosts checking: an unknown or
changed host key is refused with its fingerprint and the command that fixes it. Every
paramiko or socket error leaves this module as one :class:`HostUnreachable` line
(:func:`translate_error`).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import random
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from ..errors import AuthenticationError, HostKeyError, HostUnreachable, SparkStackError
from .connector import Completed
from .known_hosts import KnownHost, Verdict, check_host_key, read_known_hosts

CONNECT_TIMEOUT = 10.0
KEEPALIVE_SECONDS = 15
CONNECT_ATTEMPTS = 3
RUN_TIMEOUT = 60.0
SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
_PUMP_CHUNK = 65536

# paramiko logs every failed handshake from its transport thread, traceback included, at ERROR
# (and Python's last-resort handler prints that to stderr). This module turns those failures
# into one line, so paramiko's own records stop here.
_paramiko_log = logging.getLogger("paramiko")
_paramiko_log.addHandler(logging.NullHandler())
_paramiko_log.propagate = False


@dataclass(frozen=True)
class SshTarget:
    """Where and as whom to connect, after ``~/.ssh/config`` and the stack's overrides."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    known_hosts_files: tuple[str, ...] = ()
    proxy_jump: str | None = None

    @property
    def display(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH and paramiko name this host in known_hosts."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def default_ssh_config_path() -> Path:
    return Path.home() / ".ssh" / "config"


def read_ssh_config(path: Path | None = None) -> str:
    try:
        return (path or default_ssh_config_path()).read_text(encoding="utf-8")
    except OSError:
        return ""


@dataclass(frozen=True)
class SshHost:
    """A host as the SSH edge takes it: what the stack file (or a ProxyJump hop) says."""

    address: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None


def resolve_target(
    host: SshHost | str, ssh_config_text: str, *, local_user: str | None = None
) -> SshTarget:
    """The connection target for a stack host (pure: the config text is passed in)."""
    if isinstance(host, str):
        host = SshHost(address=host)
    config = paramiko.SSHConfig.from_text(ssh_config_text).lookup(host.address)
    port = host.port or int(config.get("port", 22))
    user = host.user or config.get("user") or local_user or _local_user()
    if host.identity_file:
        identities: list[str] = [host.identity_file]
    else:
        identities = list(config.get("identityfile", []))
    known = config.get("userknownhostsfile")
    known_files = shlex.split(known) if known else ["~/.ssh/known_hosts", "~/.ssh/known_hosts2"]
    jump = config.get("proxyjump")
    return SshTarget(
        alias=host.address,
        hostname=config.get("hostname", host.address),
        port=port,
        user=user,
        identity_files=tuple(os.path.expanduser(p) for p in identities),
        identities_only=config.get("identitiesonly", "no").lower() == "yes",
        known_hosts_files=tuple(os.path.expanduser(p) for p in known_files),
        proxy_jump=None if jump in (None, "none") else jump,
    )


def _local_user() -> str:
    import getpass

    return getpass.getuser()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def keyscan_command(target: SshTarget) -> str:
    """Fetch and record the host's key; works where ``~/.ssh`` does not exist yet."""
    port = "" if target.port == 22 else f"-p {target.port} "
    return (f"mkdir -p -m 700 ~/.ssh && ssh-keyscan {port}{target.hostname} "
            ">> ~/.ssh/known_hosts")


def ssh_command(target: SshTarget) -> str:
    """The ``ssh`` line a person types to reach ``target`` as spark-stack does.

    The alias (so ``~/.ssh/config``'s HostName, ProxyJump, … still apply) with the port, user
    and identity the stack may have overridden.
    """
    parts = ["ssh"]
    if target.port != 22:
        parts += ["-p", str(target.port)]
    if target.identity_files:
        parts += ["-i", target.identity_files[0]]
    parts.append(f"{target.user}@{target.alias}")
    return shlex.join(parts)


def keygen_remove_command(target: SshTarget) -> str:
    return f"ssh-keygen -R {shlex.quote(target.known_hosts_name)}"


def translate_error(exc: BaseException, target: SshTarget) -> SparkStackError:
    """One plain line for any paramiko/socket error met while reaching ``target``."""
    where = f"{target.hostname}:{target.port}"
    if isinstance(exc, SparkStackError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(
            f"the SSH host key of {where} has CHANGED (now {exc.key.get_name()} "
            f"{fingerprint(exc.key)}): refusing to connect (possible man-in-the-middle)",
            fix=f"if the host was reinstalled, run `{keygen_remove_command(target)}`, "
            f"then `{keyscan_command(target)}` after checking the fingerprint",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        keys = ", ".join(target.identity_files) or "the agent's and default keys"
        return AuthenticationError(
            f"Authentication failed for {target.user}@{target.hostname} with key {keys}",
            fix="add the key's .pub to ~/.ssh/authorized_keys on the host, or set "
            "host.identity_file / IdentityFile to the right key",
        )
    if isinstance(exc, socket.gaierror):
        return HostUnreachable(
            f"Could not resolve hostname {target.hostname}: {exc.strerror or exc}",
            fix="check host.address in the stack file (or HostName in ~/.ssh/config)",
        )
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        inner = next(iter(exc.errors.values()), None)
        if inner is not None and not isinstance(
                inner, paramiko.ssh_exception.NoValidConnectionsError):
            return translate_error(inner, target)
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return HostUnreachable(
            f"Connection refused on port {target.port} of {target.hostname}",
            fix="is sshd running on the host, and is the port right (host.port / Port)?",
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return HostUnreachable(
            f"Timed out connecting to {where}",
            fix="is the host on and on this network? check host.address",
        )
    code = getattr(exc, "errno", None)
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
        return HostUnreachable(
            f"No route to host {target.hostname} ({os.strerror(code or 0)})",
            fix="is the host on and on this network? check host.address",
        )
    if isinstance(exc, FileNotFoundError):
        return AuthenticationError(
            f"identity file not found: {exc.filename}",
            fix="fix host.identity_file (or IdentityFile in ~/.ssh/config)",
        )
    if isinstance(exc, EOFError | ConnectionResetError | BrokenPipeError):
        return HostUnreachable(
            f"the SSH connection to {where} was closed unexpectedly",
            fix="check the host's sshd log; run the command again",
        )
    if isinstance(exc, paramiko.SSHException) and _no_handshake(exc):
        # paramiko says "No existing session" when the transport died before auth.
        return HostUnreachable(
            f"{where} did not complete the SSH handshake (no SSH banner in time)",
            fix="is that the SSH port, and is sshd answering? run the command again",
        )
    if isinstance(exc, paramiko.SSHException):
        return HostUnreachable(f"SSH error with {where}: {exc}", fix=_SSH_FIX)
    if isinstance(exc, OSError):
        return HostUnreachable(f"cannot reach {where}: {exc.strerror or exc}",
                               fix="check the host's address and network, and that it is on")
    return HostUnreachable(f"cannot reach {where}: {type(exc).__name__}: {exc}", fix=_SSH_FIX)


_SSH_FIX = "check that ssh reaches the host (`ssh -v` to it shows why not), then run again"


def is_transient(exc: BaseException) -> bool:
    """Errors worth another try: timeouts, resets, a garbled banner."""
    if isinstance(exc, paramiko.BadHostKeyException | paramiko.AuthenticationException):
        return False
    if isinstance(exc, TimeoutError | socket.timeout | ConnectionResetError | EOFError):
        return True
    return isinstance(exc, paramiko.SSHException) and _no_handshake(exc)


def _no_handshake(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "banner" in text or "no existing session" in text


def backoff(attempt: int, base: float = 0.5) -> float:
    """Exponential backoff with ±50 % jitter so parallel retries spread out."""
    return float(base * (2**attempt) * random.uniform(0.5, 1.5))


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Every host key is checked here, against known_hosts read as OpenSSH reads it.

    paramiko is given no known keys (its parser is not OpenSSH's), so it asks this policy about
    every key: known ones pass, revoked and changed ones are refused, unknown ones are refused
    with their fingerprint — or trusted and appended when told to.
    """

    def __init__(self, target: SshTarget, trust: bool, known: list[KnownHost]) -> None:
        self.target = target
        self.trust = trust
        self.known = known

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        target = self.target
        where = f"{target.hostname}:{target.port}"
        verdict, entry = check_host_key(self.known, target.known_hosts_name, key.get_name(),
                                        key.asbytes())
        if verdict is Verdict.KNOWN:
            return
        if verdict is Verdict.REVOKED:
            assert entry is not None
            raise HostKeyError(
                f"the SSH host key of {where} ({key.get_name()} {fingerprint(key)}) is marked "
                f"@revoked in {entry.where}: refusing to connect",
                fix="the host needs a new key (`sudo ssh-keygen -A` after removing the old one, "
                f"on the host); then check its fingerprint and run `{keyscan_command(target)}`",
            )
        if verdict is Verdict.CHANGED:
            assert entry is not None
            raise HostKeyError(
                f"the SSH host key of {where} has CHANGED (now {key.get_name()} "
                f"{fingerprint(key)}, {entry.where} has another): refusing to connect "
                "(possible man-in-the-middle)",
                fix=f"if the host was reinstalled, run `{keygen_remove_command(target)}`, "
                f"then `{keyscan_command(target)}` after checking the fingerprint",
            )
        if not self.trust:
            raise HostKeyError(
                f"unknown SSH host key for {where} ({key.get_name()} {fingerprint(key)})",
                fix=f"check the fingerprint on the host, then run `{keyscan_command(target)}` "
                "(or pass --trust-host-key)",
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        path = Path(target.known_hosts_files[0] if target.known_hosts_files
                    else "~/.ssh/known_hosts").expanduser()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class SshConnection:
    """One live SSH connection (and its jump hosts) used for a whole command."""

    def __init__(self, target: SshTarget, client: paramiko.SSHClient,
                 jumps: Sequence[SshConnection] = ()) -> None:
        self.target = target
        self.client = client
        self._jumps = list(jumps)

    @property
    def display(self) -> str:
        return self.target.display

    @property
    def hostname(self) -> str:
        return self.target.hostname

    @property
    def transport(self) -> paramiko.Transport:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachable(f"the SSH connection to {self.target.display} was lost",
                                  fix="run the command again")
        return transport

    def run(self, argv: Sequence[str], *, timeout: float = RUN_TIMEOUT) -> Completed:
        """Run ``argv`` on the host, every argument quoted; never raises on a non-zero exit."""
        return self.run_script(shlex.join(argv), timeout=timeout, argv=tuple(argv))

    def run_script(self, script: str, *, timeout: float = RUN_TIMEOUT,
                   argv: tuple[str, ...] = ()) -> Completed:
        """Run a shell snippet built by the caller from quoted parts."""
        try:
            channel = self.transport.open_session(timeout=CONNECT_TIMEOUT)
            channel.settimeout(timeout)
            channel.exec_command(script)
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while True:
                drained = False
                while channel.recv_ready():
                    out += channel.recv(_PUMP_CHUNK)
                    drained = True
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(_PUMP_CHUNK)
                    drained = True
                if channel.exit_status_ready() and not channel.recv_ready() \
                        and not channel.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    channel.close()
                    raise HostUnreachable(
                        f"`{script[:60]}` did not finish within {timeout:.0f} s on "
                        f"{self.target.hostname}",
                        fix="check the host's load and disk (`uptime`, `df -h`), then run again")
                if not drained:
                    time.sleep(0.005)
            code = channel.recv_exit_status()
            channel.close()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise translate_error(exc, self.target) from exc
        return Completed(argv or (script,), code, out.decode(errors="replace"),
                         err.decode(errors="replace"))

    def exec_channel(self, command: str) -> paramiko.Channel:
        """A session channel running ``command`` (for byte streams such as dial-stdio)."""
        try:
            channel = self.transport.open_session(timeout=CONNECT_TIMEOUT)
            channel.exec_command(command)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise translate_error(exc, self.target) from exc
        return channel

    def direct_tcpip(self, host: str, port: int) -> paramiko.Channel:
        """A channel to ``host:port`` as seen from the SSH host (a port forward)."""
        try:
            return self.transport.open_channel(
                "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=CONNECT_TIMEOUT)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise HostUnreachable(
                f"cannot forward to {host}:{port} through {self.target.hostname}: {exc}",
                fix="is the model's port right, and does sshd allow TCP forwarding?",
            ) from exc

    def hold(self, command: str) -> HeldCommand:
        """Run ``command`` and keep it running until :meth:`HeldCommand.release` (a lock)."""
        return HeldCommand(self.exec_channel(command))

    def forward(self, remote_host: str, remote_port: int,
                local_port: int = 0) -> tuple[Forwarder, int]:
        """``127.0.0.1:local_port`` here (0: any free port) → ``remote_host:remote_port`` there."""
        return forward_tcp(self, remote_host, remote_port, local_port)

    def is_active(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        self.client.close()
        for jump in reversed(self._jumps):
            jump.close()

    def __enter__(self) -> SshConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HeldCommand:
    """A remote command that runs while we hold its channel (its stdin stays open)."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel
        self._buffer = b""

    def read_line(self, timeout: float) -> str:
        """The next line of its output ('' at its end); TimeoutError when none comes in time."""
        self._channel.settimeout(timeout)
        try:
            while b"\n" not in self._buffer:
                chunk = self._channel.recv(1024)
                if not chunk:
                    break
                self._buffer += chunk
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise TimeoutError(str(exc)) from exc
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")

    def read_rest(self, timeout: float) -> str:
        self._channel.settimeout(timeout)
        try:
            while chunk := self._channel.recv(1024):
                self._buffer += chunk
        except (OSError, EOFError, paramiko.SSHException):
            pass
        rest, self._buffer = self._buffer, b""
        return rest.decode(errors="replace")

    def release(self) -> None:
        """End its stdin and wait (briefly) for it to exit, so the next holder sees it gone."""
        try:
            self._channel.shutdown_write()
            deadline = time.monotonic() + 2.0
            while not self._channel.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.01)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        self._channel.close()


def connect(target: SshTarget, *, trust_host_key: bool = False,
            timeout: float | None = None, attempts: int | None = None,
            ssh_config_text: str | None = None) -> SshConnection:
    """Open the connection, through any ProxyJump hosts, retrying transient errors.

    ``timeout`` and ``attempts`` default to :data:`CONNECT_TIMEOUT` and
    :data:`CONNECT_ATTEMPTS`, read at call time.
    """
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    attempts = CONNECT_ATTEMPTS if attempts is None else attempts
    config_text = read_ssh_config() if ssh_config_text is None else ssh_config_text
    jumps: list[SshConnection] = []
    sock: paramiko.Channel | None = None
    if target.proxy_jump:
        # ProxyJump a,b: connect to a, through it to b, through b to the target.
        via: SshConnection | None = None
        for hop in target.proxy_jump.split(","):
            hop_target = resolve_target(_hop_host(hop), config_text)
            hop_target = SshTarget(**{**hop_target.__dict__, "proxy_jump": None})
            via = _connect_once_with_retries(hop_target, trust_host_key, timeout, attempts,
                                             via.direct_tcpip(hop_target.hostname,
                                                              hop_target.port) if via else None)
            jumps.append(via)
        assert via is not None
        sock = via.direct_tcpip(target.hostname, target.port)
    try:
        conn = _connect_once_with_retries(target, trust_host_key, timeout, attempts, sock)
    except BaseException:
        for jump in reversed(jumps):
            jump.close()
        raise
    conn._jumps = jumps
    return conn


def _hop_host(hop: str) -> SshHost:
    user, _, rest = hop.strip().rpartition("@")
    address, _, port = rest.partition(":")
    return SshHost(address=address, user=user or None, port=int(port) if port else None)


def _connect_once_with_retries(target: SshTarget, trust: bool, timeout: float, attempts: int,
                               sock: paramiko.Channel | None) -> SshConnection:
    known = read_known_hosts([*target.known_hosts_files, SYSTEM_KNOWN_HOSTS])
    for attempt in range(attempts):
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_HostKeyPolicy(target, trust, known))
        try:
            client.connect(
                target.hostname,
                port=target.port,
                username=target.user,
                key_filename=list(target.identity_files) or None,  # type: ignore[arg-type]
                allow_agent=not target.identities_only,
                look_for_keys=not target.identity_files,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                sock=sock,
                disabled_algorithms=_unknown_host_key_types(known, target),
            )
        except BaseException as exc:
            client.close()
            # A jump channel is spent after one try; only a direct socket can be retried.
            if sock is None and attempt + 1 < attempts and is_transient(exc):
                time.sleep(backoff(attempt))
                continue
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise translate_error(exc, target) from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE_SECONDS)
        return SshConnection(target, client)
    raise HostUnreachable(f"cannot reach {target.display}", fix=_SSH_FIX)  # pragma: no cover


def _unknown_host_key_types(known: list[KnownHost], target: SshTarget) -> dict[str, list[str]]:
    """Host key algorithms to leave out so that the server shows a key type known_hosts has
    for it (OpenSSH prefers those; paramiko only does with its own parser)."""
    types = {e.key_type for e in known if e.marker is None
             and e.matches(target.known_hosts_name)}
    if not types:
        return {}
    if "ssh-rsa" in types:
        types |= {"rsa-sha2-512", "rsa-sha2-256"}
    offered: tuple[str, ...] = paramiko.Transport._preferred_keys  # type: ignore[attr-defined]
    return {"keys": [name for name in offered if name not in types]}


class Forwarder:
    """A local listening socket whose every connection is piped into a fresh SSH channel.

    ``open_channel`` makes the remote end for each accepted connection: ``docker system
    dial-stdio`` for the docker API, ``direct-tcpip`` for a port forward.
    """

    def __init__(self, listener: socket.socket, open_channel: Callable[[], paramiko.Channel]):
        self._listener = listener
        self._open_channel = open_channel
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                local, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(local,), daemon=True).start()

    def _serve(self, local: socket.socket) -> None:
        try:
            channel = self._open_channel()
        except Exception:
            local.close()
            return
        upstream = threading.Thread(target=_pump_to_channel, args=(local, channel), daemon=True)
        upstream.start()
        _pump_to_socket(channel, local)
        # The remote end is done: free its session now, not when the client gets round to
        # closing its socket (sshd allows only 10 sessions per connection).
        _close_quietly(channel)
        upstream.join(timeout=5.0)
        local.close()

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()


def _pump_to_channel(local: socket.socket, channel: paramiko.Channel) -> None:
    try:
        while data := local.recv(_PUMP_CHUNK):
            channel.sendall(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass
    # HTTP clients never half-close: EOF means done, and a lingering session would count
    # against sshd's MaxSessions (10 per connection).
    _close_quietly(channel)


def _close_quietly(channel: paramiko.Channel) -> None:
    try:
        channel.close()
    except (OSError, EOFError, paramiko.SSHException):
        pass


def _pump_to_socket(channel: paramiko.Channel, local: socket.socket) -> None:
    try:
        while data := channel.recv(_PUMP_CHUNK):
            local.sendall(data)
        local.shutdown(socket.SHUT_WR)
    except (OSError, EOFError, paramiko.SSHException):
        pass


def forward_tcp(conn: SshConnection, remote_host: str, remote_port: int,
                local_port: int = 0) -> tuple[Forwarder, int]:
    """Forward ``127.0.0.1:local_port`` (0 = any free port) to ``remote_host:remote_port``."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", local_port))
    listener.listen(16)
    port = int(listener.getsockname()[1])
    return Forwarder(listener, lambda: conn.direct_tcpip(remote_host, remote_port)), port
