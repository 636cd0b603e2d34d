"""Where the stand-in GB10 host lives: names, addresses, paths, and the facts fixtures get.

One stand-in per machine, shared by every checkout on it: its state is machine-wide
(``/var/lib`` for what should survive, ``/run`` for what dies with the processes), so two
clones never fight over the ``sparkhost`` namespace with different keys.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

NETNS = "sparkhost"
HOST_SIDE_LINK = "sparkhost0"
GUEST_LINK = "eth0"
HOST_SIDE_ADDRESS = "10.213.0.1"
ADDRESS = "10.213.0.2"
PREFIX_LEN = 24
SSH_PORT = 22
SSH_USER = "root"
SSH_ALIAS = "gb10-test"

SIM_IMAGE = "spark-stack/vllm-sim:test"
VLLM_IMAGE = "vllm/vllm-openai:v0.28.0"
SIM_HASH_LABEL = "spark-stack.testhost.sim-hash"
DAEMON_LABEL = "spark-stack-testhost=1"

DATA_DIR = Path("/var/lib/spark-stack-testhost")
RUN_DIR = Path("/run/spark-stack-testhost")
NETNS_PATH = Path("/run/netns") / NETNS

DOCKER_DATA_ROOT = DATA_DIR / "docker"
DOCKER_EXEC_ROOT = RUN_DIR / "exec"
DOCKER_SOCK = RUN_DIR / "docker.sock"
DOCKER_PIDFILE = RUN_DIR / "dockerd.pid"
DOCKER_ARGS_FILE = RUN_DIR / "dockerd.args"
DOCKER_LOG = DATA_DIR / "dockerd.log"

SSH_DIR = DATA_DIR / "ssh"
SSHD_CONFIG = SSH_DIR / "sshd_config"
SSHD_HOST_KEY = SSH_DIR / "ssh_host_ed25519_key"
SSHD_PIDFILE = RUN_DIR / "sshd.pid"
SSHD_LOG = DATA_DIR / "sshd.log"
CLIENT_KEY = SSH_DIR / "id_ed25519"
AUTHORIZED_KEYS = SSH_DIR / "authorized_keys"
KNOWN_HOSTS = SSH_DIR / "known_hosts"
SSH_CONFIG = SSH_DIR / "ssh_config"
# sshd refuses to start without its privilege-separation directory.
SSHD_PRIVSEP_DIR = Path("/run/sshd")
# The stand-in's /proc/meminfo: bind-mounted over it for sshd's sessions, so a test can make the
# host report little MemAvailable (the unified-memory preflight) and put it back.
MEMINFO = DATA_DIR / "meminfo"

LOCK_FILE = RUN_DIR / "lock"
BUILD_DIR = DATA_DIR / "build"


def in_netns_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` run inside the stand-in's network namespace.

    ``nsenter --net`` rather than ``ip netns exec``: the latter remounts /sys and breaks
    dockerd ("Devices cgroup isn't mounted").
    """
    return ["nsenter", f"--net={NETNS_PATH}", *argv]


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
            in_netns_argv(argv),
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
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ssh_dir / "id_ed25519"
        key.write_bytes(self.key_path.read_bytes())
        key.chmod(0o600)
        (ssh_dir / "id_ed25519.pub").write_bytes(self.key_path.with_suffix(".pub").read_bytes())
        (ssh_dir / "known_hosts").write_bytes(self.known_hosts_path.read_bytes())
        (ssh_dir / "config").write_text(client_ssh_config(key, ssh_dir / "known_hosts"))
        return ssh_dir


def client_ssh_config(key: Path, known_hosts: Path) -> str:
    """An ``ssh_config`` that reaches the stand-in by alias or by address."""
    return (
        f"Host {SSH_ALIAS} {ADDRESS}\n"
        f"    HostName {ADDRESS}\n"
        f"    User {SSH_USER}\n"
        f"    Port {SSH_PORT}\n"
        f"    IdentityFile {key}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {known_hosts}\n"
        "    StrictHostKeyChecking yes\n"
        "    BatchMode yes\n"
    )
