"""Resolving a deployment's secrets: each model's API key and a container's secret environment.

The one place a :class:`~spark_stack.deployment.KeySource` becomes a value. Three modes, for
three kinds of caller: ``up`` generates an ``auto`` key the first time and fails on an unset
``${VAR}`` (:data:`CREATE`); ``status``, ``smoke`` and ``plan --diff`` only read and treat a
missing value as unknown (:data:`READ`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ..deployment import Deployment, ModelDeployment
from ..errors import SparkStackError
from ..spec import API_KEY_ENV, ContainerSpec
from ..stack.secrets import resolve
from . import secrets_store
from .actions import secrets_hash

Mode = Literal["create", "read"]
CREATE: Mode = "create"
READ: Mode = "read"


class Unknown(SparkStackError):
    """A secret that cannot be read without changing something (``plan --diff``)."""


def model_key(stack: str, model: ModelDeployment, mode: Mode = READ) -> str | None:
    """The model's API key: None for ``none``; in READ mode also when it cannot be read."""
    key = model.key
    if key.mode == "none":
        return None
    if key.mode == "auto":
        name = secrets_store.api_key_name(model.name)
        if mode == CREATE:
            return secrets_store.get_or_create(stack, name)
        return secrets_store.read_secret(stack, name)
    try:
        return resolve(key.reference or "", where=f"models.{model.name}.api_key")
    except SparkStackError:
        if mode == CREATE:
            raise
        return None


def model_keys(deployment: Deployment, mode: Mode = READ) -> dict[str, str | None]:
    return {m.name: model_key(deployment.stack, m, mode) for m in deployment.models}


@dataclass(frozen=True)
class ContainerSecrets:
    """A container's resolved environment (never printed) and the hash that labels it."""

    env: dict[str, str]
    api_key: str | None
    hash: str


def container_secrets(stack: str, model: ModelDeployment,
                      mode: Mode = CREATE) -> ContainerSecrets:
    """Resolve the container's ``${VAR}`` environment and API key.

    CREATE raises on an unset variable; READ raises :class:`Unknown` instead, so a caller can
    say "unresolved" without generating a key.
    """
    spec = model.container
    assert spec is not None
    try:
        env = {var.name: resolve(var.value, where=f"models.{spec.model}.env.{var.name}")
               for var in spec.env}
    except SparkStackError as exc:
        if mode == CREATE:
            raise
        raise Unknown("(unresolved)") from exc
    key = model_key(stack, model, mode)
    if key is None and model.key.mode != "none":
        raise Unknown("(not generated yet)" if model.key.mode == "auto" else "(unresolved)")
    if key is not None:
        env[API_KEY_ENV] = key
    return ContainerSecrets(env, key, secrets_hash(spec, secret_values(spec, env)))


def secret_values(spec: ContainerSpec, env: Mapping[str, str]) -> dict[str, str]:
    secret_names = {var.name for var in spec.env if var.is_secret} | {API_KEY_ENV}
    return {k: v for k, v in env.items() if k in secret_names}
