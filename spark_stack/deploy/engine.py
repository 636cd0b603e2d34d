"""The use cases ``up`` and ``down``, composed from the edges (``status`` and ``logs`` live in
their own modules).

``up`` per host: connect once, list this stack's containers and plan (:mod:`.actions`); an
unchanged stack stops there, read-only. Otherwise take the stack's remote lock, plan again,
preflight, pull what is missing while the old containers still serve, then remove/replace/create
and wait for each new server to really serve. Every step can be interrupted: the next ``up``
sees a container that is missing, stopped or has a stale hash and converges from there. Then
local simulators, the proxy (background) and the Claude Code launcher.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, Protocol

from ..errors import NotHealthy
from ..paths import proxy_state_dir, stack_dir, write_private
from ..proxy import daemon as proxy_daemon
from ..proxy.config import ProxyConfig
from ..spec import API_KEY_ENV, ContainerSpec, render_container
from ..stack import schema
from ..stack.secrets import resolve
from . import local, secrets_store
from .actions import Action, ActionKind, Observed, is_noop, plan_actions, secrets_hash
from .diagnose import Diagnosis
from .preflight import (
    FACTS_SCRIPT,
    CheckResult,
    HostFacts,
    parse_facts,
    raise_failures,
    run_checks,
    validate_skips,
)
from .proxy_config import Endpoint, build_proxy_config
from .readiness import Failed, HttpProbe, ProcessState, wait_ready
from .session import HostSession, models_by_host, open_session

FAILURE_TAIL = 25


class Reporter(Protocol):
    """How a use case tells a person what it is doing (the CLI renders it)."""

    def step(self, message: str) -> None: ...
    def action(self, action: Action) -> None: ...
    def check(self, result: CheckResult) -> None: ...
    def phase(self, model: str, phase: str, elapsed: float) -> None: ...
    def pull(self, image: str, layer: str, status: str, current: int, total: int) -> None: ...
    def pull_done(self, image: str) -> None: ...
    def failure(self, model: str, lines: list[str], log_path: Path,
                diagnosis: Diagnosis) -> None: ...


class QuietReporter:
    """A reporter that says nothing (``--json`` and library use)."""

    def step(self, message: str) -> None:
        pass

    def action(self, action: Action) -> None:
        pass

    def check(self, result: CheckResult) -> None:
        pass

    def phase(self, model: str, phase: str, elapsed: float) -> None:
        pass

    def pull(self, image: str, layer: str, status: str, current: int, total: int) -> None:
        pass

    def pull_done(self, image: str) -> None:
        pass

    def failure(self, model: str, lines: list[str], log_path: Path,
                diagnosis: Diagnosis) -> None:
        pass


@dataclass(frozen=True)
class UpOptions:
    trust_host_key: bool = False
    skip_preflight: frozenset[str] = frozenset()
    timeout: float | None = None
    wait_lock: float = 0.0
    pull: bool = False
    start_proxy: bool = True
    stack_file: str | None = None  # named in the launcher's "start the stack" hint


@dataclass
class UpResult:
    actions: list[Action] = field(default_factory=list)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)  # model → seconds to ready
    proxy_url: str | None = None
    launcher: Path | None = None
    elapsed: float = 0.0

    @property
    def changed(self) -> bool:
        return not is_noop(self.actions)


# --- desired state and secrets --------------------------------------------------------------


def container_api_key(stack: schema.Stack, model: schema.ContainerModel) -> str | None:
    """The vLLM API key of a container model (generated once, 0600), or None for ``none``."""
    if model.api_key == "none":
        return None
    if model.api_key == "auto":
        return secrets_store.get_or_create(stack.name, secrets_store.api_key_name(model.name))
    return resolve(model.api_key, where=f"models.{model.name}.api_key")


def container_environment(spec: ContainerSpec, api_key: str | None) -> dict[str, str]:
    """The container's environment with every ``${VAR}`` resolved (never printed)."""
    env = {var.name: resolve(var.value, where=f"models.{spec.model}.env.{var.name}")
           for var in spec.env}
    if api_key is not None:
        env[API_KEY_ENV] = api_key
    return env


def secret_values(spec: ContainerSpec, env: dict[str, str]) -> dict[str, str]:
    secret_names = {var.name for var in spec.env if var.is_secret} | {API_KEY_ENV}
    return {k: v for k, v in env.items() if k in secret_names}


def url_host(hostname: str) -> str:
    return f"[{hostname}]" if ":" in hostname else hostname


def container_endpoint(session_hostname: str, spec: ContainerSpec,
                       api_key: str | None) -> Endpoint:
    host = "127.0.0.1" if spec.bind_address == "127.0.0.1" else url_host(session_hostname)
    return Endpoint(f"http://{host}:{spec.host_port}/v1", api_key)


def proxy_token(stack: schema.Stack) -> str | None:
    """The proxy's token, kept in the file the launcher and `spark-stack claude` read."""
    from ..claude_env import ensure_proxy_token

    return ensure_proxy_token(stack)


def save_failure_log(stack: str, model: str, text: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = stack_dir(stack) / "logs" / f"{model}-{stamp}.log"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, text)
    return path


# --- up -------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    spec: ContainerSpec
    model: schema.ContainerModel
    env: dict[str, str]
    api_key: str | None
    secrets_hash: str


def _prepare(stack: schema.Stack, models: list[schema.ContainerModel]) -> list[_Prepared]:
    prepared = []
    for model in models:
        spec = render_container(stack, model)
        key = container_api_key(stack, model)
        env = container_environment(spec, key)
        prepared.append(_Prepared(spec, model, env, key,
                                  secrets_hash(spec, secret_values(spec, env))))
    return prepared


def host_plan(session: HostSession, stack: schema.Stack, prepared: list[_Prepared],
              image_ids: dict[str, str] | None = None) -> tuple[list[Action], list[Observed]]:
    observed = session.docker.stack_containers(stack.name)
    actions = plan_actions([p.spec for p in prepared], observed,
                           {p.spec.model: p.secrets_hash for p in prepared}, image_ids)
    return actions, observed


def up(stack: schema.Stack, options: UpOptions, reporter: Reporter) -> UpResult:
    """Bring the stack to its desired state; raises a SparkStackError on failure."""
    from .lock import StackLock

    started = time.monotonic()
    skips = validate_skips(options.skip_preflight)
    result = UpResult()
    for key, models in models_by_host(stack).items():
        host = stack.all_hosts()[key]
        prepared = _prepare(stack, models)
        with open_session(key, host, trust_host_key=options.trust_host_key) as session:
            reporter.step(f"connected to {session.target.display}")
            # An unchanged stack needs no lock: reading changes nothing (and saves a round trip).
            if not options.pull and _unchanged(session, stack, prepared):
                _up_host(session, stack, prepared, options, skips, reporter, result)
                continue
            with StackLock(session.conn, stack.name, wait_seconds=options.wait_lock):
                _up_host(session, stack, prepared, options, skips, reporter, result)
    _up_local(stack, options, reporter, result)
    if options.start_proxy:
        _ensure_tunnels(stack, result, reporter)
        result.proxy_url = ensure_proxy(stack, result.endpoints, reporter)
        result.launcher = _write_launcher(stack, options.stack_file, reporter)
    result.elapsed = time.monotonic() - started
    return result


def _unchanged(session: HostSession, stack: schema.Stack, prepared: list[_Prepared]) -> bool:
    actions, _ = host_plan(session, stack, prepared)
    return is_noop(actions)


def _up_host(session: HostSession, stack: schema.Stack, prepared: list[_Prepared],
             options: UpOptions, skips: frozenset[str], reporter: Reporter,
             result: UpResult) -> None:
    image_ids: dict[str, str] | None = None
    if options.pull:
        image_ids = {}
        for image in sorted({p.spec.image for p in prepared}):
            image_ids[image] = _pull(session, image, reporter)
    actions, observed = host_plan(session, stack, prepared, image_ids)
    by_model = {p.spec.model: p for p in prepared}
    for p in prepared:
        result.endpoints[p.spec.model] = container_endpoint(session.target.hostname, p.spec,
                                                            p.api_key)
    for action in actions:
        reporter.action(action)
    result.actions += actions
    if is_noop(actions):
        return
    changing = [by_model[a.model] for a in actions if a.kind in ("create", "replace")]
    facts = parse_facts(session.conn.run_script(FACTS_SCRIPT, timeout=60).stdout)
    if changing:
        _preflight(session, stack, changing, observed, facts, skips, reporter)
    # Pull first, while the old containers still serve.
    for image in sorted({p.spec.image for p in changing}):
        if session.docker.image_id(image) is None:
            _pull(session, image, reporter)
    if "arch" not in skips:
        _check_arch(session, changing, facts)
    started: list[tuple[_Prepared, Observed]] = []
    for action in actions:
        if action.kind == "remove" and action.observed is not None:
            reporter.step(f"removing {action.observed.name} ({action.reason})")
            session.docker.remove(action.observed.id)
        elif action.kind in ("create", "replace"):
            item = by_model[action.model]
            if action.kind == "replace":
                for old in [o for o in observed if o.model == action.model]:
                    reporter.step(f"replacing {old.name} ({action.reason})")
                    session.docker.remove(old.id)
            reporter.step(f"starting {item.spec.name} ({item.spec.image})")
            started.append((item, session.docker.create_and_start(
                item.spec, item.env, item.secrets_hash, facts.home)))
    for item, container in started:
        timeout = options.timeout or item.model.readiness_timeout
        result.ready[item.spec.model] = _wait_container(
            session, stack, item, container, result.endpoints[item.spec.model], timeout,
            reporter)


def _preflight(session: HostSession, stack: schema.Stack, changing: list[_Prepared],
               observed: list[Observed], facts: HostFacts, skips: frozenset[str],
               reporter: Reporter) -> None:
    archs: dict[str, str | None] = {}
    for item in changing:
        attrs = session.docker.image_attrs(item.spec.image)
        archs[item.spec.image] = None if attrs is None else str(attrs.get("Architecture", ""))
    own_ports: set[int] = set()
    for found in observed:
        try:
            own_ports.add(int(json.loads(found.spec_json).get("host_port")))
        except (ValueError, TypeError, AttributeError):
            continue
    results = run_checks(
        facts,
        [p.spec for p in changing],
        gpu_memory_utilization={p.model.name: p.model.gpu_memory_utilization
                                for p in changing if p.model.gpu_memory_utilization},
        # None marks a missing image: its arch is checked after the pull.
        image_archs=archs,
        own_ports=own_ports,
        hf_token_in_env={p.model.name: "HF_TOKEN" in p.env or "HUGGING_FACE_HUB_TOKEN" in p.env
                         for p in changing},
        skip=skips,
    )
    for check in results:
        reporter.check(check)
    raise_failures(results)


def _check_arch(session: HostSession, changing: list[_Prepared], facts: HostFacts) -> None:
    archs: dict[str, str | None] = {}
    for item in changing:
        attrs = session.docker.image_attrs(item.spec.image)
        archs[item.spec.image] = None if attrs is None else str(attrs.get("Architecture", ""))
    results = [r for r in run_checks(facts, [], gpu_memory_utilization={}, image_archs=archs,
                                     own_ports=(), hf_token_in_env={})
               if r.name == "arch"]
    raise_failures(results)


def _pull(session: HostSession, image: str, reporter: Reporter) -> str:
    reporter.step(f"pulling {image} on {session.target.hostname}")
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


def _wait_container(session: HostSession, stack: schema.Stack, item: _Prepared,
                    container: Observed, endpoint: Endpoint, timeout: float,
                    reporter: Reporter) -> float:
    from .ssh import forward_tcp

    model = item.spec.model
    forwarder = None
    base_url = endpoint.base_url
    if item.spec.bind_address == "127.0.0.1":
        forwarder, port = forward_tcp(session.conn, "127.0.0.1", item.spec.host_port)
        base_url = f"http://127.0.0.1:{port}/v1"
    probe = HttpProbe(base_url, item.spec.served_name, item.api_key)
    try:
        outcome = wait_ready(
            state=_container_state(session, container.id),
            logs=lambda: session.docker.logs(container.id, tail=400).splitlines(),
            probe=probe,
            timeout=timeout,
            on_phase=lambda phase, elapsed: reporter.phase(model, phase, elapsed),
        )
    finally:
        probe.close()
        if forwarder is not None:
            forwarder.close()
    if isinstance(outcome, Failed):
        full = session.docker.logs(container.id)
        # Stop it so a restart policy does not loop; the next `up` replaces it.
        session.docker.stop(container.id, timeout=5)
        _fail(stack, model, full, outcome, reporter)
    return outcome.elapsed


def _fail(stack: schema.Stack, model: str, full_log: str, outcome: Failed,
          reporter: Reporter) -> NoReturn:
    path = save_failure_log(stack.name, model, full_log)
    lines = full_log.splitlines()[-FAILURE_TAIL:]
    reporter.failure(model, lines, path, outcome.diagnosis)
    what = {"exited": "failed to start", "timeout": "did not become ready",
            "bad answer": "answers wrongly"}.get(outcome.reason, "failed")
    raise NotHealthy(
        f"model {model} {what} after {outcome.elapsed:.1f} s: {outcome.diagnosis.message} "
        f"(full log: {path})",
        fix=outcome.diagnosis.fix,
    )


# --- local models ---------------------------------------------------------------------------


def _up_local(stack: schema.Stack, options: UpOptions, reporter: Reporter,
              result: UpResult) -> None:
    wanted = {m.name: m for m in stack.models if isinstance(m, schema.SimulatorModel)}
    for name in local.known_simulators(stack.name):
        if name not in wanted:
            reporter.step(f"stopping simulator {name} (no longer in the stack file)")
            local.stop_simulator(stack.name, name)
    for model in stack.models:
        if isinstance(model, schema.RemoteModel):
            key = None
            if model.api_key not in (None, "none"):
                key = resolve(model.api_key or "", where=f"models.{model.name}.api_key")
            result.endpoints[model.name] = Endpoint(model.url.rstrip("/"), key)
    for model in wanted.values():
        result.endpoints[model.name] = Endpoint(local.simulator_base_url(model), None)
        files = local.simulator_files(stack.name, model.name)
        pid = local.running_pid(files)
        argv = local.simulator_argv(model)
        if pid is not None and local.recorded_argv(files) == argv:
            result.actions.append(Action("keep", model.name, "simulator running"))
            continue
        kind: ActionKind = "replace" if pid is not None else "create"
        result.actions.append(Action(kind, model.name, "simulator"))
        if pid is not None:
            local.stop_simulator(stack.name, model.name)
        reporter.step(f"starting simulator {model.name} on 127.0.0.1:{model.port}")
        result.ready[model.name] = _start_simulator(stack, model, options, reporter)


def _start_simulator(stack: schema.Stack, model: schema.SimulatorModel, options: UpOptions,
                     reporter: Reporter) -> float:
    files = local.simulator_files(stack.name, model.name)
    process = local.start_simulator(stack.name, model)
    probe = HttpProbe(local.simulator_base_url(model), model.served_name or model.model, None)
    try:
        outcome = wait_ready(
            state=lambda: local.process_state(process),
            logs=lambda: local.read_log_lines(files.log),
            probe=probe,
            timeout=options.timeout or max(30.0, model.startup_seconds * 4 + 10),
            on_phase=lambda phase, elapsed: reporter.phase(model.name, phase, elapsed),
        )
    finally:
        probe.close()
    if isinstance(outcome, Failed):
        text = files.log.read_text(errors="replace") if files.log.exists() else ""
        local.stop_simulator(stack.name, model.name)
        _fail(stack, model.name, text, outcome, reporter)
    return outcome.elapsed


# --- proxy and launcher ---------------------------------------------------------------------


def _ensure_tunnels(stack: schema.Stack, result: UpResult, reporter: Reporter) -> None:
    """Loopback-bound models are reached through a background SSH tunnel; others need none."""
    from . import tunnel

    loopback = {m.name: m for m in stack.container_models() if m.bind == "loopback"}
    for name in tunnel.known_tunnels(stack.name):
        if name not in loopback:
            tunnel.stop_tunnel(stack.name, name)
    hosts = stack.all_hosts()
    for key, models in models_by_host(stack).items():
        for model in models:
            if model.name not in loopback:
                continue
            port = tunnel.ensure_tunnel(stack.name, model.name, hosts[key], model.port)
            reporter.step(f"SSH tunnel 127.0.0.1:{port} -> {model.name} (bind: loopback)")
            endpoint = result.endpoints[model.name]
            result.endpoints[model.name] = Endpoint(f"http://127.0.0.1:{port}/v1",
                                                    endpoint.api_key)



def ensure_proxy(stack: schema.Stack, endpoints: dict[str, Endpoint],
                 reporter: Reporter) -> str | None:
    """Start the proxy in the background, or keep it when it runs with the same config."""
    config = build_proxy_config(stack, endpoints, proxy_token(stack))
    if not config.upstreams:
        return None
    state_dir = proxy_state_dir(stack.name)
    status = proxy_daemon.proxy_status(state_dir)
    current = _current_proxy_config(state_dir)
    if status.running and status.healthy and current == config:
        return status.url
    if status.running:
        reporter.step("restarting the proxy (its configuration changed)")
        proxy_daemon.stop_background(state_dir)
    else:
        reporter.step(f"starting the proxy on {config.host}:{config.port}")
    proxy_daemon.start_background(config, state_dir)
    return proxy_daemon.proxy_status(state_dir).url


def _current_proxy_config(state_dir: Path) -> ProxyConfig | None:
    try:
        return ProxyConfig.from_json((state_dir / proxy_daemon.CONFIG_FILE).read_bytes())
    except (OSError, ValueError):
        return None


def _write_launcher(stack: schema.Stack, stack_file: str | None,
                    reporter: Reporter) -> Path:
    from ..launcher import write_launcher

    path = write_launcher(stack, stack_file=stack_file)
    reporter.step(f"wrote the Claude Code launcher {path}")
    return path


# --- down -----------------------------------------------------------------------------------


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

    from ..launcher import default_launcher_path
    from ..paths import stack_dir

    removed = []
    launcher = default_launcher_path(stack)
    try:
        written_by_up = "Written by `spark-stack up`" in launcher.read_text(errors="replace")
    except OSError:
        written_by_up = False
    if written_by_up:
        launcher.unlink()
        removed.append(str(launcher))
    state = stack_dir(stack.name)
    shutil.rmtree(state)
    removed.append(str(state))
    return removed


def kept_in_place(stack: schema.Stack) -> list[str]:
    """What ``down`` leaves (without ``--purge``): the launcher, secrets, the host caches."""
    from ..launcher import default_launcher_path
    from .secrets_store import secrets_dir

    kept = []
    launcher = default_launcher_path(stack)
    if launcher.exists():
        kept.append(f"the Claude Code launcher {launcher}")
    kept.append(f"the stack's secrets and state in {secrets_dir(stack.name).parent}")
    if stack.container_models():
        kept.append("the model caches on the host")
    return kept


def down(stack: schema.Stack, *, trust_host_key: bool = False, wait_lock: float = 0.0,
         reporter: Reporter | None = None, purge: bool = False) -> DownResult:
    """Remove this stack's containers (never others, never caches) and local processes.

    ``purge`` also removes the launcher and the stack's local state (after the containers).
    """
    from . import tunnel
    from .lock import StackLock

    reporter = reporter or QuietReporter()
    result = DownResult()
    # Local processes first: they stop even when a host cannot be reached.
    result.proxy_stopped = proxy_daemon.stop_background(proxy_state_dir(stack.name))
    for name in tunnel.known_tunnels(stack.name):
        tunnel.stop_tunnel(stack.name, name)
    for name in local.known_simulators(stack.name):
        if local.stop_simulator(stack.name, name):
            result.stopped_local.append(name)
    hosts = stack.all_hosts()
    for key in sorted(set(models_by_host(stack)) | set(hosts)):
        with open_session(key, hosts[key], trust_host_key=trust_host_key) as session, \
                StackLock(session.conn, stack.name, wait_seconds=wait_lock):
            for item in session.docker.stack_containers(stack.name):
                reporter.step(f"removing {item.name}")
                session.docker.remove(item.id)
                result.removed.append(item.name)
    if purge:
        result.purged = purge_local(stack)
        if stack.container_models():
            result.kept = ["the model caches on the host"]
    else:
        result.kept = kept_in_place(stack)
    return result
