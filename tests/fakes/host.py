"""An in-memory GB10 behind the connector protocol (:mod:`spark_stack.deploy.connector`).

Docker is a dict of containers and images; a container "serves" when it runs and its model is
not set to fail. The stack lock is the real ``flock`` script run by a local shell with the fake
host's own ``HOME``, so lock semantics are the real ones. Facts are a healthy Spark's.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spark_stack.deploy.actions import (
    LABEL_SECRETS_HASH,
    LABEL_SPEC,
    Observed,
    observed_from_inspect,
)
from spark_stack.deploy.connector import Completed, HostSession
from spark_stack.deploy.lock import LOCK_DIR
from spark_stack.deploy.report import QuietReporter
from spark_stack.deploy.up import Edges, UpOptions, up
from spark_stack.deployment import as_written
from spark_stack.errors import HostUnreachable
from spark_stack.spec import LABEL_MODEL, LABEL_RANK, ContainerSpec
from spark_stack.stack import schema

M = "@@spark-stack@@"


def facts_output(*, mem_available_kib: int = 120_000_000, listening: str = "") -> str:
    return f"""{M} home
/home/nvidia
{M} docker
{{"Server":{{"Version":"28.0.1","ApiVersion":"1.48"}}}}
{M} rc 0
{M} runtimes
{{"nvidia":{{}},"runc":{{}}}} "/var/lib/docker"
{M} arch
aarch64
{M} nvidia
0, NVIDIA GB10, [N/A], [N/A], 0
{M} rc 0
{M} meminfo
MemTotal:       127535460 kB
MemAvailable:   {mem_available_kib} kB
{M} df
Filesystem     1024-blocks      Used Available Capacity Mounted on
/dev/nvme0n1p2  3844551928 400000000 3244551928      11% /
{M} listening
{listening}
{M} hftoken
yes
"""


class _ShellHeld:
    """The lock script run by a real shell: held while its stdin stays open."""

    def __init__(self, command: str, home: Path) -> None:
        self._process = subprocess.Popen(
            ["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "HOME": str(home)})

    def read_line(self, timeout: float) -> str:
        assert self._process.stdout is not None
        return self._process.stdout.readline().decode().rstrip("\n")

    def read_rest(self, timeout: float) -> str:
        assert self._process.stdout is not None
        return self._process.stdout.read().decode()

    def release(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=10)


@dataclass
class FakeConnection:
    home: Path
    hostname: str = "gb10.test"
    facts: str = field(default_factory=facts_output)
    scripts: list[str] = field(default_factory=list)
    # Scripted answers: the first whose marker the script contains gives its stdout.
    answers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def display(self) -> str:
        return f"nvidia@{self.hostname}"

    def run_script(self, script: str, *, timeout: float = 60,
                   argv: tuple[str, ...] = ()) -> Completed:
        self.scripts.append(script)
        if LOCK_DIR in script:  # the lock's files live in the fake home: a real shell
            done = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                                  env={**os.environ, "HOME": str(self.home)}, timeout=10)
            return Completed((script,), done.returncode, done.stdout, done.stderr)
        if script.startswith(f"echo '{M} home'"):
            return Completed((script,), 0, self.facts, "")
        for marker, stdout in self.answers:
            if marker in script:
                return Completed((script,), 0, stdout, "")
        return Completed((script,), 0, "", "")  # nvidia-smi for status: nothing listed

    def hold(self, command: str) -> _ShellHeld:
        return _ShellHeld(command, self.home)

    def forward(self, remote_host: str, remote_port: int, local_port: int = 0) -> Any:
        raise AssertionError("the fake host has no port forwarding")

    def close(self) -> None:
        pass


@dataclass
class FakeDocker:
    """Containers and images as dicts shaped like the docker API's answers."""

    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    registry: dict[str, dict[str, Any]] = field(default_factory=dict)
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)  # models whose server exits at start
    fail_if: Callable[[ContainerSpec], bool] | None = None  # ... or specs that do
    loading: set[str] = field(default_factory=set)  # models that run but do not serve yet
    calls: list[str] = field(default_factory=list)
    # A model across hosts: whether its world of ranks formed (set by FakeHosts).
    world: Callable[[str], bool] | None = None
    daemon_down: bool = False  # the docker daemon does not answer
    # vLLM at VLLM_LOGGING_LEVEL=WARNING: no INFO lines, so no rank's "assigned as" line.
    warnings_only: bool = False
    # Models whose start the docker daemon's stopping interrupts (see inspect).
    daemon_stops_at: set[str] = field(default_factory=set)
    stopping: bool = False

    def _check_daemon(self) -> None:
        if self.daemon_down:
            raise HostUnreachable("the docker API on this fake host does not answer through "
                                  "SSH (`docker system dial-stdio`): connection refused",
                                  fix="start docker on the host")
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def add_image(self, name: str, arch: str = "arm64") -> None:
        self.images[name] = {"Id": f"sha256:{len(self.images):064d}", "Architecture": arch,
                             "RepoDigests": []}

    def stack_containers(self, stack: str) -> list[Observed]:
        self._check_daemon()
        return [observed_from_inspect(c) for c in self.containers.values()
                if c["Config"]["Labels"].get("io.spark-stack.stack") == stack]

    def inspect(self, ident: str) -> dict[str, Any] | None:
        self._check_daemon()
        found = self.containers.get(ident)
        if found is not None and found["Config"]["Labels"].get("io.spark-stack.model") in \
                self.daemon_stops_at and found["State"]["Status"] == "running":
            # `systemctl stop docker`: it kills the container first (137), then goes away.
            found["State"].update(Status="exited", ExitCode=137)
            self.stopping = True
        elif self.stopping:
            self.daemon_down = True
            self._check_daemon()
        return found

    def observed(self, ident: str) -> Observed | None:
        found = self.containers.get(ident)
        return None if found is None else observed_from_inspect(found)

    def image_id(self, image: str) -> str | None:
        found = self.images.get(image)
        return None if found is None else str(found["Id"])

    def image_attrs(self, image: str) -> dict[str, Any] | None:
        return self.images.get(image)

    def pull(self, image: str, progress: Any = None) -> str:
        self.calls.append(f"pull {image}")
        if image in self.registry:
            self.images[image] = self.registry[image]
        if image not in self.images:
            self.add_image(image)
        return str(self.images[image]["Id"])

    def create_and_start(self, spec: ContainerSpec, environment: Mapping[str, str],
                         secrets_hash: str, home: str) -> Observed:
        ident = f"c{next(self._ids):011d}"
        self.calls.append(f"create {spec.model}")
        fails = spec.model in self.failing or bool(self.fail_if and self.fail_if(spec))
        self.containers[ident] = {
            "Id": ident, "Name": f"/{spec.name}", "Image": self.images[spec.image]["Id"],
            "RestartCount": 0,
            "State": {"Status": "exited" if fails else "running",
                      "ExitCode": 1 if fails else 0, "OOMKilled": False,
                      "StartedAt": "2026-12-01T00:00:00.000000000Z"},
            "Config": {"Image": spec.image, "Env": [f"{k}={v}" for k, v in environment.items()],
                       "Labels": {**spec.labels(), LABEL_SECRETS_HASH: secrets_hash,
                                  LABEL_SPEC: spec.canonical()}},
            "HostPort": spec.host_port, "Served": spec.served_name, "Fails": fails,
            "Cmd": list(spec.command),
        }
        return observed_from_inspect(self.containers[ident])

    def stop(self, ident: str, timeout: int = 10) -> None:
        self.calls.append(f"stop {ident}")
        self.containers[ident]["State"]["Status"] = "exited"

    def rename(self, ident: str, name: str) -> None:
        self.calls.append(f"rename {self.containers[ident]['Name'].lstrip('/')} {name}")
        self.containers[ident]["Name"] = f"/{name}"

    def start(self, ident: str) -> None:
        container = self.containers[ident]
        self.calls.append(f"start {container['Name'].lstrip('/')}")
        container["State"]["Status"] = "exited" if container["Fails"] else "running"

    def remove(self, ident: str) -> None:
        labels = self.containers[ident]["Config"]["Labels"]
        self.calls.append(f"remove {labels.get('io.spark-stack.model')}")
        del self.containers[ident]

    def logs(self, ident: str, *, tail: int | Literal["all"] = "all") -> str:
        container = self.containers.get(ident)
        if container is None:
            return ""
        rank = container["Config"]["Labels"].get(LABEL_RANK)
        if rank is not None and not container["Fails"] and "--nnodes" not in container["Cmd"]:
            return self._ray_logs(container, rank)
        if rank is not None and not container["Fails"] and self.warnings_only:
            return ""
        if rank is not None and not container["Fails"]:
            # vLLM's own lines (see spark_stack.deploy.nodes): waiting, then joined.
            cmd = container["Cmd"]
            size = cmd[cmd.index("--nnodes") + 1]
            model = container["Config"]["Labels"][LABEL_MODEL]
            text = (f"INFO [parallel_state.py:1203] world_size={size} rank={rank} local_rank=0 "
                    "distributed_init_method=tcp://192.168.100.10:29501 backend=nccl\n")
            if self.world is not None and self.world(model):
                text += (f"INFO [parallel_state.py:1411] rank {rank} in world size {size} is "
                         f"assigned as DP rank 0, PP rank 0, PCP rank 0, TP rank {rank}, EP "
                         f"rank {rank}\n")
                if rank == "0":
                    text += "INFO Application startup complete.\n"
            return text
        if self.containers[ident]["Fails"]:
            return ("INFO starting\nValueError: To serve at least one request with the models's "
                    "max seq len (262144), (20.00 GiB KV cache is needed, which is larger than "
                    "the available KV cache memory (8.00 GiB).\n")
        return "INFO Application startup complete.\n"

    def _ray_logs(self, container: dict[str, Any], rank: str) -> str:
        """A node of a Ray cluster: a worker's `ray start`, the head's vLLM once all joined."""
        if rank != "0":
            return "Ray runtime started.\n"
        model = container["Config"]["Labels"][LABEL_MODEL]
        if self.world is not None and self.world(model):
            return ("INFO rank 0 in world size 2 is assigned as DP rank 0\n"
                    "INFO Application startup complete.\n")
        return "Ray runtime started.\n"

    def exec(self, ident: str, argv: Sequence[str]) -> tuple[int, str]:
        """``ray status`` in a Ray head: one GPU per joined node."""
        self.calls.append(f"exec {' '.join(argv)}")
        model = self.containers[ident]["Config"]["Labels"][LABEL_MODEL]
        gpus = 2 if self.world is not None and self.world(model) else 1
        return 0, f"Resources\n Total Usage:\n 0.0/{gpus * 20}.0 CPU\n 0.0/{gpus}.0 GPU\n"

    def follow_logs(self, ident: str, *, tail: int | Literal["all"] = "all") -> Iterator[str]:
        yield self.logs(ident, tail=tail)

    def close(self) -> None:
        pass

    def serving(self, port: int, served: str) -> bool:
        return any(c["HostPort"] == port and c["State"]["Status"] == "running"
                   and c["Served"] == served
                   and c["Config"]["Labels"].get("io.spark-stack.model") not in self.loading
                   and self._serves_api(c)
                   for c in self.containers.values())

    def _serves_api(self, container: dict[str, Any]) -> bool:
        """A node of a model across hosts: only the head, once every rank joined."""
        labels = container["Config"]["Labels"]
        rank = labels.get(LABEL_RANK)
        if rank is None:
            return True
        return rank == "0" and self.world is not None and self.world(labels[LABEL_MODEL])


@dataclass
class FakeHost:
    conn: FakeConnection
    docker: FakeDocker = field(default_factory=FakeDocker)
    connects: int = 0

    def connect(self, key: str, host: schema.HostConfig, trust: bool = False) -> HostSession:
        self.connects += 1
        return HostSession(key, self.conn, self.docker)  # type: ignore[arg-type]

    def probe(self, base_url: str, served_name: str, api_key: str | None) -> FakeProbe:
        return FakeProbe(self.docker, int(base_url.rsplit(":", 1)[1].split("/")[0]),
                         served_name)


@dataclass
class FakeProbe:
    docker: FakeDocker
    port: int
    served_name: str

    def health(self) -> bool:
        return self.docker.serving(self.port, self.served_name)

    def models(self) -> list[str] | None:
        return [self.served_name] if self.health() else None

    def completion(self) -> str | None:
        return "204" if self.health() else None

    def close(self) -> None:
        pass


@dataclass
class FakeHosts:
    """Several fake hosts (two Sparks): a model across them forms its world of ranks when a
    container of every rank runs on a host whose link works (not in ``never_join``)."""

    hosts: dict[str, FakeHost]
    never_join: set[str] = field(default_factory=set)  # host keys whose node never joins

    def __post_init__(self) -> None:
        for host in self.hosts.values():
            host.docker.world = self.world_formed

    def world_formed(self, model: str) -> bool:
        ranks: set[int] = set()
        size = 0
        for key, host in self.hosts.items():
            for container in host.docker.containers.values():
                labels = container["Config"]["Labels"]
                if labels.get(LABEL_MODEL) != model or LABEL_RANK not in labels:
                    continue
                if container["State"]["Status"] != "running" or key in self.never_join:
                    continue
                ranks.add(int(labels[LABEL_RANK]))
                cmd = container["Cmd"]
                # A Ray cluster's world is its hosts (the fakes have two).
                size = int(cmd[cmd.index("--nnodes") + 1]) if "--nnodes" in cmd else 2
        return bool(size) and ranks == set(range(size))

    def connect(self, key: str, host: schema.HostConfig, trust: bool = False) -> HostSession:
        return self.hosts[key].connect(key, host, trust)

    def probe(self, base_url: str, served_name: str, api_key: str | None) -> FakeProbe:
        address = base_url.split("://", 1)[1].rsplit(":", 1)[0]
        host = next(h for h in self.hosts.values() if h.conn.hostname == address)
        return host.probe(base_url, served_name, api_key)


def fake_edges(fake: FakeHost | FakeHosts) -> Edges:
    """``up``'s edges on fake hosts: their connect and probe, addresses as written."""
    return Edges(connect=fake.connect, probe=fake.probe, dial=lambda: as_written)


def up_actions(stack: schema.Stack, fake: FakeHost | FakeHosts,
               **options: Any) -> list[tuple[str, str]]:
    """``up`` (no proxy) on fake hosts: the (action, model) pairs it took."""
    result = up(stack, UpOptions(start_proxy=False, **options), QuietReporter(),
                fake_edges(fake))
    return [(a.kind, a.model) for a in result.actions]


def two_sparks(tmp_path: Path, image: str) -> FakeHosts:
    """Two fake Sparks ``a`` and ``b`` with their own homes, ``image`` present on both."""
    hosts = {}
    for key in ("a", "b"):
        home = tmp_path / f"home-{key}"
        home.mkdir()
        hosts[key] = FakeHost(FakeConnection(home=home, hostname=f"spark-{key}"))
        hosts[key].docker.add_image(image)
    return FakeHosts(hosts)
