"""``down``: remove this stack's containers (never others, never caches), its local processes
(simulators, tunnels, the proxy), and with ``purge`` its launcher and local state."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..paths import proxy_state_dir, stack_dir
from ..proxy import daemon as proxy_daemon
from ..stack import schema
from . import local, tunnel
from .connector import Connect
from .local_lock import LocalLock
from .lock import StackLock, lock_name, remove_lock_script
from .report import QuietReporter, Reporter
from .session import open_session


@dataclass
class DownResult:
    removed: list[str] = field(default_factory=list)
    stopped_local: list[str] = field(default_factory=list)
    proxy_stopped: bool = False
    kept: list[str] = field(default_factory=list)  # what stays in place, for the user to know
    purged: list[str] = field(default_factory=list)  # local files removed by ``purge``


def purge_local(stack: schema.Stack) -> list[str]:
    """Remove the stack's launcher and local state dir (secrets, proxy config, logs).

    Never the host's caches; the launcher only when ``up`` wrote it (its header names it).
    """
    import shutil

    from ..launcher import default_launcher_path, written_by_spark_stack

    removed = []
    launcher = default_launcher_path(stack)
    if written_by_spark_stack(launcher):
        launcher.unlink()
        removed.append(str(launcher))
    state = stack_dir(stack.name, create=False)
    if state.is_dir():
        shutil.rmtree(state)
        removed.append(str(state))
    return removed


def kept_in_place(stack: schema.Stack) -> list[str]:
    """What ``down`` leaves (without ``--purge``): the launcher, secrets, the host caches."""
    from ..launcher import default_launcher_path

    kept = []
    launcher = default_launcher_path(stack)
    if launcher.exists():
        kept.append(f"the Claude Code launcher {launcher}")
    state = stack_dir(stack.name, create=False)
    if state.is_dir():
        kept.append(f"the stack's secrets and state in {state}")
    if stack.container_models():
        kept.append("the model caches on the host")
    return kept


def down(stack: schema.Stack, *, trust_host_key: bool = False, wait_lock: float = 0.0,
         reporter: Reporter | None = None, purge: bool = False,
         connect: Connect | None = None) -> DownResult:
    """Remove this stack's containers (never others, never caches) and local processes.

    ``purge`` also removes the launcher and the stack's local state (after the containers).
    """
    reporter = reporter or QuietReporter()
    connect = connect or open_session
    result = DownResult()
    # Local processes first: they stop even when a host cannot be reached. Without a state
    # directory nothing runs here (and taking the local lock would create one after a purge).
    if stack_dir(stack.name, create=False).is_dir():
        with LocalLock(stack.name, wait_seconds=wait_lock):
            result.proxy_stopped = proxy_daemon.stop_background(proxy_state_dir(stack.name))
            for name in tunnel.known_tunnels(stack.name):
                tunnel.stop_tunnel(stack.name, name)
            for name in local.known_simulators(stack.name):
                if local.stop_simulator(stack.name, name):
                    result.stopped_local.append(name)
    hosts = stack.all_hosts()
    for key in sorted(hosts):
        with connect(key, hosts[key], trust_host_key) as session, \
                StackLock(session.conn, stack.name, host=key, wait_seconds=wait_lock):
            for item in session.docker.stack_containers(stack.name):
                reporter.step(f"removing {item.name}")
                session.docker.remove(item.id)
                result.removed.append(item.name)
            if purge:  # the host's lock files too, while the lock is still ours
                session.conn.run_script(remove_lock_script(lock_name(stack.name, key)))
    if purge:
        result.purged = purge_local(stack)
        if stack.container_models():
            result.kept = ["the model caches on the host"]
    else:
        result.kept = kept_in_place(stack)
    return result
