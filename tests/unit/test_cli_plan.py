"""`spark-stack plan` and `validate`: the offline plan as text and JSON; secrets never shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spark_stack.cli import main

SENTINEL = "sentinel-5e3c1a9f-secret"
SECRET_STACK = """\
name: sec
host: {address: 127.0.0.1, user: me}
models:
  - name: big
    preset: qwen3.6-35b-a3b-nvfp4-redhat
    env:
      HF_TOKEN: ${HF_TOKEN}
      MIXED: prefix-${HF_TOKEN}
    api_key: ${VLLM_KEY}
  - name: far
    url: http://127.0.0.1:9000/v1
    api_key: ${REMOTE_KEY}
proxy:
  listen: 127.0.0.1:4000
  token: ${PROXY_TOKEN}
  routes: {"claude-*": big}
claude:
  models: {opus: far}
"""


@pytest.fixture
def secret_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("HF_TOKEN", "VLLM_KEY", "REMOTE_KEY", "PROXY_TOKEN"):
        monkeypatch.setenv(name, SENTINEL)
    path = tmp_path / "sec.yaml"
    path.write_text(SECRET_STACK)
    return path


@pytest.mark.parametrize(
    "args", [["plan"], ["plan", "--json"], ["validate"], ["validate", "--json"]]
)
def test_no_secret_in_any_output(
    secret_stack: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--stack", str(secret_stack), *args]) == 0
    out, err = capsys.readouterr()
    assert SENTINEL not in out and SENTINEL not in err
    if args == ["plan"]:
        assert "HF_TOKEN=***" in out and "MIXED=prefix-***" in out


def test_no_secret_in_error_output(
    secret_stack: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_stack.write_text(SECRET_STACK.replace("max", "").replace("far\n", "far\n    kind: x\n"))
    for json_flag in ([], ["--json"]):
        assert main(["--stack", str(secret_stack), "plan", *json_flag]) == 2
        out, err = capsys.readouterr()
        assert SENTINEL not in out + err


def test_plan_json_document(secret_stack: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stack", str(secret_stack), "plan", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    big, far = doc["models"]
    assert big["kind"] == "container" and far["kind"] == "remote"
    assert big["host"] == "me@127.0.0.1"
    assert big["vllm_flags_version"] == "0.28.0"
    assert big["vllm_argv"][0] == "RedHatAI/Qwen3.6-35B-A3B-NVFP4"
    assert big["docker_run"].startswith("docker run -d --name spark-stack-sec-big ")
    assert big["env"] == {"HF_TOKEN": "***", "MIXED": "prefix-***",
                          "VLLM_MARLIN_USE_ATOMIC_ADD": "1"}  # the last from the preset
    assert big["api_key"].startswith("*** (from ${VLLM_KEY})")
    assert far["upstream"] == "http://127.0.0.1:9000/v1"
    assert doc["proxy_token"] == "*** (from ${PROXY_TOKEN})"
    routes = [(r["pattern"], r["model"], r["source"]) for r in doc["routes"]]
    assert routes == [
        ("claude-*", "big", "route"),
        ("big", "big", "model name"),
        ("far", "far", "model name"),
        ("qwen3.6-35b-a3b", "big", "served name"),
        ("*", "big", "catch-all"),
    ]
    env = doc["launcher"]["env"]
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:4000"
    assert env["ANTHROPIC_AUTH_TOKEN"] == "***"
    assert env["ANTHROPIC_DEFAULT_OPUS_MODEL"] == "far"
    assert doc["launcher"]["path"].endswith("claude-sec")
    assert doc["warnings"] == []


def test_plan_text_shows_docker_run_argv_routes_and_launcher(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--stack", "demo", "plan"]) == 0
    out = capsys.readouterr().out
    assert "model qwen3.6-sim (simulator)" in out
    assert "*                → qwen3.6-sim as 'qwen3.6-35b-a3b' at http://127.0.0.1:8811/v1" in out
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:4111" in out


def test_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--json", "--stack", "demo"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload == {
        "ok": True, "file": payload["file"], "stack": "demo", "models": ["qwen3.6-sim"],
        "warnings": [],
    }
    assert payload["file"].endswith("demo.yaml")


def test_stack_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPARK_STACK", "demo")
    assert main(["validate"]) == 0
    assert "stack 'demo'" in capsys.readouterr().out


def test_plan_diff_against_an_unreachable_host_exits_3_with_the_error_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_home: Path
) -> None:
    """Was exit 0 after ~50 lines, the "unreachable" line last and without a fix."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\nhost: {{address: 127.0.0.1, port: {port}}}\nmodels:\n"
                    "  - {name: q, image: 'vllm/vllm-openai:v0.28.0', model: Qwen/Qwen3-8B, "
                    "max_model_len: 40960, gpu_memory_utilization: 0.4}\n")
    assert main(["-s", str(path), "plan", "--diff", "--trust-host-key"]) == 3
    out, err = capsys.readouterr()
    assert err.splitlines()[0].startswith("error: host default (127.0.0.1) is unreachable")
    assert "fix:" in err
    assert "docker run" in out  # the plan itself still shows
