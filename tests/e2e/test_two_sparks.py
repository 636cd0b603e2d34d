"""One model across two stand-in Sparks, through the real CLI (issue 13, native mode).

Host 1 (``gb10-test``) is the head, host 2 (``gb10-test-2``) the worker; the ranks meet over
the stand-in CX7 link (``cx7a`` 10.214.0.1 <-> ``cx7b`` 10.214.0.2). Containers run the
simulator image, whose multi-node mode really joins over sockets. Every test deploys its own
stack name on its own ports and removes what it made on both daemons.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml

from spark_stack.spec import LABEL_STACK
from tests.e2e.conftest import REPO_ROOT
from tests.helpers import free_port, run_cli
from tests.testhost import HOST2, HostInfo, HostPair, mtu_set_to

MODEL = "Qwen/Qwen3-0.6B"
# Our own repository: listing it finds only our tags, never the shared simulator tags.
PAIR_REPOSITORY = "spark-stack/vllm-sim-two-sparks"
QUESTION = "What is 12*17? Answer with the number."


@pytest.fixture(scope="session")
def pair_image(host_pair: HostPair) -> str:
    """The simulator image under one tag with the same id on both hosts.

    Each stand-in builds its own simulator image, and those builds differ in id, which `up`
    rightly refuses for a model across hosts ("differs between its hosts"). So host 1's build
    is tagged ``spark-stack/vllm-sim-two-sparks:<id>`` and copied to host 2 (``docker save |
    docker load`` keeps the id), as a user would copy an image over the link. The shared tags
    stay untouched."""
    head = docker.DockerClient(base_url=host_pair.head.local_docker_url, timeout=300)
    worker = docker.DockerClient(base_url=host_pair.worker.local_docker_url, timeout=300)
    try:
        sim = head.images.get(host_pair.head.sim_image)
        image = f"{PAIR_REPOSITORY}:{sim.id.removeprefix('sha256:')[:12]}"
        sim.tag(image)
        for client in (head, worker):
            _untag_older(client, keep=image)
        try:
            copied = worker.images.get(image).id
        except docker.errors.ImageNotFound:
            copied = None
        if copied != sim.id:
            worker.images.load(b"".join(head.images.get(image).save(named=image)))
            assert worker.images.get(image).id == sim.id
        return image
    finally:
        head.close()
        worker.close()


def _untag_older(client: docker.DockerClient, keep: str) -> None:
    """Our tags of earlier simulator builds (only ours: they live in our repository)."""
    for found in client.images.list(name=PAIR_REPOSITORY):
        for tag in found.tags:
            if tag.startswith(f"{PAIR_REPOSITORY}:") and tag != keep:
                try:
                    client.images.remove(tag)
                except docker.errors.APIError:
                    pass  # a container of another run still uses it


class PairDeployer:
    """One test's two-host stack: writes the stack file and runs the real CLI in-process."""

    def __init__(self, tmp: Path, capsys: pytest.CaptureFixture[str], pair: HostPair,
                 image: str):
        self.name = f"t{uuid.uuid4().hex[:8]}"
        self.tmp = tmp
        self.path = tmp / "stack.yaml"
        self.capsys = capsys
        self.pair = pair
        self.image = image
        self.port = random.randint(20000, 28999)
        self.master_port = random.randint(29100, 29900)
        self.proxy_port = free_port()
        self.launcher = tmp / f"claude-{self.name}"
        self.hosts = self.usual_hosts()

    def usual_hosts(self) -> dict[str, dict[str, Any]]:
        """Both hosts by their ~/.ssh/config aliases."""
        return {"a": {"address": self.pair.head.ssh_alias},
                "b": {"address": self.pair.worker.ssh_alias}}

    def document(self) -> dict[str, Any]:
        head, worker = self.pair.hosts
        return {
            "name": self.name,
            "hosts": self.hosts,
            "cluster": {
                "link": {
                    "a": {"interface": self.pair.link_interface(head),
                          "address": self.pair.link_address(head)},
                    "b": {"interface": self.pair.link_interface(worker),
                          "address": self.pair.link_address(worker)},
                },
                "master_port": self.master_port,
            },
            "models": [{
                "name": "qwen",
                "image": self.image,
                "model": MODEL,
                "hosts": ["a", "b"],
                "gpus": "none",
                "port": self.port,
                "max_model_len": 40960,
                "tool_call_parser": "qwen3_coder",  # Claude Code sends tools
                "reasoning_parser": "qwen3",
                "readiness_timeout": 60,
                "restart": "no",
                "cache": {"huggingface": None, "vllm": None, "flashinfer": None},
                "env": {"VLLM_SIM_STARTUP_SECONDS": "0.3", "VLLM_SIM_DIST_TIMEOUT": "30"},
            }],
            "proxy": {"listen": f"127.0.0.1:{self.proxy_port}"},
            "claude": {"launcher": str(self.launcher),
                       "models": {"opus": "qwen", "sonnet": "qwen", "haiku": "qwen"}},
        }

    def write(self) -> None:
        self.path.write_text(yaml.safe_dump(self.document(), sort_keys=False))

    def run(self, *args: str) -> tuple[int, str, str]:
        return run_cli(self.capsys, "-s", str(self.path), *args)

    def run_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        code, out, err = self.run(*args, "--json")
        try:
            return code, json.loads(out)
        except json.JSONDecodeError:
            pytest.fail(f"not JSON (exit {code}):\n{out}\n{err}")


@pytest.fixture
def daemons(host_pair: HostPair) -> Iterator[dict[str, docker.DockerClient]]:
    """Each host's own daemon, on its local socket (not through the CLI's SSH)."""
    clients = {host.ssh_alias: docker.DockerClient(base_url=host.local_docker_url, timeout=60)
               for host in host_pair.hosts}
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host_pair: HostPair, fake_home: Path,
    daemons: dict[str, docker.DockerClient], pair_image: str,
) -> Iterator[PairDeployer]:
    host_pair.write_ssh_home(fake_home)
    deployer = PairDeployer(tmp_path, capsys, host_pair, pair_image)
    deployer.write()
    yield deployer
    deployer.hosts = deployer.usual_hosts()  # a test may have pointed b elsewhere
    deployer.write()
    deployer.run("down")
    for client in daemons.values():
        for container in _containers(client, deployer.name):
            container.remove(force=True)


def _containers(client: docker.DockerClient, stack: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"{LABEL_STACK}={stack}"})


def _on(daemons: dict[str, docker.DockerClient], host: HostInfo, stack: str) -> list[str]:
    return sorted(c.name for c in _containers(daemons[host.ssh_alias], stack))


def _assert_proxy_answers(proxy_port: int) -> None:
    answer = httpx.post(
        f"http://127.0.0.1:{proxy_port}/v1/messages",
        headers={"anthropic-version": "2023-06-01", "x-api-key": "spark-stack-local"},
        json={"model": MODEL, "max_tokens": 64,
              "messages": [{"role": "user", "content": QUESTION}]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    text = "".join(b.get("text", "") for b in answer.json()["content"] if b["type"] == "text")
    assert "204" in text, text


def _claude_through_launcher(launcher: Path, home: Path, claude_bin: Path,
                             workdir: Path) -> subprocess.CompletedProcess[str]:
    (home / ".claude").mkdir(exist_ok=True)
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO_ROOT),
        "HOME": str(home),
        "SPARK_STACK_HOME": os.environ["SPARK_STACK_HOME"],
        "SPARK_STACK_CLAUDE_BIN": str(claude_bin),
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    workdir.mkdir(exist_ok=True)
    return subprocess.run(
        ["/bin/bash", str(launcher), "-p", QUESTION, "--output-format", "json"],
        env=env, cwd=workdir, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )


# --- plan -------------------------------------------------------------------------------------


def test_plan_shows_both_nodes_docker_run_and_their_link_environment(
    pair: PairDeployer, host_pair: HostPair
) -> None:
    code, out, err = pair.run("plan")
    assert code == 0, out + err
    head_link, worker_link = host_pair.link.addresses
    runs = [line for line in out.splitlines() if line.strip().startswith("docker run -d ")]
    assert len(runs) == 2, out
    common = ("--tensor-parallel-size 2", "--nnodes 2", f"--master-addr {head_link}",
              f"--master-port {pair.master_port}")
    for line in runs:
        assert "--network host" in line, line
        for part in common:
            assert part in line, line
    head_run, worker_run = runs
    assert f"spark-stack-{pair.name}-qwen-0" in head_run and "--node-rank 0" in head_run
    assert "--headless" not in head_run
    assert f"spark-stack-{pair.name}-qwen-1" in worker_run and "--node-rank 1" in worker_run
    assert "--headless" in worker_run
    for expected in (f"VLLM_HOST_IP={head_link}", f"VLLM_HOST_IP={worker_link}",
                     "NCCL_SOCKET_IFNAME=cx7a", "NCCL_SOCKET_IFNAME=cx7b",
                     "GLOO_SOCKET_IFNAME=cx7a", "GLOO_SOCKET_IFNAME=cx7b",
                     f"MASTER_ADDR={head_link}"):
        assert expected in out, (expected, out)


# --- the happy path, then a rank killed ------------------------------------------------------


def test_up_serves_across_both_hosts_noop_then_a_killed_rank_then_down(
    pair: PairDeployer, host_pair: HostPair, daemons: dict[str, docker.DockerClient],
    claude_bin: Path, fake_home: Path,
) -> None:
    head, worker = host_pair.hosts
    started = time.monotonic()
    code, out, err = pair.run("up")
    up_seconds = time.monotonic() - started
    assert code == 0, out + err
    assert "create  qwen [b] rank 1: not on the host" in out, out
    assert "create  qwen [a] rank 0: not on the host" in out, out
    assert out.index(f"starting spark-stack-{pair.name}-qwen-1") < \
        out.index(f"starting spark-stack-{pair.name}-qwen-0"), "the worker starts first"
    assert _on(daemons, head, pair.name) == [f"spark-stack-{pair.name}-qwen-0"]
    assert _on(daemons, worker, pair.name) == [f"spark-stack-{pair.name}-qwen-1"]
    assert up_seconds < 20, f"up took {up_seconds:.1f} s"

    _assert_proxy_answers(pair.proxy_port)
    done = _claude_through_launcher(pair.launcher, fake_home, claude_bin, pair.tmp / "project")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "204" in json.loads(done.stdout.strip().splitlines()[-1])["result"], done.stdout

    code, report = pair.run_json("status")
    assert code == 0, report
    nodes = [(m["host"], m["rank"], m["joined"], m["healthy"]) for m in report["models"]]
    assert nodes == [("a", 0, True, True), ("b", 1, True, True)], report["models"]

    code, result = pair.run_json("up")
    assert code == 0, result
    assert result["changed"] is False
    assert [a["action"] for a in result["actions"]] == ["keep", "keep"], result["actions"]

    # A rank dies after the start: status names the node.
    [killed] = _containers(daemons[worker.ssh_alias], pair.name)
    killed.kill()
    code, out, err = pair.run("status")
    assert code == 4, out + err
    assert re.search(r"qwen \[b\] rank 1, not joined +exited +no +no", out), out
    code, report = pair.run_json("status")
    assert code == 4
    worker_entry = next(m for m in report["models"] if m["rank"] == 1)
    assert (worker_entry["host"], worker_entry["healthy"], worker_entry["joined"]) == \
        ("b", False, False), worker_entry

    code, out, err = pair.run("down")
    assert code == 0, out + err
    assert _on(daemons, head, pair.name) == [] and _on(daemons, worker, pair.name) == []


# --- faults -----------------------------------------------------------------------------------


SSHD_NO_DOCKER_PORT = 2222


@pytest.fixture
def worker_without_docker(host_pair: HostPair, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A second sshd on host 2 (its host key, its authorized keys) whose sessions find no
    docker daemon: ``DOCKER_HOST`` names a socket nothing listens on, as when dockerd is
    stopped. Host 2's own dockerd keeps serving the tests that share it. Yields its
    (address, port); stopped by its pid afterwards."""
    worker = host_pair.worker
    config = tmp_path / "sshd_config"
    config.write_text(
        f"ListenAddress {worker.address}:{SSHD_NO_DOCKER_PORT}\n"
        f"HostKey {HOST2.sshd_host_key}\n"
        f"PidFile {tmp_path / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {HOST2.authorized_keys}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nUseDNS no\n"
        f"SetEnv DOCKER_HOST=unix://{tmp_path / 'no-dockerd.sock'}\n"
    )
    log = tmp_path / "sshd.log"
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    process = subprocess.Popen(
        HOST2.in_netns_argv([sshd, "-D", "-f", str(config), "-E", str(log)]),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while f":{SSHD_NO_DOCKER_PORT} " not in worker.run_in_netns(["ss", "-ltnH"]).stdout:
            assert process.poll() is None, log.read_text() if log.exists() else "sshd exited"
            assert time.monotonic() < deadline, "the second sshd does not listen"
            time.sleep(0.05)
        yield worker.address, SSHD_NO_DOCKER_PORT
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_worker_docker_down_stops_up_naming_the_host_with_nothing_started_on_the_head(
    pair: PairDeployer, host_pair: HostPair, daemons: dict[str, docker.DockerClient],
    worker_without_docker: tuple[str, int], fake_home: Path,
) -> None:
    address, port = worker_without_docker
    known_hosts = fake_home / ".ssh" / "known_hosts"
    key_line = next(line for line in known_hosts.read_text().splitlines()
                    if address in line.split()[0].split(","))
    known_hosts.write_text(known_hosts.read_text()
                           + f"[{address}]:{port} {key_line.split(maxsplit=1)[1]}\n")
    pair.hosts["b"] = {"address": address, "port": port, "user": "root",
                      "identity_file": str(fake_home / ".ssh" / "id_ed25519")}
    pair.write()

    code, out, err = pair.run("up")
    assert code == 3, out + err
    assert err.startswith(f"error: host b: the docker API on {address} does not answer"), err
    assert _on(daemons, host_pair.head, pair.name) == []
    assert _on(daemons, host_pair.worker, pair.name) == []


def test_doctor_passes_on_the_link_and_warns_at_mtu_1500_with_the_fix(
    pair: PairDeployer,
) -> None:
    code, report = pair.run_json("doctor")
    assert code == 0, report
    assert report["ok"] is True
    # The stack mounts no HF cache: the model's files cannot be found (a warning only).
    levels = {(c["check"], c["host"]): c["level"] for c in report["checks"]}
    assert {k: v for k, v in levels.items() if v != "ok"} == {
        ("model_files", "a"): "warn", ("model_files", "b"): "warn"}, report["checks"]
    for check in ("interface", "address", "mtu", "reach"):
        assert levels[(check, "a")] == levels[(check, "b")] == "ok", report["checks"]
    assert levels[("image", "a")] == "ok"

    with mtu_set_to(1500):
        code, report = pair.run_json("doctor")
        code_text, out, err = pair.run("doctor")
    assert code == 0 and code_text == 0, (report, out, err)
    warnings = [c for c in report["checks"] if c["level"] == "warn"]
    assert sorted(c["host"] for c in warnings if c["check"] == "mtu") == ["a", "b"], warnings
    assert all("9000" in c["fix"] for c in warnings if c["check"] == "mtu"), warnings
    assert "mtu" in out and "fix:" in out, out


def test_the_cli_in_a_subprocess_plans_the_two_host_stack(pair: PairDeployer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "spark_stack", "-s", str(pair.path), "plan"],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
        timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("docker run -d ") == 2
