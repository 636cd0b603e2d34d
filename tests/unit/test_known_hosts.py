"""known_hosts read as OpenSSH reads it: patterns, negation, hashes, @revoked, bad lines."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from spark_stack.cli import main
from spark_stack.deploy.known_hosts import (
    KnownHost,
    Verdict,
    check_host_key,
    parse_known_hosts,
)
from spark_stack.deploy.ssh import SshTarget, connect
from spark_stack.errors import HostKeyError


def _entry(patterns: str, marker: str | None = None) -> KnownHost:
    return KnownHost("kh", 1, marker, tuple(patterns.split(",")), "ssh-ed25519", b"k")


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [
        ("spark", "spark", True),
        ("SPARK", "spark", True),
        ("*.lan", "gb10.lan", True),
        ("gb1?.lan", "gb10.lan", True),
        ("gb1?.lan", "gb100.lan", False),
        ("*", "[10.0.0.5]:2222", True),
        ("[10.0.0.5]:*", "[10.0.0.5]:2222", True),
        ("10.0.0.5", "[10.0.0.5]:2222", False),
        ("*.lan,!evil.lan", "evil.lan", False),
        ("!evil.lan,*.lan", "good.lan", True),
        ("!evil.lan", "good.lan", False),  # a negation alone matches nothing
        ("a.b", "aXb", False),  # '.' is literal
    ],
)
def test_host_patterns_match_as_openssh(patterns: str, name: str, expected: bool) -> None:
    assert _entry(patterns).matches(name) is expected


def test_hashed_names_match() -> None:
    salt = b"0123456789abcdefghij"
    digest = hmac.new(salt, b"[10.0.0.5]:2222", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    assert _entry(hashed).matches("[10.0.0.5]:2222")
    assert not _entry(hashed).matches("10.0.0.5")


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("spark ssh-ed25519", "expected: host patterns, key type, base64 key"),
        ("spark ssh-ed25519 not*base64", "not valid base64"),
        ("@revokd * ssh-ed25519 AAAA", "unknown marker '@revokd'"),
        ("spark ssh-rsa " + base64.b64encode(b"\0\0\0\x0bssh-ed25519xx").decode(),
         "not a ssh-rsa key"),
    ],
)
def test_a_bad_line_names_file_and_line(line: str, why: str) -> None:
    with pytest.raises(HostKeyError) as caught:
        parse_known_hosts(f"# comment\n\n{line}\n", "/home/u/.ssh/known_hosts")
    assert caught.value.message.startswith("/home/u/.ssh/known_hosts:3: ")
    assert why in caught.value.message
    assert caught.value.exit_code == 3
    assert caught.value.fix and "line 3 of /home/u/.ssh/known_hosts" in caught.value.fix


def _line(patterns: str, key: paramiko.PKey, marker: str = "") -> str:
    return f"{marker} {patterns} {key.get_name()} {key.get_base64()}".strip()


def test_verdicts() -> None:
    key, other = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()

    def verdict(text: str) -> Verdict:
        entries = parse_known_hosts(text, "kh")
        return check_host_key(entries, "spark", key.get_name(), key.asbytes())[0]

    assert verdict(_line("*", key)) is Verdict.KNOWN
    assert verdict(_line("*", other)) is Verdict.CHANGED
    assert verdict(_line("other", other)) is Verdict.UNKNOWN
    assert verdict(_line("*", key) + "\n" + _line("*", key, "@revoked")) is Verdict.REVOKED
    assert verdict(_line("*", other, "@cert-authority")) is Verdict.UNKNOWN


# --- against a real SSH server on 127.0.0.1 (paramiko's, in a thread) ----------------------


class _RefuseEveryone(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_FAILED


@pytest.fixture
def extra_host_keys() -> list[paramiko.PKey]:
    return []


@pytest.fixture
def ssh_server(extra_host_keys: list[paramiko.PKey]) -> Iterator[tuple[int, paramiko.PKey]]:
    """An SSH server on 127.0.0.1 that shows its host key and refuses every login."""
    host_key = paramiko.ECDSAKey.generate()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    stop = threading.Event()
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                continue
            transport = paramiko.Transport(sock)
            transport.add_server_key(host_key)
            for key in extra_host_keys:
                transport.add_server_key(key)
            transports.append(transport)
            try:
                transport.start_server(server=_RefuseEveryone())
            except (paramiko.SSHException, EOFError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1]), host_key
    stop.set()
    thread.join(timeout=2)
    for transport in transports:
        transport.close()
    listener.close()


def _target(port: int, known: Path) -> SshTarget:
    return SshTarget(alias="loop", hostname="127.0.0.1", port=port, user="u",
                     known_hosts_files=(str(known),))


@pytest.fixture
def no_agent(monkeypatch: pytest.MonkeyPatch, fake_home: Path) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def test_a_wildcard_line_is_honoured(
    ssh_server: tuple[int, paramiko.PKey], tmp_path: Path, no_agent: None
) -> None:
    port, host_key = ssh_server
    known = tmp_path / "known_hosts"
    known.write_text(_line("[127.0.0.*]:*", host_key) + "\n")
    with pytest.raises(Exception) as caught:  # the key passes; the login then fails
        connect(_target(port, known), attempts=1, timeout=5, ssh_config_text="")
    assert not isinstance(caught.value, HostKeyError), caught.value
    assert caught.value.exit_code == 3  # type: ignore[attr-defined]


RSA_KEY = paramiko.RSAKey.generate(2048)


@pytest.mark.parametrize("extra_host_keys", [[RSA_KEY]])
def test_the_server_shows_the_key_type_known_hosts_has(
    ssh_server: tuple[int, paramiko.PKey], tmp_path: Path, no_agent: None
) -> None:
    port, _ = ssh_server  # serves an ECDSA key (paramiko's preference) and an RSA key
    known = tmp_path / "known_hosts"
    known.write_text(_line(f"[127.0.0.1]:{port}", RSA_KEY) + "\n")
    with pytest.raises(Exception) as caught:  # the RSA key passes; the login then fails
        connect(_target(port, known), attempts=1, timeout=5, ssh_config_text="")
    assert not isinstance(caught.value, HostKeyError), caught.value


def test_a_revoked_key_is_refused(
    ssh_server: tuple[int, paramiko.PKey], tmp_path: Path, no_agent: None
) -> None:
    port, host_key = ssh_server
    known = tmp_path / "known_hosts"
    known.write_text(_line("*", host_key) + "\n" + _line("*", host_key, "@revoked") + "\n")
    with pytest.raises(HostKeyError) as caught:
        connect(_target(port, known), attempts=1, timeout=5, ssh_config_text="")
    assert f"is marked @revoked in {known}:2" in caught.value.message


def test_a_changed_key_is_refused(
    ssh_server: tuple[int, paramiko.PKey], tmp_path: Path, no_agent: None
) -> None:
    port, _ = ssh_server
    known = tmp_path / "known_hosts"
    known.write_text(_line(f"[127.0.0.1]:{port}", paramiko.ECDSAKey.generate()) + "\n")
    with pytest.raises(HostKeyError) as caught:
        connect(_target(port, known), attempts=1, timeout=5, ssh_config_text="")
    assert "has CHANGED" in caught.value.message and f"{known}:1" in caught.value.message


def test_a_malformed_line_exits_3_naming_file_and_line(
    tmp_path: Path, no_agent: None, capsys: pytest.CaptureFixture[str]
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("spark ssh-ed25519 AAAA@@\n")
    config = Path.home() / ".ssh" / "config"
    config.parent.mkdir(mode=0o700)
    config.write_text(f"Host loop\n  HostName 127.0.0.1\n  UserKnownHostsFile {known}\n")
    stack = tmp_path / "s.yaml"
    stack.write_text("name: kh\nhost: {address: loop, port: 1, user: u}\n"
                     "models:\n  - name: m\n    preset: qwen3.6-35b-a3b-nvfp4-redhat\n")
    assert main(["up", "-s", str(stack)]) == 3
    err = capsys.readouterr().err
    assert f"{known}:1: unreadable known_hosts line" in err
    assert "internal error" not in err and "fix: correct or delete line 1" in err
