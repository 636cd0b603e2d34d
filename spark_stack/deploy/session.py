"""One host session for one command: the SSH connection and the docker API over it."""

from __future__ import annotations

from dataclasses import dataclass

from ..stack import schema
from .docker_host import DockerHost
from .ssh import SshConnection, SshTarget, connect, read_ssh_config, resolve_target


@dataclass
class HostSession:
    key: str  # the host's name in the stack ("default" for the single `host:` form)
    target: SshTarget
    conn: SshConnection
    docker: DockerHost

    def close(self) -> None:
        self.docker.close()
        self.conn.close()

    def __enter__(self) -> HostSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def target_for(host: schema.HostConfig) -> SshTarget:
    return resolve_target(host, read_ssh_config())


def open_session(key: str, host: schema.HostConfig, *, trust_host_key: bool = False
                 ) -> HostSession:
    target = target_for(host)
    conn = connect(target, trust_host_key=trust_host_key)
    try:
        docker = DockerHost(conn)
    except BaseException:
        conn.close()
        raise
    return HostSession(key, target, conn, docker)


def models_by_host(stack: schema.Stack) -> dict[str, list[schema.ContainerModel]]:
    """Container models grouped by the key of the host they run on."""
    hosts = stack.all_hosts()
    grouped: dict[str, list[schema.ContainerModel]] = {}
    for model in stack.container_models():
        host = stack.host_for(model)
        key = next((k for k, h in hosts.items() if h is host), None)
        if key is None:
            from ..errors import UsageError

            raise UsageError(f"model {model.name!r} has no host to run on",
                             fix="add a `host:` to the stack file or set the model's host")
        grouped.setdefault(key, []).append(model)
    return grouped
