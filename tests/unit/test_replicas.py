"""A model with replicas (a full copy per host): the stack file, the plan, the proxy's config,
and `up`/`status`/`logs`/`down` on two fake Sparks through the single-host engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from spark_stack.deploy.down import down
from spark_stack.deploy.logs import logs
from spark_stack.deploy.report import QuietReporter
from spark_stack.deploy.status import status
from spark_stack.deploy.up import UpOptions, up
from spark_stack.deployment import resolve
from spark_stack.errors import NotHealthy, StackFileError
from spark_stack.render import plan_document
from spark_stack.stack import schema
from spark_stack.stack.loader import load_stack_text
from tests.fakes.host import FakeHosts, fake_edges, two_sparks, up_actions

IMAGE = "vllm/vllm-openai:v0.28.0"


def doc(**model: object) -> dict[str, object]:
    qwen = {"name": "qwen", "image": IMAGE, "model": "org/qwen", "replicas": ["a", "b"],
            "port": 8000, "max_model_len": 65536, **model}
    return {"name": "pair", "hosts": {"a": {"address": "spark-a"}, "b": {"address": "spark-b"}},
            "models": [{k: v for k, v in qwen.items() if v is not None}]}


def load(data: dict[str, object]) -> schema.Stack:
    return load_stack_text(yaml.safe_dump(data, sort_keys=False), lint=False).stack


def problems(data: dict[str, object]) -> list[tuple[str, int | None, str, str]]:
    with pytest.raises(StackFileError) as caught:
        load_stack_text(yaml.safe_dump(data, sort_keys=False), filename="s.yaml")
    return [(p.key_path, p.line, p.message, p.fix or "") for p in caught.value.problems]


def test_each_replica_is_the_same_container_on_its_own_host() -> None:
    deployment = resolve(load(doc()))
    (model,) = deployment.models
    assert [(r.host_key, r.endpoint) for r in model.replicas] == [
        ("a", "http://spark-a:8000/v1"), ("b", "http://spark-b:8000/v1")]
    by_host = deployment.containers_by_host()
    assert sorted(by_host) == ["a", "b"]
    (on_a,), (on_b,) = by_host["a"], by_host["b"]
    assert on_a.container == on_b.container == model.container
    assert on_a.container is not None and on_a.container.name == "spark-stack-pair-qwen"
    assert (on_a.host_key, on_a.endpoint) == ("a", "http://spark-a:8000/v1")
    assert (on_b.host_key, on_b.endpoint) == ("b", "http://spark-b:8000/v1")


def test_the_proxy_gets_one_upstream_per_replica_and_the_replica_set() -> None:
    config = resolve(load(doc())).proxy_config({"qwen": "k"}, None)
    assert config.replicas == {"qwen": ["qwen@a", "qwen@b"]}
    assert config.upstreams["qwen@a"].base_url == "http://spark-a:8000/v1"
    assert config.upstreams["qwen@b"].base_url == "http://spark-b:8000/v1"
    assert {u.api_key for u in config.upstreams.values()} == {"k"}
    assert {u.max_model_len for u in config.upstreams.values()} == {65536}
    # The config survives its own JSON (the proxy's validation of replicas included).
    assert type(config).from_json(config.to_json()) == config


def test_plan_shows_each_replicas_docker_run_line() -> None:
    from spark_stack.stack.loader import load_stack_text as loader

    loaded = loader(yaml.safe_dump(doc()), lint=False)
    plan = plan_document(loaded, resolve(loaded.stack))
    (model,) = plan.models
    assert [(r.host, r.upstream) for r in model.replicas] == [
        ("a (spark-a)", "http://spark-a:8000/v1"), ("b (spark-b)", "http://spark-b:8000/v1")]
    assert all(r.docker_run.startswith("docker run -d --name spark-stack-pair-qwen ")
               for r in model.replicas)


def test_plan_text_names_each_replica(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from spark_stack.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc()))
    assert main(["--stack", str(path), "plan"]) == 0
    output = capsys.readouterr().out
    assert "2 replicas" in output
    assert "replica on a (spark-a), serves at http://spark-a:8000/v1" in output
    assert "replica on b (spark-b), serves at http://spark-b:8000/v1" in output
    assert output.count("docker run -d --name spark-stack-pair-qwen") == 2


def test_duplicate_unknown_and_multi_node_replicas_are_refused_at_their_line() -> None:
    found = problems(doc(replicas=["a", "a", "c"]))
    assert ("models[0].replicas[1]", 13,
            "host 'a' appears twice in the replicas of model 'qwen'",
            "name each host once (one copy of the model per host)") in found
    unknown = next(p for p in found if p[0] == "models[0].replicas[2]")
    assert unknown[1:3] == (14, "replica 'c' of model 'qwen' is an unknown host")
    assert "define it under 'hosts:'" in unknown[3]


def test_a_replica_host_that_is_also_a_multi_node_host_is_refused() -> None:
    data = doc(hosts=["a", "b"])
    data["cluster"] = {"link": {"a": {"interface": "enp1s0f1np1", "address": "192.168.100.10"},
                                "b": {"interface": "enp1s0f1np1", "address": "192.168.100.11"}}}
    found = problems(data)
    (both,) = [p for p in found if "'replicas' and 'hosts'" in p[2]]
    assert both[0] == "models[0].hosts" and both[1] is not None
    assert "host 'a' is in both" in both[2]
    assert both[3].startswith("keep 'replicas'")


def test_host_and_replicas_together_are_refused() -> None:
    found = problems(doc(host="a"))
    assert any(p[0] == "models[0].host" and "both 'host' and 'replicas'" in p[2]
               for p in found)


# --- up, status, logs, down on two fake Sparks ---------------------------------------------

@pytest.fixture
def sparks(tmp_path: Path, spark_stack_home: Path) -> FakeHosts:
    return two_sparks(tmp_path, IMAGE)


def test_up_starts_a_copy_on_each_host_then_keeps_them_and_down_removes_both(
    sparks: FakeHosts,
) -> None:
    stack = load(doc())
    assert up_actions(stack, sparks) == [("create", "qwen"), ("create", "qwen")]
    for host in sparks.hosts.values():
        (container,) = host.docker.containers.values()
        assert container["Name"].lstrip("/") == "spark-stack-pair-qwen"
        assert container["State"]["Status"] == "running"
    assert up_actions(stack, sparks) == [("keep", "qwen"), ("keep", "qwen")]
    result = down(stack, connect=sparks.connect)
    assert result.removed == ["spark-stack-pair-qwen", "spark-stack-pair-qwen"]
    assert all(h.docker.containers == {} for h in sparks.hosts.values())


def test_status_shows_each_replicas_health(sparks: FakeHosts) -> None:
    stack = load(doc())
    up_actions(stack, sparks)
    for container in sparks.hosts["b"].docker.containers.values():
        container["State"]["Status"] = "exited"
    report = status(resolve(stack), connect=sparks.connect, probe=sparks.probe)
    rows = [(m["name"], m["host"], m["endpoint"], m["state"], m["healthy"])
            for m in report["models"]]
    assert rows == [("qwen", "a", "http://spark-a:8000/v1", "running", True),
                    ("qwen", "b", "http://spark-b:8000/v1", "exited", False)]


def test_logs_prefix_each_replica_with_its_host(sparks: FakeHosts) -> None:
    stack = load(doc())
    up_actions(stack, sparks)
    chunks = list(logs(resolve(stack), "qwen", tail=None, follow=False,
                       connect=sparks.connect))
    assert [label for label, _ in chunks] == ["qwen [a]", "qwen [b]"]


def test_status_text_names_each_replica_by_its_host(sparks: FakeHosts) -> None:
    from rich.console import Console

    from spark_stack.cli.cmd_status import _render

    stack = load(doc())
    up_actions(stack, sparks)
    report = status(resolve(stack), connect=sparks.connect, probe=sparks.probe)
    console = Console(record=True, width=120)
    console.print(_render(report))
    text = console.export_text()
    assert "qwen [a]: serves 'org/qwen' at http://spark-a:8000/v1" in text
    assert "qwen [b]: serves 'org/qwen' at http://spark-b:8000/v1" in text


# --- rolling replace ----------------------------------------------------------------------

def recording(sparks: FakeHosts) -> tuple[list[str], Any]:
    """Every docker call on either host and every drain, in one order."""
    events: list[str] = []
    for key, host in sparks.hosts.items():
        original = host.docker.create_and_start

        def create(spec, env, secrets, home, _original=original, _key=key):  # type: ignore[no-untyped-def]
            events.append(f"start {_key}")
            return _original(spec, env, secrets, home)

        host.docker.create_and_start = create  # type: ignore[method-assign]
        stop = host.docker.stop

        def stopped(ident, timeout=10, _stop=stop, _key=key):  # type: ignore[no-untyped-def]
            events.append(f"stop {_key}")
            return _stop(ident, timeout)

        host.docker.stop = stopped  # type: ignore[method-assign]

    def drain(stack: str, reporter: Any) -> Any:
        @contextmanager
        def drained(upstream: str) -> Iterator[None]:
            events.append(f"drain {upstream}")
            try:
                yield
            finally:
                events.append(f"back {upstream}")
        return drained

    return events, drain


def roll(stack: schema.Stack, sparks: FakeHosts, drain: Any) -> list[tuple[str, str]]:
    edges = replace(fake_edges(sparks), drain=drain)
    result = up(stack, UpOptions(start_proxy=False), QuietReporter(), edges)
    return [(a.kind, a.model) for a in result.actions]


def test_a_changed_spec_replaces_one_replica_at_a_time_each_drained_first(
    sparks: FakeHosts,
) -> None:
    events, drain = recording(sparks)
    assert roll(load(doc()), sparks, drain) == [("create", "qwen"), ("create", "qwen")]
    assert events == ["start a", "start b"]  # a first deploy starts both at once, no drain
    events.clear()
    assert roll(load(doc(max_model_len=32768)), sparks, drain) == [
        ("replace", "qwen"), ("replace", "qwen")]
    assert events == ["drain qwen@a", "stop a", "start a", "back qwen@a",
                      "drain qwen@b", "stop b", "start b", "back qwen@b"]
    for host in sparks.hosts.values():
        (container,) = host.docker.containers.values()
        assert container["State"]["Status"] == "running"
        assert "32768" in container["Cmd"]


def test_a_replica_that_fails_to_come_up_is_rolled_back_and_stops_the_roll(
    sparks: FakeHosts,
) -> None:
    events, drain = recording(sparks)
    roll(load(doc()), sparks, drain)
    events.clear()
    sparks.hosts["a"].docker.fail_if = lambda spec: "32768" in spec.command
    with pytest.raises(NotHealthy, match="rolled back: the previous container serves again"):
        roll(load(doc(max_model_len=32768)), sparks, drain)
    assert events[:3] == ["drain qwen@a", "stop a", "start a"]
    assert events[-1] == "back qwen@a"  # given back to the proxy, the old container serving
    assert not any(e.endswith((" b", "@b")) for e in events)  # b was not touched
    (old_a,) = sparks.hosts["a"].docker.containers.values()
    assert old_a["State"]["Status"] == "running" and "65536" in old_a["Cmd"]
    (old_b,) = sparks.hosts["b"].docker.containers.values()
    assert old_b["State"]["Status"] == "running" and "65536" in old_b["Cmd"]


def test_up_names_the_replica_of_each_action(sparks: FakeHosts) -> None:
    result = up(load(doc()), UpOptions(start_proxy=False), QuietReporter(), fake_edges(sparks))
    assert [(a.kind, a.node) for a in result.actions] == [
        ("create", "qwen [a]"), ("create", "qwen [b]")]


# --- weights ------------------------------------------------------------------------------

def test_a_weighted_replica_gets_its_share_of_the_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from spark_stack.cli import main
    from spark_stack.proxy.config import ProxyConfig
    from spark_stack.proxy.dispatch import Dispatcher

    data = doc(replicas=["a", {"host": "b", "weight": 3}])
    config = resolve(load(data)).proxy_config({}, None)
    assert config.weights == {"qwen@b": 3.0}
    assert ProxyConfig.from_json(config.to_json()) == config
    dispatcher = Dispatcher({"qwen@a": 1, "qwen@b": 1}, config.replicas, config.weights)
    picks = [dispatcher.replica("qwen", lambda i=i: f"s{i}".encode()) for i in range(4000)]
    assert 0.72 < picks.count("qwen@b") / len(picks) < 0.78  # 3 / (1 + 3)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["--stack", str(path), "plan"]) == 0
    assert "replica on b (spark-b), weight 3, serves at" in capsys.readouterr().out


def test_a_weighted_replica_on_an_unknown_host_is_refused_at_its_host() -> None:
    found = problems(doc(replicas=["a", {"host": "c", "weight": 2}]))
    assert any(p[0] == "models[0].replicas[1]" and "unknown host" in p[2] for p in found)
    found = problems(doc(replicas=["a", {"host": "b", "weight": 0}]))
    assert any(p[0].startswith("models[0].replicas[1]") for p in found), found


def test_a_replica_left_drained_by_an_interrupted_up_is_given_back(sparks: FakeHosts) -> None:
    from spark_stack.paths import proxy_state_dir
    from spark_stack.proxy import control

    state = proxy_state_dir("pair")
    control.write_drain(state, ["qwen@a"])  # `up` was killed between drain and give-back
    up_actions(load(doc()), sparks)
    assert control.read_drain(state) == frozenset()


def test_export_litellm_lists_every_replica_under_each_name() -> None:
    from spark_stack.export_litellm import litellm_config, render_litellm_config

    stack = load(doc())
    deployment = resolve(stack)
    entries = [(e["model_name"], e["litellm_params"]["api_base"])
               for e in litellm_config(deployment)["model_list"]]
    assert entries[:2] == [("qwen", "http://spark-a:8000/v1"), ("qwen", "http://spark-b:8000/v1")]
    assert len(entries) == 2 * len(deployment.routes)
    text = render_litellm_config(stack, deployment)
    assert "# qwen: 2 replicas, one entry each; LiteLLM load-balances" in text


def test_top_reads_each_replica_under_its_upstream_name(spark_stack_home: Path) -> None:
    from spark_stack.errors import HostUnreachable
    from spark_stack.top.sampler import Sampler
    from tests.helpers import free_port

    def refuse(host: schema.HostConfig, trust: bool) -> Any:
        raise HostUnreachable(f"Connection refused on port 22 of {host.address}")

    port = free_port()  # nothing listens: vLLM is down on both
    data = doc(port=port)
    data["hosts"] = {"a": {"address": "127.0.0.1"}, "b": {"address": "127.0.0.2"}}
    with Sampler(resolve(load(data)), open_connection=refuse) as sampler:
        sampler.wait_for_hosts(5)
        report = sampler.read()
    assert [(m["name"], m["host"], m["metrics_url"], m["state"]) for m in report["models"]] == [
        ("qwen@a", "a", f"http://127.0.0.1:{port}/metrics", "host unreachable"),
        ("qwen@b", "b", f"http://127.0.0.2:{port}/metrics", "host unreachable")]
