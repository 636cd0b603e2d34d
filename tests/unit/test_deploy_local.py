"""Local state of deploys: the remote lock's script (run by a real shell), generated secrets,
the proxy config built from a stack, and the simulator kind run as a real local process."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from spark_stack.deploy import local, secrets_store
from spark_stack.deploy import logs as deploy_logs
from spark_stack.deploy import status as deploy_status
from spark_stack.deploy.down import down
from spark_stack.deploy.lock import LOCK_DIR, lock_script, remove_lock_script
from spark_stack.deploy.report import QuietReporter
from spark_stack.deploy.up import UpOptions, up
from spark_stack.deployment import resolve
from spark_stack.errors import NotHealthy
from spark_stack.proxy.config import ProxyConfig, Route
from spark_stack.routing import Rule
from spark_stack.stack.loader import load_stack_text
from tests.helpers import free_port


def _shell(script: str, home: Path, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ,
                                                                     "HOME": str(home)})


def test_the_lock_is_held_while_its_channel_lives_and_names_its_holder(tmp_path: Path) -> None:
    holder = _shell(lock_script("st", "alice@laptop pid 42 since now", 0), tmp_path)
    assert holder.stdout is not None
    assert holder.stdout.readline() == "LOCKED\n"
    second = subprocess.run(["sh", "-c", lock_script("st", "bob", 0)], capture_output=True,
                            text=True, env={**os.environ, "HOME": str(tmp_path)}, timeout=10)
    assert second.returncode == 1
    assert second.stdout == "HELD\nalice@laptop pid 42 since now\n"
    other_stack = subprocess.run(["sh", "-c", lock_script("other", "bob", 0)],
                                 input="", capture_output=True, text=True,
                                 env={**os.environ, "HOME": str(tmp_path)}, timeout=10)
    assert other_stack.stdout == "LOCKED\n"
    holder.communicate("", timeout=10)  # EOF: the connection ended
    third = subprocess.run(["sh", "-c", lock_script("st", "carol", 5)], input="",
                           capture_output=True, text=True,
                           env={**os.environ, "HOME": str(tmp_path)}, timeout=10)
    assert third.stdout == "LOCKED\n"


def test_the_lock_stays_exclusive_when_down_purge_removes_its_file(tmp_path: Path) -> None:
    holder = _shell(lock_script("st", "down --purge", 0), tmp_path)
    assert holder.stdout is not None and holder.stdout.readline() == "LOCKED\n"
    waiter = _shell(lock_script("st", "waiter", 30), tmp_path)  # blocked on the file's lock
    time.sleep(0.3)
    subprocess.run(["sh", "-c", remove_lock_script("st")], check=True, timeout=10,
                   env={**os.environ, "HOME": str(tmp_path)})
    assert not (tmp_path / LOCK_DIR / "st.lock").exists()
    newcomer = _shell(lock_script("st", "newcomer", 0), tmp_path)  # takes the new file's lock
    assert newcomer.stdout is not None and newcomer.stdout.readline() == "LOCKED\n"
    holder.communicate("", timeout=10)
    # The waiter got the deleted file's lock: it must notice, and wait for the newcomer's.
    time.sleep(0.5)
    assert waiter.poll() is None
    newcomer.communicate("", timeout=10)
    assert waiter.stdout is not None and waiter.stdout.readline() == "LOCKED\n"
    waiter.communicate("", timeout=10)


def test_the_lock_script_quotes_a_hostile_stack_name(tmp_path: Path) -> None:
    script = lock_script("x; touch pwned", "me'; touch pwned2", 0)
    done = subprocess.run(["sh", "-c", script], input="", capture_output=True, text=True,
                          env={**os.environ, "HOME": str(tmp_path)}, cwd=tmp_path, timeout=10)
    assert done.stdout == "LOCKED\n"
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_generated_secrets_are_kept_0600_and_reused(spark_stack_home: Path) -> None:
    key = secrets_store.get_or_create("s1", "vllm-api-key-a")
    path = secrets_store.secret_path("s1", "vllm-api-key-a")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert secrets_store.get_or_create("s1", "vllm-api-key-a") == key
    assert len(key) > 40 and key != secrets_store.get_or_create("s2", "vllm-api-key-a")
    with pytest.raises(ValueError):
        secrets_store.secret_path("s1", "../escape")


STACK = """
name: px
host: {address: gb10}
models:
  - name: big
    image: vllm/vllm-openai:v0.28.0
    model: Qwen/Qwen3.6-35B-A3B
    served_name: qwen3.6
    reasoning_parser: qwen3
    max_model_len: 65536
    gpus: none
  - name: ext
    url: http://10.1.2.3:9000/v1
    thinking: none
proxy:
  listen: 127.0.0.1:4999
  routes:
    "claude-haiku-*": ext
"""


def test_the_proxy_config_routes_user_patterns_then_names_then_everything() -> None:
    deployment = resolve(load_stack_text(STACK, lint=False).stack)
    config = deployment.proxy_config({"big": "k1", "ext": None}, token="tok")
    assert (config.host, config.port, config.token) == ("127.0.0.1", 4999, "tok")
    big = config.upstreams["big"]
    assert (big.base_url, big.served_name, big.api_key, big.max_model_len, big.thinking) == (
        "http://gb10:8000/v1", "qwen3.6", "k1", 65536, "qwen3")
    assert config.upstreams["ext"].thinking == "none"
    assert config.routes == [Route("claude-haiku-*", "ext", "route"),
                             Route("big", "big", "model name"),
                             Route("ext", "ext", "model name"),
                             Route("qwen3.6", "big", "served name"),
                             Route("*", "big", "catch-all")]
    assert [Rule(r.pattern, r.upstream_name, r.origin) for r in config.routes] == list(
        deployment.routes)
    assert ProxyConfig.from_json(config.to_json()) == config  # the daemon can read it back


def test_a_tunnel_endpoint_replaces_the_models_own() -> None:
    deployment = resolve(load_stack_text(STACK, lint=False).stack)
    config = deployment.proxy_config({}, None, {"big": "http://127.0.0.1:5555/v1"})
    assert config.upstreams["big"].base_url == "http://127.0.0.1:5555/v1"


def test_the_simulator_kind_runs_as_a_local_process_kept_when_unchanged(
    spark_stack_home: Path, fake_home: Path
) -> None:
    port = free_port()
    text = f"""
name: simtest
models:
  - name: sim
    kind: simulator
    port: {port}
    startup_seconds: 0.2
proxy:
  listen: 127.0.0.1:{free_port()}
"""
    stack = load_stack_text(text, lint=False).stack
    deployment = resolve(stack)
    options = UpOptions(start_proxy=False)
    try:
        first = up(stack, options, QuietReporter())
        assert [(a.kind, a.model) for a in first.actions] == [("create", "sim")]
        assert first.endpoints["sim"] == f"http://127.0.0.1:{port}/v1"
        process = local.simulator_process("simtest", "sim")
        pid = process.running_pid()
        assert pid is not None and process.log_file.stat().st_mode & 0o777 == 0o600
        again = up(stack, options, QuietReporter())
        assert [a.kind for a in again.actions] == ["keep"]
        assert process.running_pid() == pid
        report = deploy_status.status(deployment)
        assert report["models"][0]["healthy"] is True and report["models"][0]["pid"] == pid
        chunks = deploy_logs.logs(deployment, "sim", tail=None, follow=False)
        logs = "".join(chunk for _, chunk in chunks)
        assert "Application startup complete" in logs
    finally:
        result = down(stack)
    assert result.stopped_local == ["sim"]
    assert process.running_pid() is None
    assert deploy_status.status(deployment)["healthy"] is False
    other = resolve(load_stack_text(text.replace("simtest", "other"), lint=False).stack)
    with pytest.raises(NotHealthy):
        list(deploy_logs.logs(other, "sim", tail=None, follow=False))


def test_the_local_lock_names_its_holder_and_can_be_waited_for(spark_stack_home: Path) -> None:
    import threading

    from spark_stack.deploy.local_lock import LocalLock
    from spark_stack.errors import LockHeld

    first = LocalLock("held").__enter__()
    with pytest.raises(LockHeld, match=f"locked by another `up`/`down` on this machine: .*pid "
                       f"{os.getpid()} since"):
        LocalLock("held").__enter__()
    threading.Timer(0.3, lambda: first.__exit__(None, None, None)).start()
    with LocalLock("held", wait_seconds=10):
        pass
