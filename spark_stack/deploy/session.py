"""Opening a real host session: SSH (paramiko, :mod:`.ssh`) and the docker API over it."""

from __future__ import annotations

from ..deployment import Deployment, DialName, resolve
from ..stack import schema
from .connector import HostSession
from .docker_host import DockerHost
from .ssh import SshHost, SshTarget, connect, read_ssh_config, resolve_target


def ssh_host(host: schema.HostConfig) -> SshHost:
    """The stack file's host as the SSH edge's own type (the edge does not know the schema)."""
    return SshHost(host.address, host.user, host.port, host.identity_file)


def target_for(host: schema.HostConfig) -> SshTarget:
    return resolve_target(ssh_host(host), read_ssh_config())


def open_session(key: str, host: schema.HostConfig, trust_host_key: bool = False
                 ) -> HostSession:
    """The :data:`~.connector.Connect` of real hosts."""
    conn = connect(target_for(host), trust_host_key=trust_host_key)
    try:
        docker = DockerHost(conn)
    except BaseException:
        conn.close()
        raise
    return HostSession(key, conn, docker)


def ssh_dial_name() -> DialName:
    """Address in the stack file → the host name to dial (an ~/.ssh/config alias's HostName)."""
    text = read_ssh_config()
    return lambda address: resolve_target(address, text).hostname


def resolve_for_this_machine(stack: schema.Stack) -> Deployment:
    """The stack's deployment with addresses dialled as this machine's ssh config says."""
    return resolve(stack, ssh_dial_name())
