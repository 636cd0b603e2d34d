"""How ``up`` steers a running proxy without restarting it: files in the proxy's state
directory, read by the proxy every :data:`CONTROL_S` (``ProxyApp._watch_control``).

- ``drain.json`` (written by ``up``): the replicas (upstream names) that get no new requests —
  a rolling replace drains one before it stops its container.
- ``proxy.json`` (the proxy's own config, rewritten by ``up``): when only the upstreams'
  settings changed (a model's ``max_model_len``, its endpoint …) and no upstream came or
  went, the proxy takes them over in place (:func:`reloadable`); anything else is a restart.
- ``control.json`` (written by the proxy): what it applied — the drained replicas, the requests
  each still runs or queues, and the digest of the config it runs — so ``up`` knows when a
  drained replica is idle and when a new config is in effect.

Plain files: no endpoint to authenticate, nothing for a team key to reach, and a proxy that is
not running simply never answers (``up`` then goes on after a short wait).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from spark_stack.proxy.config import ProxyConfig

CONTROL_S = 0.25  # how often the proxy reads its control files
CONFIG_FILE = "proxy.json"  # the ManagedProcess record of the process named "proxy"
DRAIN_FILE = "drain.json"
STATE_FILE = "control.json"


def config_digest(config: ProxyConfig) -> str:
    return hashlib.sha256(config.to_json().encode()).hexdigest()[:16]


def reloadable(running: ProxyConfig, new: ProxyConfig) -> bool:
    """Whether ``new`` differs from ``running`` only in the settings of the same upstreams."""
    return (set(running.upstreams) == set(new.upstreams)
            and replace(running, upstreams=new.upstreams) == new)


def write_drain(directory: Path, replicas: Iterable[str]) -> None:
    from spark_stack.paths import write_private

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(directory / DRAIN_FILE, orjson.dumps({"drain": sorted(replicas)}).decode())


def read_drain(directory: Path) -> frozenset[str]:
    try:
        raw = orjson.loads((directory / DRAIN_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return frozenset()
    names = raw.get("drain") if isinstance(raw, dict) else None
    return frozenset(str(n) for n in names) if isinstance(names, list) else frozenset()


@dataclass(frozen=True)
class ProxyState:
    """What the running proxy says it applied (``control.json``)."""

    drained: frozenset[str]
    busy: Mapping[str, int]  # drained replica → requests it still runs or queues
    config: str  # digest of the config in effect (:func:`config_digest`)

    def to_json(self) -> bytes:
        return orjson.dumps({"drained": sorted(self.drained), "busy": dict(self.busy),
                             "config": self.config})


def read_state(directory: Path) -> ProxyState | None:
    try:
        raw: Any = orjson.loads((directory / STATE_FILE).read_bytes())
        return ProxyState(frozenset(str(n) for n in raw["drained"]),
                          {str(k): int(v) for k, v in dict(raw["busy"]).items()},
                          str(raw["config"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
