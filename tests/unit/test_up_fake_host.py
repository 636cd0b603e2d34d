"""`up`, `down`, `status` and `plan --diff` against the in-memory fake host: every path of the
observe → plan → execute engine in seconds (the real sshd + dockerd e2e covers the whole path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spark_stack.deploy.down import down
from spark_stack.deploy.lock import lock_name, lock_script
from spark_stack.deploy.plan_diff import host_diff
from spark_stack.deploy.report import QuietReporter
from spark_stack.deploy.status import status
from spark_stack.deploy.up import Edges, UpOptions, up
from spark_stack.deployment import as_written, resolve
from spark_stack.errors import HostUnreachable, LockHeld, MissingSecret, NotHealthy
from spark_stack.stack import schema
from spark_stack.stack.loader import load_stack_text
from tests.fakes.host import FakeConnection, FakeHost, up_actions

IMAGE = "vllm/vllm-openai:v0.28.0"


def _stack(**model: object) -> schema.Stack:
    qwen = {"name": "qwen", "image": IMAGE, "model": "Qwen/Qwen3-0.6B", "port": 8000,
            "max_model_len": 65536, "gpu_memory_utilization": 0.4, "api_key": "auto", **model}
    text = yaml.safe_dump({"name": "fake", "host": {"address": "gb10.test"}, "models": [qwen]})
    return load_stack_text(text, lint=False).stack


@pytest.fixture
def host(tmp_path: Path, spark_stack_home: Path) -> FakeHost:
    fake = FakeHost(FakeConnection(home=tmp_path / "remote-home"))
    (tmp_path / "remote-home").mkdir()
    fake.docker.add_image(IMAGE)
    return fake



def _facts_runs(host: FakeHost) -> int:
    return sum(1 for s in host.conn.scripts if s.startswith("echo '@@spark-stack@@ home'"))


def test_create_then_keep_then_replace_then_remove(host: FakeHost) -> None:
    stack = _stack()
    assert up_actions(stack, host) == [("create", "qwen")]
    assert _facts_runs(host) == 1  # preflight ran once
    (container,) = host.docker.containers.values()
    assert "VLLM_API_KEY=sk-spark-" in " ".join(container["Config"]["Env"])

    assert up_actions(stack, host) == [("keep", "qwen")]
    assert _facts_runs(host) == 1 and host.docker.calls == ["create qwen"]

    bigger = _stack(max_model_len=98304)
    diff = host_diff(resolve(bigger), connect=host.connect)
    assert diff[0]["actions"][0]["action"] == "replace"
    assert up_actions(bigger, host) == [("replace", "qwen")]
    # The old one is set aside (stopped, renamed) until the new one serves, then removed.
    assert [c for c in host.docker.calls[-4:] if not c.startswith("stop ")] == [
        "rename spark-stack-fake-qwen spark-stack-fake-qwen-previous", "create qwen",
        "remove qwen"]
    assert len(host.docker.containers) == 1

    other = load_stack_text(yaml.safe_dump({
        "name": "fake", "host": {"address": "gb10.test"},
        "models": [{"name": "coder", "image": IMAGE, "model": "Qwen/Qwen3-Coder", "port": 8001,
                    "max_model_len": 65536, "gpu_memory_utilization": 0.4}]}), lint=False).stack
    assert up_actions(other, host) == [("create", "coder"), ("remove", "qwen")]
    assert [c["Config"]["Labels"]["io.spark-stack.model"]
            for c in host.docker.containers.values()] == ["coder"]


def test_a_kept_container_that_still_loads_is_checked_not_called_up_to_date(
    host: FakeHost,
) -> None:
    """An `up` interrupted while the model loaded; the next `up` must not exit 0 unready."""
    stack = _stack()
    up_actions(stack, host)
    host.docker.loading.add("qwen")
    with pytest.raises(NotHealthy, match="model qwen did not become ready"):
        up_actions(stack, host, timeout=0.3)
    host.docker.loading.clear()
    for container in host.docker.containers.values():  # the failure stopped it: resume
        container["State"]["Status"] = "running"
    assert up_actions(stack, host) == [("keep", "qwen")]


def _interrupted_replace(host: FakeHost, stack: schema.Stack, bigger: schema.Stack) -> None:
    """`up` of ``bigger`` stopped while its new container loads (`-previous` beside it)."""
    up_actions(stack, host)
    host.docker.loading.add("qwen")

    def interrupt(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(host.docker, "logs", interrupt)  # read while it loads
        with pytest.raises(KeyboardInterrupt):
            up_actions(bigger, host)
    host.docker.loading.clear()
    names = sorted(c["Name"] for c in host.docker.containers.values())
    assert names == ["/spark-stack-fake-qwen", "/spark-stack-fake-qwen-previous"]
    host.docker.calls.clear()


def test_an_interrupted_replace_keeps_the_new_container_and_then_drops_the_previous(
    host: FakeHost,
) -> None:
    bigger = _stack(max_model_len=98304)
    _interrupted_replace(host, _stack(), bigger)
    assert up_actions(bigger, host) == [("keep", "qwen")]
    assert host.docker.calls == ["remove qwen"]  # the previous one; nothing created
    assert [c["Name"] for c in host.docker.containers.values()] == ["/spark-stack-fake-qwen"]


def test_an_interrupted_replace_whose_new_container_never_serves_brings_the_previous_back(
    host: FakeHost,
) -> None:
    bigger = _stack(max_model_len=98304)
    _interrupted_replace(host, _stack(), bigger)
    host.docker.loading.add("qwen")
    (new,) = [i for i, c in host.docker.containers.items()
              if c["Name"] == "/spark-stack-fake-qwen"]
    with pytest.raises(NotHealthy, match="rolled back"):
        up_actions(bigger, host, timeout=0.3)
    assert new not in host.docker.containers
    [(name, state)] = [(c["Name"], c["State"]["Status"]) for c in host.docker.containers.values()]
    assert (name, state) == ("/spark-stack-fake-qwen", "running")


def test_an_exited_container_is_replaced_and_a_missing_image_pulled(host: FakeHost) -> None:
    stack = _stack()
    up_actions(stack, host)
    for container in host.docker.containers.values():
        container["State"]["Status"] = "exited"
    assert up_actions(stack, host) == [("replace", "qwen")]
    new_image = _stack(image="vllm/vllm-openai:v0.33.0")
    assert up_actions(new_image, host) == [("replace", "qwen")]
    assert "pull vllm/vllm-openai:v0.33.0" in host.docker.calls


def test_a_failed_start_is_diagnosed_stopped_and_its_log_saved(host: FakeHost) -> None:
    host.docker.failing.add("qwen")
    with pytest.raises(NotHealthy) as caught:
        up_actions(_stack(), host)
    assert "model qwen failed to start" in caught.value.message
    assert "KV cache" in caught.value.message + str(caught.value.fix)
    saved = Path(caught.value.message.rsplit("full log: ", 1)[1].rstrip(")"))
    assert "larger than the available KV cache memory" in saved.read_text()
    assert saved.stat().st_mode & 0o777 == 0o600
    assert any(call.startswith("stop ") for call in host.docker.calls)


def test_docker_stopping_mid_up_is_named_as_the_daemon_not_an_exit_code(host: FakeHost) -> None:
    host.docker.daemon_stops_at.add("qwen")
    with pytest.raises(HostUnreachable) as caught:
        up_actions(_stack(), host)
    assert "the docker daemon on nvidia@gb10.test stopped while qwen was starting" in (
        caught.value.message)
    assert "137" not in caught.value.message
    assert "start docker on the host" in str(caught.value.fix)


def test_down_purge_removes_the_hosts_lock_files(host: FakeHost, tmp_path: Path) -> None:
    locks = tmp_path / "remote-home" / ".cache" / "spark-stack" / "locks"
    up_actions(_stack(), host)
    assert sorted(p.name for p in locks.iterdir()) == ["fake@default.lock", "fake@default.owner"]
    down(_stack(), connect=host.connect)
    assert locks.is_dir()  # a plain down keeps them
    down(_stack(), connect=host.connect, purge=True)
    assert not locks.exists()


def test_a_held_lock_names_its_holder_and_changes_nothing(host: FakeHost) -> None:
    held = host.conn.hold(lock_script(lock_name("fake", "default"),
                                      "alice@laptop pid 7 since now", 0))
    try:
        assert held.read_line(5) == "LOCKED"
        with pytest.raises(LockHeld, match="alice@laptop pid 7"):
            up_actions(_stack(), host)
        assert host.docker.containers == {}
    finally:
        held.release()
    assert up_actions(_stack(), host) == [("create", "qwen")]


def test_an_unset_secret_stops_up_before_anything_starts(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_EXPORTED", raising=False)
    with pytest.raises(MissingSecret, match="NOT_EXPORTED"):
        up_actions(_stack(env={"HF_TOKEN": "${NOT_EXPORTED}"}), host)
    assert host.connects == 0 and host.docker.calls == []


def test_status_and_down_read_the_same_deployment(host: FakeHost) -> None:
    stack = _stack()
    up_actions(stack, host)
    deployment = resolve(stack)
    report = status(deployment, connect=host.connect, probe=host.probe)
    (entry,) = report["models"]
    assert (entry["state"], entry["healthy"], entry["drift"]) == ("running", True, False)
    assert entry["endpoint"] == "http://gb10.test:8000/v1"  # the same URL `up` dialled
    assert report["hosts"][0]["reachable"] is True
    result = down(stack, connect=host.connect)
    assert result.removed == ["spark-stack-fake-qwen"] and host.docker.containers == {}


def _running(host: FakeHost) -> list[tuple[str, str]]:
    return [(c["Name"].lstrip("/"), c["State"]["Status"]) for c in host.docker.containers.values()]


def test_a_replace_that_fails_rolls_back_and_the_old_model_serves_again(host: FakeHost) -> None:
    up_actions(_stack(), host)
    host.docker.fail_if = lambda spec: "300000" in spec.command
    with pytest.raises(NotHealthy) as caught:
        up_actions(_stack(max_model_len=300000), host)
    assert "rolled back: the previous container serves again" in caught.value.message
    assert "KV cache" in caught.value.message  # the diagnosis of the failed config
    assert _running(host) == [("spark-stack-fake-qwen", "running")]
    deployment = resolve(_stack())
    (entry,) = status(deployment, connect=host.connect, probe=host.probe)["models"]
    assert entry["healthy"] is True  # the old config, no drift


def test_no_rollback_leaves_the_failed_model_down(host: FakeHost) -> None:
    up_actions(_stack(), host)
    host.docker.fail_if = lambda spec: "300000" in spec.command
    with pytest.raises(NotHealthy) as caught:
        up_actions(_stack(max_model_len=300000), host, rollback=False)
    assert "rolled back" not in caught.value.message
    assert _running(host) == [("spark-stack-fake-qwen", "exited")]


def test_too_little_mem_available_is_refused_before_the_old_model_is_touched(
    host: FakeHost,
) -> None:
    from spark_stack.errors import PreflightError
    from tests.fakes.host import facts_output

    up_actions(_stack(), host)
    calls = list(host.docker.calls)
    host.conn.facts = facts_output(mem_available_kib=20_000_000)  # ~19 GiB of 121
    with pytest.raises(PreflightError) as caught:
        up_actions(_stack(max_model_len=98304, gpus="all"), host)
    assert caught.value.message == ("preflight memory: gpu_memory_utilization 0.4 wants 48.7 GiB; "
                                    "19.1 GiB is available (unified memory)")
    assert host.docker.calls == calls  # nothing stopped, renamed or created
    assert _running(host) == [("spark-stack-fake-qwen", "running")]


def test_a_model_without_a_share_is_checked_at_vllms_default(host: FakeHost) -> None:
    from spark_stack.errors import PreflightError
    from tests.fakes.host import facts_output

    host.conn.facts = facts_output(mem_available_kib=60_000_000)
    with pytest.raises(PreflightError, match="0.9"):
        up_actions(_stack(gpu_memory_utilization=None, gpus="all"), host)


def test_drop_caches_runs_before_a_start_and_only_when_asked(host: FakeHost) -> None:
    from spark_stack.deploy.host_exec import DROP_CACHES_SCRIPT

    up_actions(_stack(), host)
    assert DROP_CACHES_SCRIPT not in host.conn.scripts
    up_actions(_stack(max_model_len=98304), host, drop_caches=True)
    assert host.conn.scripts.count(DROP_CACHES_SCRIPT) == 1
    up_actions(_stack(max_model_len=98304), host, drop_caches=True)  # nothing to start: no drop
    assert host.conn.scripts.count(DROP_CACHES_SCRIPT) == 1


def test_status_with_ssh_up_but_docker_down_says_unreachable_in_both_views(
    host: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text said "unreachable" (exit 3) while the JSON said `"reachable": true`."""
    from spark_stack.deploy.status import exit_code
    from spark_stack.errors import HostUnreachable

    def no_daemon(stack: str) -> list[object]:
        raise HostUnreachable("the docker API on gb10.test does not answer through SSH")

    monkeypatch.setattr(host.docker, "stack_containers", no_daemon)
    report = status(resolve(_stack()), connect=host.connect, probe=host.probe)
    (entry,) = report["hosts"]
    assert (entry["reachable"], entry["ssh"]) == (False, "nvidia@gb10.test")
    assert "docker API" in entry["error"] and exit_code(report) == 3


def test_a_second_up_on_this_machine_waits_for_the_local_lock_and_starts_no_proxy(
    tmp_path: Path, spark_stack_home: Path
) -> None:
    """Two `up` at once could orphan a proxy `down` could not stop: local steps are locked."""
    from spark_stack.deploy.local_lock import LocalLock
    from spark_stack.errors import LockHeld
    from spark_stack.paths import proxy_state_dir
    from spark_stack.proxy.daemon import proxy_status

    stack = load_stack_text("name: twoups\nmodels: [{name: s, kind: simulator, port: 1}]\n"
                            "proxy: {listen: '127.0.0.1:2'}\n", lint=False).stack
    with LocalLock("twoups"), pytest.raises(LockHeld, match="stack 'twoups' is locked by"):
        up(stack, UpOptions(), QuietReporter(), Edges(dial=lambda: as_written))
    assert not proxy_status(proxy_state_dir("twoups")).running


def test_after_resolve_up_and_down_read_only_the_deployment(
    host: FakeHost, fake_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack stops at the resolver: emptied right after it, `up` (containers, proxy,
    launcher) and `down` still run to the end."""
    import spark_stack.deploy.down as down_module
    import spark_stack.deploy.up as up_module
    from spark_stack.deployment import Deployment
    from tests.fakes.host import fake_edges
    from tests.helpers import free_port

    def resolve_then_forget(stack: schema.Stack, *args: object) -> Deployment:
        deployment = resolve(stack, *args)  # type: ignore[arg-type]
        stack.__dict__.clear()  # any later read of the stack fails
        return deployment

    monkeypatch.setattr(up_module, "resolve", resolve_then_forget)
    monkeypatch.setattr(down_module, "resolve", resolve_then_forget)
    port = free_port()
    text = yaml.safe_dump({"name": "fake", "host": {"address": "gb10.test"},
                           "proxy": {"listen": f"127.0.0.1:{port}"},
                           "models": [{"name": "qwen", "image": IMAGE, "port": 8000,
                                       "model": "Qwen/Qwen3-0.6B", "api_key": "auto"}]})
    result = up(load_stack_text(text, lint=False).stack, UpOptions(), QuietReporter(),
                fake_edges(host))
    try:
        assert [(a.kind, a.model) for a in result.actions] == [("create", "qwen")]
        assert result.proxy_url == f"http://127.0.0.1:{port}"
        assert result.launcher is not None and result.launcher.exists()
    finally:
        gone = down(load_stack_text(text, lint=False).stack, connect=host.connect)
    assert gone.proxy_stopped and gone.removed == ["spark-stack-fake-qwen"]
