"""Where the stand-in GB10 hosts live: names, addresses, paths, and the facts fixtures get.

One stand-in per machine, shared by every checkout on it: its state is machine-wide
(``/var/lib`` for what should survive, ``/run`` for what dies with the processes), so two
clones never fight over the ``sparkhost`` namespace with different keys.

A second host (``sparkhost2``, for the two-Spark tests) has its own namespace, /24, dockerd,
sshd, state directories and lock, so bringing it up or down never touches the first. It
accepts the first host's client key, so one ``~/.ssh`` reaches both. The two namespaces are
joined by a veth pair that stands in for the ConnectX-7 cable (:data:`LINK`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SIM_IMAGE = "spark-stack/vllm-sim:test"
VLLM_IMAGE = "vllm/vllm-openai:v0.28.0"
SIM_HASH_LABEL = "spark-stack.testhost.sim-hash"
SSH_USER = "root"
SSH_PORT = 22
PREFIX_LEN = 24
# sshd refuses to start without its privilege-separation directory.
SSHD_PRIVSEP_DIR = Path("/run/sshd")


@dataclass(frozen=True)
class Layout:
    """One stand-in host's names and places (pure data; nothing is created by reading it)."""

    number: int
    netns: str
    host_side_link: str
    # The guest end's name while it is created (then renamed to ``guest_link`` inside).
    guest_link_tmp: str
    host_side_address: str
    address: str
    ssh_alias: str
    data_dir: Path
    run_dir: Path
    # Where the client key lives: the first host's, for every host (one key reaches all).
    client_ssh_dir: Path
    guest_link: str = "eth0"

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns

    @property
    def subnet(self) -> str:
        return self.address.rsplit(".", 1)[0] + ".0/24"

    @property
    def daemon_label(self) -> str:
        return f"spark-stack-testhost={self.number}"

    @property
    def docker_data_root(self) -> Path:
        return self.data_dir / "docker"

    @property
    def docker_exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def docker_sock(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def docker_pidfile(self) -> Path:
        return self.run_dir / "dockerd.pid"

    @property
    def docker_args_file(self) -> Path:
        return self.run_dir / "dockerd.args"

    @property
    def docker_log(self) -> Path:
        return self.data_dir / "dockerd.log"

    @property
    def ssh_dir(self) -> Path:
        return self.data_dir / "ssh"

    @property
    def sshd_config(self) -> Path:
        return self.ssh_dir / "sshd_config"

    @property
    def sshd_host_key(self) -> Path:
        return self.ssh_dir / "ssh_host_ed25519_key"

    @property
    def sshd_pidfile(self) -> Path:
        return self.run_dir / "sshd.pid"

    @property
    def sshd_log(self) -> Path:
        return self.data_dir / "sshd.log"

    @property
    def client_key(self) -> Path:
        return self.client_ssh_dir / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.ssh_dir / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.ssh_dir / "ssh_config"

    @property
    def meminfo(self) -> Path:
        """The host's /proc/meminfo: bind-mounted over it for sshd's sessions, so a test can
        make the host report little MemAvailable (the unified-memory preflight)."""
        return self.data_dir / "meminfo"

    @property
    def lock_file(self) -> Path:
        return self.run_dir / "lock"

    @property
    def build_dir(self) -> Path:
        return self.data_dir / "build"

    def in_netns_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's network namespace.

        ``nsenter --net`` rather than ``ip netns exec``: the latter remounts /sys and breaks
        dockerd ("Devices cgroup isn't mounted").
        """
        return ["nsenter", f"--net={self.netns_path}", *argv]


HOST1 = Layout(
    number=1,
    netns="sparkhost",
    host_side_link="sparkhost0",
    guest_link_tmp="sparkhost1",
    host_side_address="10.213.0.1",
    address="10.213.0.2",
    ssh_alias="gb10-test",
    data_dir=Path("/var/lib/spark-stack-testhost"),
    run_dir=Path("/run/spark-stack-testhost"),
    client_ssh_dir=Path("/var/lib/spark-stack-testhost/ssh"),
)
HOST2 = Layout(
    number=2,
    netns="sparkhost2",
    host_side_link="spark2host0",
    guest_link_tmp="spark2host1",
    host_side_address="10.213.1.1",
    address="10.213.1.2",
    ssh_alias="gb10-test-2",
    data_dir=Path("/var/lib/spark-stack-testhost2"),
    run_dir=Path("/run/spark-stack-testhost2"),
    client_ssh_dir=HOST1.ssh_dir,
)
HOSTS = (HOST1, HOST2)


@dataclass(frozen=True)
class LinkLayout:
    """The stand-in CX7 cable: a veth pair from host 1's namespace to host 2's."""

    interfaces: tuple[str, str]
    addresses: tuple[str, str]
    prefix_len: int
    default_mtu: int

    @property
    def subnet(self) -> str:
        return self.addresses[0].rsplit(".", 1)[0] + ".0/24"


LINK = LinkLayout(
    interfaces=("cx7a", "cx7b"),
    addresses=("10.214.0.1", "10.214.0.2"),
    prefix_len=24,
    # NVIDIA's two-Spark setup uses jumbo frames; 1500 is the doctor's failure case.
    default_mtu=9000,
)

# The first host's names, as the single-host code and tests have always imported them.
NETNS = HOST1.netns
HOST_SIDE_LINK = HOST1.host_side_link
GUEST_LINK = HOST1.guest_link
HOST_SIDE_ADDRESS = HOST1.host_side_address
ADDRESS = HOST1.address
SSH_ALIAS = HOST1.ssh_alias
DAEMON_LABEL = HOST1.daemon_label
DATA_DIR = HOST1.data_dir
RUN_DIR = HOST1.run_dir
NETNS_PATH = HOST1.netns_path
DOCKER_DATA_ROOT = HOST1.docker_data_root
DOCKER_SOCK = HOST1.docker_sock
DOCKER_PIDFILE = HOST1.docker_pidfile
SSHD_PIDFILE = HOST1.sshd_pidfile
CLIENT_KEY = HOST1.client_key
KNOWN_HOSTS = HOST1.known_hosts
SSH_CONFIG = HOST1.ssh_config
MEMINFO = HOST1.meminfo
BUILD_DIR = HOST1.build_dir


def in_netns_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` run inside the first host's network namespace."""
    return HOST1.in_netns_argv(argv)


@dataclass(frozen=True)
class HostInfo:
    """A running stand-in GB10 host, as tests and fixtures see it."""

    address: str
    port: int
    user: str
    ssh_alias: str
    key_path: Path
    known_hosts_path: Path
    ssh_config_path: Path
    docker_sock_path: Path
    sim_image: str
    vllm_image: str
    netns: str
    host_side_address: str
    daemon_id: str

    @property
    def docker_url(self) -> str:
        """The docker SDK's URL for this host over ssh (the SDK needs the port spelled out)."""
        return f"ssh://{self.user}@{self.address}:{self.port}"

    @property
    def local_docker_url(self) -> str:
        """The test daemon's own socket, for inspecting it without ssh."""
        return f"unix://{self.docker_sock_path}"

    @property
    def image_tags(self) -> tuple[str, ...]:
        return (self.sim_image, self.vllm_image)

    def run_in_netns(
        self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a local command inside the host's network namespace (sees 127.0.0.1 of the host)."""
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.netns}", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
        )

    def write_ssh_home(self, home: Path) -> Path:
        """Give ``home`` an ``.ssh`` that reaches this host, as a user's machine would have.

        The docker SDK and OpenSSH read ``$HOME/.ssh/config`` and ``known_hosts``; pointing
        ``HOME`` at ``home`` lets a test use them without touching the real home.
        """
        return write_ssh_home(home, (self,))


def write_ssh_home(home: Path, hosts: Sequence[HostInfo]) -> Path:
    """``home/.ssh`` reaching every host in ``hosts`` (they share one client key)."""
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ssh_dir / "id_ed25519"
    key.write_bytes(hosts[0].key_path.read_bytes())
    key.chmod(0o600)
    (ssh_dir / "id_ed25519.pub").write_bytes(hosts[0].key_path.with_suffix(".pub").read_bytes())
    known_hosts = ssh_dir / "known_hosts"
    known_hosts.write_bytes(b"".join(host.known_hosts_path.read_bytes() for host in hosts))
    (ssh_dir / "config").write_text(
        "".join(
            client_ssh_config(key, known_hosts, host.ssh_alias, host.address) for host in hosts
        )
    )
    return ssh_dir


def client_ssh_config(
    key: Path, known_hosts: Path, alias: str = SSH_ALIAS, address: str = ADDRESS
) -> str:
    """An ``ssh_config`` that reaches a stand-in by alias or by address."""
    return (
        f"Host {alias} {address}\n"
        f"    HostName {address}\n"
        f"    User {SSH_USER}\n"
        f"    Port {SSH_PORT}\n"
        f"    IdentityFile {key}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {known_hosts}\n"
        "    StrictHostKeyChecking yes\n"
        "    BatchMode yes\n"
    )
