"""A rolling replace of a model's replicas: one at a time, the others serving meanwhile.

For each replica whose container must be replaced: the local proxy stops sending it new
requests (:mod:`spark_stack.proxy.control`'s drain file), ``up`` waits until what it runs has
finished (at most :data:`DRAIN_WAIT_S`), replaces it through the single-host engine, waits
until it serves, and gives it back to the proxy; then the next. A replica that does not come
up is rolled back as any container is (``host_exec.settle``), given back, and the error stops
the roll: the replicas after it keep their old container.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ..deployment import Deployment
from ..paths import proxy_state_dir
from ..proxy import control
from ..proxy import daemon as proxy_daemon
from .actions import Action
from .report import Reporter

DRAIN_WAIT_S = 120.0  # the longest a drained replica's requests are waited for
ACK_WAIT_S = 3.0  # the longest the running proxy is given to confirm a drain

# upstream name → a context in which the proxy sends that replica nothing new.
Drain = Callable[[str], AbstractContextManager[None]]


def rolls(deployment: Deployment, action: Action) -> bool:
    """Whether ``action`` replaces one replica of a model that has others to serve."""
    return action.kind == "replace" and len(deployment.model(action.model).replicas) > 1


def rolling_order(deployment: Deployment, plans: dict[str, list[Action]]
                  ) -> list[tuple[str, Action]]:
    """(host, action) of every rolling replace, replica by replica in the file's order."""
    order = {(m.name, r.host_key): i for m in deployment.models
             for i, r in enumerate(m.replicas)}
    found = [(key, a) for key, actions in plans.items() for a in actions
             if rolls(deployment, a)]
    return sorted(found, key=lambda item: (item[1].model, order[(item[1].model, item[0])]))


def proxy_drain(stack: str, reporter: Reporter, *, wait: float = DRAIN_WAIT_S,
                clock: Callable[[], float] = time.monotonic) -> Drain:
    """The real drain: through the control files of the stack's running proxy."""

    @contextmanager
    def drained(upstream: str) -> Iterator[None]:
        directory = proxy_state_dir(stack)
        if proxy_daemon.proxy_process(directory).running_pid() is None:
            yield  # no proxy: nothing routes to the replica
            return
        control.write_drain(directory, [upstream])
        try:
            _wait_idle(directory, upstream, reporter, wait, clock)
            yield
        finally:
            control.write_drain(directory, [])
            _wait_given_back(directory, upstream, clock)

    return drained


def clear_stale_drain(stack: str) -> None:
    """Give back what an interrupted roll left drained (run under ``up``'s local lock: no
    other roll is under way)."""
    directory = proxy_state_dir(stack)
    if control.read_drain(directory):
        control.write_drain(directory, [])


def _wait_idle(directory: Path, upstream: str, reporter: Reporter, wait: float,
               clock: Callable[[], float]) -> None:
    reporter.step(f"draining {upstream}: no new requests; waiting for the ones it runs")
    started = clock()
    while True:
        state = control.read_state(directory)
        acked = state is not None and upstream in state.drained
        if acked and state is not None and state.busy.get(upstream, 0) == 0:
            return
        if not acked and clock() - started > ACK_WAIT_S:
            reporter.step(f"the proxy did not confirm draining {upstream}; replacing it anyway")
            return
        if clock() - started > wait:
            busy = state.busy.get(upstream, 0) if state is not None else 0
            reporter.step(f"{upstream} still runs {busy} request(s) after {wait:.0f} s; "
                          "replacing it anyway")
            return
        time.sleep(control.CONTROL_S / 2)


def _wait_given_back(directory: Path, upstream: str, clock: Callable[[], float]) -> None:
    """Until the proxy has read that the replica is back (bounded: it may have stopped)."""
    deadline = clock() + ACK_WAIT_S
    while clock() < deadline:
        state = control.read_state(directory)
        if state is None or upstream not in state.drained:
            return
        time.sleep(control.CONTROL_S / 2)
