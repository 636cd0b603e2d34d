"""The stack file's schema: pydantic models for what a user writes.

Validation here is per field; checks that span fields (duplicate names or ports, routes to
unknown models, memory shared on one GPU, …) live in :mod:`spark_stack.stack.checks` so that
every problem is reported at once with its location.

A model is one of three kinds, told apart by ``kind`` (inferred when absent):
``container`` (spark-stack runs vLLM in a container on a host — the default),
``remote`` (an OpenAI-compatible server that already runs; ``url`` given) or
``simulator`` (the built-in vLLM simulator run as a local process: the demo, no GPU).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
NAME_HINT = "lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
DEFAULT_LISTEN = "127.0.0.1:4000"
MAX_MODEL_LEN_LIMIT = 1 << 24
DEFAULT_HOST_KEY = "default"
_SIZE = re.compile(r"^\d+(\.\d+)?\s*([kmgt]i?b?|b)?$", re.IGNORECASE)


class StrictModel(BaseModel):
    """Rejects unknown keys (the loader adds a "did you mean"), true/false where a number is
    meant (pydantic would read ``port: true`` as port 1), and infinite or NaN numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            accepted = _plain_types(cls.model_fields[info.field_name].annotation)
            if bool not in accepted and accepted & {int, float}:
                raise PydanticCustomError(
                    "number_not_bool", "a number is expected here, not true or false")
        return value


def _plain_types(annotation: Any) -> set[Any]:
    """The classes a (possibly nested Union/Optional/Annotated) annotation is made of."""
    args = get_args(annotation)
    if not args:
        return {annotation}
    if get_origin(annotation) in (list, dict, tuple, Literal):
        return {get_origin(annotation)}
    if get_origin(annotation) is Annotated:
        return _plain_types(args[0])
    return set().union(*(_plain_types(arg) for arg in args))


class HostConfig(StrictModel):
    """An SSH-reachable machine running docker: the GB10."""

    address: str = Field(min_length=1, description="IP, hostname or an ~/.ssh/config alias")
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    identity_file: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return check_address(value)

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not _USER.fullmatch(value):
            raise ValueError(f"user must be a user name ({USER_HINT}) (got {value!r})")
        return value


# Hostnames, IPv4/IPv6 addresses (with a %zone) and ssh-config aliases; no leading '-' (ssh
# would read it as an option) and nothing a shell or ssh_config gives a meaning to.
# (Matched with fullmatch: `$` would accept a trailing newline.)
_ADDRESS = re.compile(r"[A-Za-z0-9_.:%][A-Za-z0-9_.:%-]*")
ADDRESS_HINT = "letters, digits, '.', '-', '_', ':' (IPv6) or '%' (zone), not starting with '-'"
# POSIX portable user names.
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
USER_HINT = "letters, digits, '.', '_' or '-', not starting with '-'"


def check_address(value: str) -> str:
    """``value`` when it is a hostname, IP address or ssh-config alias; else ValueError."""
    if not _ADDRESS.fullmatch(value):
        raise ValueError(
            f"address must be a hostname, IP address or ~/.ssh/config alias ({ADDRESS_HINT}) "
            f"(got {value!r})"
        )
    return value


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# docker's image reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest],
# path components lower-case.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_IMAGE = re.compile(
    rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)


def check_image(value: str) -> str:
    """``value`` when it is a docker image reference; else ValueError."""
    if len(value) > 255 or not _IMAGE.fullmatch(value):
        raise ValueError(
            f"image must be a docker image reference such as vllm/vllm-openai:v0.28.0 "
            f"(lower-case repository, optional registry, :tag and @sha256:digest) (got {value!r})"
        )
    return value


# The resource names `docker run --ulimit` knows.
ULIMIT_NAMES = (
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
    "rss", "rtprio", "rttime", "sigpending", "stack",
)
_ULIMIT_VALUE = re.compile(r"(-?\d+)(?::(-?\d+))?")


def check_ulimit_name(name: str) -> str:
    """``name`` when it is a ulimit docker knows; else ValueError."""
    if name not in ULIMIT_NAMES:
        raise ValueError(f"unknown ulimit {name!r} (known: {', '.join(ULIMIT_NAMES)})")
    return name


def check_ulimit_value(value: int | str) -> int | str:
    """``value`` when docker accepts it as a ulimit (``N`` or ``SOFT:HARD``); else ValueError."""
    if isinstance(value, int):
        return value
    match = _ULIMIT_VALUE.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"a ulimit must be a number or 'SOFT:HARD' numbers, -1 for unlimited (got {value!r})")
    soft, hard = int(match[1]), int(match[2] or match[1])
    if hard != -1 and (soft == -1 or soft > hard):
        raise ValueError(f"the soft limit {soft} is above the hard limit {hard}")
    return value


def check_env_name(name: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(
            f"environment variable name {name!r} is not a valid name (letters, digits "
            "and '_', not starting with a digit)")
    return name


# Map keys and values checked one entry at a time, so every bad entry is reported.
EnvName = Annotated[str, AfterValidator(check_env_name)]
UlimitName = Annotated[str, AfterValidator(check_ulimit_name)]
UlimitValue = Annotated[int | str, AfterValidator(check_ulimit_value)]


class Speculative(StrictModel):
    """Speculative decoding (MTP on Qwen3.5/3.6)."""

    method: str = "mtp"
    num_tokens: int = Field(default=3, ge=1, le=16)
    moe_backend: str | None = None


class CacheMounts(StrictModel):
    """Host directories mounted as the container's caches (``null`` turns one off)."""

    huggingface: str | None = "~/.cache/huggingface"
    vllm: str | None = "~/.cache/vllm"
    flashinfer: str | None = "~/.cache/flashinfer"


class Mount(StrictModel):
    source: str = Field(min_length=1)
    target: str = Field(min_length=1, pattern=r"^/")
    read_only: bool = False


class ReplicaEntry(StrictModel):
    """A replica: its host's name, alone or with its share of the sessions
    (``{host: spark-b, weight: 2}``)."""

    host: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _a_name_alone(cls, value: Any) -> Any:
        return {"host": value} if isinstance(value, str) else value


GpuRequest = (
    Literal["all", "none"] | Annotated[int, Field(ge=1)] | list[Annotated[int, Field(ge=0)]]
)


class _ModelBase(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    served_name: str | None = None
    # Past 16 Mi tokens no model has a window; far past it vLLM's 64-bit arithmetic overflows.
    max_model_len: int | None = Field(default=None, ge=1, le=MAX_MODEL_LEN_LIMIT)


class ContainerModel(_ModelBase):
    """A vLLM server spark-stack runs as a container on a host."""

    kind: Literal["container"] = "container"
    preset: str | None = None
    host: str | None = None
    # One model across several hosts (two Sparks): the first is the head, which serves the API;
    # the link between them is the stack's ``cluster`` section.
    hosts: list[str] | None = None
    # The same model as full copies, one per host (twice the sessions, not a bigger model):
    # the proxy sends each session to one of them (proxy/dispatch.py), in proportion to their
    # weights.
    replicas: list[ReplicaEntry] | None = None
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    image: str | None = None
    model: str | None = None
    port: int = Field(default=8000, ge=1, le=65535)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    # vLLM's --kv-cache-memory-bytes: a fixed KV cache instead of a share of the memory.
    kv_cache_memory_bytes: int | str | None = None
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    moe_backend: str | None = None
    attention_backend: str | None = None
    kv_cache_dtype: str | None = None
    dtype: str | None = None
    load_format: str | None = None
    enable_auto_tool_choice: bool | None = None
    speculative: Speculative | None = None
    extra_args: list[str] = Field(default_factory=list)
    env: dict[EnvName, str] = Field(default_factory=dict)
    cache: CacheMounts = Field(default_factory=CacheMounts)
    mounts: list[Mount] = Field(default_factory=list)
    ipc: Literal["host", "private", "shareable"] | None = None
    shm_size: str | None = None
    ulimits: dict[UlimitName, UlimitValue] = Field(default_factory=dict)
    gpus: GpuRequest = "all"
    bind: Literal["lan", "loopback"] = "lan"
    api_key: str = "auto"
    restart: Literal["no", "on-failure", "unless-stopped", "always"] = "unless-stopped"
    readiness_timeout: float = Field(default=900, gt=0)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        return None if value is None else check_image(value)

    @property
    def multi_node(self) -> bool:
        return bool(self.hosts) and len(self.hosts or ()) > 1

    @property
    def replica_hosts(self) -> list[str]:
        """The hosts of the replicas, in the file's order."""
        return [r.host for r in self.replicas or ()]

    @property
    def tp_size(self) -> int | None:
        """``tensor_parallel_size``; for a multi-node model by default one rank per host."""
        if self.tensor_parallel_size is not None:
            return self.tensor_parallel_size
        return len(self.hosts or ()) if self.multi_node else None

    @field_validator("kv_cache_memory_bytes")
    @classmethod
    def _kv_bytes(cls, value: int | str | None) -> int | None:
        if value is None:
            return None
        size = parse_size(value)
        if size is None or size <= 0:
            raise ValueError("must be a size such as 20GiB, 16gb or 21474836480")
        return size

    @field_validator("shm_size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and not _SIZE.match(value):
            raise ValueError("must be a size such as 16gb, 512m or 1073741824")
        return value

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, value: str) -> str:
        return _secret_setting(value, allowed=("auto", "none"))


class RemoteModel(_ModelBase):
    """An OpenAI-compatible server that already runs; spark-stack only proxies to it."""

    kind: Literal["remote"] = "remote"
    url: str = Field(pattern=r"^https?://[^/\s]+(/.*)?$")
    # How many requests the server runs at once (its --max-num-seqs): the proxy queues beyond.
    max_num_seqs: int | None = Field(default=None, ge=1)
    api_key: str | None = None
    thinking: Literal["qwen3", "none"] = "qwen3"
    # The server parses tool calls (vLLM's --tool-call-parser): smoke checks a tool round trip.
    tools: bool = True

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, value: str | None) -> str | None:
        return None if value is None else _secret_setting(value, allowed=("none",))

    @field_validator("url", mode="before")
    @classmethod
    def _no_credentials(cls, value: Any) -> Any:
        # Before the pattern check, whose message would echo the URL, password and all.
        if isinstance(value, str) and "@" in value.partition("://")[2].partition("/")[0]:
            raise ValueError(
                "url must not hold a user name or password (user:pass@): plan, status and "
                "the proxy's config would show them"
            )
        return value


class SimulatorModel(_ModelBase):
    """The built-in vLLM simulator run as a local process (no GPU, SSH or docker)."""

    kind: Literal["simulator"] = "simulator"
    model: str = "Qwen/Qwen3.6-35B-A3B-simulated"
    port: int = Field(default=8800, ge=1, le=65535)
    tool_call_parser: str | None = "qwen3_coder"
    reasoning_parser: str | None = "qwen3"
    startup_seconds: float = Field(default=0.2, ge=0)
    max_num_seqs: int | None = Field(default=None, ge=1)


def _model_kind(data: Any) -> str:
    if isinstance(data, dict):
        kind = data.get("kind")
        if isinstance(kind, str):
            return kind
        return "remote" if "url" in data else "container"
    return str(getattr(data, "kind", "container"))


ModelConfig = Annotated[
    Annotated[ContainerModel, Tag("container")]
    | Annotated[RemoteModel, Tag("remote")]
    | Annotated[SimulatorModel, Tag("simulator")],
    Discriminator(_model_kind),
]
MODEL_KINDS = ("container", "remote", "simulator")


# Linux interface names: at most 15 characters (IFNAMSIZ), no '/', whitespace or ':'.
_INTERFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}")


class LinkEnd(StrictModel):
    """One host's end of the link between the Sparks (the ConnectX-7 port)."""

    interface: str = Field(description="e.g. enp1s0f1np1 (`ip -br addr` on the host)")
    address: str = Field(description="this host's static address on that interface")

    @field_validator("interface")
    @classmethod
    def _interface(cls, value: str) -> str:
        if not _INTERFACE.fullmatch(value):
            raise ValueError(f"interface must be a network interface name such as enp1s0f1np1 "
                             f"(got {value!r})")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        import ipaddress

        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"address must be an IP address such as 192.168.100.10, the "
                             f"host's static address on the link (got {value!r})") from None
        return value


class ClusterSection(StrictModel):
    """The stack file's ``cluster:`` section: the link a multi-node model's ranks talk over."""

    link: dict[str, LinkEnd] = Field(default_factory=dict)  # host name → its end of the link
    distributed: Literal["native", "ray"] = "native"
    master_port: int = Field(default=29501, ge=1, le=65535)
    # NCCL_IB_HCA, e.g. "rocep1s0f1,roceP2p1s0f1": NCCL then uses RoCE on the CX7 (~24 GB/s).
    nccl_ib_hca: str | None = Field(default=None, pattern=r"^[=^]?[A-Za-z0-9_.:,-]+$")


class ProxyLimits(StrictModel):
    """Bounds on what one client can hold (README "Limits and timeouts"); unset: the default."""

    max_header_bytes: int | None = Field(default=None, gt=0)
    max_headers: int | None = Field(default=None, gt=0)
    header_timeout: float | None = Field(default=None, gt=0)
    body_timeout: float | None = Field(default=None, gt=0)
    keep_alive_timeout: int | None = Field(default=None, gt=0)
    write_timeout: float | None = Field(default=None, gt=0)
    max_connections: int | None = Field(default=None, gt=0)
    upstream_timeout: float | None = Field(default=None, gt=0)
    log_max_bytes: int | None = Field(default=None, gt=0)
    log_backups: int | None = Field(default=None, gt=0)
    max_in_flight: int | None = Field(default=None, gt=0)
    queue_ping_seconds: float | None = Field(default=None, gt=0)
    metrics_keys: int | None = Field(default=None, gt=0)

    def set_values(self) -> dict[str, int | float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ProxySection(StrictModel):
    """The stack file's ``proxy:`` section: the local translating proxy Claude Code talks to."""

    listen: str = DEFAULT_LISTEN
    token: str | None = None
    routes: dict[str, str] = Field(default_factory=dict)
    # Where a name no rule matches goes (the catch-all ``*``): a model, ``none`` (404), or
    # unset = the first model (see spark_stack.routing).
    fallback: str | None = None
    log_prompts: bool = False
    # Turn tool calls the model left as markup in its text back into tool_use blocks.
    repair_tool_markup: bool = False
    limits: ProxyLimits = Field(default_factory=ProxyLimits)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:4000")
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        return None if value is None else _secret_setting(value, allowed=("auto",))

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


ClaudeAlias = Literal["opus", "sonnet", "haiku"]


class ClaudeSection(StrictModel):
    """The stack file's ``claude:`` section: how Claude Code is pointed at the proxy."""

    launcher: str | None = None
    models: dict[ClaudeAlias, str] = Field(default_factory=dict)
    default_model: str | None = None


class Stack(StrictModel):
    """A whole stack file."""

    name: str = Field(pattern=NAME_PATTERN)
    host: HostConfig | None = None
    hosts: dict[str, HostConfig] = Field(default_factory=dict)
    models: list[ModelConfig] = Field(min_length=1)
    cluster: ClusterSection | None = None
    proxy: ProxySection = Field(default_factory=ProxySection)
    claude: ClaudeSection = Field(default_factory=ClaudeSection)

    def all_hosts(self) -> dict[str, HostConfig]:
        """Named hosts; the single ``host:`` form is the host named ``default``."""
        if self.host is not None:
            return {DEFAULT_HOST_KEY: self.host, **self.hosts}
        return dict(self.hosts)

    def host_for(self, model: ContainerModel) -> HostConfig | None:
        """The model's host (a multi-node model's: its head's)."""
        hosts = self.all_hosts()
        if model.hosts:
            return hosts.get(model.hosts[0])
        if model.replicas:
            return hosts.get(model.replica_hosts[0])
        if model.host is not None:
            return hosts.get(model.host)
        if len(hosts) == 1:
            return next(iter(hosts.values()))
        return hosts.get(DEFAULT_HOST_KEY)

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def container_models(self) -> list[ContainerModel]:
        return [m for m in self.models if isinstance(m, ContainerModel)]


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "ki": 2**10, "kib": 2**10, "m": 10**6,
          "mb": 10**6, "mi": 2**20, "mib": 2**20, "g": 10**9, "gb": 10**9, "gi": 2**30,
          "gib": 2**30, "t": 10**12, "tb": 10**12, "ti": 2**40, "tib": 2**40}


def parse_size(value: int | str) -> int | None:
    """``20GiB`` → bytes (decimal for k/m/g, binary for ki/mi/gi); None when it is no size."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
    if match is None or match.group(2).lower() not in _UNITS:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _secret_setting(value: str, *, allowed: tuple[str, ...]) -> str:
    """A secret setting must be a ``${NAME}`` reference (or one of ``allowed`` keywords)."""
    from .secrets import is_reference

    if value in allowed or is_reference(value):
        return value
    options = " or ".join([*(repr(a) for a in allowed), "'${ENV_VAR}'"])
    if "$" in value:  # the value itself is not echoed: it may hold a secret
        raise ValueError(
            f"this is not a reference: only a whole ${{NAME}} is replaced (no defaults, no "
            f"shell syntax such as $NAME); use {options}"
        )
    raise ValueError(
        f"secrets are only accepted by reference: use {options} and export the value"
    )
