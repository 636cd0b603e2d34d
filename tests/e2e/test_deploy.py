"""`up`/`down`/`status`/`logs` against the real stand-in GB10 host (sshd + dockerd at 10.213.0.2).

Every test deploys its own stack name on its own ports and removes what it made. Containers run
the vLLM simulator image with the GPU request off.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml

from spark_stack.spec import LABEL_STACK
from tests.helpers import free_port, run_cli
from tests.testhost import HostInfo

REPO = Path(__file__).resolve().parents[2]
SENTINEL = "hf_SENTINEL_" + uuid.uuid4().hex



def _host_port() -> int:
    return random.randint(20000, 39999)


class Deployer:
    """One test's stack: writes the stack file and runs the real CLI in-process."""

    def __init__(self, tmp: Path, capsys: pytest.CaptureFixture[str], testhost: HostInfo):
        self.name = f"t{uuid.uuid4().hex[:8]}"
        self.path = tmp / "stack.yaml"
        self.capsys = capsys
        self.testhost = testhost
        self.port = _host_port()
        self.proxy_port = free_port()
        self.outputs: list[str] = []

    def model(self, name: str = "qwen", **extra: Any) -> dict[str, Any]:
        model: dict[str, Any] = {
            "name": name,
            "image": self.testhost.sim_image,
            "model": "Qwen/Qwen3-0.6B",
            "gpus": "none",
            "port": self.port,
            "readiness_timeout": 60,
            "restart": "no",
            "cache": {"huggingface": None, "vllm": None, "flashinfer": None},
            "env": {"VLLM_SIM_STARTUP_SECONDS": "0.3"},
        }
        model.update(extra)
        return model

    def write(self, *models: dict[str, Any], host: dict[str, Any] | None = None) -> None:
        stack = {
            "name": self.name,
            "host": host or {"address": self.testhost.ssh_alias},
            "models": list(models) or [self.model()],
            "proxy": {"listen": f"127.0.0.1:{self.proxy_port}"},
        }
        self.path.write_text(yaml.safe_dump(stack, sort_keys=False))

    def run(self, *args: str) -> tuple[int, str, str]:
        code, out, err = run_cli(self.capsys, "-s", str(self.path), *args)
        self.outputs += [out, err]
        return code, out, err

    def run_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        code, out, err = self.run(*args, "--json")
        return code, json.loads(out)


@pytest.fixture
def host_docker(testhost: HostInfo) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=testhost.local_docker_url, timeout=60)
    yield client
    client.close()


@pytest.fixture
def deployer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], testhost: HostInfo, ssh_home: Path,
    host_docker: docker.DockerClient,
) -> Iterator[Deployer]:
    d = Deployer(tmp_path, capsys, testhost)
    yield d
    if d.path.exists():
        d.run("down")
    for container in host_docker.containers.list(all=True,
                                                 filters={"label": f"{LABEL_STACK}={d.name}"}):
        container.remove(force=True)


def _containers(client: docker.DockerClient, stack: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"{LABEL_STACK}={stack}"})


def _api_key(stack: str, model: str = "qwen") -> str:
    path = Path(os.environ["SPARK_STACK_HOME"]) / "stacks" / stack / "secrets" / \
        f"vllm-api-key-{model}"
    return path.read_text().strip()


def _assert_proxy_answers(proxy_port: int) -> None:
    """Claude Code's request shape through the proxy reaches the model (with its API key)."""
    answer = httpx.post(
        f"http://127.0.0.1:{proxy_port}/v1/messages",
        headers={"anthropic-version": "2023-06-01", "x-api-key": "spark-stack-local"},
        json={"model": "Qwen/Qwen3-0.6B", "max_tokens": 64,
              "messages": [{"role": "user",
                            "content": "What is 12*17? Answer with the number."}]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    text = "".join(b.get("text", "") for b in answer.json()["content"] if b["type"] == "text")
    assert "204" in text


# --- the happy path ---------------------------------------------------------------------------


def test_fresh_up_serves_with_an_api_key_then_noop_then_down(
    deployer: Deployer, host_docker: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    model = deployer.model()
    model["env"]["HF_TOKEN"] = "${HF_TOKEN}"
    deployer.write(model)

    code, out, err = deployer.run("up")
    assert code == 0, out + err
    assert "ready" in out
    [container] = _containers(host_docker, deployer.name)
    assert container.status == "running"
    base = f"http://{deployer.testhost.address}:{deployer.port}"

    key = _api_key(deployer.name)
    key_file = Path(os.environ["SPARK_STACK_HOME"]) / "stacks" / deployer.name / "secrets" / \
        "vllm-api-key-qwen"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert httpx.get(f"{base}/v1/models", timeout=10).status_code == 401
    answer = httpx.post(
        f"{base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "Qwen/Qwen3-0.6B",
              "messages": [{"role": "user", "content": "What is 12*17? Answer with the number."}]},
        timeout=30,
    )
    assert answer.status_code == 200
    assert "204" in answer.json()["choices"][0]["message"]["content"]
    proxy = httpx.get(f"http://127.0.0.1:{deployer.proxy_port}/health", timeout=10)
    assert proxy.status_code == 200
    _assert_proxy_answers(deployer.proxy_port)

    # The same stack again: nothing changes, fast. The process is warm, as a CLI run's work is.
    started = time.monotonic()
    code, result = deployer.run_json("up")
    wall = time.monotonic() - started
    assert code == 0
    assert result["changed"] is False
    assert [a["action"] for a in result["actions"]] == ["keep"]
    assert result["elapsed_seconds"] < 2.0, result
    assert wall < 2.0, f"no-op up took {wall:.2f} s"
    [again] = _containers(host_docker, deployer.name)
    assert again.id == container.id

    # Secrets never reach argv, labels or any output.
    attrs = host_docker.api.inspect_container(container.id)
    assert SENTINEL not in json.dumps(attrs["Config"]["Labels"])
    assert SENTINEL not in json.dumps(attrs["Config"]["Cmd"]) + json.dumps(attrs["Args"])
    assert key not in json.dumps(attrs["Config"]["Labels"])
    assert key not in json.dumps(attrs["Config"]["Cmd"]) + json.dumps(attrs["Args"])
    assert f"HF_TOKEN={SENTINEL}" in attrs["Config"]["Env"]  # delivered through the API env
    for args in (("status",), ("status", "--json"), ("logs",), ("plan",)):
        deployer.run(*args)
    for text in deployer.outputs:
        assert SENTINEL not in text
        assert key not in text

    code, out, _ = deployer.run("down")
    assert code == 0
    assert "1 container(s) removed" in out
    assert _containers(host_docker, deployer.name) == []
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{deployer.proxy_port}/health", timeout=2)


def test_changed_spec_replaces_and_removed_model_is_removed(
    deployer: Deployer, host_docker: docker.DockerClient
) -> None:
    second_port = deployer.port + 1
    deployer.write(deployer.model(), deployer.model("small", port=second_port))
    code, _, err = deployer.run("up", "--no-proxy")
    assert code == 0, err
    before = {c.labels["io.spark-stack.model"]: c.id for c in _containers(host_docker,
                                                                           deployer.name)}
    assert set(before) == {"qwen", "small"}

    # plan shows the same diff `up` will execute, naming the field that changed
    deployer.write(deployer.model(max_model_len=40960))
    code, plan = deployer.run_json("plan", "--diff")
    assert code == 0
    assert plan["host_diff"][0]["actions"] == [
        {"model": "qwen", "action": "replace", "reason": "changed: max_model_len",
         "changed": ["max_model_len"]},
        {"model": "small", "action": "remove", "reason": "no longer in the stack file",
         "changed": []},
    ]
    code, result = deployer.run_json("up", "--no-proxy")
    assert code == 0
    actions = {a["model"]: a for a in result["actions"]}
    assert actions["qwen"]["action"] == "replace"
    assert actions["qwen"]["changed"] == ["max_model_len"]
    assert actions["small"]["action"] == "remove"
    after = {c.labels["io.spark-stack.model"]: c for c in _containers(host_docker, deployer.name)}
    assert set(after) == {"qwen"}
    assert after["qwen"].id != before["qwen"]
    assert "--max-model-len" in after["qwen"].attrs["Config"]["Cmd"]


def test_status_reports_health_and_drift_and_fails_when_down(
    deployer: Deployer, host_docker: docker.DockerClient
) -> None:
    deployer.write()
    assert deployer.run("up")[0] == 0
    code, report = deployer.run_json("status")
    assert code == 0, report
    assert report["healthy"] is True
    assert report["hosts"][0]["reachable"] is True
    [model] = report["models"]
    assert model["state"] == "running"
    assert model["health"] is True and model["models_listed"] is True
    assert model["served_name"] == "Qwen/Qwen3-0.6B"
    assert model["endpoint"] == f"http://{deployer.testhost.address}:{deployer.port}/v1"
    assert model["image"] == deployer.testhost.sim_image
    assert model["image_id"].startswith("sha256:")
    assert model["restarts"] == 0 and model["uptime_seconds"] >= 0
    assert model["drift"] is False
    assert report["proxy"]["running"] is True and report["proxy"]["healthy"] is True

    code, out, _ = deployer.run("status")
    assert code == 0 and "healthy" in out and "qwen" in out

    deployer.write(deployer.model(max_model_len=49152))
    code, report = deployer.run_json("status")
    assert code == 4
    assert report["models"][0]["drift"] is True
    assert report["models"][0]["drift_fields"] == ["max_model_len"]

    _containers(host_docker, deployer.name)[0].stop(timeout=2)
    code, report = deployer.run_json("status")
    assert code == 4
    assert report["models"][0]["state"] == "exited"
    assert report["healthy"] is False


def test_logs_prints_the_servers_log_with_tail(deployer: Deployer) -> None:
    deployer.write()
    assert deployer.run("up", "--no-proxy")[0] == 0
    code, out, _ = deployer.run("logs", "qwen")
    assert code == 0
    assert "Application startup complete" in out
    assert "vLLM API server version" in out
    code, out, _ = deployer.run("logs", "qwen", "--tail", "2")
    assert code == 0
    assert len(out.strip().splitlines()) == 2
    code, _, err = deployer.run("logs", "nope")
    assert code == 2 and "no model 'nope'" in err


def test_follow_keeps_streaming_until_the_container_stops(
    deployer: Deployer, ssh_home: Path, host_docker: docker.DockerClient
) -> None:
    deployer.write()
    assert deployer.run("up", "--no-proxy")[0] == 0
    env = {**os.environ, "HOME": str(ssh_home), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "spark_stack", "-s", str(deployer.path), "logs", "qwen", "-f",
         "--tail", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert b"Application startup complete" in first
        time.sleep(1.0)
        assert process.poll() is None  # still following
        _containers(host_docker, deployer.name)[0].stop(timeout=5)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


# --- failures and diagnosis ---------------------------------------------------------------------


def _failed_log(stack: str) -> list[Path]:
    return sorted((Path(os.environ["SPARK_STACK_HOME"]) / "stacks" / stack / "logs").glob("*.log"))


def test_bad_flag_exits_at_start_with_diagnosis_and_saved_log(
    deployer: Deployer, host_docker: docker.DockerClient
) -> None:
    # In vLLM 0.33 (so the lint passes), not in the 0.28 the image runs.
    deployer.write(deployer.model(extra_args=["--disable-dbo"], restart="unless-stopped"))
    code, out, err = deployer.run("up")
    assert code == 4, out + err
    assert "unrecognized arguments: --disable-dbo" in out  # the last log lines
    assert "vLLM does not know the flag(s) --disable-dbo" in err
    [log] = _failed_log(deployer.name)
    assert str(log) in err
    assert "unrecognized arguments" in log.read_text()
    assert log.stat().st_mode & 0o777 == 0o600
    # The restart loop is stopped, and the next `up` converges from what is left.
    [container] = _containers(host_docker, deployer.name)
    assert container.status != "running"
    deployer.write(deployer.model())
    code, result = deployer.run_json("up", "--no-proxy")
    assert code == 0
    assert result["actions"][0]["action"] == "replace"


def test_a_failed_replace_rolls_back_and_no_rollback_leaves_it_down(
    deployer: Deployer, host_docker: docker.DockerClient
) -> None:
    deployer.write(deployer.model())
    assert deployer.run("up", "--no-proxy")[0] == 0
    [before] = _containers(host_docker, deployer.name)
    broken = deployer.model()
    broken["env"]["VLLM_SIM_FAIL"] = "kv_cache"
    deployer.write(broken)
    code, out, err = deployer.run("up", "--no-proxy")
    assert code == 4, out + err
    assert "the KV cache is too small for max_model_len" in err
    assert "rolled back: the previous container serves again" in err
    [after] = _containers(host_docker, deployer.name)
    assert (after.id, after.name, after.status) == (before.id, before.name, "running")
    deployer.write(deployer.model())
    code, report = deployer.run_json("status")
    assert report["models"][0]["healthy"] is True, report  # the old config answers again
    deployer.write(broken)
    code, out, err = deployer.run("up", "--no-proxy", "--no-rollback")
    assert code == 4 and "rolled back" not in err
    assert [c.status for c in _containers(host_docker, deployer.name)] == ["exited"]


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        ("gpu_memory", "not enough free GPU memory for gpu_memory_utilization"),
        ("kv_cache", "the KV cache is too small for max_model_len"),
        ("oom", "the GPU ran out of memory"),
        ("no_kernel", "the image's CUDA build has no kernels for this GPU"),
        ("gated", "Hugging Face refused the model download"),
        ("engine_dead", "the vLLM engine failed to start"),
    ],
)
def test_vllm_failure_signatures_are_diagnosed(
    deployer: Deployer, failure: str, expected: str
) -> None:
    model = deployer.model()
    model["env"]["VLLM_SIM_FAIL"] = failure
    deployer.write(model)
    code, out, err = deployer.run("up", "--no-proxy")
    assert code == 4, out + err
    assert expected in err
    assert "full log:" in err and _failed_log(deployer.name)


def test_readiness_timeout_names_the_phase(deployer: Deployer) -> None:
    model = deployer.model()
    model["env"]["VLLM_SIM_FAIL"] = "hang"
    deployer.write(model)
    started = time.monotonic()
    code, out, err = deployer.run("up", "--no-proxy", "--timeout", "3")
    assert code == 4, out + err
    assert time.monotonic() - started < 30
    assert "did not become ready" in err and "not ready after 3 s" in err
    assert _failed_log(deployer.name)


def test_port_in_use_fails_preflight_without_touching_the_other_container(
    deployer: Deployer, host_docker: docker.DockerClient
) -> None:
    other = host_docker.containers.run(
        deployer.testhost.sim_image, ["Qwen/Qwen3-0.6B", "--port", "8000"], detach=True,
        ports={"8000/tcp": deployer.port}, labels={"spark-stack.test": "1"},
        environment={"VLLM_SIM_STARTUP_SECONDS": "0"})
    try:
        deployer.write()
        code, out, err = deployer.run("up", "--no-proxy")
        assert code == 4, out + err
        assert f"port {deployer.port} on the host is in use" in err
        assert "--skip-preflight port" in err
        assert _containers(host_docker, deployer.name) == []
        # Skipped knowingly, docker itself refuses the port: one line, and nothing is left.
        code, out, err = deployer.run("up", "--no-proxy", "--skip-preflight", "port")
        assert code == 1, out + err
        assert "docker could not start" in err and "port is already allocated" in err
        assert _containers(host_docker, deployer.name) == []
        other.reload()
        assert other.status == "running"
    finally:
        other.remove(force=True)


def test_gpus_all_on_a_host_without_nvidia_runtime_fails_preflight(
    deployer: Deployer, host_docker: docker.DockerClient
) -> None:
    deployer.write(deployer.model(gpus="all"))
    code, out, err = deployer.run("up", "--no-proxy")
    assert code == 4, out + err
    assert "NVIDIA container runtime: MISSING" in err
    assert "nvidia-container-toolkit" in err
    assert _containers(host_docker, deployer.name) == []


def test_down_never_touches_other_stacks_or_unmanaged_containers(
    deployer: Deployer, host_docker: docker.DockerClient
) -> None:
    bystanders = [
        host_docker.containers.create(deployer.testhost.sim_image, ["x"],
                                      labels={"spark-stack.test": "1"}),
        host_docker.containers.create(
            deployer.testhost.sim_image, ["x"],
            labels={"spark-stack.test": "1", "io.spark-stack.managed-by": "spark-stack",
                    LABEL_STACK: deployer.name + "-other", "io.spark-stack.model": "qwen"}),
    ]
    try:
        deployer.write()
        assert deployer.run("up", "--no-proxy")[0] == 0
        assert deployer.run("down")[0] == 0
        for container in bystanders:
            container.reload()  # raises NotFound if down removed it
    finally:
        for container in bystanders:
            container.remove(force=True)


# --- the lock -----------------------------------------------------------------------------------


def test_a_held_lock_fails_fast_with_its_holder_and_can_be_waited_for(
    deployer: Deployer, testhost: HostInfo
) -> None:
    from spark_stack.deploy.lock import StackLock
    from spark_stack.deploy.session import open_session
    from spark_stack.stack.schema import HostConfig

    deployer.write()
    session = open_session("default", HostConfig(address=testhost.ssh_alias))
    lock = StackLock(session.conn, deployer.name, host="default")
    lock.acquire()
    try:
        code, out, err = deployer.run("up", "--no-proxy")
        assert code == 1, out + err
        assert f"stack '{deployer.name}' is locked by another" in err
        assert f"pid {os.getpid()}" in err
        releaser = threading.Timer(1.0, lock.release)
        releaser.start()
        code, out, err = deployer.run("up", "--no-proxy", "--wait-lock", "20")
        releaser.join()
        assert code == 0, out + err
    finally:
        lock.release()
        session.close()


def test_down_purge_removes_the_hosts_lock_files(deployer: Deployer, testhost: HostInfo) -> None:
    from spark_stack.deploy.lock import LOCK_DIR
    from spark_stack.deploy.session import open_session
    from spark_stack.stack.schema import HostConfig

    def lock_files() -> list[str]:
        with open_session("default", HostConfig(address=testhost.ssh_alias)) as session:
            listing = session.conn.run_script(f'ls "$HOME"/{LOCK_DIR} 2>/dev/null; true')
        return [name for name in listing.stdout.split() if name.startswith(deployer.name)]

    deployer.write()
    assert deployer.run("up", "--no-proxy")[0] == 0
    assert lock_files() == [f"{deployer.name}@default.lock", f"{deployer.name}@default.owner"]
    code, out, err = deployer.run("down", "--purge")
    assert code == 0, out + err
    assert lock_files() == []


def test_two_concurrent_ups_one_wins_one_names_the_holder(
    deployer: Deployer, ssh_home: Path, host_docker: docker.DockerClient
) -> None:
    model = deployer.model()
    model["env"]["VLLM_SIM_STARTUP_SECONDS"] = "6"
    deployer.write(model)
    env = {**os.environ, "HOME": str(ssh_home)}
    argv = [sys.executable, "-m", "spark_stack", "-s", str(deployer.path), "up", "--no-proxy"]
    runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             cwd=REPO, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, _, err in results if code == 1)
    assert "is locked by another" in loser
    assert len(_containers(host_docker, deployer.name)) == 1


def test_down_during_up_waits_for_the_whole_up_not_just_its_host_steps(
    deployer: Deployer, ssh_home: Path, host_docker: docker.DockerClient
) -> None:
    """`down --wait-lock` while `up` waits for readiness: `down` runs after all of `up` (its
    proxy included), never between `up`'s containers and its proxy."""
    model = deployer.model()
    model["env"]["VLLM_SIM_STARTUP_SECONDS"] = "3"
    deployer.write(model)
    env = {**os.environ, "HOME": str(ssh_home), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "spark_stack", "-s", str(deployer.path), "up"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if "qwen: starting (" in line:  # up holds the host now and waits for readiness
            break
    code, out, err = deployer.run("down", "--wait-lock", "60")
    up_output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, up_output
    assert code == 0, out + err
    assert "1 container(s) removed, proxy stopped" in out  # up had finished, proxy and all
    assert _containers(host_docker, deployer.name) == []
    code, report = deployer.run_json("status")
    assert report["proxy"]["running"] is False, report  # no proxy left pointing at nothing


def test_interrupted_up_is_converged_by_the_next_up(
    deployer: Deployer, ssh_home: Path, host_docker: docker.DockerClient
) -> None:
    model = deployer.model()
    model["env"]["VLLM_SIM_STARTUP_SECONDS"] = "5"
    deployer.write(model)
    env = {**os.environ, "HOME": str(ssh_home), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "spark_stack", "-s", str(deployer.path), "up", "--no-proxy"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO, text=True,
        # A runner may start us with SIGINT ignored; a user's terminal delivers it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stdout is not None
    for line in process.stdout:
        if "starting (" in line:  # the container exists and is starting up
            break
    process.send_signal(signal.SIGINT)  # Ctrl-C mid-readiness
    process.wait(timeout=30)
    assert process.returncode == 130
    deployer.write(deployer.model())
    code, result = deployer.run_json("up", "--no-proxy")
    assert code == 0, result
    assert len(_containers(host_docker, deployer.name)) == 1
    code, report = deployer.run_json("status")
    assert report["models"][0]["health"] is True


def _up_killed_at(deployer: Deployer, ssh_home: Path, after: str, line: str) -> None:
    """`up --no-proxy` in its own process, `kill -9`ed at the first ``line`` after ``after``."""
    env = {**os.environ, "HOME": str(ssh_home), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "spark_stack", "-s", str(deployer.path), "up", "--no-proxy"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO, text=True)
    assert process.stdout is not None
    seen = []
    for text in process.stdout:
        seen.append(text)
        if any(after in s for s in seen[:-1]) and line in text:
            break
    process.kill()
    process.wait(timeout=30)
    assert any(after in s for s in seen), "".join(seen)


def test_an_interrupted_replace_is_finished_not_redone(
    deployer: Deployer, ssh_home: Path, host_docker: docker.DockerClient
) -> None:
    """`up` killed while the replacing container loads: `status` shows it beside
    `-previous`, and the next `up` keeps it (no second model load) and removes `-previous`."""
    deployer.write(deployer.model())
    assert deployer.run("up", "--no-proxy")[0] == 0
    slower = deployer.model()
    slower["env"]["VLLM_SIM_STARTUP_SECONDS"] = "4"  # a changed spec: a replace
    deployer.write(slower)
    _up_killed_at(deployer, ssh_home, after="replacing", line="qwen: starting (")
    name = f"spark-stack-{deployer.name}-qwen"
    assert sorted(c.name for c in _containers(host_docker, deployer.name)) == [
        name, f"{name}-previous"]
    new = next(c for c in _containers(host_docker, deployer.name) if c.name == name)

    code, report = deployer.run_json("status")
    shown = {m["container"]: m for m in report["models"]}
    assert set(shown) == {name, f"{name}-previous"}, report
    assert shown[name]["drift"] is False and shown[name]["state"] == "running"
    assert shown[f"{name}-previous"]["state"] == "exited"
    assert "interrupted replace" in shown[f"{name}-previous"]["drift_fields"][0]
    code, out, err = deployer.run("status")
    assert f"qwen ({name}-previous)" in out

    code, result = deployer.run_json("up", "--no-proxy")
    assert code == 0, result
    assert [(a["action"], a["model"]) for a in result["actions"]] == [("keep", "qwen")]
    [after] = _containers(host_docker, deployer.name)
    assert (after.id, after.name, after.status) == (new.id, name, "running")  # not recreated
    code, report = deployer.run_json("status")
    assert [m["container"] for m in report["models"]] == [name], report  # -previous is gone


# --- SSH ----------------------------------------------------------------------------------------


def _assert_unreachable(run: Callable[..., tuple[int, str, str]], *texts: str) -> str:
    code, out, err = run("status")
    assert code == 3, out + err
    code, out, err = run("up", "--no-proxy")
    assert code == 3, out + err
    for text in texts:
        assert text in err
    return err


def test_unknown_host_key_is_refused_with_fingerprint_then_trusted_on_request(
    deployer: Deployer, ssh_home: Path
) -> None:
    known = ssh_home / ".ssh" / "known_hosts"
    known.write_text("")
    deployer.write()
    err = _assert_unreachable(deployer.run, "unknown SSH host key for 10.213.0.2:22",
                              "SHA256:", "ssh-keyscan 10.213.0.2 >> ~/.ssh/known_hosts",
                              "--trust-host-key")
    assert "Traceback" not in err
    code, out, err = deployer.run("up", "--no-proxy", "--trust-host-key")
    assert code == 0, out + err
    assert "10.213.0.2 ssh-ed25519" in known.read_text()
    # Now known: no flag needed (4, not 3: `--no-proxy` left the stack without its proxy).
    assert deployer.run("status")[0] == 4


def test_changed_host_key_is_refused_with_the_keygen_command(
    deployer: Deployer, ssh_home: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    (ssh_home / ".ssh" / "known_hosts").write_text(f"10.213.0.2 {other}\n")
    deployer.write()
    _assert_unreachable(deployer.run, "has CHANGED", "ssh-keygen -R 10.213.0.2")


def test_wrong_key_is_an_authentication_error(deployer: Deployer, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = tmp_path / "wrong_key"
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    key.chmod(0o600)
    deployer.write(host={"address": "10.213.0.2", "identity_file": str(key)})
    _assert_unreachable(deployer.run, f"Authentication failed for root@10.213.0.2 with key {key}")


def test_a_dropped_connection_is_one_line_not_a_traceback(
    deployer: Deployer, testhost: HostInfo
) -> None:
    from spark_stack.deploy.session import open_session
    from spark_stack.errors import HostUnreachable
    from spark_stack.stack.schema import HostConfig

    session = open_session("default", HostConfig(address=testhost.ssh_alias))
    try:
        assert session.docker.stack_containers(deployer.name) == []
        transport = session.conn.client.get_transport()
        assert transport is not None
        transport.close()  # the network drops mid-command
        with pytest.raises(HostUnreachable) as caught:
            session.docker.stack_containers(deployer.name)
        assert "\n" not in caught.value.message
        with pytest.raises(HostUnreachable):
            session.conn.run(["true"])
    finally:
        session.close()


def test_unreachable_hosts_fail_in_one_line(deployer: Deployer) -> None:
    deployer.write(host={"address": "10.213.0.2", "port": 2})
    _assert_unreachable(deployer.run, "Connection refused on port 2 of 10.213.0.2")
    deployer.write(host={"address": "10.213.0.99"})
    started = time.monotonic()
    err = _assert_unreachable(deployer.run, "10.213.0.99")
    assert time.monotonic() - started < 60
    assert err.count("\n") <= 3


def test_proxyjump_and_loopback_bind_through_an_ssh_tunnel(
    deployer: Deployer, ssh_home: Path
) -> None:
    config = ssh_home / ".ssh" / "config"
    config.write_text(config.read_text() + (
        "Host spark-via-jump\n"
        "    HostName 10.213.0.2\n"
        "    ProxyJump gb10-test\n"
    ))
    deployer.write(deployer.model(bind="loopback"), host={"address": "spark-via-jump"})
    code, result = deployer.run_json("up")
    assert code == 0, result
    endpoint = result["endpoints"]["qwen"]
    assert endpoint.startswith("http://127.0.0.1:")  # the tunnel, not the host's LAN address
    key = _api_key(deployer.name)
    models = httpx.get(f"{endpoint}/models", headers={"Authorization": f"Bearer {key}"},
                       timeout=10)
    assert models.status_code == 200
    with pytest.raises(httpx.HTTPError):  # not open on the LAN
        httpx.get(f"http://10.213.0.2:{deployer.port}/health", timeout=3)
    _assert_proxy_answers(deployer.proxy_port)  # proxy → tunnel → container
    code, report = deployer.run_json("status")
    assert code == 0, report
    assert deployer.run("down")[0] == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{endpoint}/models", timeout=3)


# --- pulling from a registry --------------------------------------------------------------------

REGISTRY_SERVER = r'''
import hashlib, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(sys.argv[1])
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


class Registry(BaseHTTPRequestHandler):
    def _send(self, body: bytes, kind: str, digest: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Content-Digest", digest)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def do_GET(self) -> None:
        parts = self.path.split("/")
        if self.path == "/v2/":
            return self._send(b"{}", "application/json", "")
        if len(parts) > 3 and parts[-2] in ("manifests", "blobs"):
            ref = parts[-1]
            path = ROOT / ("tags" if parts[-2] == "manifests" and ":" not in ref else "blobs")
            path = path / ref.replace(":", "_")
            if path.is_file():
                body = path.read_bytes()
                kind = MANIFEST if parts[-2] == "manifests" else "application/octet-stream"
                return self._send(body, kind, "sha256:" + hashlib.sha256(body).hexdigest())
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Registry).serve_forever()
'''


class FakeRegistry:
    """A Docker registry (API v2) serving the simulator image, inside the host's namespace."""

    def __init__(self, root: Path, port: int, config: dict[str, Any],
                 layers: list[tuple[str, int]]) -> None:
        self.root = root
        self.port = port
        self.config = config
        self.layers = layers  # (gzip digest, size)

    def blob(self, data: bytes) -> str:
        import hashlib

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / digest.replace(":", "_")).write_bytes(data)
        return digest

    def tag(self, tag: str, label: str) -> None:
        """Publish ``tag`` as the image with one more label (a new image id per label)."""
        config = json.loads(json.dumps(self.config))
        config.setdefault("config", {}).setdefault("Labels", {})
        config["config"]["Labels"] = {**(config["config"]["Labels"] or {}), "test.tag": label}
        raw = json.dumps(config).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": len(raw), "digest": self.blob(raw)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": size, "digest": digest} for digest, size in self.layers],
        }
        body = json.dumps(manifest).encode()
        self.blob(body)  # fetched again by digest after the tag
        (self.root / "tags" / tag).write_bytes(body)

    def ref(self, tag: str) -> str:
        return f"127.0.0.1:{self.port}/spark-stack/pulled-sim:{tag}"


@pytest.fixture
def registry(tmp_path: Path, testhost: HostInfo,
             host_docker: docker.DockerClient) -> Iterator[FakeRegistry]:
    import gzip
    import tarfile

    root = tmp_path / "registry"
    (root / "blobs").mkdir(parents=True)
    (root / "tags").mkdir()
    saved = tmp_path / "saved.tar"
    with saved.open("wb") as out:
        for chunk in host_docker.images.get(testhost.sim_image).save(named=False):
            out.write(chunk)
    with tarfile.open(saved) as archive:
        [entry] = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config = json.loads(archive.extractfile(entry["Config"]).read())  # type: ignore[union-attr]
        registry = FakeRegistry(root, random.randint(20000, 39999), config, [])
        for layer in entry["Layers"]:
            packed = gzip.compress(archive.extractfile(layer).read(),  # type: ignore[union-attr]
                                   compresslevel=1)
            registry.layers.append((registry.blob(packed), len(packed)))
    saved.unlink()
    script = tmp_path / "registry.py"
    script.write_text(REGISTRY_SERVER)
    server = subprocess.Popen(["nsenter", f"--net=/run/netns/{testhost.netns}", sys.executable,
                               str(script), str(root), str(registry.port)])
    try:
        deadline = time.monotonic() + 15
        while testhost.run_in_netns(
                [sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', "
                 f"{registry.port}), 1)"], check=False).returncode != 0:
            assert time.monotonic() < deadline, "the fake registry did not start"
            time.sleep(0.1)
        yield registry
    finally:
        server.terminate()
        server.wait(timeout=10)
        for image in host_docker.images.list(name=f"127.0.0.1:{registry.port}/*"):
            host_docker.images.remove(image.id, force=True)


def test_a_missing_image_is_pulled_and_a_moved_tag_replaces_with_pull(
    deployer: Deployer, registry: FakeRegistry, host_docker: docker.DockerClient
) -> None:
    registry.tag("v1", "first")
    deployer.write(deployer.model(image=registry.ref("v1")))
    code, out, err = deployer.run("up", "--no-proxy")
    assert code == 0, out + err
    assert f"pulling {registry.ref('v1')}" in out and f"pulled {registry.ref('v1')}" in out
    [first] = _containers(host_docker, deployer.name)
    assert first.image.labels["test.tag"] == "first"

    registry.tag("v1", "second")  # the tag moves upstream
    code, result = deployer.run_json("up", "--no-proxy")
    assert [a["action"] for a in result["actions"]] == ["keep"]  # no registry check by default
    code, result = deployer.run_json("up", "--no-proxy", "--pull")
    assert code == 0, result
    assert result["actions"][0]["action"] == "replace"
    assert result["actions"][0]["reason"] == "image updated on the host"
    [second] = _containers(host_docker, deployer.name)
    assert second.image.labels["test.tag"] == "second"
    assert second.id != first.id


# --- status --json shape ------------------------------------------------------------------------


def test_status_json_has_one_shape_reachable_or_not_and_a_dead_proxy_exits_4(
    deployer: Deployer,
) -> None:
    from spark_stack.deploy.status import HOST_KEYS, MODEL_KEYS

    deployer.write()
    assert deployer.run("up")[0] == 0
    code, up = deployer.run_json("status")
    assert code == 0, up
    assert set(up["hosts"][0]) == set(HOST_KEYS) and set(up["models"][0]) == set(MODEL_KEYS)
    assert up["models"][0]["restarts"] == 0

    os.kill(up["proxy"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        code, report = deployer.run_json("status")
        if not report["proxy"]["running"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert code == 4 and report["healthy"] is False and report["proxy"]["running"] is False
    assert report["models"][0]["healthy"] is True

    deployer.write(host={"address": "10.213.0.2", "port": 2})  # nothing listens there
    code, gone = deployer.run_json("status")
    assert code == 3
    assert set(gone) == set(up)
    assert set(gone["hosts"][0]) == set(up["hosts"][0])
    assert set(gone["models"][0]) == set(up["models"][0])
    assert gone["hosts"][0]["error"] and gone["hosts"][0]["ssh"] is None
    assert gone["models"][0]["state"] == "unknown" and gone["models"][0]["restarts"] is None
    deployer.write()  # so the fixture's `down` reaches the host


# --- day 2: progress, memory guard --------------------------------------------------------------


def _slow_download_model(deployer: Deployer, cache: str) -> dict[str, Any]:
    model = deployer.model(cache={"huggingface": cache, "vllm": None, "flashinfer": None})
    model["env"].update({"VLLM_SIM_STARTUP_SECONDS": "3", "VLLM_SIM_DOWNLOAD_BYTES": "40000000",
                         "VLLM_SIM_DOWNLOAD_SECONDS": "5"})
    return model


def _run_in_a_terminal(argv: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as its stdout and stderr; (exit code, screen bytes)."""
    import pty
    import select

    master, slave = pty.openpty()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                               env={**os.environ, "COLUMNS": "100", "TERM": "xterm"})
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(master)
    return process.wait(timeout=30), b"".join(chunks).decode(errors="replace")


def test_a_slow_first_start_shows_a_moving_clock_the_download_and_json_events(
    deployer: Deployer,
) -> None:
    """Was `slow: starting (0.0 s)` until the timeout: no moving time, no download phase."""
    cache = f"/tmp/spark-stack-e2e-hf-{deployer.name}"
    deployer.write(_slow_download_model(deployer, cache))
    code, screen = _run_in_a_terminal(
        [sys.executable, "-m", "spark_stack", "-s", str(deployer.path), "up", "--no-proxy"])
    assert code == 0, screen
    clocks = set(re.findall(r"\b0m0(\d)s\b", screen))
    assert len(clocks) >= 3, screen  # the elapsed time moved while it waited
    assert re.search(r"qwen: downloading \d+\.\d GB", screen), screen
    assert "ready" in screen
    # The same start with --json: one event per line on stderr, stdout the result.
    deployer.run("down")
    shutil.rmtree(cache)  # the stand-in shares this machine's file system: a cold cache again
    done = subprocess.run(
        [sys.executable, "-m", "spark_stack", "-s", str(deployer.path), "up", "--no-proxy",
         "--json"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    phases = [e["phase"] for e in events if e["event"] == "phase"]
    assert "downloading" in phases and phases[-1] == "ready", phases
    downloading = next(e for e in events if e.get("phase") == "downloading")
    assert downloading["downloaded_bytes"] >= 0
    assert json.loads(done.stdout)["ok"] is True
    shutil.rmtree(cache, ignore_errors=True)


def test_too_little_mem_available_is_refused_before_the_running_model_is_stopped(
    deployer: Deployer, host_docker: docker.DockerClient
) -> None:
    from tests.testhost.sshd import reset_meminfo, set_mem_available

    deployer.write(deployer.model())
    assert deployer.run("up", "--no-proxy")[0] == 0
    [before] = _containers(host_docker, deployer.name)
    set_mem_available(1_000_000)  # ~1 GiB
    try:
        deployer.write(deployer.model(gpus="all", gpu_memory_utilization=0.5))
        code, out, err = deployer.run("up", "--no-proxy", "--skip-preflight", "nvidia",
                                      "--skip-preflight", "gpus")
        assert code == 1 or code == 4, out + err
        assert "gpu_memory_utilization 0.5 wants" in err and "1.0 GiB is available" in err
        assert "drop the page cache" in err
    finally:
        reset_meminfo()
    [after] = _containers(host_docker, deployer.name)
    assert (after.id, after.status) == (before.id, "running")  # nothing was stopped
