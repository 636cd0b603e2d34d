"""``down``: remove this stack's containers (never others, never caches), its local processes
(simulators, tunnels, the proxy), and with ``purge`` its launcher and local state."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

from ..deployment import Deployment, resolve
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


def purge_local(deployment: Deployment) -> list[str]:
    """Remove the stack's launcher and local state dir (secrets, proxy config, logs).

    Never the host's caches; the launcher only when ``up`` wrote it (its header names it).
    """
    import shutil

    from ..launcher import written_by_spark_stack

    removed = []
    launcher = deployment.launcher_path
    if written_by_spark_stack(launcher):
        launcher.unlink()
        removed.append(str(launcher))
    state = stack_dir(deployment.stack, create=False)
    if state.is_dir():
        shutil.rmtree(state)
        removed.append(str(state))
    return removed


def kept_in_place(deployment: Deployment) -> list[str]:
    """What ``down`` leaves (without ``--purge``): the launcher, secrets, the host caches."""

    kept = []
    launcher = deployment.launcher_path
    if launcher.exists():
        kept.append(f"the Claude Code launcher {launcher}")
    state = stack_dir(deployment.stack, create=False)
    if state.is_dir():
        kept.append(f"the stack's secrets and state in {state}")
    if deployment.of_kind("container"):
        kept.append("the model caches on the host")
    return kept


def down(stack: schema.Stack, *, trust_host_key: bool = False, wait_lock: float = 0.0,
         reporter: Reporter | None = None, purge: bool = False,
         connect: Connect | None = None) -> DownResult:
    """Remove this stack's containers (never others, never caches) and local processes.

    ``purge`` also removes the launcher and the stack's local state (after the containers).
    ``stack`` stops at :func:`.deployment.resolve`: every step after it reads the Deployment.
    """
    return _down(resolve(stack), trust_host_key=trust_host_key, wait_lock=wait_lock,
                 reporter=reporter or QuietReporter(), purge=purge,
                 connect=connect or open_session)


def _down(deployment: Deployment, *, trust_host_key: bool, wait_lock: float,
          reporter: Reporter, purge: bool, connect: Connect) -> DownResult:
    name = deployment.stack
    result = DownResult()
    # The same lock as `up`'s, for the whole run: a running `up` finishes (or fails) first.
    # Without a state directory nothing runs here and no `up` holds it (taking the lock would
    # create the directory again after a purge).
    has_state = stack_dir(name, create=False).is_dir()
    with LocalLock(name, wait_seconds=wait_lock) if has_state else nullcontext():
        # Local processes first: they stop even when a host cannot be reached.
        if has_state:
            result.proxy_stopped = proxy_daemon.stop_background(proxy_state_dir(name))
            for tunnel_name in tunnel.known_tunnels(name):
                tunnel.stop_tunnel(name, tunnel_name)
            for model in local.known_simulators(name):
                if local.stop_simulator(name, model):
                    result.stopped_local.append(model)
        for key in sorted(deployment.hosts):
            with connect(key, deployment.hosts[key], trust_host_key) as session, \
                    StackLock(session.conn, name, host=key, wait_seconds=wait_lock):
                for item in session.docker.stack_containers(name):
                    reporter.step(f"removing {item.name}")
                    session.docker.remove(item.id)
                    result.removed.append(item.name)
                if purge:  # the host's lock files too, while the lock is still ours
                    session.conn.run_script(remove_lock_script(lock_name(name, key)))
    if purge:
        result.purged = purge_local(deployment)
        if deployment.of_kind("container"):
            result.kept = ["the model caches on the host"]
    else:
        result.kept = kept_in_place(deployment)
    return result
