"""`up`, `status`, `logs` and `down` of one model across two fake Sparks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spark_stack.deploy.down import down
from spark_stack.deploy.logs import logs
from spark_stack.deploy.report import QuietReporter
from spark_stack.deploy.status import status
from spark_stack.deploy.up import UpOptions, up
from spark_stack.deployment import resolve
from spark_stack.errors import DeployError, HostUnreachable, NotHealthy, PreflightError
from spark_stack.stack import schema
from spark_stack.stack.loader import load_stack_text
from tests.fakes.host import (
    FakeConnection,
    FakeHost,
    FakeHosts,
    facts_output,
    fake_edges,
    two_sparks,
    up_actions,
)

IMAGE = "vllm/vllm-openai:v0.28.0"


def _stack(**model: object) -> schema.Stack:
    big = {"name": "big", "image": IMAGE, "model": "org/big", "hosts": ["a", "b"],
           "port": 8000, "max_model_len": 65536, "gpu_memory_utilization": 0.5, **model}
    text = yaml.safe_dump({
        "name": "duo",
        "hosts": {"a": {"address": "spark-a"}, "b": {"address": "spark-b"}},
        "cluster": {"link": {"a": {"interface": "enp1s0f1np1", "address": "192.168.100.10"},
                             "b": {"interface": "enp1s0f1np1", "address": "192.168.100.11"}}},
        "models": [big]})
    return load_stack_text(text, lint=False).stack


@pytest.fixture
def sparks(tmp_path: Path, spark_stack_home: Path) -> FakeHosts:
    return two_sparks(tmp_path, IMAGE)



def _names(host: FakeHost) -> list[tuple[str, str]]:
    return [(c["Name"].lstrip("/"), c["State"]["Status"]) for c in host.docker.containers.values()]


def test_up_starts_the_worker_then_the_head_keeps_them_and_down_removes_both(
    sparks: FakeHosts,
) -> None:
    stack = _stack()
    assert up_actions(stack, sparks) == [("create", "big"), ("create", "big")]
    a, b = sparks.hosts["a"], sparks.hosts["b"]
    assert _names(a) == [("spark-stack-duo-big-0", "running")]
    assert _names(b) == [("spark-stack-duo-big-1", "running")]
    (head,) = a.docker.containers.values()
    assert "--headless" not in head["Cmd"]
    assert "--headless" in next(iter(b.docker.containers.values()))["Cmd"]
    # Preflight ran on both hosts.
    for host in (a, b):
        assert sum(s.startswith("echo '@@spark-stack@@ home'") for s in host.conn.scripts) == 1

    assert up_actions(stack, sparks) == [("keep", "big"), ("keep", "big")]
    assert a.docker.calls == ["create big"] and b.docker.calls == ["create big"]

    result = down(stack, connect=sparks.connect)
    assert sorted(result.removed) == ["spark-stack-duo-big-0", "spark-stack-duo-big-1"]
    assert a.docker.containers == {} and b.docker.containers == {}


def test_the_workers_start_before_the_head(sparks: FakeHosts) -> None:
    order: list[str] = []
    for key, host in sparks.hosts.items():
        original = host.docker.create_and_start

        def record(spec, env, secrets, home, _original=original, _key=key):  # type: ignore[no-untyped-def]
            order.append(f"{_key}:{spec.rank}")
            return _original(spec, env, secrets, home)

        host.docker.create_and_start = record  # type: ignore[method-assign]
    up_actions(_stack(), sparks)
    assert order == ["b:1", "a:0"]


def test_a_change_replaces_every_node_together(sparks: FakeHosts) -> None:
    up_actions(_stack(), sparks)
    for container in sparks.hosts["b"].docker.containers.values():
        container["State"]["Status"] = "exited"  # only the worker is stale
    assert up_actions(_stack(), sparks) == [("replace", "big"), ("replace", "big")]
    assert _names(sparks.hosts["a"]) == [("spark-stack-duo-big-0", "running")]
    assert _names(sparks.hosts["b"]) == [("spark-stack-duo-big-1", "running")]


def test_a_worker_host_whose_docker_is_down_stops_up_before_anything_starts(
    sparks: FakeHosts,
) -> None:
    sparks.hosts["b"].docker.daemon_down = True
    with pytest.raises(HostUnreachable, match="^host b: the docker API on this fake host"):
        up_actions(_stack(), sparks)
    assert sparks.hosts["a"].docker.calls == [] and sparks.hosts["b"].docker.calls == []


def test_a_worker_that_fails_preflight_leaves_the_head_host_untouched(
    sparks: FakeHosts,
) -> None:
    sparks.hosts["b"].conn.facts = facts_output(mem_available_kib=10_000_000)
    with pytest.raises(PreflightError, match="memory"):
        up_actions(_stack(), sparks)
    assert sparks.hosts["a"].docker.calls == [] and sparks.hosts["b"].docker.calls == []


def test_image_drift_between_the_nodes_is_refused(sparks: FakeHosts) -> None:
    sparks.hosts["b"].docker.images[IMAGE]["Id"] = "sha256:" + "f" * 64
    with pytest.raises(DeployError) as caught:
        up_actions(_stack(), sparks)
    assert "differs between its hosts" in caught.value.message
    assert "--pull" in str(caught.value.fix)
    assert sparks.hosts["a"].docker.containers == {} and sparks.hosts["b"].docker.containers == {}


def test_a_missing_image_is_pulled_on_the_node_that_lacks_it(sparks: FakeHosts) -> None:
    del sparks.hosts["b"].docker.images[IMAGE]
    sparks.hosts["b"].docker.registry[IMAGE] = dict(sparks.hosts["a"].docker.images[IMAGE])
    assert up_actions(_stack(), sparks) == [("create", "big"), ("create", "big")]
    assert f"pull {IMAGE}" in sparks.hosts["b"].docker.calls
    assert f"pull {IMAGE}" not in sparks.hosts["a"].docker.calls


def test_a_worker_that_never_joins_is_named_on_the_heads_timeout(sparks: FakeHosts) -> None:
    sparks.never_join.add("b")
    with pytest.raises(NotHealthy) as caught:
        up_actions(_stack(), sparks, timeout=0.3)
    message = caught.value.message
    assert "model big did not become ready" in message
    assert "worker rank 1 on b (spark-b) never joined the head" in message
    assert "spark-stack doctor" in str(caught.value.fix)


def test_a_worker_nccl_failure_is_diagnosed_with_its_host(sparks: FakeHosts) -> None:
    sparks.never_join.add("b")
    docker_b = sparks.hosts["b"].docker
    plain = docker_b.logs

    def nccl_log(ident: str, *, tail: object = "all") -> str:
        return plain(ident) + "NCCL WARN NET/Socket : Connect to 192.168.100.10<29501> failed\n"

    docker_b.logs = nccl_log  # type: ignore[assignment,method-assign]
    with pytest.raises(NotHealthy) as caught:
        up_actions(_stack(), sparks, timeout=0.3)
    assert "worker rank 1 on b (spark-b): NCCL failed between the nodes" in caught.value.message


def test_status_shows_each_node_and_whether_it_joined(sparks: FakeHosts) -> None:
    stack = _stack()
    up_actions(stack, sparks)
    report = status(resolve(stack), connect=sparks.connect, probe=sparks.probe)
    nodes = [(m["host"], m["rank"], m["container"], m["joined"], m["healthy"])
             for m in report["models"]]
    assert nodes == [("a", 0, "spark-stack-duo-big-0", True, True),
                     ("b", 1, "spark-stack-duo-big-1", True, True)]
    sparks.never_join.add("b")
    report = status(resolve(stack), connect=sparks.connect, probe=sparks.probe)
    assert [(m["rank"], m["joined"], m["healthy"]) for m in report["models"]] == [
        (0, False, False), (1, False, False)]


def test_logs_come_from_every_node_with_the_host_named(sparks: FakeHosts) -> None:
    up_actions(_stack(), sparks)
    chunks = list(logs(resolve(_stack()), "big", tail=None, follow=False,
                       connect=sparks.connect))
    assert [name for name, _ in chunks] == ["big [a]", "big [b]"]
    assert "rank 1 in world size 2 is assigned" in chunks[1][1]


def test_plan_diff_replaces_both_nodes_when_one_is_stale(sparks: FakeHosts) -> None:
    from spark_stack.deploy.plan_diff import host_diff

    up_actions(_stack(), sparks)
    for container in sparks.hosts["b"].docker.containers.values():
        container["State"]["Status"] = "exited"
    diff = host_diff(resolve(_stack()), connect=sparks.connect)
    assert [(h["host"], [a["action"] for a in h["actions"]]) for h in diff] == [
        ("a", ["replace"]), ("b", ["replace"])]


def test_status_text_names_each_node_and_whether_it_joined(sparks: FakeHosts) -> None:
    from rich.console import Console

    from spark_stack.cli.cmd_status import _render

    up_actions(_stack(), sparks)
    sparks.never_join.add("b")
    report = status(resolve(_stack()), connect=sparks.connect, probe=sparks.probe)
    console = Console(record=True, width=120)
    console.print(_render(report))
    text = console.export_text()
    assert "big [a] rank 0, not joined" in text and "big [b] rank 1, not joined" in text


def test_hosts_sharing_one_home_directory_lock_each_its_own_file(tmp_path: Path,
                                                                 spark_stack_home: Path) -> None:
    # NFS homes (or two stand-ins on one machine): one lock file per stack would be taken on
    # the first host and refused on the second, by the same `up`.
    home = tmp_path / "shared-home"
    home.mkdir()
    hosts = {key: FakeHost(FakeConnection(home=home, hostname=f"spark-{key}")) for key in "ab"}
    for host in hosts.values():
        host.docker.add_image(IMAGE)
    sparks = FakeHosts(hosts)
    stack = _stack()
    assert up_actions(stack, sparks) == [("create", "big"), ("create", "big")]
    locks = sorted(p.name for p in (home / ".cache/spark-stack/locks").glob("*.lock"))
    assert locks == ["duo@a.lock", "duo@b.lock"]
    assert sorted(down(stack, connect=sparks.connect).removed) == [
        "spark-stack-duo-big-0", "spark-stack-duo-big-1"]


def test_up_names_each_nodes_action_by_its_host_and_rank(sparks: FakeHosts) -> None:
    edges = fake_edges(sparks)
    result = up(_stack(), UpOptions(start_proxy=False), QuietReporter(), edges)
    assert sorted(a.node for a in result.actions) == ["big [a] rank 0", "big [b] rank 1"]


def test_up_json_names_each_nodes_host_and_rank() -> None:
    """`up --json` said only the model for both nodes of a model across hosts."""
    from spark_stack.cli.cmd_up import _result_json
    from spark_stack.deploy.actions import Action
    from spark_stack.deploy.up import UpResult

    class _Spec:
        rank = 1

    result = UpResult(actions=[Action("create", "qwen", "not on the host", _Spec(), None, (),  # type: ignore[arg-type]
                                      "b"), Action("keep", "solo", "up to date")])
    actions = _result_json("s", result)["actions"]
    assert [(a["model"], a["host"], a["rank"]) for a in actions] == [
        ("qwen", "b", 1), ("solo", None, None)]


def test_a_head_that_serves_proves_every_rank_joined_whatever_the_workers_log(
    sparks: FakeHosts,
) -> None:
    """vLLM at VLLM_LOGGING_LEVEL=WARNING logs no "rank R in world size N is assigned as"
    line: the head answering is the proof that every rank joined (up and status)."""
    for host in sparks.hosts.values():
        host.docker.warnings_only = True
    stack = _stack()
    assert up_actions(stack, sparks) == [("create", "big"), ("create", "big")]
    report = status(resolve(stack), connect=sparks.connect, probe=sparks.probe)
    nodes = {m["rank"]: m for m in report["models"]}
    assert nodes[0]["health"] is True and nodes[0]["models_listed"] is True
    assert nodes[1]["joined"] is True and nodes[1]["healthy"] is True, nodes


def test_a_worker_whose_head_never_serves_is_named_from_its_log(sparks: FakeHosts) -> None:
    """The log line still names the culprit when the head does not answer."""
    sparks.never_join = {"b"}
    with pytest.raises(NotHealthy) as failed:
        up_actions(_stack(readiness_timeout=1), sparks)
    assert "worker rank 1 on b (spark-b) never joined the head" in failed.value.message
