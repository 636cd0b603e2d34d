"""``up``: bring a stack to its resolved deployment — hosts, then simulators, then the front end.

Secrets are resolved first, so an unset ``${VAR}`` stops ``up`` before anything starts. Per
host: connect once, observe, plan; an unchanged host needs no lock (reading changes nothing)
but its containers are still checked for readiness. A host with changes is locked
(:class:`.lock.StackLock`), observed again under the lock (another run may have changed it
meanwhile), planned and executed. :class:`.local_lock.LocalLock` is held from the first step
to the last, and a host's lock from its first change to the end of the local steps, so a
``down`` cannot slip between the containers and the proxy. Every step can be interrupted: the
next ``up`` sees what is missing, stopped or stale and converges.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..claude_env import ensure_proxy_token
from ..deployment import Deployment, DialName, replica_upstream, resolve
from ..errors import HostUnreachable
from ..launcher import check_launcher_path
from ..stack import schema
from . import frontend
from .actions import Action, is_noop
from .connector import Connect
from .host_exec import (
    Desired,
    HostRun,
    HostSnapshot,
    ProbeFactory,
    observe,
    plan_host,
    preflight,
    pull_image,
    pull_missing,
    settle,
    start,
)
from .keys import CREATE, container_secrets, model_keys
from .local_lock import LocalLock
from .lock import StackLock
from .nodes import same_image, together
from .preflight import validate_skips
from .report import Reporter
from .rolling import Drain, clear_stale_drain, proxy_drain, rolling_order
from .simulators import apply_simulators


@dataclass(frozen=True)
class UpOptions:
    trust_host_key: bool = False
    skip_preflight: frozenset[str] = frozenset()
    timeout: float | None = None
    wait_lock: float = 0.0
    pull: bool = False
    start_proxy: bool = True
    rollback: bool = True  # a failed replace brings the previous container back
    drop_caches: bool = False  # drop the host's page cache before starting a model
    stack_file: str | None = None  # named in the launcher's "start the stack" hint


@dataclass(frozen=True)
class Edges:
    """How ``up`` reaches the world; the defaults are the real ones, tests pass fakes."""

    connect: Connect | None = None
    probe: ProbeFactory | None = None
    dial: Callable[[], DialName] | None = None
    repo_size: Callable[[str, str | None], int | None] | None = None
    # stack, reporter → how a replica is drained before its rolling replace (rolling.py).
    drain: Callable[[str, Reporter], Drain] | None = None

    def real(self) -> tuple[Connect, ProbeFactory, Callable[[], DialName]]:
        from .readiness import HttpProbe
        from .session import open_session, ssh_dial_name

        return (self.connect or open_session, self.probe or HttpProbe,
                self.dial or ssh_dial_name)


@dataclass
class UpResult:
    actions: list[Action] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)  # model → base URL the proxy dials
    ready: dict[str, float] = field(default_factory=dict)  # model → seconds to ready
    proxy_url: str | None = None
    proxy_started: bool = False  # (re)started by this run: not "up to date" then
    launcher: Path | None = None
    elapsed: float = 0.0

    @property
    def changed(self) -> bool:
        return not is_noop(self.actions) or self.proxy_started


def up(stack: schema.Stack, options: UpOptions, reporter: Reporter,
       edges: Edges = Edges()) -> UpResult:
    """Bring the stack to its desired state; raises a SparkStackError on failure.

    ``stack`` stops at :func:`.deployment.resolve`: every step after it reads the Deployment.
    """
    started = time.monotonic()
    connect, probe, dial = edges.real()
    skips = validate_skips(options.skip_preflight)
    run = HostRun(stack.name, skips, options.timeout, reporter, probe, options.rollback,
                  options.drop_caches, edges.repo_size or _hub_size)
    drain = (edges.drain or proxy_drain)(stack.name, reporter)
    return _up(resolve(stack, dial()), options, connect, run, started, drain)


def _up(deployment: Deployment, options: UpOptions, connect: Connect, run: HostRun,
        started: float, drain: Drain) -> UpResult:
    reporter = run.reporter
    # Every secret first: a missing one must not leave the stack half up.
    desired = {key: [Desired(m, container_secrets(deployment.stack, m, CREATE)) for m in models]
               for key, models in deployment.containers_by_host().items()}
    keys = model_keys(deployment, CREATE)
    if options.start_proxy:  # refused before anything starts, not after a model's load
        check_launcher_path(deployment.launcher_path)
    token = ensure_proxy_token(deployment.stack, deployment.proxy.token) \
        if options.start_proxy else None
    result = UpResult(endpoints={m.name: m.endpoint for m in deployment.models})
    # One lock from the first step to the last: a `down` (or another `up`) on this machine
    # waits for the whole run, so it cannot remove what this run then reports as ready.
    with ExitStack() as held:
        held.enter_context(LocalLock(deployment.stack, wait_seconds=options.wait_lock))
        clear_stale_drain(deployment.stack)  # an `up` killed mid-roll left a replica drained
        if desired:
            _apply_hosts(deployment, desired, connect, run, options, reporter, result, held,
                         drain)
        actions, ready = apply_simulators(deployment, timeout=options.timeout,
                                          reporter=reporter, probe=run.probe, skips=run.skips)
        result.actions += actions
        result.ready.update(ready)
        if options.start_proxy:
            _front_end(deployment, keys, token, options, reporter, result)
    result.elapsed = time.monotonic() - started
    return result


def _apply_hosts(deployment: Deployment, desired: dict[str, list[Desired]], connect: Connect,
                 run: HostRun, options: UpOptions, reporter: Reporter, result: UpResult,
                 held: ExitStack, drain: Drain) -> None:
    """Every host at once: a model across hosts is planned, checked and started as one.

    Connect to and observe every host first (a host whose docker does not answer stops
    ``up`` before anything changes); lock them all when anything changes, observe again, run
    preflight on every changing host, pull, check that a multi-node model has the same image
    id everywhere, then start the workers of such models before everything else, and wait.
    Sessions and host locks go on ``held``: they are held until ``up``'s local steps are done.
    """
    several = len(desired) > 1
    sessions = {}
    for key in desired:
        with _naming(key, several):
            sessions[key] = held.enter_context(
                connect(key, deployment.hosts[key], options.trust_host_key))
        reporter.step(f"connected to {sessions[key].display}")

    def observe_host(key: str, items: list[Desired]) -> HostSnapshot:
        with _naming(key, several):
            return observe(sessions[key], deployment.stack, [d.spec.image for d in items])

    def look(pulled: dict[str, dict[str, str]] | None = None
             ) -> tuple[dict[str, HostSnapshot], dict[str, list[Action]]]:
        snapshots = {key: observe_host(key, items) for key, items in desired.items()}
        plans = {key: plan_host(items, snapshots[key], (pulled or {}).get(key))
                 for key, items in desired.items()}
        return snapshots, together(deployment, plans)

    snapshots, plans = look()
    if all(is_noop(actions) for actions in plans.values()) and not options.pull:
        for key, actions in plans.items():
            _report(deployment, key, actions, reporter, result)
        result.ready.update(settle(run, [
            (sessions[key], entry) for key, items in desired.items()
            for entry in start(sessions[key], run, items, snapshots[key], plans[key],
                               None)]))
        return
    for key in sorted(sessions):
        held.enter_context(StackLock(sessions[key].conn, deployment.stack, host=key,
                                      wait_seconds=options.wait_lock))
    pulled = None
    if options.pull:
        pulled = {key: {image: pull_image(sessions[key], image, reporter)
                        for image in sorted({d.spec.image for d in items})}
                  for key, items in desired.items()}
    snapshots, plans = look(pulled)
    for key, actions in plans.items():
        _report(deployment, key, actions, reporter, result)
    # Preflight on every host before anything is pulled, stopped or started anywhere.
    facts = {}
    for key, items in desired.items():
        if several:
            reporter.step(f"checking {key} ({sessions[key].display})")
        facts[key] = preflight(sessions[key], run, items, snapshots[key], plans[key])
    for key, items in desired.items():
        pull_missing(sessions[key], run, items, snapshots[key], plans[key], facts[key])
    changing = [a.model for actions in plans.values() for a in actions
                if a.kind in ("create", "replace")]
    same_image(deployment, {key: {image: None if found is None else found.id
                                  for image, found in snap.images.items()}
                            for key, snap in snapshots.items()}, changing)
    roll = rolling_order(deployment, plans)
    rolled = {id(action) for _, action in roll}
    started = []
    for phase in (lambda rank: rank is not None and rank > 0,  # the workers first
                  lambda rank: rank is None or rank == 0):
        for key, items in desired.items():
            started += [(sessions[key], entry) for entry in start(
                sessions[key], run, items, snapshots[key],
                [a for a in plans[key] if id(a) not in rolled], facts[key], ranks=phase)]
    result.ready.update(settle(run, started))
    for key, action in roll:
        # One replica at a time: the proxy sends it nothing new, its requests finish, then
        # it is replaced and must serve before the next goes (a failure stops the roll).
        with drain(replica_upstream(action.model, key)):
            result.ready.update(settle(run, [(sessions[key], entry) for entry in start(
                sessions[key], run, desired[key], snapshots[key], [action], facts[key])]))


@contextmanager
def _naming(key: str, several: bool) -> Iterator[None]:
    """An unreachable host named by its name in the stack too, when the stack has several
    (the address alone may be an alias's HostName the user never wrote)."""
    try:
        yield
    except HostUnreachable as exc:
        if several:
            exc.message = f"host {key}: {exc.message}"
            exc.args = (exc.message,)
        raise


def _hub_size(repo: str, token: str | None) -> int | None:
    from ..hf_api import repo_size

    return repo_size(repo, token=token)


def _report(deployment: Deployment, key: str, actions: list[Action], reporter: Reporter,
            result: UpResult) -> None:
    replicated = {m.name for m in deployment.models if len(m.replicas) > 1}
    for action in actions:
        if action.spec is not None and (action.spec.rank is not None
                                        or action.model in replicated):
            action = replace(action, host=key)
        reporter.action(action)
        result.actions.append(action)


def _front_end(deployment: Deployment, keys: dict[str, str | None], token: str | None,
               options: UpOptions, reporter: Reporter, result: UpResult) -> None:
    tunnels = frontend.ensure_tunnels(deployment, reporter)
    result.endpoints.update(tunnels)
    result.proxy_url, result.proxy_started = frontend.ensure_proxy(deployment, keys, token,
                                                                   tunnels, reporter)
    result.launcher = frontend.write_launcher(deployment, options.stack_file, reporter)
