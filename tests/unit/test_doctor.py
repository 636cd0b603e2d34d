"""`spark-stack doctor`: the link between two fake Sparks, judged from what each host saw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from spark_stack.deploy.doctor import MARK, as_json, doctor, parse_look
from spark_stack.deployment import resolve
from spark_stack.stack.loader import load_stack_text
from tests.fakes.host import FakeConnection, FakeHost, FakeHosts

IMAGE = "vllm/vllm-openai:v0.28.0"
IMAGE_ID = "sha256:" + "1" * 64
STACK = yaml.safe_dump({
    "name": "duo",
    "hosts": {"a": {"address": "spark-a"}, "b": {"address": "spark-b"}},
    "cluster": {"link": {"a": {"interface": "enp1s0f1np1", "address": "192.168.100.10"},
                         "b": {"interface": "enp1s0f1np1", "address": "192.168.100.11"}}},
    "models": [{"name": "big", "image": IMAGE, "model": "org/big", "hosts": ["a", "b"],
                "max_model_len": 65536, "gpu_memory_utilization": 0.5}]})


def seen(*, state: str = "up", mtu: int = 9000, address: str, peer: str, reach: bool = True,
         image: str = IMAGE_ID, model_bytes: int = 20 * 2**30) -> str:
    return "\n".join([
        f"{MARK} operstate", state, f"{MARK} mtu", str(mtu),
        f"{MARK} addresses", f"{address}/24", f"{MARK} reach {peer}", "yes" if reach else "no",
        f"{MARK} image", image, f"{MARK} model", str(model_bytes), ""])


@pytest.fixture
def sparks(tmp_path: Path) -> FakeHosts:
    hosts = {}
    for key, own, peer in (("a", "192.168.100.10", "192.168.100.11"),
                           ("b", "192.168.100.11", "192.168.100.10")):
        conn = FakeConnection(home=tmp_path, hostname=f"spark-{key}")
        conn.answers.append((MARK, seen(address=own, peer=peer)))
        hosts[key] = FakeHost(conn)
    return FakeHosts(hosts)


def _verdicts(sparks: FakeHosts) -> list[tuple[str, str, str]]:
    deployment = resolve(load_stack_text(STACK, lint=False).stack)
    return [(v.check, v.host, v.level) for v in doctor(deployment, connect=sparks.connect)]


def _answer(sparks: FakeHosts, key: str, text: str) -> None:
    sparks.hosts[key].conn.answers[:] = [(MARK, text)]


def test_a_healthy_link_passes_every_check_from_each_host(sparks: FakeHosts) -> None:
    verdicts = _verdicts(sparks)
    assert {level for _, _, level in verdicts} == {"ok"}
    assert ("reach", "a", "ok") in verdicts and ("reach", "b", "ok") in verdicts
    # Each host pings the other's link address itself (not the laptop).
    script = sparks.hosts["a"].conn.scripts[0]
    assert "ping -c1 -W1 192.168.100.11" in script
    assert "ip -o link show dev enp1s0f1np1" in script and "/sys/class/net" not in script


def test_the_link_script_reads_the_interface_by_netlink_and_a_refusal_counts_as_reached(
) -> None:
    # Run for real on this machine: loopback is up, and nothing listens on 127.0.0.9:22.
    import subprocess

    from spark_stack.deploy.doctor import link_script

    done = subprocess.run(["sh", "-c", link_script("lo", ["127.0.0.9"], "none:x", None)],
                          capture_output=True, text=True, timeout=30)
    look = parse_look(done.stdout)
    assert look.operstate == "unknown"  # what the kernel reports for lo
    assert look.mtu == 65536 and "127.0.0.1" in look.addresses
    assert look.reach == {"127.0.0.9": True}
    missing = parse_look(subprocess.run(["sh", "-c", link_script("nope0", [], "x", None)],
                                        capture_output=True, text=True, timeout=30).stdout)
    assert (missing.operstate, missing.mtu, missing.addresses) == (None, None, ())


def test_a_down_port_a_small_mtu_and_no_route_are_each_named(sparks: FakeHosts) -> None:
    _answer(sparks, "b", seen(state="down", mtu=1500, address="192.168.100.11",
                              peer="192.168.100.10", reach=False))
    verdicts = _verdicts(sparks)
    assert ("interface", "b", "fail") in verdicts
    assert ("mtu", "b", "warn") in verdicts
    assert ("reach", "b", "fail") in verdicts
    assert ("reach", "a", "ok") in verdicts


def test_a_port_with_only_a_link_local_address_names_the_known_cause(sparks: FakeHosts) -> None:
    _answer(sparks, "b", seen(address="169.254.7.9", peer="192.168.100.10"))
    deployment = resolve(load_stack_text(STACK, lint=False).stack)
    (bad,) = [v for v in doctor(deployment, connect=sparks.connect)
              if v.check == "address" and v.level == "fail"]
    assert bad.host == "b" and "169.254.7.9" in bad.message
    assert "exceeds available GPUs" in bad.message and "netplan" in str(bad.fix)


def test_image_drift_fails_and_a_missing_model_warns(sparks: FakeHosts) -> None:
    _answer(sparks, "b", seen(address="192.168.100.11", peer="192.168.100.10",
                              image="sha256:" + "2" * 64, model_bytes=0))
    verdicts = _verdicts(sparks)
    assert ("image", "a", "fail") in verdicts
    assert ("model_files", "b", "warn") in verdicts


def test_json_says_not_ok_on_any_failure(sparks: FakeHosts) -> None:
    _answer(sparks, "a", seen(state="down", address="192.168.100.10", peer="192.168.100.11"))
    deployment = resolve(load_stack_text(STACK, lint=False).stack)
    report = as_json(doctor(deployment, connect=sparks.connect))
    assert report["ok"] is False
    assert json.loads(json.dumps(report))["checks"][0]["level"] == "fail"


def test_parse_look_reads_missing_sections_as_unknown() -> None:
    look = parse_look(f"{MARK} operstate\n{MARK} mtu\n")
    assert look.operstate is None and look.mtu is None and look.reach == {}


def test_bandwidth_is_measured_from_the_worker_to_the_heads_link_address(
    sparks: FakeHosts,
) -> None:
    from spark_stack.deploy.doctor import BANDWIDTH_MARK

    answer = f"{BANDWIDTH_MARK}\n9000000000 3.0\n"
    sparks.hosts["b"].conn.answers.insert(0, (BANDWIDTH_MARK, answer))
    deployment = resolve(load_stack_text(STACK, lint=False).stack)
    (verdict,) = [v for v in doctor(deployment, connect=sparks.connect, bandwidth=True)
                  if v.check == "bandwidth"]
    assert (verdict.host, verdict.level) == ("b", "ok")
    assert verdict.message.startswith("3.0 GB/s from b to a") and "~24 GB/s" in verdict.message
    assert "192.168.100.10 5201" in sparks.hosts["a"].conn.scripts[-1]  # the sink, on the head


def test_a_slow_or_failed_transfer_is_named() -> None:
    from spark_stack.deploy.doctor import bandwidth_verdict

    assert bandwidth_verdict("b", "a", "1000000000 1.0").level == "warn"
    failed = bandwidth_verdict("b", "a", "ConnectionRefusedError: [Errno 111]")
    assert failed.level == "fail" and "ConnectionRefusedError" in failed.message
