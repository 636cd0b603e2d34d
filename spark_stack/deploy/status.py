"""``status``: the stack's state as plain data (the ``status --json`` schema in the README).

Host reachability, per model its container (state, uptime, restarts, image and digest, drift
from the stack file) and health (``/health`` and the served name in ``/v1/models``), GPUs from
``nvidia-smi`` when the host has it, and the local proxy.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from ..deployment import Deployment, ModelDeployment
from ..errors import EXIT_OK, EXIT_UNHEALTHY, EXIT_UNREACHABLE, SparkStackError, TeamStateError
from ..paths import proxy_state_dir, stack_dir
from ..proxy import daemon as proxy_daemon
from ..proxy.keyfile import KEY_FILE, read_keys
from ..spec import ContainerSpec
from . import local
from .actions import Observed, changed_fields, previous_name
from .connector import Connect, HostSession
from .host_exec import ProbeFactory
from .keys import READ, model_key
from .nodes import joined
from .readiness import HttpProbe, Probe
from .simulators import simulator_changes


def _uptime(started_at: str) -> float | None:
    if not started_at or started_at.startswith("0001-"):
        return None
    try:
        text = started_at.rstrip("Z")
        head, _, frac = text.partition(".")
        when = datetime.fromisoformat(head + ("." + frac[:6] if frac else "")).replace(
            tzinfo=UTC)
    except ValueError:
        return None
    return max(0.0, (datetime.now(UTC) - when).total_seconds())


def _check_http(probe: Probe) -> dict[str, Any]:
    served = probe.served_name
    try:
        health = probe.health()
        names = probe.models() if health else None
    finally:
        probe.close()
    return {"health": health, "models_listed": names is not None and served in names}


HOST_KEYS = ("name", "address", "reachable", "ssh", "error", "fix", "gpus")
MODEL_KEYS = (
    "name", "kind", "host", "state", "healthy", "served_name", "endpoint", "uptime_seconds",
    "restarts", "health", "models_listed", "drift", "drift_fields", "container", "container_id",
    "image", "image_id", "image_digest", "exit_code", "oom_killed", "pid", "rank", "joined",
)


def status(deployment: Deployment, *, trust_host_key: bool = False,
           connect: Connect | None = None, probe: ProbeFactory = HttpProbe) -> dict[str, Any]:
    """The stack's state as plain data (the ``status --json`` schema, see the README).

    Every host and model entry has the keys of ``HOST_KEYS``/``MODEL_KEYS`` whatever happens
    (``null`` for what could not be seen), so scripts can rely on one shape.
    """
    if connect is None:
        from .session import open_session

        connect = open_session
    stack = deployment.stack
    report: dict[str, Any] = {"stack": stack, "healthy": True, "hosts": [], "models": []}
    for key, models in deployment.containers_by_host().items():
        host_entry = _host_entry(key, deployment.hosts[key].address)
        report["hosts"].append(host_entry)
        try:
            session = connect(key, deployment.hosts[key], trust_host_key)
        except SparkStackError as exc:  # e.g. an unknown host key: the fix `up` would give
            host_entry["error"], host_entry["fix"] = exc.message, exc.fix
            report["models"] += [_model_entry(m, state="unknown") for m in models]
            continue
        with session:
            host_entry["ssh"] = session.display
            try:
                report["models"] += _host_models(stack, key, models, session, probe)
                host_entry["gpus"] = _gpus(session)
                host_entry["reachable"] = True
            except SparkStackError as exc:  # e.g. the host's docker daemon does not answer
                host_entry["error"], host_entry["fix"] = exc.message, exc.fix
                report["models"] += [_model_entry(m, state="unknown") for m in models]
    _joined_by_their_heads(report["models"])
    for model in deployment.models:
        if model.kind == "simulator":
            report["models"].append(_simulator_entry(stack, model, probe))
        elif model.kind == "remote":
            report["models"].append(_remote_entry(stack, model, probe))
    status_ = proxy_daemon.proxy_status(proxy_state_dir(stack))
    report["proxy"] = {"running": status_.running, "pid": status_.pid, "url": status_.url,
                       "healthy": status_.healthy, "log_file": str(status_.log_file),
                       **_team_keys(stack)}
    # The proxy is part of the stack: Claude Code reaches the models only through it.
    report["healthy"] = bool(report["models"]
                             and all(h["error"] is None for h in report["hosts"])
                             and all(m["healthy"] for m in report["models"])
                             and status_.running and status_.healthy)
    return report


def _joined_by_their_heads(entries: list[dict[str, Any]]) -> None:
    """A worker of a model whose head serves has joined (see :mod:`.nodes`), whether or not
    its log says so."""
    serving = {e["name"] for e in entries if e["rank"] == 0 and e["joined"]}
    for entry in entries:
        if entry["rank"] and entry["name"] in serving and entry["state"] == "running":
            entry["joined"] = True
            entry["healthy"] = not entry["drift"]


def _team_keys(stack: str) -> dict[str, Any]:
    """How many team keys the proxy accepts (besides the owner's token), or why not known."""
    try:
        return {"keys": len(read_keys(stack_dir(stack) / KEY_FILE)), "keys_error": None}
    except TeamStateError as exc:
        return {"keys": None, "keys_error": f"{exc.message} (fix: {exc.fix})"}


def exit_code(report: dict[str, Any]) -> int:
    """3 when a host (or its docker daemon) cannot be reached, 4 when not healthy, else 0."""
    if any(h["error"] is not None for h in report["hosts"]):
        return EXIT_UNREACHABLE
    return EXIT_OK if report["healthy"] else EXIT_UNHEALTHY


def _host_entry(name: str, address: str) -> dict[str, Any]:
    return {"name": name, "address": address, "reachable": False, "ssh": None, "error": None,
            "fix": None, "gpus": []}


def _host_models(stack: str, key: str, models: list[ModelDeployment],
                 session: HostSession, probe: ProbeFactory) -> list[dict[str, Any]]:
    entries = []
    observed: dict[str, list[Observed]] = {}
    for item in session.docker.stack_containers(stack):
        observed.setdefault(item.model, []).append(item)
    leftovers: list[tuple[Observed, str]] = []
    for model in models:
        spec = model.container
        assert spec is not None
        found, others = _current(spec, observed.pop(model.name, []))
        leftovers += [(o, _why_extra(spec, o)) for o in others]
        if found is not None:  # the listing lacks restarts, start time, OOM
            found = session.docker.observed(found.id) or found
        entry = _model_entry(model, state="missing" if found is None else found.state)
        key_value = model_key(stack, model, READ)
        entry["endpoint"] = model.endpoint
        if found is not None:
            entry.update(_container_entry(session, spec, found))
            if model.rank is not None:  # a node of a model across hosts: did its rank join?
                log = session.docker.logs(found.id, tail=400) if found.running else ""
                entry["joined"] = found.running and joined(log, model.rank)
            if model.rank:  # a worker serves no API: it is healthy once it joined
                entry["endpoint"] = None
                entry["healthy"] = bool(entry["joined"] and not entry["drift"])
                entries.append(entry)
                continue
            if found.running:
                base = model.endpoint
                forwarder = None
                if model.via_tunnel:
                    forwarder, port = session.conn.forward("127.0.0.1", spec.host_port)
                    base = f"http://127.0.0.1:{port}/v1"
                try:
                    entry.update(_check_http(probe(base, model.served_name, key_value)))
                finally:
                    if forwarder is not None:
                        forwarder.close()
        if entry["rank"] == 0 and entry["health"] and entry["models_listed"]:
            entry["joined"] = True  # a head that serves: its world formed
        entry["healthy"] = bool(entry["health"] and entry["models_listed"] and not entry["drift"]
                                and entry["joined"] is not False)
        entries.append(entry)
    leftovers += [(o, "not in stack file") for found in observed.values() for o in found]
    for leftover, why in leftovers:
        entry = {key_: None for key_ in MODEL_KEYS}
        entry.update({"name": leftover.model, "kind": "container", "host": key,
                      "state": leftover.state, "container": leftover.name,
                      "container_id": leftover.id[:12], "healthy": False,
                      "health": False, "models_listed": False, "drift": True,
                      "drift_fields": [why]})
        entries.append(entry)
    return entries


def _current(spec: ContainerSpec, found: list[Observed]) -> tuple[Observed | None,
                                                                   list[Observed]]:
    """The model's container (the one of its name, else the first) and any others beside it
    (what an interrupted replace set aside, or duplicates)."""
    if not found:
        return None, []
    current = next((o for o in found if o.name == spec.name), found[0])
    return current, [o for o in found if o is not current]


def _why_extra(spec: ContainerSpec, found: Observed) -> str:
    if found.name == previous_name(spec.name):
        return "set aside by an interrupted replace (`spark-stack up` removes it)"
    return "duplicate (`spark-stack up` replaces them)"


def _model_entry(model: ModelDeployment, *, state: str) -> dict[str, Any]:
    return {
        "name": model.name,
        "kind": model.kind,
        "host": model.host_key,
        "state": state,
        "healthy": False,
        "served_name": model.served_name,
        "endpoint": None,
        "uptime_seconds": None,
        "restarts": None,
        "health": False,
        "models_listed": False,
        "drift": False,
        "drift_fields": [],
        "container": None,
        "container_id": None,
        "image": None,
        "image_id": None,
        "image_digest": None,
        "exit_code": None,
        "oom_killed": None,
        "pid": None,
        "rank": model.rank,
        "joined": None if model.rank is None else False,
    }


def _container_entry(session: HostSession, spec: ContainerSpec, found: Observed
                     ) -> dict[str, Any]:
    drift = found.spec_hash != spec.spec_hash
    fields = list(changed_fields(found.spec_json, spec)) if drift else []
    digest = None
    attrs = session.docker.image_attrs(found.image)
    if attrs is not None:
        digests = attrs.get("RepoDigests") or []
        digest = digests[0] if digests else None
    return {
        "container": found.name,
        "container_id": found.id[:12],
        "image": found.image,
        "image_id": found.image_id,
        "image_digest": digest,
        "uptime_seconds": _uptime(found.started_at) if found.running else None,
        "restarts": found.restart_count,
        "exit_code": None if found.running else found.exit_code,
        "oom_killed": found.oom_killed,
        "drift": drift,
        "drift_fields": fields or (["spec"] if drift else []),
    }


def _gpus(session: HostSession) -> list[dict[str, Any]]:
    done = session.conn.run_script(
        "command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.total,"
        "memory.used,utilization.gpu --format=csv,noheader,nounits", timeout=20)
    gpus = []
    if done.ok:
        for line in done.stdout.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 5:
                gpus.append({"index": parts[0], "name": parts[1],
                             "memory_total_mib": _num(parts[2]),
                             "memory_used_mib": _num(parts[3]),
                             "utilization_percent": _num(parts[4])})
    return gpus


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _simulator_entry(stack: str, model: ModelDeployment,
                     probe: ProbeFactory) -> dict[str, Any]:
    process = local.simulator_process(stack, model.name)
    pid = process.running_pid()
    entry = _model_entry(model, state="running" if pid else "missing")
    entry["endpoint"] = model.endpoint
    entry["pid"] = pid
    if pid is not None:
        entry.update(_check_http(probe(model.endpoint, model.served_name, None)))
        recorded, argv = local.recorded_argv(process), list(model.simulator_argv or ())
        entry["drift"] = recorded != argv
        entry["drift_fields"] = list(simulator_changes(recorded, argv)) if entry["drift"] else []
        entry["uptime_seconds"] = max(0.0, time.time() - process.pid_file.stat().st_mtime)
    entry["healthy"] = bool(entry["health"] and entry["models_listed"] and not entry["drift"])
    return entry


def _remote_entry(stack: str, model: ModelDeployment, probe: ProbeFactory) -> dict[str, Any]:
    entry = _model_entry(model, state="external")
    entry["endpoint"] = model.endpoint
    key = model_key(stack, model, READ)
    entry.update(_check_http(probe(model.endpoint, model.served_name, key)))
    entry["state"] = "serving" if entry["health"] else "unreachable"
    entry["healthy"] = bool(entry["health"] and entry["models_listed"])
    return entry
