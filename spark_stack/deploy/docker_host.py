"""The docker edge: the docker API on the host, over the command's one SSH connection.

A private local unix socket (in a temp dir) stands for the host's daemon: each connection to
it is piped into an SSH channel running ``docker system dial-stdio`` on the host, which reaches
the daemon wherever its ``DOCKER_HOST``/context points. So the stack's identity, port, jump
hosts and known_hosts apply — the SDK's own ``ssh://`` transport would read ``~/.ssh`` itself
and force port 22.

Reads (list, inspect, a log) use a few lines of ``http.client`` on that socket; changes,
pulls and a followed log use the docker SDK, imported only when needed: ``up`` on an unchanged
stack and ``status`` then start fast.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import DeployError, HostUnreachable
from ..spec import LABEL_MANAGED_BY, LABEL_STACK, MANAGED_BY, ContainerSpec
from .actions import (
    LABEL_SECRETS_HASH,
    LABEL_SPEC,
    Observed,
    observed_from_inspect,
    observed_from_summary,
)
from .ssh import Forwarder, SshConnection, ssh_command

if TYPE_CHECKING:
    import docker

DOCKER_TIMEOUT = 120
# Pinned, not negotiated: negotiation costs a round trip and a dial-stdio process. 1.41 is
# Docker 20.10's API, which every daemon since (including DGX OS's) still serves.
DOCKER_API_VERSION = "1.41"
DIAL_COMMAND = "docker system dial-stdio"

# A pull reports per-layer events; the callback gets (layer id, status, current, total).
PullProgress = Callable[[str, str, int, int], None]


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class DockerHost:
    """The host's docker daemon, reached through ``conn``."""

    def __init__(self, conn: SshConnection) -> None:
        self.conn = conn
        self._dir = Path(tempfile.mkdtemp(prefix="spark-stack-docker-"))
        sock_path = self._dir / "docker.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        listener.listen(16)
        self._forwarder = Forwarder(listener, lambda: conn.exec_channel(DIAL_COMMAND))
        self._client: docker.DockerClient | None = None
        self._sock_path = str(sock_path)
        self._http: _UnixHTTPConnection | None = None

    @property
    def client(self) -> docker.DockerClient:
        """The docker SDK on the forwarded socket (imported on first use)."""
        if self._client is None:
            import docker
            from docker.errors import DockerException

            try:
                client = docker.DockerClient(base_url=f"unix://{self._sock_path}",
                                             version=DOCKER_API_VERSION, timeout=DOCKER_TIMEOUT)
            except DockerException as exc:
                raise self._unreachable(exc) from exc
            adapter = _shared_pool_adapter(f"http+unix://{self._sock_path}")
            client.api.mount("http+docker://", adapter)
            # Closed with the client, as its own adapter would be.
            setattr(client.api, "_custom_adapter", adapter)  # noqa: B010
            self._client = client
        return self._client

    def get_json(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        """``GET /v1.41<path>`` as JSON; None for a 404. One keep-alive connection."""
        body = self.get(path, query)
        return None if body is None else json.loads(body)

    def get(self, path: str, query: Mapping[str, str] | None = None) -> bytes | None:
        """``GET /v1.41<path>``'s body; None for a 404. One keep-alive connection."""
        url = f"/v{DOCKER_API_VERSION}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        for attempt in (0, 1):
            conn = self._http or _UnixHTTPConnection(self._sock_path, DOCKER_TIMEOUT)
            try:
                conn.request("GET", url)
                answer = conn.getresponse()
                body = answer.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._http = None
                if attempt == 0:
                    continue  # a keep-alive connection gone stale: a GET can be repeated
                raise self._unreachable(exc) from exc
            self._http = conn
            if answer.status == 404:
                return None
            if answer.status != 200:
                message = body.decode(errors="replace").strip()
                try:
                    message = str(json.loads(message).get("message", message))
                except (ValueError, AttributeError):
                    pass
                raise DeployError(f"docker API {path}: HTTP {answer.status}: {message}",
                                  fix="read docker's message above; `journalctl -u docker` on "
                                  "the host has more")
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    def _unreachable(self, exc: BaseException) -> HostUnreachable:
        return HostUnreachable(
            f"the docker API on {self.conn.target.hostname} does not answer through SSH "
            f"(`{DIAL_COMMAND}`): {_short(exc)}",
            fix="start docker on the host: "
            f"`{ssh_command(self.conn.target)} sudo systemctl start docker` (not installed? "
            "https://docs.docker.com/engine/install/)",
        )

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._client is not None:
            self._client.close()
        self._forwarder.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> DockerHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _api(self, what: str, fix: str | None = None) -> Iterator[None]:
        """SDK/transport errors → one line: the API refused (DeployError) or is gone."""
        import requests
        from docker.errors import APIError, DockerException, NotFound

        try:
            yield
        except NotFound:
            raise
        except APIError as exc:
            raise DeployError(f"{what}: {_short(exc)}", fix=fix or _start_fix(str(exc))) from exc
        except (DockerException, requests.RequestException) as exc:
            raise self._unreachable(exc) from exc

    # --- reading -------------------------------------------------------------------------

    def stack_containers(self, stack: str) -> list[Observed]:
        """Every container labelled as this stack's (running or not), in one request."""
        filters = {"label": [f"{LABEL_MANAGED_BY}={MANAGED_BY}", f"{LABEL_STACK}={stack}"]}
        found = self.get_json("/containers/json", {"all": "1", "filters": json.dumps(filters)})
        return [observed_from_summary(item) for item in found or []]

    def inspect(self, ident: str) -> dict[str, Any] | None:
        """A container's ``docker inspect`` document, or None when it is gone."""
        found = self.get_json(f"/containers/{urllib.parse.quote(ident)}/json")
        return None if found is None else dict(found)

    def observed(self, ident: str) -> Observed | None:
        attrs = self.inspect(ident)
        return None if attrs is None else observed_from_inspect(attrs)

    def image_id(self, image: str) -> str | None:
        """The id of ``image`` on the host, or None when it is not there."""
        attrs = self.image_attrs(image)
        return None if attrs is None else str(attrs.get("Id", ""))

    def image_attrs(self, image: str) -> dict[str, Any] | None:
        found = self.get_json(f"/images/{urllib.parse.quote(image, safe='/:@')}/json")
        return None if found is None else dict(found)

    # --- changing ------------------------------------------------------------------------

    def pull(self, image: str, progress: PullProgress | None = None) -> str:
        """Pull ``image`` (reporting per-layer progress); its id on the host."""
        from docker.errors import NotFound

        repository, tag = _split_image(image)
        fix = ("check the image name and the host's registry access (`docker login` on the "
               "host for private registries)")
        try:
            with self._api(f"pulling {image} failed on the host", fix):
                for event in self.client.api.pull(repository, tag=tag, stream=True, decode=True):
                    if "error" in event:
                        raise DeployError(
                            f"pulling {image} failed on the host: {event['error']}", fix=fix)
                    if progress is not None:
                        detail = event.get("progressDetail") or {}
                        progress(str(event.get("id", "")), str(event.get("status", "")),
                                 int(detail.get("current", 0) or 0),
                                 int(detail.get("total", 0) or 0))
        except NotFound as exc:
            raise DeployError(f"image {image} not found: {_short(exc)}", fix=fix) from exc
        found = self.image_id(image)
        if found is None:
            raise DeployError(f"pulled {image} but the host does not list it",
                              fix=f"pull it by hand on the host (`docker pull {image}`) and run "
                              "again")
        return found

    def create_and_start(self, spec: ContainerSpec, environment: Mapping[str, str],
                         secrets_hash: str, home: str) -> Observed:
        """Create and start the container of ``spec`` (environment holds resolved secrets)."""
        from docker.types import Ulimit

        labels = {**spec.labels(), LABEL_SECRETS_HASH: secrets_hash, LABEL_SPEC: spec.canonical()}
        volumes = {
            _remote_path(m.source, home): {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
            for m in spec.mounts
        }
        kwargs: dict[str, Any] = {
            "name": spec.name,
            "command": list(spec.command),
            "environment": dict(environment),
            "labels": labels,
            "volumes": volumes,
            "detach": True,
            "ulimits": [Ulimit(name=n, soft=s, hard=h) for n, s, h in spec.ulimits],
            "device_requests": _device_requests(spec.gpus),
        }
        if spec.network_mode == "host":
            # A node of a model across hosts: NCCL and GLOO need the host's own interfaces;
            # vLLM binds the model's port itself (``--host``/``--port`` in its argv).
            kwargs["network_mode"] = "host"
        else:
            kwargs["ports"] = {f"{spec.container_port}/tcp": (spec.bind_address, spec.host_port)}
        if spec.entrypoint:
            kwargs["entrypoint"] = list(spec.entrypoint)
        if spec.restart != "no":
            kwargs["restart_policy"] = {"Name": spec.restart}
        if spec.ipc:
            kwargs["ipc_mode"] = spec.ipc
        if spec.shm_size:
            kwargs["shm_size"] = spec.shm_size
        with self._api(f"docker could not create {spec.name}"):
            container = self.client.containers.create(spec.image, **kwargs)
        try:
            with self._api(f"docker could not start {spec.name}"):
                container.start()
                container.reload()
        except DeployError:
            # A container that could not start stays "created" and would hold the name.
            self.remove(container.id or spec.name)
            raise
        return observed_from_inspect(container.attrs)

    def stop(self, ident: str, timeout: int = 10) -> None:
        from docker.errors import NotFound

        try:
            with self._api(f"stopping container {ident[:12]}"):
                self.client.api.stop(ident, timeout=timeout)
        except NotFound:
            pass

    def rename(self, ident: str, name: str) -> None:
        with self._api(f"could not rename container {ident[:12]} to {name}"):
            self.client.api.rename(ident, name)

    def start(self, ident: str) -> None:
        with self._api(f"could not start container {ident[:12]}"):
            self.client.api.start(ident)

    def remove(self, ident: str) -> None:
        """Stop and remove a container (never its volumes: those are the caches)."""
        from docker.errors import NotFound

        try:
            with self._api(f"could not remove container {ident[:12]}"):
                self.client.api.remove_container(ident, force=True, v=False)
        except NotFound:
            pass

    def exec(self, ident: str, argv: Sequence[str]) -> tuple[int, str]:
        """Run ``argv`` in a running container (``docker exec``): exit code, stdout+stderr."""
        with self._api(f"could not run {argv[0]} in container {ident[:12]}"):
            created = self.client.api.exec_create(ident, list(argv))
            output = self.client.api.exec_start(created["Id"])
            code = self.client.api.exec_inspect(created["Id"]).get("ExitCode")
        text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
        return (1 if code is None else int(code)), text

    def logs(self, ident: str, *, tail: int | Literal["all"] = "all") -> str:
        """The container's log (stdout and stderr, in order); "" when it is gone. A plain
        read on the keep-alive connection: no SDK, no second ``dial-stdio`` on the host."""
        body = self.get(f"/containers/{urllib.parse.quote(ident)}/logs",
                        {"stdout": "1", "stderr": "1", "tail": str(tail)})
        return "" if body is None else demultiplex(body).decode(errors="replace")

    def follow_logs(self, ident: str, *, tail: int | Literal["all"] = "all") -> Iterator[str]:
        with self._api("following the container log"):
            stream = self.client.api.logs(ident, stdout=True, stderr=True, tail=tail,
                                          stream=True, follow=True)
            for chunk in stream:
                yield bytes(chunk).decode(errors="replace")


def demultiplex(body: bytes) -> bytes:
    """The text of a log read from the docker API: a container without a TTY sends frames of
    an 8-byte header (stream 0-2, three zero bytes, big-endian length) and their payload; one
    with a TTY sends the raw bytes."""
    out = bytearray()
    at = 0
    while at < len(body):
        header = body[at:at + 8]
        if len(header) < 8 or header[0] > 2 or header[1:4] != b"\0\0\0":
            return bytes(body) if at == 0 else bytes(out + body[at:])
        size = int.from_bytes(header[4:8], "big")
        out += body[at + 8:at + 8 + size]
        at += 8 + size
    return bytes(out)


def _shared_pool_adapter(socket_url: str) -> Any:
    """An SDK transport adapter with one connection pool for every URL.

    docker-py keys its unix-socket pools by the full request URL, so each new path opened a
    new connection — here a new ``dial-stdio`` session on the host, and sshd allows only 10
    sessions per connection (MaxSessions).
    """
    from docker.transport import UnixHTTPAdapter

    class SharedPoolAdapter(UnixHTTPAdapter):
        def get_connection(self, url: str | bytes, proxies: Any = None) -> Any:
            return super().get_connection("http+docker://localhost", proxies)

    return SharedPoolAdapter(socket_url, timeout=DOCKER_TIMEOUT, max_pool_size=4)


def _device_requests(gpus: object) -> list[Any]:
    from docker.types import DeviceRequest

    if gpus == "none":
        return []
    if gpus == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if isinstance(gpus, int):
        return [DeviceRequest(count=gpus, capabilities=[["gpu"]])]
    if isinstance(gpus, tuple):
        return [DeviceRequest(device_ids=[str(g) for g in gpus], capabilities=[["gpu"]])]
    return []


def _remote_path(source: str, home: str) -> str:
    if source == "~":
        return home
    if source.startswith("~/"):
        return home.rstrip("/") + source[1:]
    return source


def _split_image(image: str) -> tuple[str, str]:
    if "@" in image:
        repository, _, digest = image.partition("@")
        return repository, digest
    name, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return image, "latest"


def _short(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if explanation:
        text = str(explanation)
    else:
        text = str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _start_fix(message: str) -> str:
    lowered = message.lower()
    if "could not select device driver" in lowered or "nvidia" in lowered:
        return "install the NVIDIA container toolkit on the host, or set gpus: none"
    if "port is already allocated" in lowered or "address already in use" in lowered:
        return "free the model's port on the host or choose another `port:`"
    if "rlimit" in lowered:
        return "drop the ulimits setting (the daemon lacks CAP_SYS_RESOURCE)"
    return "see the message above; `spark-stack logs` shows the container's output"
