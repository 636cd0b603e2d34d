"""`status`: one stable JSON shape, the proxy counts for health, and `--watch` (no host needed)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spark_stack.cli import main
from spark_stack.deploy.status import HOST_KEYS, MODEL_KEYS, exit_code, status
from spark_stack.deployment import resolve
from spark_stack.stack.loader import load_stack
from tests.helpers import free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def _documented() -> dict[str, Any]:
    text = README.read_text()
    section = text[text.index("### status --json"):]
    match = re.search(r"```json\n(.*?)```", section, re.S)
    assert match is not None
    return dict(json.loads(match.group(1).replace("…", "...")))


@pytest.fixture
def sim_stack(tmp_path: Path, fake_home: Path) -> Iterator[Path]:
    path = tmp_path / "spark-stack.yaml"
    path.write_text(
        "name: stat\n"
        "models:\n"
        f"  - {{name: sim, kind: simulator, port: {free_port()}, startup_seconds: 0}}\n"
        f"proxy: {{listen: '127.0.0.1:{free_port()}'}}\n"
    )
    yield path
    main(["-s", str(path), "down"])


def test_unreachable_host_keeps_the_documented_shape(tmp_path: Path, fake_home: Path) -> None:
    path = tmp_path / "spark-stack.yaml"
    path.write_text(
        "name: gone\n"
        f"host: {{address: 127.0.0.1, port: {free_port()}}}\n"  # nothing listens there
        "models:\n"
        "  - {name: qwen, model: Qwen/Qwen3-0.6B, image: 'vllm/vllm-openai:v0.28.0'}\n"
    )
    report = status(resolve(load_stack(path).stack))
    documented = _documented()
    [host] = report["hosts"]
    [model] = report["models"]
    assert set(host) == set(HOST_KEYS) == set(documented["hosts"][0])
    assert set(model) == set(MODEL_KEYS) == set(documented["models"][0])
    assert host["reachable"] is False and host["ssh"] is None and host["error"]
    assert model["state"] == "unknown" and model["restarts"] is None
    assert set(report) == set(documented) and set(report["proxy"]) == set(documented["proxy"])
    assert exit_code(report) == 3


def test_simulator_entries_have_the_same_keys_and_a_dead_proxy_is_unhealthy(
    sim_stack: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-s", str(sim_stack), "up"]) == 0
    capsys.readouterr()
    assert main(["-s", str(sim_stack), "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is True
    [model] = report["models"]
    assert set(model) == set(MODEL_KEYS) and model["pid"] and model["restarts"] is None

    os.kill(report["proxy"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while status(resolve(load_stack(sim_stack).stack))["proxy"]["running"]:
        assert time.monotonic() < deadline, "the killed proxy still counts as running"
        time.sleep(0.05)
    assert main(["-s", str(sim_stack), "status", "--json"]) == 4
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is False and report["models"][0]["healthy"] is True
    assert report["proxy"]["running"] is False
    assert main(["-s", str(sim_stack), "status"]) == 4
    out = capsys.readouterr().out
    assert "proxy: not running" in out
    assert "spark-stack top" in out  # where to watch it work


def test_watch_json_prints_one_document_per_interval(
    sim_stack: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-s", str(sim_stack), "up"]) == 0
    capsys.readouterr()
    started = time.monotonic()
    code = main(["-s", str(sim_stack), "status", "--watch", "--json", "--interval", "0.2",
                 "--count", "3"])
    elapsed = time.monotonic() - started
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(lines) == 3 and elapsed >= 0.4
    reports = [json.loads(line) for line in lines]
    assert all(r["healthy"] and r["stack"] == "stat" for r in reports)
    uptimes = [r["models"][0]["uptime_seconds"] for r in reports]
    assert uptimes == sorted(uptimes)


def test_watch_redraws_the_table_and_keeps_the_exit_code(
    sim_stack: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-s", str(sim_stack), "status", "--watch", "--interval", "0.1",
                 "--count", "2"]) == 4  # nothing is up
    out = capsys.readouterr().out
    assert "stack stat: NOT healthy" in out and "missing" in out
    assert "proxy: not running" in out


def test_watch_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--watch" in out and "--interval" in out and "--count" not in out


def test_human_status_fits_an_80_column_terminal(
    sim_stack: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-s", str(sim_stack), "up"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["-s", str(sim_stack), "status"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    # Long values stay whole on a line of their own, never folded across table cells.
    endpoint = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", out)
    assert endpoint is not None
    assert re.search(r"^sim\s+running\s+yes\s+yes\s+\d+m\d\ds\s+-\s+-\s*$", out, re.M)


def test_the_table_says_what_the_json_says() -> None:
    """A container that serves but drifted: `serves yes`, `healthy no` (was `health no`)."""
    from rich.console import Console

    from spark_stack.cli.cmd_status import _render

    entry = {key: None for key in MODEL_KEYS}
    entry.update({"name": "qwen", "kind": "container", "state": "running", "health": True,
                  "models_listed": True, "healthy": False, "drift": True,
                  "drift_fields": ["command"], "served_name": "q"})
    report = {"stack": "s", "healthy": False, "hosts": [], "models": [entry],
              "proxy": {"running": False}}
    out = Console(width=80, record=True)
    out.print(_render(report))
    text = out.export_text()
    header = next(line for line in text.splitlines() if line.startswith("model"))
    row = next(line for line in text.splitlines() if line.startswith("qwen "))
    assert header.split()[:4] == ["model", "state", "serves", "healthy"]
    assert row.split()[:4] == ["qwen", "running", "yes", "no"]
