"""One model across two Sparks, from the stack file to each node's container (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spark_stack.deployment import resolve
from spark_stack.errors import StackFileError
from spark_stack.render import plan_document
from spark_stack.spec import LABEL_RANK, docker_run_command
from spark_stack.stack.loader import load_stack, load_stack_text

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "vllm/vllm-openai:v0.28.0"


def two_sparks(**changes: object) -> dict[str, object]:
    model = {"name": "big", "image": IMAGE, "model": "org/big", "hosts": ["a", "b"],
             "max_model_len": 65536, "gpu_memory_utilization": 0.5, "port": 8000}
    doc: dict[str, object] = {
        "name": "duo",
        "hosts": {"a": {"address": "spark-a"}, "b": {"address": "spark-b"}},
        "cluster": {"link": {"a": {"interface": "enp1s0f1np1", "address": "192.168.100.10"},
                             "b": {"interface": "enp1s0f1np1", "address": "192.168.100.11"}}},
        "models": [model],
    }
    for key, value in changes.items():
        if key.startswith("model_"):
            model[key[6:]] = value
        else:
            doc[key] = value
    return doc


def problems(doc: dict[str, object]) -> list[tuple[str, int | None, str, str]]:
    with pytest.raises(StackFileError) as caught:
        load_stack_text(yaml.safe_dump(doc, sort_keys=False), filename="s.yaml")
    return [(p.key_path, p.line, p.message, p.fix or "") for p in caught.value.problems]


def test_the_shipped_two_sparks_stack_validates_without_warnings() -> None:
    loaded = load_stack(ROOT / "stacks" / "two-sparks.yaml")
    assert loaded.warnings == []
    (model,) = resolve(loaded.stack).models
    assert [n.host_key for n in model.nodes] == ["spark-a", "spark-b"]


def test_each_node_gets_its_rank_its_link_and_host_networking() -> None:
    stack = load_stack_text(yaml.safe_dump(two_sparks()), lint=False).stack
    (model,) = resolve(stack).models
    head, worker = model.nodes
    assert model.endpoint == "http://spark-a:8000/v1"  # the head's LAN address serves the API
    assert model.container == head.container and model.host_key == "a"
    assert head.container.name == "spark-stack-duo-big-0"
    assert worker.container.name == "spark-stack-duo-big-1"
    assert worker.container.labels()[LABEL_RANK] == "1"
    tail = ["--tensor-parallel-size", "2"]
    assert " ".join(tail) in " ".join(head.container.command)
    assert list(head.container.command[-8:]) == [
        "--nnodes", "2", "--node-rank", "0", "--master-addr", "192.168.100.10",
        "--master-port", "29501"]
    assert list(worker.container.command[-9:]) == [
        "--nnodes", "2", "--node-rank", "1", "--master-addr", "192.168.100.10",
        "--master-port", "29501", "--headless"]
    env = {v.name: v.value for v in worker.container.env}
    assert env == {
        "VLLM_HOST_IP": "192.168.100.11", "NCCL_SOCKET_IFNAME": "enp1s0f1np1",
        "GLOO_SOCKET_IFNAME": "enp1s0f1np1", "TP_SOCKET_IFNAME": "enp1s0f1np1",
        "UCX_NET_DEVICES": "enp1s0f1np1", "OMPI_MCA_btl_tcp_if_include": "enp1s0f1np1",
        "MASTER_ADDR": "192.168.100.10"}
    line = docker_run_command(worker.container)
    assert "--network host" in line and " -p " not in line
    # On the host's network vLLM binds the model's port itself.
    assert "--port 8000" in line and worker.container.container_port == 8000


def test_nccl_ib_hca_and_master_port_reach_every_node() -> None:
    doc = two_sparks()
    doc["cluster"] = {**doc["cluster"], "nccl_ib_hca": "rocep1s0f1,roceP2p1s0f1",  # type: ignore[dict-item]
                      "master_port": 29600}
    (model,) = resolve(load_stack_text(yaml.safe_dump(doc), lint=False).stack).models
    for node in model.nodes:
        env = {v.name: v.value for v in node.container.env}
        assert env["NCCL_IB_HCA"] == "rocep1s0f1,roceP2p1s0f1"
        assert "29600" in node.container.command


def test_containers_by_host_gives_each_host_its_node() -> None:
    deployment = resolve(load_stack_text(yaml.safe_dump(two_sparks()), lint=False).stack)
    by_host = deployment.containers_by_host()
    assert {k: [(m.name, m.rank, m.container.name if m.container else None) for m in v]
            for k, v in by_host.items()} == {
        "a": [("big", 0, "spark-stack-duo-big-0")], "b": [("big", 1, "spark-stack-duo-big-1")]}


def test_a_single_node_spec_hash_is_unchanged_by_the_new_fields() -> None:
    """Upgrading must not replace every running single-node container."""
    text = yaml.safe_dump({"name": "x", "host": {"address": "h"}, "models": [
        {"name": "q", "image": IMAGE, "model": "org/q", "max_model_len": 65536}]})
    (model,) = resolve(load_stack_text(text, lint=False).stack).models
    assert model.container is not None
    assert "rank" not in model.container.canonical()
    assert "network_mode" not in model.container.canonical()


def test_plan_shows_each_nodes_docker_run_and_environment() -> None:
    loaded = load_stack_text(yaml.safe_dump(two_sparks()), lint=False)
    (plan,) = plan_document(loaded, resolve(loaded.stack)).models
    assert [(n.rank, n.role, n.link) for n in plan.nodes] == [
        (0, "head (serves the API)", "enp1s0f1np1 192.168.100.10"),
        (1, "worker (headless)", "enp1s0f1np1 192.168.100.11")]
    assert plan.nodes[1].env["VLLM_HOST_IP"] == "192.168.100.11"
    assert "--headless" in plan.nodes[1].docker_run


def test_a_link_local_address_is_refused_with_the_known_symptom() -> None:
    doc = two_sparks()
    doc["cluster"]["link"]["b"]["address"] = "169.254.10.2"  # type: ignore[index]
    (found,) = problems(doc)
    key_path, line, message, fix = found
    assert key_path == "cluster.link.b.address" and line is not None
    assert "link-local" in message and "exceeds available GPUs" in message
    assert "netplan" in fix


def test_an_ipv6_link_local_address_is_refused_too() -> None:
    doc = two_sparks()
    doc["cluster"]["link"]["a"]["address"] = "fe80::1"  # type: ignore[index]
    assert "fe80::/10" in problems(doc)[0][2]


def test_unknown_host_missing_link_and_size_mismatch_each_name_their_fix() -> None:
    doc = two_sparks(model_hosts=["a", "c"], model_tensor_parallel_size=4)
    found = {p[0]: p for p in problems(doc)}
    assert "unknown host 'c'" in found["models[0].hosts[1]"][2]
    tp = found["models[0].tensor_parallel_size"]
    assert "does not match the 2 hosts" in tp[2] and "tensor_parallel_size: 2" in tp[3]


def test_a_host_without_its_end_of_the_link_is_refused() -> None:
    doc = two_sparks()
    del doc["cluster"]["link"]["b"]  # type: ignore[attr-defined]
    ((key_path, _, message, fix),) = problems(doc)
    assert key_path == "cluster.link" and "host 'b'" in message and "cluster.link.b" in fix


def test_a_multi_node_model_needs_a_cluster_section_and_two_hosts() -> None:
    doc = two_sparks()
    del doc["cluster"]
    assert any("no 'cluster' section" in p[2] for p in problems(doc))
    assert any("at least two" in p[2] for p in problems(two_sparks(model_hosts=["a"])))


def test_extra_args_may_not_set_the_node_flags() -> None:
    doc = two_sparks(model_extra_args=["--nnodes", "3"])
    ((key_path, _, message, _),) = problems(doc)
    assert key_path == "models[0].extra_args[0]" and "duplicates the 'hosts' setting" in message



def test_a_port_is_taken_on_every_host_of_the_model() -> None:
    doc = two_sparks()
    doc["models"].append({"name": "small", "image": IMAGE, "model": "org/s",  # type: ignore[attr-defined]
                          "host": "b", "port": 8000, "max_model_len": 65536,
                          "gpu_memory_utilization": 0.3})
    assert any("port 8000 is already used by model 'big'" in p[2] for p in problems(doc))


def test_mtp_across_hosts_is_a_warning() -> None:
    doc = two_sparks(model_speculative={"method": "mtp", "num_tokens": 3})
    loaded = load_stack_text(yaml.safe_dump(doc), filename="s.yaml")
    assert any("speculative decoding (MTP)" in w.message and w.key_path ==
               "models[0].speculative" for w in loaded.warnings)


def test_plan_json_lists_the_nodes(tmp_path: Path) -> None:
    import json

    from spark_stack.cli import main
    from spark_stack.cli.common import state as cli_state

    path = tmp_path / "duo.yaml"
    path.write_text(yaml.safe_dump(two_sparks()))
    cli_state.exit_code = 0
    cli_state.json = False
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan", "--json", "-s", str(path)]) == 0
    (model,) = json.loads(out.getvalue())["models"]
    assert [n["container"] for n in model["nodes"]] == ["spark-stack-duo-big-0",
                                                          "spark-stack-duo-big-1"]
    assert model["nodes"][1]["env"]["VLLM_HOST_IP"] == "192.168.100.11"
