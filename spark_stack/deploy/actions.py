"""Desired vs observed → one action per model: create, replace, keep or remove (pure).

Idempotency is by our own hash (compose's ``config-hash``), never by diffing ``docker
inspect`` field by field: a container is kept when its spec-hash label and its secrets-hash
label match the desired ones and it runs; anything else is replaced. Containers labelled with
this stack whose model left the stack file are removed. An interrupted replace (``up`` stopped
between starting the new container and removing ``<name>-previous``) is finished, not redone:
the container of the desired name is planned as usual and the previous one rides along as its
``aside``, removed once the kept container serves (or brought back if it does not). ``plan``
renders these actions and ``up`` executes them, so both always agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..spec import LABEL_MODEL, LABEL_PREFIX, LABEL_SPEC_HASH, ContainerSpec
from ..stack.argv import argv_changes

LABEL_SECRETS_HASH = f"{LABEL_PREFIX}.secrets-hash"
LABEL_SPEC = f"{LABEL_PREFIX}.spec"  # canonical spec (references only) to name changed fields

ActionKind = Literal["create", "replace", "keep", "remove"]


@dataclass(frozen=True)
class Observed:
    """One container of this stack as found on the host."""

    id: str
    name: str
    model: str
    spec_hash: str
    secrets_hash: str
    state: str  # created | running | restarting | paused | exited | dead
    image: str
    image_id: str
    started_at: str = ""
    restart_count: int = 0
    oom_killed: bool = False
    exit_code: int = 0
    spec_json: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    model: str
    reason: str
    spec: ContainerSpec | None = None
    observed: Observed | None = None
    changed: tuple[str, ...] = field(default=())
    # The host's name in the stack, set for a node of a model across hosts or a replica.
    host: str | None = None
    # The container an interrupted replace set aside (``<name>-previous``): removed once this
    # model's container serves, restarted if it does not.
    aside: Observed | None = None

    @property
    def node(self) -> str:
        """The model, and for a node of a model across hosts its host and rank
        (``big [b] rank 1``), for a replica its host (``qwen [b]``), as ``status`` names them."""
        if self.host is None:
            return self.model
        rank = self.spec.rank if self.spec is not None else None
        return f"{self.model} [{self.host}]" + ("" if rank is None else f" rank {rank}")


def previous_name(name: str) -> str:
    """The name a replaced container waits under until its successor serves."""
    return f"{name}-previous"


def secrets_hash(spec: ContainerSpec, resolved: Mapping[str, str]) -> str:
    """A salted hash of the secret values the container gets, so rotating one replaces it.

    The values are never stored; the container name salts the hash.
    """
    digest = hashlib.sha256(spec.name.encode())
    for name in sorted(resolved):
        digest.update(b"\0" + name.encode() + b"=" + resolved[name].encode())
    return digest.hexdigest()[:16]


def observed_from_inspect(attrs: Mapping[str, Any]) -> Observed:
    """Parse a container's ``docker inspect`` document."""
    config = attrs.get("Config") or {}
    labels = config.get("Labels") or {}
    state = attrs.get("State") or {}
    return Observed(
        id=str(attrs.get("Id", "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        model=str(labels.get(LABEL_MODEL, "")),
        spec_hash=str(labels.get(LABEL_SPEC_HASH, "")),
        secrets_hash=str(labels.get(LABEL_SECRETS_HASH, "")),
        state=str(state.get("Status", "unknown")),
        image=str(config.get("Image", "")),
        image_id=str(attrs.get("Image", "")),
        started_at=str(state.get("StartedAt", "")),
        restart_count=int(attrs.get("RestartCount", 0) or 0),
        oom_killed=bool(state.get("OOMKilled", False)),
        exit_code=int(state.get("ExitCode", 0) or 0),
        spec_json=str(labels.get(LABEL_SPEC, "")),
    )


def observed_from_summary(item: Mapping[str, Any]) -> Observed:
    """Parse one entry of ``GET /containers/json`` (enough to plan; not restarts or times)."""
    labels = item.get("Labels") or {}
    names = item.get("Names") or [""]
    return Observed(
        id=str(item.get("Id", "")),
        name=str(names[0]).lstrip("/"),
        model=str(labels.get(LABEL_MODEL, "")),
        spec_hash=str(labels.get(LABEL_SPEC_HASH, "")),
        secrets_hash=str(labels.get(LABEL_SECRETS_HASH, "")),
        state=str(item.get("State", "unknown")),
        image=str(item.get("Image", "")),
        image_id=str(item.get("ImageID", "")),
        spec_json=str(labels.get(LABEL_SPEC, "")),
    )


def changed_fields(old_json: str, new: ContainerSpec) -> tuple[str, ...]:
    """The spec fields that differ between a running container's label and the desired spec."""
    if not old_json:
        return ()
    try:
        old = json.loads(old_json)
    except ValueError:
        return ()
    if not isinstance(old, dict):
        return ()
    current = json.loads(new.canonical())
    keys = sorted(set(old) | set(current))
    changed = [k for k in keys if old.get(k) != current.get(k)]
    if "command" in changed and isinstance(old.get("command"), list):
        # Name the settings behind the argv (max_model_len), not "command".
        at = changed.index("command")
        changed[at:at + 1] = argv_changes(old["command"], current["command"]) or ["command"]
    return tuple(dict.fromkeys(changed))


def plan_actions(
    desired: Sequence[ContainerSpec],
    observed: Iterable[Observed],
    secret_hashes: Mapping[str, str],
    image_ids: Mapping[str, str] | None = None,
) -> list[Action]:
    """One action per desired model (stack order), then removals (by name).

    ``secret_hashes`` maps model → :func:`secrets_hash` of its resolved secrets;
    ``image_ids`` maps image reference → the id it has on the host now (after a pull), so a
    moved tag replaces the container.
    """
    by_model: dict[str, list[Observed]] = {}
    for item in observed:
        by_model.setdefault(item.model, []).append(item)
    actions: list[Action] = []
    for spec in desired:
        found = by_model.pop(spec.model, [])
        current, aside = _current_and_aside(spec, found)
        if not found:
            actions.append(Action("create", spec.model, "not on the host", spec))
            continue
        if current is None:
            # Duplicates (a crash between create and remove) are all replaced by one container.
            actions.append(Action("replace", spec.model, f"{len(found)} containers found",
                                  spec, found[0]))
            continue
        reason, changed = _difference(spec, current, secret_hashes.get(spec.model, ""),
                                      (image_ids or {}).get(spec.image))
        kind: ActionKind = "keep" if reason is None else "replace"
        if aside is not None and kind == "keep":
            reason = (f"up to date; finishing an interrupted replace ({aside.name} is removed "
                      "once it serves)")
        actions.append(Action(kind, spec.model, reason or "up to date", spec, current, changed,
                              aside=aside))
    for model in sorted(by_model):
        for item in by_model[model]:
            actions.append(Action("remove", model or item.name, "no longer in the stack file",
                                  None, item))
    return actions


def _current_and_aside(spec: ContainerSpec, found: Sequence[Observed]
                       ) -> tuple[Observed | None, Observed | None]:
    """The model's container and the one an interrupted replace left beside it, if that is
    all ``found`` holds; (None, None) for duplicates of any other kind."""
    if len(found) == 1:
        return found[0], None
    named = [o for o in found if o.name == spec.name]
    aside = [o for o in found if o.name == previous_name(spec.name)]
    if len(found) == 2 and len(named) == 1 and len(aside) == 1:
        return named[0], aside[0]
    return None, None


def _difference(spec: ContainerSpec, current: Observed, wanted_secrets: str,
                image_id: str | None) -> tuple[str | None, tuple[str, ...]]:
    if current.spec_hash != spec.spec_hash:
        changed = changed_fields(current.spec_json, spec)
        what = ", ".join(changed) if changed else "spec"
        return f"changed: {what}", changed
    if current.secrets_hash != wanted_secrets:
        return "changed: a secret value", ("secrets",)
    if image_id and current.image_id and image_id != current.image_id:
        return "image updated on the host", ("image digest",)
    if not current.running:
        return f"container is {current.state}", ()
    return None, ()


def is_noop(actions: Sequence[Action]) -> bool:
    """Nothing to change: every container kept, none set aside by an interrupted replace."""
    return all(a.kind == "keep" and a.aside is None for a in actions)
