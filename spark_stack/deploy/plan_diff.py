"""The host part of ``plan``: the same action plan ``up`` would execute, read-only.

Nothing is created, locked or generated: an ``auto`` API key that does not exist yet and a
secret that is not exported count as "will change" rather than failing the plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import SparkStackError
from ..spec import API_KEY_ENV, render_container
from ..stack import schema
from ..stack.secrets import resolve
from . import secrets_store
from .actions import plan_actions, secrets_hash
from .session import models_by_host, open_session

if TYPE_CHECKING:
    from rich.console import Console


def _secret_hash_or_unknown(stack: schema.Stack, model: schema.ContainerModel) -> str:
    spec = render_container(stack, model)
    values: dict[str, str] = {}
    try:
        for var in spec.env:
            if var.is_secret:
                values[var.name] = resolve(var.value)
        if model.api_key == "auto":
            key = secrets_store.read_secret(stack.name, secrets_store.api_key_name(model.name))
            if key is None:
                return "(not generated yet)"
            values[API_KEY_ENV] = key
        elif model.api_key != "none":
            values[API_KEY_ENV] = resolve(model.api_key)
    except SparkStackError:
        return "(unresolved)"
    return secrets_hash(spec, values)


def host_diff(stack: schema.Stack, *, trust_host_key: bool = False) -> list[dict[str, Any]]:
    """Per host: reachable or the error, and each model's action with the changed fields."""
    hosts = stack.all_hosts()
    report: list[dict[str, Any]] = []
    for key, models in models_by_host(stack).items():
        entry: dict[str, Any] = {"host": key, "address": hosts[key].address, "reachable": False,
                                 "error": None, "actions": []}
        report.append(entry)
        specs = [render_container(stack, m) for m in models]
        hashes = {m.name: _secret_hash_or_unknown(stack, m) for m in models}
        try:
            with open_session(key, hosts[key], trust_host_key=trust_host_key) as session:
                observed = session.docker.stack_containers(stack.name)
        except SparkStackError as exc:
            entry["error"] = exc.message
            continue
        entry["reachable"] = True
        entry["actions"] = [
            {"model": a.model, "action": a.kind, "reason": a.reason, "changed": list(a.changed)}
            for a in plan_actions(specs, observed, hashes)
        ]
    return report


def print_host_diff(diff: list[dict[str, Any]], out: Console) -> None:
    from rich.markup import escape

    style = {"create": "green", "replace": "yellow", "remove": "red", "keep": "dim"}
    for entry in diff:
        out.print()
        out.print(f"[bold]against host {escape(entry['host'])} ({escape(entry['address'])})[/]",
                  markup=True)
        if not entry["reachable"]:
            out.print(f"  [red]unreachable[/]: {escape(str(entry['error']))}", markup=True)
            continue
        for action in entry["actions"]:
            mark = {"create": "+", "replace": "~", "remove": "-", "keep": "="}[action["action"]]
            out.print(f"  [{style[action['action']]}]{mark} {action['action']:<7}[/] "
                      f"{escape(action['model'])}: {escape(action['reason'])}", markup=True)
