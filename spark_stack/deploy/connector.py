"""The host edge as a protocol (pyinfra's connector idea): what the use cases need of a host.

:class:`HostSession` pairs a :class:`HostConnection` (run a script, hold a command, forward a
port) with a :class:`DockerApi`. The real ones are SSH (:mod:`.ssh`) and the docker SDK over it
(:mod:`.docker_host`), opened by :func:`.session.open_session`; tests pass an in-memory fake
host. Nothing here knows paramiko or docker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..spec import ContainerSpec
from ..stack import schema
from .actions import Observed


@dataclass(frozen=True)
class Completed:
    """A finished remote command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Held(Protocol):
    """A remote command that runs while it is held (the stack lock)."""

    def read_line(self, timeout: float) -> str: ...
    def read_rest(self, timeout: float) -> str: ...
    def release(self) -> None: ...


class Forward(Protocol):
    def close(self) -> None: ...


class HostConnection(Protocol):
    @property
    def display(self) -> str: ...
    @property
    def hostname(self) -> str: ...
    def run_script(self, script: str, *, timeout: float = ...,
                   argv: tuple[str, ...] = ...) -> Completed: ...
    def hold(self, command: str) -> Held: ...
    def forward(self, remote_host: str, remote_port: int,
                local_port: int = ...) -> tuple[Forward, int]: ...
    def close(self) -> None: ...


PullProgress = Callable[[str, str, int, int], None]


class DockerApi(Protocol):
    def stack_containers(self, stack: str) -> list[Observed]: ...
    def inspect(self, ident: str) -> dict[str, Any] | None: ...
    def observed(self, ident: str) -> Observed | None: ...
    def image_id(self, image: str) -> str | None: ...
    def image_attrs(self, image: str) -> dict[str, Any] | None: ...
    def pull(self, image: str, progress: PullProgress | None = ...) -> str: ...
    def create_and_start(self, spec: ContainerSpec, environment: Mapping[str, str],
                         secrets_hash: str, home: str) -> Observed: ...
    def stop(self, ident: str, timeout: int = ...) -> None: ...
    def rename(self, ident: str, name: str) -> None: ...
    def start(self, ident: str) -> None: ...
    def remove(self, ident: str) -> None: ...
    def logs(self, ident: str, *, tail: int | Literal["all"] = ...) -> str: ...
    def exec(self, ident: str, argv: Sequence[str]) -> tuple[int, str]: ...
    def follow_logs(self, ident: str, *,
                    tail: int | Literal["all"] = ...) -> Iterator[str]: ...
    def close(self) -> None: ...


@dataclass
class HostSession:
    """One host for one command: the connection and the docker API over it."""

    key: str  # the host's name in the stack ("default" for the single `host:` form)
    conn: HostConnection
    docker: DockerApi

    @property
    def display(self) -> str:
        return self.conn.display

    @property
    def hostname(self) -> str:
        return self.conn.hostname

    def close(self) -> None:
        self.docker.close()
        self.conn.close()

    def __enter__(self) -> HostSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Opens a session to a stack host: (key, host, trust_host_key) → session.
Connect = Callable[[str, schema.HostConfig, bool], HostSession]
