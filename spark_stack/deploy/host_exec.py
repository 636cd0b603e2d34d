"""One host's part of ``up``: observe → plan → execute (docker compose's shape).

**Observe** takes one snapshot of the host: this stack's containers and, per desired image, its
id and architecture. **Plan** is pure (:func:`.actions.plan_actions`): ``plan --diff`` prints
the same actions. **Execute** runs preflight once, pulls what is missing while the old
containers still serve, removes/replaces/creates, and waits until every container of the host
— kept ones too — really serves. A replaced container is stopped and kept aside
(``<name>-previous``) until its successor serves; when the successor fails, the previous one is
brought back and ``up`` still fails, saying so (``--no-rollback`` removes it at once).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from ..deployment import ModelDeployment
from ..errors import DeployError, HostUnreachable, SparkStackError
from ..spec import CACHE_TARGETS, ContainerSpec
from .actions import Action, Observed, plan_actions, previous_name
from .connector import HostSession
from .diagnose import Diagnosis, diagnose, diagnose_exit
from .failure import fail
from .keys import ContainerSecrets
from .nodes import joined
from .preflight import (
    FACTS_SCRIPT,
    VLLM_DEFAULT_UTILIZATION,
    HostFacts,
    arch_check,
    parse_facts,
    raise_failures,
    run_checks,
)
from .ray_cluster import wait_ray_gpus
from .readiness import Failed, Probe, ProcessState, Ready, wait_ready
from .report import Reporter

# (base_url, served_name, api_key) → a readiness probe (HttpProbe; a fake in unit tests).
ProbeFactory = Callable[[str, str, str | None], Probe]


@dataclass(frozen=True)
class Desired:
    """A container model of this host with its resolved secrets."""

    model: ModelDeployment
    secrets: ContainerSecrets

    @property
    def spec(self) -> ContainerSpec:
        assert self.model.container is not None
        return self.model.container


@dataclass(frozen=True)
class ImageOnHost:
    id: str
    arch: str


@dataclass(frozen=True)
class HostSnapshot:
    """What one look at the host found."""

    containers: list[Observed]
    images: dict[str, ImageOnHost | None]  # desired image → what the host has (None: missing)


def observe(session: HostSession, stack: str, images: Sequence[str]) -> HostSnapshot:
    containers = session.docker.stack_containers(stack)
    found: dict[str, ImageOnHost | None] = {}
    for image in sorted(set(images)):
        attrs = session.docker.image_attrs(image)
        found[image] = None if attrs is None else ImageOnHost(
            str(attrs.get("Id", "")), str(attrs.get("Architecture", "")))
    return HostSnapshot(containers, found)


def plan_host(desired: Sequence[Desired], snapshot: HostSnapshot,
              pulled: Mapping[str, str] | None = None) -> list[Action]:
    """The actions for this host (pure); ``pulled`` maps image → id after ``--pull``."""
    return plan_actions([d.spec for d in desired], snapshot.containers,
                        {d.spec.model: d.secrets.hash for d in desired}, pulled)


@dataclass(frozen=True)
class HostRun:
    """Everything :func:`execute` needs besides the plan."""

    stack: str
    skips: frozenset[str]
    timeout: float | None
    reporter: Reporter
    probe: ProbeFactory
    rollback: bool = True
    drop_caches: bool = False
    # A model's size on the Hub, when it can be asked (the total of the download progress).
    repo_size: Callable[[str, str | None], int | None] = lambda repo, token: None

    def download_total(self, item: Desired) -> int | None:
        if not item.spec.command:
            return None
        return self.repo_size(item.spec.command[0], item.secrets.env.get("HF_TOKEN"))


def execute(session: HostSession, run: HostRun, desired: Sequence[Desired],
            snapshot: HostSnapshot, actions: Sequence[Action]) -> dict[str, float]:
    """Carry out ``actions`` on one host; every model's seconds to ready (kept ones are
    checked too). ``up`` runs these steps across hosts: :func:`preflight`, :func:`pull_missing`,
    :func:`start`, :func:`settle`."""
    facts = preflight(session, run, desired, snapshot, actions)
    pull_missing(session, run, desired, snapshot, actions, facts)
    return settle(run, [(session, s) for s in start(session, run, desired, snapshot, actions,
                                                     facts)])


def _changing(desired: Sequence[Desired], actions: Sequence[Action]) -> list[Desired]:
    by_model = {d.spec.model: d for d in desired}
    return [by_model[a.model] for a in actions if a.kind in ("create", "replace")]


def preflight(session: HostSession, run: HostRun, desired: Sequence[Desired],
              snapshot: HostSnapshot, actions: Sequence[Action]) -> HostFacts | None:
    """The host's facts when anything changes on it, after the checks passed."""
    changing = _changing(desired, actions)
    if not changing and not any(a.kind == "remove" for a in actions):
        return None
    facts = parse_facts(session.conn.run_script(FACTS_SCRIPT, timeout=60).stdout)
    if changing:
        _preflight(run, changing, snapshot, facts)
    return facts


def pull_missing(session: HostSession, run: HostRun, desired: Sequence[Desired],
                 snapshot: HostSnapshot, actions: Sequence[Action],
                 facts: HostFacts | None) -> None:
    """Pull the images the changing containers lack, while the old containers still serve;
    then drop the page cache when asked."""
    changing = _changing(desired, actions)
    for item in changing:
        image = item.spec.image
        if snapshot.images.get(image) is None and facts is not None:
            pull_image(session, image, run.reporter)
            attrs = session.docker.image_attrs(image) or {}
            arch = str(attrs.get("Architecture", ""))
            snapshot.images[image] = ImageOnHost(str(attrs.get("Id", "")), arch)
            if "arch" not in run.skips:
                raise_failures([arch_check(facts, image, arch)])
    if changing and run.drop_caches:
        drop_page_cache(session, run.reporter)


def start(session: HostSession, run: HostRun, desired: Sequence[Desired],
          snapshot: HostSnapshot, actions: Sequence[Action], facts: HostFacts | None,
          *, ranks: Callable[[int | None], bool] = lambda rank: True) -> list[Started]:
    """Remove, replace and create the containers whose rank ``ranks`` selects (removals go
    with the first call); what to wait for, kept containers included."""
    by_model = {d.spec.model: d for d in desired}
    started: list[Started] = []
    for action in actions:
        if action.kind == "remove" and action.observed is not None:
            if ranks(None):
                run.reporter.step(f"removing {action.observed.name} ({action.reason})")
                session.docker.remove(action.observed.id)
            continue
        item = by_model[action.model]
        if not ranks(item.spec.rank):
            continue
        if action.kind in ("create", "replace"):
            previous = None
            if action.kind == "replace":
                # The nodes of a model across hosts start together: no single-node rollback.
                aside = run if item.spec.rank is None else replace(run, rollback=False)
                previous = _set_aside(session, aside, action, snapshot)
            run.reporter.step(f"starting {item.spec.name} ({item.spec.image}) on "
                              f"{session.hostname}")
            assert facts is not None
            started.append(Started(item, session.docker.create_and_start(
                item.spec, item.secrets.env, item.secrets.hash, facts.home), previous,
                facts.home))
        elif action.kind == "keep" and action.observed is not None:
            # A kept container may still be loading (an interrupted `up`): check it as well;
            # what an interrupted replace set aside goes once it serves (or comes back).
            left = action.aside
            if left is not None and not run.rollback:
                run.reporter.step(f"removing {left.name} (--no-rollback)")
                session.docker.remove(left.id)
                left = None
            started.append(Started(item, action.observed, left))
    return started


@dataclass(frozen=True)
class Started:
    """A container to wait for, and the one it replaced (stopped, kept for a rollback)."""

    item: Desired
    container: Observed
    previous: Observed | None
    home: str = ""  # the host's $HOME, where its caches are


def _set_aside(session: HostSession, run: HostRun, action: Action,
               snapshot: HostSnapshot) -> Observed | None:
    """Make way for the new container. With rollback the running one is stopped and renamed
    ``<name>-previous`` (kept until the new one serves); every other copy is removed."""
    olds = [o for o in snapshot.containers if o.model == action.model]
    keep = next((o for o in olds if o.running), None) if run.rollback else None
    for old in olds:
        if old is keep:
            continue
        run.reporter.step(f"removing {old.name} ({action.reason})")
        session.docker.remove(old.id)
    if keep is None:
        return None
    run.reporter.step(f"replacing {keep.name} ({action.reason}); keeping it stopped until the "
                      "new one serves")
    session.docker.stop(keep.id, timeout=30)
    session.docker.rename(keep.id, previous_name(keep.name))
    return keep


def settle(run: HostRun, started: Sequence[tuple[HostSession, Started]]) -> dict[str, float]:
    """Wait for each container — heads (every single-node container) first, then the other
    nodes of a model across hosts, which joined once their head serves (and must still run). A
    failed one is stopped (and its predecessor brought back), a ready one's predecessor
    removed. The first failure is raised once all have settled."""
    ready: dict[str, float] = {}
    failures: list[tuple[HostSession, Started, Failed, str]] = []
    failed_models: set[str] = set()
    heads = [(s, e) for s, e in started if e.item.spec.head]
    for session, entry in [*heads, *[(s, e) for s, e in started if not e.item.spec.head]]:
        model = entry.item.spec.model
        if not entry.item.spec.head:
            if model in failed_models:
                session.docker.stop(entry.container.id, timeout=5)
                continue
            outcome: Ready | Failed = worker_joined(session, entry)
        else:
            outcome = (_ray_joined(session, run, entry)
                       or wait_container(session, run, entry.item, entry.container, entry.home))
        if isinstance(outcome, Failed):
            if _docker_went_away(session, entry, outcome):
                raise HostUnreachable(
                    f"the docker daemon on {session.display} stopped while {model} was "
                    "starting (its containers stopped with it)",
                    fix="start docker on the host (e.g. `sudo systemctl start docker`), then "
                    "run `spark-stack up` again")
            if entry.item.model.multi_node and entry.item.spec.head:
                outcome = _why_head_failed(outcome, started, entry)
            full = session.docker.logs(entry.container.id)
            # Stop it so a restart policy does not loop; the next `up` replaces it.
            session.docker.stop(entry.container.id, timeout=5)
            failures.append((session, entry, outcome, full))
            failed_models.add(model)
            continue
        if entry.item.spec.head:
            ready[model] = outcome.elapsed
        if entry.previous is not None:
            session.docker.remove(entry.previous.id)
    for session, entry, outcome, full in failures:
        note = _roll_back(session, run, entry) if entry.previous is not None else None
        fail(run.stack, entry.item.spec.model, full, outcome, run.reporter, note=note)
    return ready


def _ray_joined(session: HostSession, run: HostRun, entry: Started) -> Failed | None:
    """The head of a Ray cluster: wait until ``ray status`` counts every node's GPU."""
    model = entry.item.model
    if model.distributed != "ray" or not entry.item.spec.head:
        return None
    ident = entry.container.id

    def running() -> bool:
        attrs = session.docker.inspect(ident) or {}
        return (attrs.get("State") or {}).get("Status") == "running"

    run.reporter.step(f"waiting for the Ray cluster of {model.name} ({len(model.nodes)} GPUs)")
    return wait_ray_gpus(lambda argv: session.docker.exec(ident, argv), running,
                         len(model.nodes), model=model.name,
                         timeout=run.timeout or model.readiness_timeout)


def worker_joined(session: HostSession, entry: Started) -> Ready | Failed:
    """A worker node, once its head serves: still running. A head that answers is the proof
    that every rank joined (vLLM serves only once its world formed); the worker's own log
    line is not needed, and may be missing (``VLLM_LOGGING_LEVEL=WARNING``, new wording)."""
    spec = entry.item.spec
    attrs = session.docker.inspect(entry.container.id) or {}
    status = str((attrs.get("State") or {}).get("Status", "removed"))
    if status != "running":
        log = session.docker.logs(entry.container.id, tail=400)
        found = diagnose_exit(log.splitlines(), exit_code=None, oom_killed=False, restarts=0)
        where = f"rank {spec.rank} on {session.key} ({session.hostname})"
        return Failed("exited", Diagnosis(found.key, f"worker {where} is {status}: "
                                          f"{found.message}", found.fix, found.evidence),
                      0.0, "starting")
    return Ready(0.0)


def _why_head_failed(outcome: Failed, started: Sequence[tuple[HostSession, Started]],
                     head: Started) -> Failed:
    """A head that did not serve: name the worker that never joined, and what its log says."""
    specific = outcome.diagnosis.key not in ("exited", "engine_dead", "restart_loop", "timeout",
                                             "tp_exceeds_gpus")
    for session, entry in started:
        spec = entry.item.spec
        if spec.model != head.item.spec.model or spec.head or spec.rank is None:
            continue
        log = session.docker.logs(entry.container.id, tail=400)
        if joined(log, spec.rank):
            continue
        own = diagnose(log.splitlines())
        where = f"worker rank {spec.rank} on {session.key} ({session.hostname})"
        if own is not None:
            return replace(outcome, diagnosis=Diagnosis(
                own.key, f"{where}: {own.message}", own.fix, own.evidence))
        if not specific:
            return replace(outcome, diagnosis=Diagnosis(
                "worker_not_joined",
                f"{where} never joined the head ({outcome.diagnosis.message})",
                "check the link with `spark-stack doctor` (addresses, MTU, reachability from "
                f"each host) and the worker's log (`spark-stack logs {spec.model}`)"))
    return outcome


# Exit codes of a container stopped from outside (SIGKILL, SIGTERM), as when docker itself stops.
_KILLED = (137, 143)
# How long the daemon may take to go away after the container it stopped (while it stops the rest).
DAEMON_GONE_SECONDS = 3.0


def _docker_went_away(session: HostSession, entry: Started, outcome: Failed,
                      clock: Callable[[], float] = time.monotonic) -> bool:
    """Whether a container that exited for no reason its log gives went with the docker daemon.

    Stopping docker kills its containers first (exit 137 or 143) and closes its API after:
    the next requests, not the readiness check's, find it gone.
    """
    if outcome.diagnosis.key != "exited":
        return False
    deadline = clock() + DAEMON_GONE_SECONDS
    while True:
        try:
            attrs = session.docker.inspect(entry.container.id)
        except HostUnreachable:
            return True
        code = ((attrs or {}).get("State") or {}).get("ExitCode")
        if code not in _KILLED or clock() >= deadline:
            return False
        time.sleep(0.25)


def _roll_back(session: HostSession, run: HostRun, entry: Started) -> str:
    """Bring the replaced container back; what happened, for the error message."""
    previous = entry.previous
    assert previous is not None
    model = entry.item.spec.model
    run.reporter.step(f"rolling back {model}: restarting the previous container")
    try:
        session.docker.remove(entry.container.id)
        session.docker.rename(previous.id, entry.item.spec.name)
        session.docker.start(previous.id)
    except SparkStackError as exc:
        return f"the rollback failed too ({exc.message}); the model is down"
    restored = session.docker.observed(previous.id) or previous
    outcome = wait_container(session, run, entry.item, restored)
    if isinstance(outcome, Failed):
        return ("rolled back, but the previous container did not serve again "
                f"({outcome.diagnosis.message})")
    return "rolled back: the previous container serves again"


# NVIDIA's advice before a large model on the GB10: the page cache holds unified memory that
# vLLM's profiling then counts as taken (dgx-spark-playbooks).
DROP_CACHES_SCRIPT = ("sync && if [ \"$(id -u)\" = 0 ]; then echo 3 > /proc/sys/vm/drop_caches; "
                      "else echo 3 | sudo -n tee /proc/sys/vm/drop_caches >/dev/null; fi")


def drop_page_cache(session: HostSession, reporter: Reporter) -> None:
    reporter.step(f"dropping the page cache on {session.hostname} (--drop-caches)")
    done = session.conn.run_script(DROP_CACHES_SCRIPT, timeout=120)
    if not done.ok:
        raise DeployError(
            f"could not drop the page cache on {session.hostname}: "
            f"{(done.stderr or done.stdout).strip()[:200] or f'exit {done.returncode}'}",
            fix="let the SSH user run `sudo -n tee /proc/sys/vm/drop_caches` without a "
            "password, or leave out --drop-caches",
        )


def _preflight(run: HostRun, changing: list[Desired], snapshot: HostSnapshot,
               facts: HostFacts) -> None:
    own_ports: set[int] = set()
    for found in snapshot.containers:
        try:
            own_ports.add(int(json.loads(found.spec_json).get("host_port")))
        except (ValueError, TypeError, AttributeError):
            continue
    archs = {d.spec.image: None if (img := snapshot.images.get(d.spec.image)) is None
             else img.arch for d in changing}
    results = run_checks(
        facts,
        [d.spec for d in changing],
        # A model without a share or a KV-cache size gets vLLM's default 0.9.
        gpu_memory_utilization={
            d.spec.model: d.model.gpu_memory_utilization or VLLM_DEFAULT_UTILIZATION
            for d in changing if "--kv-cache-memory-bytes" not in d.spec.command},
        image_archs=archs,  # None marks a missing image: its arch is checked after the pull
        own_ports=own_ports,
        hf_token_in_env={d.spec.model: "HF_TOKEN" in d.secrets.env
                         or "HUGGING_FACE_HUB_TOKEN" in d.secrets.env for d in changing},
        skip=run.skips,
    )
    for check in results:
        run.reporter.check(check)
    raise_failures(results)


def pull_image(session: HostSession, image: str, reporter: Reporter) -> str:
    reporter.step(f"pulling {image} on {session.hostname}")
    image_id = session.docker.pull(
        image, lambda layer, status, cur, tot: reporter.pull(image, layer, status, cur, tot))
    reporter.pull_done(image)
    return image_id


def _container_state(session: HostSession, ident: str) -> Callable[[], ProcessState]:
    def state() -> ProcessState:
        attrs = session.docker.inspect(ident)
        if attrs is None:
            return ProcessState(alive=False, status="removed")
        st = attrs.get("State") or {}
        return ProcessState(
            alive=st.get("Status") == "running",
            exit_code=st.get("ExitCode"),
            oom_killed=bool(st.get("OOMKilled")),
            restarts=int(attrs.get("RestartCount") or 0),
            status=str(st.get("Status", "")),
        )

    return state


# How often the host's HF cache is measured while a model starts (one SSH command each).
DOWNLOAD_SAMPLE_SECONDS = 2.0


def hf_cache_on_host(spec: ContainerSpec, home: str) -> str | None:
    """The host directory that holds the model's files (``…/hub/models--org--name``)."""
    mount = next((m for m in spec.mounts if m.target == CACHE_TARGETS["huggingface"]), None)
    if mount is None or not spec.command or not home:
        return None
    source = home + mount.source[1:] if mount.source.startswith("~") else mount.source
    return f"{source.rstrip('/')}/hub/models--{spec.command[0].replace('/', '--')}"


def download_sampler(session: HostSession, directory: str) -> Callable[[], int | None]:
    """Bytes under ``directory`` on the host, measured at most every DOWNLOAD_SAMPLE_SECONDS."""
    last: list[float | int | None] = [float("-inf"), None]

    def sample() -> int | None:
        now = time.monotonic()
        if now - float(last[0] or 0) < DOWNLOAD_SAMPLE_SECONDS:
            return None if last[1] is None else int(last[1])
        last[0] = now
        done = session.conn.run_script(
            f"du -sbL {shlex.quote(directory)} 2>/dev/null | cut -f1", timeout=20)
        text = done.stdout.strip()
        last[1] = int(text) if text.isdigit() else None
        return None if last[1] is None else int(last[1])

    return sample


def wait_container(session: HostSession, run: HostRun, item: Desired,
                   container: Observed, home: str = "") -> Ready | Failed:
    """Wait until the container serves, or say why it does not; with the host's ``home``
    known, the model's files arriving in its HF cache count as progress."""
    model = item.spec.model
    forwarder = None
    base_url = item.model.endpoint
    if item.model.via_tunnel:
        forwarder, port = session.conn.forward("127.0.0.1", item.spec.host_port)
        base_url = f"http://127.0.0.1:{port}/v1"
    probe = run.probe(base_url, item.model.served_name, item.secrets.api_key)
    directory = hf_cache_on_host(item.spec, home)
    downloaded = download_sampler(session, directory) if directory else (lambda: None)
    try:
        return wait_ready(
            downloaded=downloaded,
            download_total=lambda: run.download_total(item),
            state=_container_state(session, container.id),
            logs=lambda: session.docker.logs(container.id, tail=400).splitlines(),
            probe=probe,
            timeout=run.timeout or item.model.readiness_timeout,
            on_progress=lambda progress: run.reporter.progress(model, progress),
        )
    finally:
        probe.close()
        if forwarder is not None:
            forwarder.close()
