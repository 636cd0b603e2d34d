"""``logs``: the server log of a stack's models (containers on their host, local simulators)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Literal

from ..deployment import Deployment
from ..errors import NotHealthy, UsageError
from . import local
from .connector import Connect, HostSession


def logs(deployment: Deployment, model_name: str | None, *, tail: int | None, follow: bool,
         trust_host_key: bool = False,
         connect: Connect | None = None) -> Iterator[tuple[str, str]]:
    """(model, text chunk) pairs of the models' logs; follows one model with ``follow``."""
    if connect is None:
        from .session import open_session

        connect = open_session
    kinds = {m.name: m.kind for m in deployment.models}
    names = [name for name, kind in kinds.items() if kind != "remote"]
    if model_name is not None:
        if model_name not in kinds:
            raise UsageError(f"no model {model_name!r} in stack {deployment.stack!r}",
                             fix=f"choose one of: {', '.join(kinds)}")
        if kinds[model_name] == "remote":
            raise UsageError(f"model {model_name!r} is remote: spark-stack does not run it",
                             fix="read its logs where that server runs")
        names = [model_name]
    if follow and len(names) > 1:
        raise UsageError("--follow needs one model", fix=f"name one of: {', '.join(names)}")
    tail_arg: int | Literal["all"] = "all" if tail is None else tail
    sessions: dict[str, HostSession] = {}
    try:
        for name in names:
            model = deployment.model(name)
            if model.kind == "simulator":
                yield from _local_logs(deployment.stack, name, tail, follow)
                continue
            assert model.host_key is not None
            keys = ([n.host_key for n in model.nodes] or [r.host_key for r in model.replicas]
                    or [model.host_key])
            if follow and len(keys) > 1:
                raise UsageError(f"--follow reads one host; model {name} runs on "
                                 f"{', '.join(keys)}",
                                 fix="leave out --follow, or use `docker logs -f` on the host")
            for key in keys:
                if key not in sessions:
                    sessions[key] = connect(key, deployment.hosts[key], trust_host_key)
                session = sessions[key]
                # A model across hosts or with replicas: every host's log, the host named
                # ("model [host]").
                label = f"{name} [{key}]" if len(keys) > 1 else name
                found = [o for o in session.docker.stack_containers(deployment.stack)
                         if o.model == name]
                if not found:
                    raise NotHealthy(f"model {name} has no container on {key}",
                                     fix="run `spark-stack up`")
                if follow:
                    for chunk in session.docker.follow_logs(found[0].id, tail=tail_arg):
                        yield label, chunk
                else:
                    yield label, session.docker.logs(found[0].id, tail=tail_arg)
    finally:
        for session in sessions.values():
            session.close()


def _local_logs(stack: str, name: str, tail: int | None,
                follow: bool) -> Iterator[tuple[str, str]]:
    process = local.simulator_process(stack, name)
    try:
        text = process.log_file.read_text(errors="replace")
    except OSError:
        raise NotHealthy(f"simulator {name} has no log yet", fix="run `spark-stack up`") from None
    lines = text.splitlines(keepends=True)
    yield name, "".join(lines if tail is None else lines[-tail:] if tail else [])
    if not follow:
        return
    with process.log_file.open("r", errors="replace") as handle:
        handle.seek(0, 2)
        while process.running_pid() is not None:
            chunk = handle.read()
            if chunk:
                yield name, chunk
            else:
                time.sleep(0.2)
