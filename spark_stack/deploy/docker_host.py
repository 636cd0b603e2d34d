"""The docker edge: the docker SDK on the host, over the command's one SSH connection.

The SDK talks HTTP to a local unix socket (in a private temp dir); each connection to it is
piped into an SSH channel running ``docker system dial-stdio`` on the host, which reaches the
host's daemon wherever its ``DOCKER_HOST``/context points. So the SDK gets the container API,
and the stack's identity, port, jump hosts and known_hosts apply — the SDK's own ``ssh://``
transport would read ``~/.ssh`` itself and force port 22.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import docker
import requests
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container
from docker.transport import UnixHTTPAdapter
from docker.types import DeviceRequest, Ulimit

from ..errors import DeployError, HostUnreachable
from ..spec import LABEL_MANAGED_BY, LABEL_STACK, MANAGED_BY, ContainerSpec
from .actions import LABEL_SECRETS_HASH, LABEL_SPEC, Observed, observed_from_inspect
from .ssh import Forwarder, SshConnection

DOCKER_TIMEOUT = 120
# Pinned, not negotiated: negotiation costs a round trip and a dial-stdio process. 1.41 is
# Docker 20.10's API, which every daemon since (including DGX OS's) still serves.
DOCKER_API_VERSION = "1.41"
DIAL_COMMAND = "docker system dial-stdio"

# A pull reports per-layer events; the callback gets (layer id, status, current, total).
PullProgress = Callable[[str, str, int, int], None]


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
        self._url = f"unix://{sock_path}"

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                client = docker.DockerClient(
                    base_url=self._url, version=DOCKER_API_VERSION, timeout=DOCKER_TIMEOUT)
            except DockerException as exc:
                raise self._unreachable(exc) from exc
            adapter = _SharedPoolAdapter(self._url.replace("unix://", "http+unix://"),
                                         timeout=DOCKER_TIMEOUT, max_pool_size=4)
            client.api.mount("http+docker://", adapter)
            # Closed with the client, as its own adapter would be.
            setattr(client.api, "_custom_adapter", adapter)  # noqa: B010
            self._client = client
        return self._client

    def _unreachable(self, exc: BaseException) -> HostUnreachable:
        return HostUnreachable(
            f"the docker API on {self.conn.target.hostname} does not answer through SSH "
            f"(`{DIAL_COMMAND}`): {_short(exc)}",
            fix="run `spark-stack up` for the preflight's diagnosis, or "
            f"`ssh {self.conn.target.alias} docker info`",
        )

    def close(self) -> None:
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
        """Docker/transport errors → one line: the API refused (DeployError) or is gone."""
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
        """Every container labelled as this stack's (running or not)."""
        filters: dict[str, str | list[str] | bool] = {
            "label": [f"{LABEL_MANAGED_BY}={MANAGED_BY}", f"{LABEL_STACK}={stack}"]
        }
        with self._api("listing containers"):
            found = self.client.containers.list(all=True, filters=filters)
            return [observed_from_inspect(c.attrs) for c in found]

    def container(self, ident: str) -> Container | None:
        try:
            with self._api("inspecting a container"):
                return self.client.containers.get(ident)
        except NotFound:
            return None

    def image_id(self, image: str) -> str | None:
        """The id of ``image`` on the host, or None when it is not there."""
        attrs = self.image_attrs(image)
        return None if attrs is None else str(attrs.get("Id", ""))

    def image_attrs(self, image: str) -> dict[str, Any] | None:
        try:
            with self._api(f"inspecting image {image}"):
                return dict(self.client.images.get(image).attrs)
        except NotFound:
            return None

    # --- changing ------------------------------------------------------------------------

    def pull(self, image: str, progress: PullProgress | None = None) -> str:
        """Pull ``image`` (reporting per-layer progress); its id on the host."""
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
            raise DeployError(f"pulled {image} but the host does not list it")
        return found

    def create_and_start(self, spec: ContainerSpec, environment: Mapping[str, str],
                         secrets_hash: str, home: str) -> Observed:
        """Create and start the container of ``spec`` (environment holds resolved secrets)."""
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
            "ports": {f"{spec.container_port}/tcp": (spec.bind_address, spec.host_port)},
            "volumes": volumes,
            "detach": True,
            "ulimits": [Ulimit(name=n, soft=s, hard=h) for n, s, h in spec.ulimits],
            "device_requests": _device_requests(spec.gpus),
        }
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
        try:
            with self._api(f"stopping container {ident[:12]}"):
                self.client.api.stop(ident, timeout=timeout)
        except NotFound:
            pass

    def remove(self, ident: str) -> None:
        """Stop and remove a container (never its volumes: those are the caches)."""
        try:
            with self._api(f"could not remove container {ident[:12]}"):
                self.client.api.remove_container(ident, force=True, v=False)
        except NotFound:
            pass

    def logs(self, ident: str, *, tail: int | Literal["all"] = "all") -> str:
        try:
            with self._api("reading the container log"):
                data = self.client.api.logs(ident, stdout=True, stderr=True, tail=tail)
        except NotFound:
            return ""
        return bytes(data).decode(errors="replace")

    def follow_logs(self, ident: str, *, tail: int | Literal["all"] = "all") -> Iterator[str]:
        with self._api("following the container log"):
            stream = self.client.api.logs(ident, stdout=True, stderr=True, tail=tail,
                                          stream=True, follow=True)
            for chunk in stream:
                yield bytes(chunk).decode(errors="replace")


class _SharedPoolAdapter(UnixHTTPAdapter):
    """One connection pool for every URL.

    docker-py keys its unix-socket pools by the full request URL, so each new path opened a
    new connection — here a new ``dial-stdio`` session on the host, and sshd allows only 10
    sessions per connection (MaxSessions).
    """

    def get_connection(self, url: str | bytes, proxies: Any = None) -> Any:
        return super().get_connection("http+docker://localhost", proxies)


def _device_requests(gpus: object) -> list[DeviceRequest]:
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
    if isinstance(exc, APIError) and exc.explanation:
        text = str(exc.explanation)
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
