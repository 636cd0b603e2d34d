"""The stand-in host's pure parts: configs it writes, ldd parsing, prerequisite errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import paramiko
import pytest

from tests.testhost import host
from tests.testhost.errors import TestHostError
from tests.testhost.image import parse_ldd
from tests.testhost.layout import ADDRESS, SSH_ALIAS, client_ssh_config
from tests.testhost.sshd import sshd_config


def test_client_ssh_config_resolves_alias_and_address_with_paramiko(tmp_path: Path) -> None:
    config = paramiko.SSHConfig.from_text(
        client_ssh_config(tmp_path / "key", tmp_path / "known_hosts")
    )
    for name in (SSH_ALIAS, ADDRESS):
        entry = config.lookup(name)
        assert entry["hostname"] == ADDRESS
        assert entry["port"] == "22"
        assert entry["user"] == "root"
        identity_files: object = entry["identityfile"]  # a list at run time, typed as str
        assert identity_files == [str(tmp_path / "key")]
        assert entry["userknownhostsfile"] == str(tmp_path / "known_hosts")


def test_sshd_config_is_key_only_and_points_docker_at_the_stand_in() -> None:
    options = dict(line.split(" ", 1) for line in sshd_config().splitlines())
    assert options["PasswordAuthentication"] == "no"
    assert options["KbdInteractiveAuthentication"] == "no"
    assert options["UsePAM"] == "no"
    assert options["ListenAddress"] == f"{ADDRESS}:22"
    assert options["SetEnv"] == "DOCKER_HOST=unix:///run/spark-stack-testhost/docker.sock"


@pytest.mark.skipif(shutil.which("ldd") is None, reason="needs ldd")
def test_parse_ldd_finds_libc_and_the_loader_of_a_real_binary() -> None:
    sh = Path(shutil.which("sh") or "/bin/sh").resolve()
    out = subprocess.run(["ldd", str(sh)], capture_output=True, text=True, check=True).stdout
    libs = parse_ldd(out)
    assert any(lib.name.startswith("libc.so") for lib in libs)
    assert any(lib.name.startswith("ld-linux") for lib in libs)
    assert all(lib.is_absolute() and lib.exists() for lib in libs)


def test_parse_ldd_skips_the_vdso_and_missing_libraries() -> None:
    out = (
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibgone.so.1 => not found\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f00)\n"
    )
    assert parse_ldd(out) == {Path("/lib/x86_64-linux-gnu/libc.so.6")}


def test_missing_daemon_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "REQUIRED_COMMANDS", ("ip", "no-such-daemon-xyz"))
    with pytest.raises(TestHostError) as failure:
        host.check_prerequisites()
    assert "no-such-daemon-xyz" in failure.value.message
    assert failure.value.fix is not None and "bash scripts/test.sh" in failure.value.fix


def test_the_second_host_shares_nothing_with_the_first_but_the_client_key() -> None:
    from tests.testhost.layout import HOST1, HOST2, LINK

    for part in ("netns", "host_side_link", "guest_link_tmp", "host_side_address", "address",
                 "ssh_alias", "data_dir", "run_dir", "subnet", "daemon_label",
                 "docker_sock", "docker_pidfile", "docker_data_root", "sshd_pidfile",
                 "sshd_host_key", "lock_file", "meminfo", "known_hosts"):
        assert getattr(HOST1, part) != getattr(HOST2, part), part
    assert HOST1.client_key == HOST2.client_key
    assert LINK.subnet not in (HOST1.subnet, HOST2.subnet)
    assert all(len(name) <= 15 for name in (*LINK.interfaces, HOST2.host_side_link,
                                            HOST2.guest_link_tmp))


def test_the_first_host_keeps_its_historic_names() -> None:
    from tests.testhost.layout import HOST1

    assert (HOST1.netns, HOST1.address, HOST1.ssh_alias) == ("sparkhost", "10.213.0.2",
                                                             "gb10-test")
    assert str(HOST1.docker_sock) == "/run/spark-stack-testhost/docker.sock"
    assert HOST1.daemon_label == "spark-stack-testhost=1"


@pytest.mark.parametrize(("argv", "parsed"), [
    (["up"], ("up", 1)), (["up", "--hosts", "2"], ("up", 2)), (["down"], ("down", 0)),
    (["down", "--host", "2"], ("down", 2)), (["status"], ("status", 0)),
    (["up", "--hosts", "3"], None), (["down", "--hosts", "2"], None), (["stop"], None),
])
def test_the_cli_takes_the_second_host_options(
    argv: list[str], parsed: tuple[str, int] | None
) -> None:
    from tests.testhost.__main__ import _parse

    assert _parse(argv) == parsed
