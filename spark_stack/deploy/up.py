"""``up``: bring a stack to its resolved deployment — hosts, then simulators, then the front end.

Secrets are resolved first, so an unset ``${VAR}`` stops ``up`` before anything starts. Per
host: connect once, observe, plan; an unchanged host needs no lock (reading changes nothing)
but its containers are still checked for readiness. A host with changes is locked
(:class:`.lock.StackLock`), observed again under the lock (another run may have changed it
meanwhile), planned and executed. Local steps run under :class:`.local_lock.LocalLock`. Every
step can be interrupted: the next ``up`` sees what is missing, stopped or stale and converges.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..claude_env import ensure_proxy_token
from ..deployment import Deployment, DialName, resolve
from ..stack import schema
from . import frontend
from .actions import Action, is_noop
from .connector import Connect
from .host_exec import Desired, HostRun, ProbeFactory, execute, observe, plan_host, pull_image
from .keys import CREATE, container_secrets, model_keys
from .local_lock import LocalLock
from .lock import StackLock
from .preflight import validate_skips
from .report import Reporter
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
    launcher: Path | None = None
    elapsed: float = 0.0

    @property
    def changed(self) -> bool:
        return not is_noop(self.actions)


def up(stack: schema.Stack, options: UpOptions, reporter: Reporter,
       edges: Edges = Edges()) -> UpResult:
    """Bring the stack to its desired state; raises a SparkStackError on failure."""
    started = time.monotonic()
    connect, probe, dial = edges.real()
    skips = validate_skips(options.skip_preflight)
    deployment = resolve(stack, dial())
    # Every secret first: a missing one must not leave the stack half up.
    desired = {key: [Desired(m, container_secrets(deployment.stack, m, CREATE)) for m in models]
               for key, models in deployment.containers_by_host().items()}
    keys = model_keys(deployment, CREATE)
    token = ensure_proxy_token(stack) if options.start_proxy else None
    result = UpResult(endpoints={m.name: m.endpoint for m in deployment.models})
    run = HostRun(deployment.stack, skips, options.timeout, reporter, probe, options.rollback,
                  options.drop_caches, edges.repo_size or _hub_size)
    for key, items in desired.items():
        with connect(key, deployment.hosts[key], options.trust_host_key) as session:
            reporter.step(f"connected to {session.display}")
            images = [d.spec.image for d in items]
            snapshot = observe(session, deployment.stack, images)
            actions = plan_host(items, snapshot)
            if is_noop(actions) and not options.pull:
                _report(actions, reporter, result)
                result.ready.update(execute(session, run, items, snapshot, actions))
                continue
            with StackLock(session.conn, deployment.stack, wait_seconds=options.wait_lock):
                snapshot = observe(session, deployment.stack, images)
                pulled = ({image: pull_image(session, image, reporter)
                           for image in sorted(set(images))} if options.pull else None)
                actions = plan_host(items, snapshot, pulled)
                _report(actions, reporter, result)
                result.ready.update(execute(session, run, items, snapshot, actions))
    with LocalLock(deployment.stack, wait_seconds=options.wait_lock):
        actions, ready = apply_simulators(deployment, timeout=options.timeout,
                                          reporter=reporter, probe=probe)
        result.actions += actions
        result.ready.update(ready)
        if options.start_proxy:
            _front_end(stack, deployment, keys, token, options, reporter, result)
    result.elapsed = time.monotonic() - started
    return result


def _hub_size(repo: str, token: str | None) -> int | None:
    from ..hf_api import repo_size

    return repo_size(repo, token=token)


def _report(actions: list[Action], reporter: Reporter, result: UpResult) -> None:
    for action in actions:
        reporter.action(action)
    result.actions += actions


def _front_end(stack: schema.Stack, deployment: Deployment, keys: dict[str, str | None],
               token: str | None, options: UpOptions, reporter: Reporter,
               result: UpResult) -> None:
    tunnels = frontend.ensure_tunnels(deployment, reporter)
    result.endpoints.update(tunnels)
    result.proxy_url = frontend.ensure_proxy(deployment, keys, token, tunnels, reporter)
    result.launcher = frontend.write_launcher(stack, options.stack_file, reporter)
