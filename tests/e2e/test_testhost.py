"""The stand-in GB10 host is real: OpenSSH, a docker daemon, and the simulator image."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from docker.models.containers import Container

from tests.testhost import HostInfo, ensure_up, status
from tests.testhost.image import SIMULATOR_SRC

# Containers this test run starts carry its own id, so cleanup never touches another run's.
TEST_LABELS = {"spark-stack.test": uuid.uuid4().hex}


def _ssh(testhost: HostInfo) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(testhost.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        testhost.address, port=testhost.port, username=testhost.user,
        key_filename=str(testhost.key_path), look_for_keys=False, allow_agent=False, timeout=10,
    )
    return client


def _exec(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=30)
    out = stdout.read().decode()
    return stdout.channel.recv_exit_status(), out, stderr.read().decode()


@pytest.fixture
def local_docker(testhost: HostInfo) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=testhost.local_docker_url, timeout=60)
    yield client
    mine = [f"{key}={value}" for key, value in TEST_LABELS.items()]
    for container in client.containers.list(all=True, filters={"label": mine}):
        container.remove(force=True)
    client.close()


def test_paramiko_runs_docker_on_the_stand_in_daemon(testhost: HostInfo) -> None:
    client = _ssh(testhost)
    try:
        code, out, err = _exec(client, "docker info --format '{{json .}}'")
        assert code == 0, err
        daemon = json.loads(out)
        assert daemon["ID"] == testhost.daemon_id
        assert "spark-stack-testhost=1" in daemon["Labels"]
        assert daemon["DockerRootDir"] == "/var/lib/spark-stack-testhost/docker"
        code, out, _ = _exec(client, "ip -4 -o addr show")
        assert code == 0
        assert f"inet {testhost.address}/24" in out
    finally:
        client.close()


def test_password_login_is_refused(testhost: HostInfo) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(testhost.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(
            testhost.address, port=testhost.port, username=testhost.user, password="root",
            look_for_keys=False, allow_agent=False, timeout=10,
        )
    client.close()


def test_unknown_host_key_is_rejected(testhost: HostInfo) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client.connect(
            testhost.address, port=testhost.port, username=testhost.user,
            key_filename=str(testhost.key_path), look_for_keys=False, allow_agent=False,
            timeout=10,
        )
    client.close()


def test_changed_host_key_is_rejected(testhost: HostInfo) -> None:
    client = paramiko.SSHClient()
    client.get_host_keys().add(testhost.address, "ssh-ed25519", _other_ed25519_key())
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect(
            testhost.address, port=testhost.port, username=testhost.user,
            key_filename=str(testhost.key_path), look_for_keys=False, allow_agent=False,
            timeout=10,
        )
    client.close()


def _other_ed25519_key() -> paramiko.PKey:
    public = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    blob = paramiko.Message()
    blob.add_string("ssh-ed25519")
    blob.add_string(public)
    return paramiko.Ed25519Key(data=blob.asbytes())


def test_openssh_reaches_the_host_through_the_alias(testhost: HostInfo) -> None:
    done = subprocess.run(
        ["ssh", "-F", str(testhost.ssh_config_path), testhost.ssh_alias,
         "docker info --format '{{.ID}}'"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == testhost.daemon_id


def test_docker_sdk_over_ssh_sees_the_sim_image(testhost: HostInfo, ssh_home: Path) -> None:
    client = docker.DockerClient(base_url=testhost.docker_url, timeout=60)
    try:
        assert client.info()["ID"] == testhost.daemon_id
        tags = {tag for image in client.images.list() for tag in image.tags}
        assert {testhost.sim_image, testhost.vllm_image} <= tags
        assert client.images.get(testhost.sim_image).id == client.images.get(
            testhost.vllm_image
        ).id
    finally:
        client.close()


def test_sim_image_runs_like_vllm_serve(
    testhost: HostInfo, local_docker: docker.DockerClient
) -> None:
    config = local_docker.images.get(testhost.vllm_image).attrs["Config"]
    assert config["Entrypoint"] == ["python3", "-m", "vllm_simulator", "serve"]
    env = dict(item.split("=", 1) for item in config["Env"])
    output = local_docker.containers.run(
        testhost.sim_image,
        entrypoint=["python3", "-c"],
        command=["import json, os; print(len(json.load(open(os.environ['VLLM_SIM_FLAGS_FILE']))))"],
        labels=TEST_LABELS,
        remove=True,
    )
    assert env["VLLM_SIM_FLAGS_FILE"].endswith("vllm-flags-0.28.0.json")
    assert int(output.decode().strip()) > 0


@pytest.mark.skipif(
    not (SIMULATOR_SRC / "__main__.py").exists(), reason="the vLLM simulator has not landed yet"
)
def test_published_port_serves_health_on_the_host_address(
    testhost: HostInfo, local_docker: docker.DockerClient
) -> None:
    container: Container = local_docker.containers.run(
        testhost.vllm_image,
        command=["Qwen/Qwen3-0.6B", "--port", "8000", "--served-model-name", "qwen3"],
        ports={"8000/tcp": None},
        labels=TEST_LABELS,
        name=f"testhost-{uuid.uuid4().hex[:8]}",
        detach=True,
    )
    container.reload()
    bindings = container.ports["8000/tcp"]
    assert bindings, container.ports
    port = int(bindings[0]["HostPort"])
    url = f"http://{testhost.address}:{port}"
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{url}/health", timeout=2).status_code
        except httpx.TransportError:
            status = None
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200, container.logs().decode(errors="replace")[-2000:]
    models = httpx.get(f"{url}/v1/models", timeout=5).json()
    assert [model["id"] for model in models["data"]] == ["qwen3"]


def test_host_has_no_route_out(testhost: HostInfo) -> None:
    routes = testhost.run_in_netns(["ip", "-4", "route"]).stdout
    assert "default" not in routes
    assert "10.213.0.0/24" in routes


def test_ensure_up_is_idempotent_and_fast_when_warm(testhost: HostInfo) -> None:
    before = status()
    started = time.monotonic()
    again = ensure_up()
    took = time.monotonic() - started
    assert again == testhost
    # Same daemons, not restarted ones: a warm bring-up only checks.
    assert status() == before
    assert all(state.startswith("running") for part, state in before.items() if part != "netns")
    # Typically well under 2 s; the slack is for a machine busy with other test runs.
    assert took < 5.0
