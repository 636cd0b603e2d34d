"""Two stand-in Sparks joined by a CX7 link: vLLM's multi-node mode across the namespaces."""

from __future__ import annotations

import random
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import httpx
import paramiko
import pytest
from docker.models.containers import Container

from tests.testhost import HostInfo, HostPair, mtu_set_to

TEST_LABELS = {"spark-stack.test": uuid.uuid4().hex}
MODEL = "Qwen/Qwen3-0.6B"


@pytest.fixture
def run_on() -> Iterator[Callable[..., Container]]:
    """Start a container on a host's own daemon with host networking; removed afterwards."""
    clients: dict[str, docker.DockerClient] = {}

    def run(host: HostInfo, command: list[str], **kwargs: object) -> Container:
        client = clients.setdefault(
            host.netns, docker.DockerClient(base_url=host.local_docker_url, timeout=60)
        )
        return client.containers.run(
            host.vllm_image, command=command, network_mode="host", labels=TEST_LABELS,
            detach=True, name=f"two-hosts-{uuid.uuid4().hex[:8]}", **kwargs,
        )

    yield run
    mine = [f"{key}={value}" for key, value in TEST_LABELS.items()]
    for client in clients.values():
        for container in client.containers.list(all=True, filters={"label": mine}):
            container.remove(force=True)
        client.close()


def _ssh(host: HostInfo, command: str) -> str:
    client = paramiko.SSHClient()
    client.load_host_keys(str(host.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.address, port=host.port, username=host.user,
                   key_filename=str(host.key_path), look_for_keys=False, allow_agent=False,
                   timeout=10)
    try:
        _, stdout, stderr = client.exec_command(command, timeout=30)
        out = stdout.read().decode()
        assert stdout.channel.recv_exit_status() == 0, stderr.read().decode()
        return out
    finally:
        client.close()


def _logs(container: Container) -> str:
    return str(container.logs().decode(errors="replace"))


def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _models_status(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/v1/models", timeout=2).status_code
    except httpx.TransportError:
        return None


def test_both_hosts_answer_over_ssh_from_one_ssh_home(
    host_pair: HostPair, tmp_path: Path
) -> None:
    assert host_pair.head.netns == "sparkhost" and host_pair.worker.netns == "sparkhost2"
    assert (host_pair.head.address, host_pair.worker.address) == ("10.213.0.2", "10.213.1.2")
    ssh_dir = host_pair.write_ssh_home(tmp_path)
    for host in host_pair.hosts:
        done = subprocess.run(
            ["ssh", "-F", str(ssh_dir / "config"), host.ssh_alias,
             "docker info --format '{{.ID}}'"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == host.daemon_id


def test_host_network_containers_see_the_link(
    host_pair: HostPair, run_on: Callable[..., Container]
) -> None:
    for host in host_pair.hosts:
        name = host_pair.link_interface(host)
        container = run_on(host, ["-c", f"print(open('/sys/class/net/{name}/mtu').read())"],
                           entrypoint=["python3"])
        assert container.wait(timeout=30)["StatusCode"] == 0
        assert _logs(container).strip() == "9000"
        addresses = _ssh(host, f"ip -o -4 addr show {name}")
        assert f"inet {host_pair.link_address(host)}/24" in addresses


def test_head_serves_only_after_the_worker_joined_over_the_link(
    host_pair: HostPair, run_on: Callable[..., Container]
) -> None:
    api_port, master_port = random.randint(20000, 29000), random.randint(29100, 29900)
    master = host_pair.link.head_address
    common = ["--nnodes", "2", "--master-addr", master, "--master-port", str(master_port),
              "--tensor-parallel-size", "2"]
    env = {"VLLM_SIM_STARTUP_SECONDS": "0.1", "VLLM_SIM_DIST_TIMEOUT": "60"}
    head = run_on(host_pair.head, [MODEL, "--port", str(api_port), "--node-rank", "0", *common],
                  environment=env)
    url = f"http://{host_pair.head.address}:{api_port}"
    init = f"distributed_init_method=tcp://{master}:{master_port} backend=nccl"
    assert _until(lambda: init in _logs(head), 30), _logs(head)
    time.sleep(1.0)
    assert _models_status(url) is None, "the head served before the worker joined"
    assert "is assigned as" not in _logs(head)

    worker = run_on(host_pair.worker, [MODEL, "--node-rank", "1", "--headless", *common],
                    environment=env)
    assert _until(lambda: _models_status(url) == 200, 30), _logs(head) + _logs(worker)
    assert "rank 0 in world size 2 is assigned as" in _logs(head)
    worker_log = _logs(worker)
    assert f"with head node address {master}:{master_port}" in worker_log
    assert "rank 1 in world size 2 is assigned as" in worker_log

    worker.stop(timeout=5)
    head.reload()
    assert _until(lambda: head.wait(timeout=30)["StatusCode"] == 1, 30)
    assert "NCCL error: remote process exited" in _logs(head)


def test_the_worker_cannot_reach_the_head_off_the_link(
    host_pair: HostPair, run_on: Callable[..., Container]
) -> None:
    # Host 1's LAN address is not routed from host 2: only the link joins them.
    worker = run_on(host_pair.worker, [
        MODEL, "--nnodes", "2", "--node-rank", "1", "--headless", "--tensor-parallel-size", "2",
        "--master-addr", host_pair.head.address, "--master-port", "29500",
    ], environment={"VLLM_SIM_STARTUP_SECONDS": "0", "VLLM_SIM_DIST_TIMEOUT": "2"})
    assert worker.wait(timeout=30)["StatusCode"] == 1
    log = _logs(worker)
    assert "(errno: 101 - Network is unreachable)" in log
    assert log.rstrip().endswith(
        "torch.distributed.DistNetworkError: The client socket has timed out after 2000ms "
        f"while trying to connect to ({host_pair.head.address}, 29500)."
    )


def test_ssh_sessions_on_host_2_see_its_own_sysfs(host_pair: HostPair) -> None:
    # Host 1's sshd gets the same once it is next restarted (it is shared and kept warm).
    assert _ssh(host_pair.worker, "cat /sys/class/net/cx7b/mtu").strip() == "9000"


def test_link_mtu_can_drop_to_1500_and_comes_back(host_pair: HostPair) -> None:
    with mtu_set_to(1500):
        for host in host_pair.hosts:
            name = host_pair.link_interface(host)
            assert "mtu 1500" in host.run_in_netns(["ip", "link", "show", name]).stdout
            # What a doctor sees over SSH (netlink: right whatever the session's /sys shows).
            assert " mtu 1500 " in _ssh(host, f"ip -o link show {name}")
    for host in host_pair.hosts:
        name = host_pair.link_interface(host)
        assert "mtu 9000" in host.run_in_netns(["ip", "link", "show", name]).stdout
