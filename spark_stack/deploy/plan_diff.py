"""The host part of ``plan``: the same observe → plan ``up`` runs, read-only.

Nothing is created, locked or generated: an ``auto`` API key that does not exist yet and a
secret that is not exported count as "will change" rather than failing the plan.
"""

from __future__ import annotations

from typing import Any

from ..deployment import Deployment
from ..errors import SparkStackError
from .actions import Action
from .connector import Connect
from .host_exec import Desired, observe, plan_host
from .keys import READ, ContainerSecrets, Unknown, container_secrets
from .nodes import together


def host_diff(deployment: Deployment, *, trust_host_key: bool = False,
              connect: Connect | None = None) -> list[dict[str, Any]]:
    """Per host: reachable or the error, and each model's action with the changed fields."""
    if connect is None:
        from .session import open_session

        connect = open_session
    report: list[dict[str, Any]] = []
    plans: dict[str, list[Action]] = {}
    for key, models in deployment.containers_by_host().items():
        entry: dict[str, Any] = {"host": key, "address": deployment.hosts[key].address,
                                 "reachable": False, "error": None, "fix": None, "actions": []}
        report.append(entry)
        desired = []
        for model in models:
            try:
                secrets = container_secrets(deployment.stack, model, READ)
            except Unknown as unknown:
                secrets = ContainerSecrets({}, None, unknown.message)
            desired.append(Desired(model, secrets))
        try:
            with connect(key, deployment.hosts[key], trust_host_key) as session:
                snapshot = observe(session, deployment.stack, [d.spec.image for d in desired])
        except SparkStackError as exc:
            entry["error"] = exc.message
            entry["fix"] = exc.fix
            continue
        entry["reachable"] = True
        plans[key] = plan_host(desired, snapshot)
    # The nodes of a model across hosts change together, as `up` plans them.
    for entry in report:
        entry["actions"] = [
            {"model": a.model, "action": a.kind, "reason": a.reason, "changed": list(a.changed)}
            for a in together(deployment, plans).get(entry["host"], [])
        ]
    return report
