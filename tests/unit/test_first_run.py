"""The one command's first run, on fakes: look at a host, choose the preset, check the host can
run it before anything is written (docker missing, no GPU), show the file and what up will do."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_stack.deploy.preflight import parse_facts
from spark_stack.deployment import resolve
from spark_stack.errors import UsageError
from spark_stack.first_run import (
    HostLook,
    describe,
    parse_extra,
    parse_host,
    prechecks,
    recommend,
    same_host,
    up_steps,
)
from spark_stack.stack.loader import load_preset, load_stack_text
from spark_stack.stack.presets import DEFAULT_PRESET
from spark_stack.stack.template import stack_template
from tests.fakes.host import FakeConnection, M, facts_output
from tests.helpers import run_cli

NO_DOCKER = facts_output().replace(
    f'{{"Server":{{"Version":"28.0.1","ApiVersion":"1.48"}}}}\n{M} rc 0',
    f"bash: line 1: docker: command not found\n{M} rc 127")
NO_GPU = facts_output().replace(
    f"0, NVIDIA GB10, [N/A], [N/A], 0\n{M} rc 0",
    f"bash: line 1: nvidia-smi: command not found\n{M} rc 127").replace(
    '{"nvidia":{},"runc":{}}', '{"runc":{}}')


def _look(facts: str = facts_output(), **extra: object) -> HostLook:
    return HostLook("nvidia@gb10.test", parse_facts(facts), **extra)  # type: ignore[arg-type]


def _deployment(preset: str = DEFAULT_PRESET, name: str = "lab"):  # type: ignore[no-untyped-def]
    text = stack_template(load_preset(preset), "spark", name)
    return resolve(load_stack_text(text, filename="spark-stack.yaml").stack)


def test_parse_host_takes_user_at_host_and_refuses_what_no_host_is() -> None:
    host = parse_host("nvidia@spark.lan")
    assert (host.user, host.address) == ("nvidia", "spark.lan")
    assert parse_host("spark").user is None
    with pytest.raises(UsageError) as caught:
        parse_host("-oProxyCommand=x")
    assert "--host" in caught.value.message and caught.value.fix


def test_same_host_compares_the_address_and_a_given_user() -> None:
    stack = load_stack_text(stack_template(load_preset(DEFAULT_PRESET), "spark", user="nvidia")
                            ).stack
    assert same_host(stack, parse_host("spark")) and same_host(stack, parse_host("nvidia@spark"))
    assert not same_host(stack, parse_host("root@spark"))
    assert not same_host(stack, parse_host("other"))


def test_a_gb10_is_described_and_gets_the_recommended_preset_which_passes_its_checks() -> None:
    found = _look(driver="580.95.05", stacks={"old": ["spark-stack-old-qwen running"]},
                  images={})
    lines = describe(found)
    assert "architecture: aarch64 (arm64)" in lines
    assert "GPU: NVIDIA GB10 (driver 580.95.05)" in lines
    assert any(line.startswith("memory: 121.6 GiB") for line in lines)
    assert "docker 28.0.1, with the NVIDIA runtime" in lines
    assert "spark-stack stack 'old': spark-stack-old-qwen running" in lines
    assert recommend(found)[0] == DEFAULT_PRESET
    deployment = _deployment()
    checks = prechecks(deployment, found)
    assert [c.name for c in checks if not c.ok] == []
    assert {c.name for c in checks} >= {"docker", "nvidia", "gpus", "disk", "memory"}
    steps = up_steps(deployment, found, "~/.local/bin/claude-lab")
    assert steps[0] == "pull vllm/vllm-openai:v0.28.0 on nvidia@gb10.test (it is not there yet)"
    assert "vLLM serving RedHatAI/Qwen3.6-35B-A3B-NVFP4 on port 8000 (gpus: all)" in steps[1]


def test_no_docker_fails_the_first_check_with_its_fix() -> None:
    checks = prechecks(_deployment(), _look(NO_DOCKER))
    assert [(c.name, c.ok) for c in checks] == [("docker", False)]
    assert "command not found" in checks[0].message and "install docker" in (checks[0].fix or "")


def test_no_gpu_fails_the_gpu_checks_of_the_recommended_preset() -> None:
    found = _look(NO_GPU)
    assert "GPU: none found (bash: line 1: nvidia-smi: command not found)" in describe(found)
    failed = {c.name for c in prechecks(_deployment(), found) if not c.ok}
    assert failed == {"nvidia", "gpus"}


def test_parse_extra_reads_driver_stacks_and_images() -> None:
    text = ("@@spark-stack-look@@ driver\n580.1\n@@spark-stack-look@@ stacks\n"
            "lab spark-stack-lab-q running\n@@spark-stack-look@@ image 0\narm64\n"
            "@@spark-stack-look@@ image 1\n")
    driver, stacks, images = parse_extra(text, ["a:1", "b:2"])
    assert driver == "580.1" and stacks == {"lab": ["spark-stack-lab-q running"]}
    assert images == {"a:1": "arm64", "b:2": None}


@pytest.fixture
def fake_ssh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeConnection:
    conn = FakeConnection(home=tmp_path / "remote-home")
    monkeypatch.setattr("spark_stack.deploy.ssh.connect",
                        lambda target, trust_host_key=False: conn)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("SPARK_STACK", raising=False)
    return conn


def test_a_host_without_docker_stops_before_writing_anything(
    fake_ssh: FakeConnection, capsys: pytest.CaptureFixture[str], fake_home: Path
) -> None:
    fake_ssh.facts = NO_DOCKER
    code, out, err = run_cli(capsys, "claude", "--host", "spark", "--yes", "--", "-p", "hi")
    assert code == 4
    assert out == ""
    assert "error: preflight docker: docker is not usable on the host: bash: line 1: docker: " \
        "command not found" in err
    assert "fix: install docker on the host" in err
    assert not Path("spark-stack.yaml").exists()


def test_the_gb10_presets_are_planned_against_a_fake_gb10_then_asked_for(
    fake_ssh: FakeConnection, capsys: pytest.CaptureFixture[str], fake_home: Path
) -> None:
    # Without --yes and without a terminal: everything is shown, nothing is written.
    code, out, err = run_cli(capsys, "claude", "--host", "nvidia@spark")
    assert code == 2
    assert "GPU: NVIDIA GB10" in err
    assert f"preset {DEFAULT_PRESET}: a DGX Spark (GB10): the recommended preset" in err
    assert "ok memory: gpu_memory_utilization 0.5 wants" in err
    assert "  user: nvidia" in err and "preset: qwen3.6-35b-a3b-nvfp4-redhat" in err
    assert "pull vllm/vllm-openai:v0.28.0 on nvidia@gb10.test" in err
    assert "error: not writing the stack file without asking" in err and "--yes" in err
    assert not Path("spark-stack.yaml").exists()
    code, _, err = run_cli(capsys, "claude", "--host", "spark", "--preset", "qwen3.5-27b",
                           "--image", "vllm/vllm-openai:v0.33.0")
    assert code == 2
    assert "      image: vllm/vllm-openai:v0.33.0" in err
    assert "Intel/Qwen3.5-27B-int4-AutoRound" in err


def test_a_broken_preset_stops_before_connecting(
    fake_ssh: FakeConnection, capsys: pytest.CaptureFixture[str], fake_home: Path
) -> None:
    Path("mine.yaml").write_text("description: x\nport: high\n")
    code, _, err = run_cli(capsys, "claude", "--host", "spark", "--preset", "./mine.yaml")
    assert code == 2
    assert f"{Path.cwd() / 'mine.yaml'}:2:7: port:" in err
    assert fake_ssh.scripts == []


def test_host_disagreeing_with_the_stack_file_names_both(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPARK_STACK", raising=False)
    Path("spark-stack.yaml").write_text(stack_template(load_preset(DEFAULT_PRESET), "spark"))
    code, _, err = run_cli(capsys, "claude", "--host", "other", "--", "-p", "hi")
    assert code == 2
    assert "error: spark-stack.yaml is for host spark, not other" in err
    assert "fix: drop --host" in err


def test_json_gives_each_step_as_an_event_and_the_error_as_json(
    fake_ssh: FakeConnection, capsys: pytest.CaptureFixture[str], fake_home: Path
) -> None:
    import json

    code, out, err = run_cli(capsys, "claude", "--host", "spark", "--json")
    assert code == 2
    events = [json.loads(line) for line in err.splitlines()]
    assert {e["event"] for e in events} == {"step"}
    messages = [e["message"] for e in events]
    assert messages[0] == "connecting to spark"
    assert any(m.startswith("the stack file ./spark-stack.yaml:\n# spark-stack stack file")
               for m in messages)
    error = json.loads(out)["error"]
    assert error["message"] == "not writing the stack file without asking"
    assert "--yes" in error["fix"]
    assert not Path("spark-stack.yaml").exists()
