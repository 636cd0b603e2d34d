"""Keys, the key ring the proxy reads them with, usage rows, and the engine capacity that the
stack hands the proxy (`max_num_seqs`)."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spark_stack.claude_context import PLACEHOLDER_TOKEN
from spark_stack.deployment import resolve
from spark_stack.errors import TeamStateError, UsageError
from spark_stack.proxy.config import ConfigError, ProxyConfig, Upstream
from spark_stack.proxy.keyfile import KeyRing, read_keys
from spark_stack.proxy.metrics import Metrics
from spark_stack.proxy.usage import UsageWriter
from spark_stack.stack.argv import max_num_seqs_of
from spark_stack.stack.loader import load_stack
from spark_stack.team import (
    add_key,
    check_key_name,
    list_keys,
    parse_since,
    revoke_key,
    rotate_key,
    usage_report,
)


@pytest.mark.parametrize(("argv", "expected"), [
    (["vllm", "serve", "m", "--max-num-seqs", "4"], 4),
    (["m", "--max-num-seqs=8"], 8),
    (["m", "--max-num-seqs", "4", "--dtype", "auto", "--max-num-seqs", "6"], 6),
    (["m", "--max_num_seqs", "3"], 3),
    (["m", "--max-model-len", "4096"], None),
])
def test_capacity_is_the_last_max_num_seqs(argv: list[str], expected: int | None) -> None:
    assert max_num_seqs_of(argv) == expected


def test_the_stack_hands_each_models_capacity_to_the_proxy(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("""name: t
hosts:
  default: {address: 10.0.0.1, user: u}
models:
  - name: qwen
    preset: qwen3.6-35b-a3b-nvfp4-redhat
  - name: far
    url: http://10.0.0.9:8000/v1
    max_num_seqs: 3
  - name: sim
    kind: simulator
    port: 8899
    max_num_seqs: 2
proxy:
  limits: {max_in_flight: 12}
""")
    deployment = resolve(load_stack(str(path), lint=False).stack)
    config = ProxyConfig.from_json(deployment.proxy_config({}, None).to_json())
    assert {n: u.max_num_seqs for n, u in config.upstreams.items()} == {
        "qwen": 8, "far": 3, "sim": 2}
    assert config.max_in_flight == 12
    simulator = deployment.model("sim").simulator_argv or ()
    assert max_num_seqs_of(simulator) == 2


def test_a_capacity_below_one_is_refused() -> None:
    raw = {"upstreams": {"q": {"name": "q", "base_url": "http://x/v1", "served_name": "q",
                               "max_num_seqs": 0}}}
    with pytest.raises(ConfigError, match="max_num_seqs must be positive"):
        ProxyConfig.from_dict(raw)
    assert Upstream("q", "http://x/v1", "q").max_num_seqs is None


@given(st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,62}", fullmatch=True))
def test_key_names_follow_the_model_name_rule(name: str) -> None:
    if name in ("owner", "other"):
        with pytest.raises(UsageError):
            check_key_name(name)
    else:
        assert check_key_name(name) == name


@pytest.mark.parametrize("name", ["", "Ann", "ann smith", "-ann", "a" * 64, "ann/x", "é"])
def test_bad_key_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(UsageError, match="not a valid key name") as refused:
        check_key_name(name)
    assert refused.value.fix and "lowercase" in refused.value.fix


def test_keys_are_stored_as_hashes_and_lifecycle(tmp_path: Path) -> None:
    key = add_key(tmp_path, "ann", max_concurrent=2, tokens_per_minute=1000)
    text = (tmp_path / "keys.json").read_text()
    assert key not in text and key.startswith("sk-spark-")
    assert oct((tmp_path / "keys.json").stat().st_mode & 0o777) == "0o600"
    [record] = list_keys(tmp_path)
    assert (record.name, record.max_concurrent, record.tokens_per_minute) == ("ann", 2, 1000)
    with pytest.raises(UsageError, match="exists"):
        add_key(tmp_path, "ann")
    new = rotate_key(tmp_path, "ann")
    assert new != key and list_keys(tmp_path)[0].max_concurrent == 2
    revoke_key(tmp_path, "ann")
    assert list_keys(tmp_path) == []
    with pytest.raises(UsageError, match="no key named 'ann'"):
        revoke_key(tmp_path, "ann")


def test_a_key_file_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    add_key(tmp_path, "ann")
    (tmp_path / "keys.json").chmod(0o640)
    with pytest.raises(TeamStateError) as refused:
        read_keys(tmp_path / "keys.json")
    assert refused.value.fix == f"chmod 600 {tmp_path / 'keys.json'}"


def test_the_key_ring_names_callers_and_follows_the_file(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys.json"
    ring = KeyRing("owner-token", path)
    assert ring.caller(b"owner-token") is ring.owner
    assert ring.caller(None) is None and ring.caller(b"sk-spark-nope") is None
    ann = add_key(tmp_path, "ann", max_concurrent=3)
    ring.reload()
    caller = ring.caller(ann.encode())
    assert caller is not None and caller.name == "ann" and caller.limits.max_concurrent == 3
    caller.running = 1  # state survives a reload
    bob = add_key(tmp_path, "bob")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1))
    ring.reload()
    assert ring.caller(ann.encode()) is caller and caller.running == 1
    path.chmod(0o644)  # a bad file keeps the keys as they were, said once in the log
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2))
    with caplog.at_level(logging.ERROR, "spark_stack.proxy"):
        ring.reload()
        ring.reload()
    assert [r.message.count("chmod 600") for r in caplog.records] == [1]
    assert ring.caller(bob.encode()) is not None
    path.chmod(0o600)
    revoke_key(tmp_path, "ann")
    ring.reload()
    assert ring.caller(ann.encode()) is None


def test_without_a_token_the_owner_is_whoever_sends_no_key(tmp_path: Path) -> None:
    ring = KeyRing(None, tmp_path / "keys.json")
    assert ring.caller(None) is ring.owner and ring.caller(b"anything") is ring.owner
    ann = add_key(tmp_path, "ann")
    ring.reload()
    assert ring.caller(None) is ring.owner
    assert ring.caller(PLACEHOLDER_TOKEN.encode()) is ring.owner
    assert ring.caller(b"sk-spark-wrong") is None
    assert ring.caller(ann.encode()).name == "ann"  # type: ignore[union-attr]


def row(key: str, model: str = "m", tokens: int = 10) -> tuple:  # type: ignore[type-arg]
    return (time.time(), key, model, 200, tokens, 0, tokens, 0, 0.0, 0.1)


def test_usage_rows_reach_the_database_and_the_report(tmp_path: Path) -> None:
    writer = UsageWriter(tmp_path / "usage.db")
    for _ in range(3):
        writer.record(row("ann"))
    writer.record(row("bob", "other-model", 5))
    writer.flush()
    writer.stop()
    assert oct((tmp_path / "usage.db").stat().st_mode & 0o777) == "0o600"
    report = usage_report(tmp_path, "t", "key")
    assert [(line.name, line.requests, line.input_tokens) for line in report.lines] == [
        ("ann", 3, 30), ("bob", 1, 5)]
    assert [line.name for line in usage_report(tmp_path, "t", "model").lines] == [
        "m", "other-model"]
    assert usage_report(tmp_path, "t", "key", since="2999-01-01").lines == []
    assert report.incomplete == []


def test_a_locked_database_keeps_its_rows_for_the_next_write(tmp_path: Path) -> None:
    writer = UsageWriter(tmp_path / "usage.db")
    writer.record(row("ann"))
    writer.flush()
    lock = sqlite3.connect(tmp_path / "usage.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    writer.record(row("ann"))
    writer.flush()  # locked: kept
    lock.execute("ROLLBACK")
    lock.close()
    writer.flush()
    writer.stop()
    assert usage_report(tmp_path, "t").lines[0].requests == 2


def test_a_corrupt_database_marks_usage_incomplete_and_never_raises(tmp_path: Path) -> None:
    (tmp_path / "usage.db").write_bytes(b"garbage" * 1000)
    (tmp_path / "usage.db").chmod(0o600)
    writer = UsageWriter(tmp_path / "usage.db")
    writer.record(row("ann"))
    writer.flush()
    assert not writer.complete
    assert "1 requests not recorded" in (tmp_path / "usage.incomplete").read_text()


def test_since_takes_a_day_or_a_time() -> None:
    assert parse_since("2026-12-01") == 1796083200.0
    assert parse_since("2026-12-01T01:00") == 1796083200.0 + 3600
    with pytest.raises(UsageError, match="not a date"):
        parse_since("yesterday")


def test_a_usage_database_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    writer = UsageWriter(tmp_path / "usage.db")
    writer.record(row("ann"))
    writer.stop()
    (tmp_path / "usage.db").chmod(0o644)
    with pytest.raises(TeamStateError) as refused:
        usage_report(tmp_path, "t")
    assert refused.value.fix == f"chmod 600 {tmp_path / 'usage.db'}"
    later = UsageWriter(tmp_path / "usage.db")  # the proxy: logs, keeps serving, incomplete
    later.record(row("ann"))
    later.flush()
    assert not later.complete
    assert "chmod 600" in (tmp_path / "usage.incomplete").read_text()


def test_per_key_metrics_are_bounded() -> None:
    metrics = Metrics(max_keys=2)
    for name in ("ann", "bob", "cid", "dan", "ann"):
        metrics.key(name).requests += 1
    metrics.key_load = lambda: [("ann", 1, 0), ("cid", 2, 3), ("dan", 0, 1)]
    text = metrics.render()
    assert 'spark_proxy_key_requests_total{key="ann"} 2' in text
    assert 'spark_proxy_key_requests_total{key="other"} 2' in text
    assert 'key="cid"' not in text and 'key="dan"' not in text
    assert 'spark_proxy_key_queued{key="other"} 4' in text


def test_without_a_database_nothing_is_recorded_and_stopping_is_quiet() -> None:
    writer = UsageWriter(None)
    writer.start()
    writer.record(row("ann"))
    writer.stop()
    assert not writer.rows
