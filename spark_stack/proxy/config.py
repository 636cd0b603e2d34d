"""The proxy's own configuration: plain dataclasses, JSON in and out.

``up`` maps the stack file to a :class:`ProxyConfig` and hands it to a background proxy
process through a 0600 JSON file, so this module stays free of pydantic and YAML (the
proxy's hot path must import little).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import orjson

from spark_stack.routing import ORIGINS, Origin

ThinkingFamily = Literal["qwen3", "none"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def url_host(host: str) -> str:
    """``host`` as it goes into a URL: an IPv6 address bracketed (its ``%zone`` kept as
    written, which httpx, yarl and the proxy's client read back as the same address)."""
    return f"[{host}]" if ":" in host else host


def dial_host(listen_host: str) -> str:
    """The host to put in a URL to reach a server bound to ``listen_host``: a wildcard bind is
    reached on loopback, and an IPv6 address is bracketed."""
    return url_host("127.0.0.1" if listen_host in ("0.0.0.0", "::", "") else listen_host)


def listen_url(listen_host: str, port: int) -> str:
    """Where clients reach a server listening on ``listen_host:port``."""
    return f"http://{dial_host(listen_host)}:{port}"


class ConfigError(ValueError):
    """A proxy config file or dict is malformed."""


@dataclass(frozen=True)
class Upstream:
    """One OpenAI-compatible backend (a vLLM server) and the model name it serves."""

    name: str
    base_url: str
    served_name: str
    api_key: str | None = None
    max_model_len: int | None = None
    thinking: ThinkingFamily = "qwen3"
    # Requests the backend runs at once (vLLM's --max-num-seqs): the proxy admits no more and
    # queues the rest fairly by key (dispatch.py). None: the proxy's max_in_flight.
    max_num_seqs: int | None = None

    @property
    def root_url(self) -> str:
        """The server root (``/tokenize`` and ``/health`` live there, not under ``/v1``)."""
        base = self.base_url.rstrip("/")
        return base[:-3] if base.endswith("/v1") else base


@dataclass(frozen=True)
class Route:
    """Requests for models matching ``pattern`` (an exact name or a glob) go to an upstream.

    ``origin`` says why the rule exists (:data:`spark_stack.routing.ORIGINS`); the order and
    meaning of the rules are :mod:`spark_stack.routing`'s.
    """

    pattern: str
    upstream_name: str
    origin: Origin = "route"


@dataclass(frozen=True)
class ProxyConfig:
    """Everything one proxy process needs."""

    host: str = "127.0.0.1"
    port: int = 8082
    token: str | None = None
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    # A model served by several full copies: its upstream name → the upstreams of its
    # replicas (each session sticks to one: dispatch.py). A model not listed is its own one.
    replicas: dict[str, list[str]] = field(default_factory=dict)
    # A replica's share of its model's sessions, relative to the others' (absent: 1).
    weights: dict[str, float] = field(default_factory=dict)
    log_prompts: bool = False
    # Tool calls leaked into the text as markup become tool_use blocks again (markup.py).
    repair_tool_markup: bool = False
    # Bounds on what one client can hold (README "Limits and timeouts"). They apply before
    # authentication: the proxy may listen on a LAN.
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: int = 75
    write_timeout: float = 30.0
    max_connections: int = 512
    upstream_timeout: float = 600.0
    log_max_bytes: int = 20 * 1024 * 1024
    log_backups: int = 3
    # The dispatcher (dispatch.py): slots per upstream that does not declare max_num_seqs
    # (vLLM's own default), how often a queued stream gets a ping, and how many keys get
    # their own /metrics series (the rest are summed as "other").
    max_in_flight: int = 256
    queue_ping_seconds: float = 5.0
    metrics_keys: int = 20
    # The team's keys and the usage database (set by `up`: the stack's state directory).
    keys_file: str | None = None
    usage_db: str | None = None
    # Where `up` steers the running proxy (drained replicas, a reloaded config: control.py).
    control_dir: str | None = None

    def with_own_names(self) -> ProxyConfig:
        """This config plus a rule for each upstream's own and served name (for configs
        written by hand; the deployment's routing table already has them)."""
        routes = list(self.routes)
        taken = {route.pattern for route in routes}
        for upstream in self.upstreams.values():
            for name, origin in ((upstream.name, "model name"),
                                 (upstream.served_name, "served name")):
                if name not in taken:
                    taken.add(name)
                    routes.append(Route(name, upstream.name, origin))  # type: ignore[arg-type]
        return replace(self, routes=routes)

    @property
    def url(self) -> str:
        """Where clients reach this proxy."""
        return listen_url(self.host, self.port)

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    def to_json(self) -> str:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> ProxyConfig:
        try:
            raw = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"proxy config is not valid JSON: {exc}") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Any) -> ProxyConfig:
        if not isinstance(raw, dict):
            raise ConfigError("proxy config must be a JSON object")
        try:
            upstreams = {
                key: _upstream(value) for key, value in dict(raw.get("upstreams", {})).items()
            }
            routes = [
                Route(str(item["pattern"]), str(item["upstream_name"]),
                      _origin(item.get("origin", "route")))
                for item in raw.get("routes", [])
            ]
            config = cls(
                host=str(raw.get("host", "127.0.0.1")),
                port=int(raw.get("port", 8082)),
                token=_optional_str(raw.get("token")),
                upstreams=upstreams,
                routes=routes,
                replicas={str(k): [str(n) for n in v]
                          for k, v in dict(raw.get("replicas", {})).items()},
                weights={str(k): _weight(v) for k, v in dict(raw.get("weights", {})).items()},
                log_prompts=bool(raw.get("log_prompts", False)),
                repair_tool_markup=bool(raw.get("repair_tool_markup", False)),
                keys_file=_optional_str(raw.get("keys_file")),
                usage_db=_optional_str(raw.get("usage_db")),
                control_dir=_optional_str(raw.get("control_dir")),
                **_limits(raw),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"proxy config is malformed: {exc!r}") from exc
        for route in config.routes:
            if route.upstream_name not in config.upstreams:
                raise ConfigError(
                    f"route {route.pattern!r} names unknown upstream {route.upstream_name!r}"
                )
        for model, names in config.replicas.items():
            unknown = [n for n in [model, *names] if n not in config.upstreams]
            if unknown or not names or len(set(names)) != len(names):
                raise ConfigError(
                    f"replicas of {model!r} must be distinct known upstreams, not {names!r}")
        return config


def _origin(value: Any) -> Origin:
    for origin in ORIGINS:
        if value == origin:
            return origin
    raise ValueError(f"route origin must be one of {', '.join(ORIGINS)}, not {value!r}")


_LIMITS = {
    "max_header_bytes": int,
    "max_headers": int,
    "header_timeout": float,
    "body_timeout": float,
    "keep_alive_timeout": int,
    "write_timeout": float,
    "max_connections": int,
    "upstream_timeout": float,
    "log_max_bytes": int,
    "log_backups": int,
    "max_in_flight": int,
    "queue_ping_seconds": float,
    "metrics_keys": int,
}


def _limits(raw: dict[str, Any]) -> dict[str, Any]:
    """The limits ``raw`` sets, each a positive number (absent ones keep their defaults)."""
    limits: dict[str, Any] = {}
    for key, kind in _LIMITS.items():
        if key in raw:
            value = kind(raw[key])
            if value <= 0:
                raise ValueError(f"{key} must be positive, not {raw[key]!r}")
            limits[key] = value
    return limits


def _weight(value: Any) -> float:
    weight = float(value)
    if not 0 < weight < float("inf"):
        raise ValueError(f"a replica's weight must be a positive number, not {value!r}")
    return weight


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _upstream(raw: Any) -> Upstream:
    thinking = raw.get("thinking", "qwen3")
    if thinking not in ("qwen3", "none"):
        raise ValueError(f"thinking must be 'qwen3' or 'none', not {thinking!r}")
    max_len = raw.get("max_model_len")
    max_seqs = raw.get("max_num_seqs")
    if max_seqs is not None and int(max_seqs) <= 0:
        raise ValueError(f"max_num_seqs must be positive, not {max_seqs!r}")
    return Upstream(
        name=str(raw["name"]),
        base_url=str(raw["base_url"]),
        served_name=str(raw["served_name"]),
        api_key=_optional_str(raw.get("api_key")),
        max_model_len=None if max_len is None else int(max_len),
        thinking=thinking,
        max_num_seqs=None if max_seqs is None else int(max_seqs),
    )
