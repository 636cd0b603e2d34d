"""``logs``: the server log of a stack's models (containers on their host, local simulators)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Literal

from ..errors import NotHealthy, UsageError
from ..stack import schema
from . import local
from .session import HostSession, models_by_host, open_session


def logs(stack: schema.Stack, model_name: str | None, *, tail: int | None, follow: bool,
         trust_host_key: bool = False) -> Iterator[tuple[str, str]]:
    """(model, text chunk) pairs of the models' logs; follows one model with ``follow``."""
    names = [m.name for m in stack.models if not isinstance(m, schema.RemoteModel)]
    if model_name is not None:
        model = stack.model(model_name)
        if model is None:
            raise UsageError(f"no model {model_name!r} in stack {stack.name!r}",
                             fix=f"choose one of: {', '.join(m.name for m in stack.models)}")
        if isinstance(model, schema.RemoteModel):
            raise UsageError(f"model {model_name!r} is remote: spark-stack does not run it")
        names = [model_name]
    if follow and len(names) > 1:
        raise UsageError("--follow needs one model", fix=f"name one of: {', '.join(names)}")
    tail_arg: int | Literal["all"] = "all" if tail is None else tail
    hosts = stack.all_hosts()
    host_of = {m.name: k for k, ms in models_by_host(stack).items() for m in ms}
    sessions: dict[str, HostSession] = {}
    try:
        for name in names:
            if isinstance(stack.model(name), schema.SimulatorModel):
                yield from _local_logs(stack, name, tail, follow)
                continue
            key = host_of[name]
            if key not in sessions:
                sessions[key] = open_session(key, hosts[key], trust_host_key=trust_host_key)
            session = sessions[key]
            found = [o for o in session.docker.stack_containers(stack.name) if o.model == name]
            if not found:
                raise NotHealthy(f"model {name} has no container on {key}",
                                 fix="run `spark-stack up`")
            if follow:
                for chunk in session.docker.follow_logs(found[0].id, tail=tail_arg):
                    yield name, chunk
            else:
                yield name, session.docker.logs(found[0].id, tail=tail_arg)
    finally:
        for session in sessions.values():
            session.close()


def _local_logs(stack: schema.Stack, name: str, tail: int | None,
                follow: bool) -> Iterator[tuple[str, str]]:
    files = local.simulator_files(stack.name, name)
    try:
        text = files.log.read_text(errors="replace")
    except OSError:
        raise NotHealthy(f"simulator {name} has no log yet", fix="run `spark-stack up`") from None
    lines = text.splitlines(keepends=True)
    yield name, "".join(lines if tail is None else lines[-tail:] if tail else [])
    if not follow:
        return
    with files.log.open("r", errors="replace") as handle:
        handle.seek(0, 2)
        while local.running_pid(files) is not None:
            chunk = handle.read()
            if chunk:
                yield name, chunk
            else:
                time.sleep(0.2)
