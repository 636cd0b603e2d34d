"""`spark-stack init`: a commented stack file that validates; never overwrites by accident."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spark_stack.cli import main
from spark_stack.launcher import default_launcher_path
from spark_stack.stack.loader import load_stack
from spark_stack.stack.template import template_choices


@pytest.mark.parametrize("preset", template_choices())
def test_init_writes_a_commented_valid_stack(
    preset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lab.yaml"
    assert main(["init", "--preset", preset, "--host", "gb10.lan", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    text = path.read_text()
    assert text.startswith("# spark-stack stack file")
    loaded = load_stack(path)
    assert loaded.stack.name == "lab"
    if preset == "simulator":
        assert loaded.stack.host is None
    else:
        assert loaded.stack.host is not None and loaded.stack.host.address == "gb10.lan"
        assert f"preset: {preset}" in text
    assert main(["-s", str(path), "validate"]) == 0


def test_init_defaults_to_spark_stack_yaml_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPARK_STACK", raising=False)
    assert main(["init"]) == 0
    assert load_stack(tmp_path / "spark-stack.yaml").stack.name == "spark"
    assert main(["validate"]) == 0


def test_init_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("mine\n")
    assert main(["init", str(path)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert path.read_text() == "mine\n"
    assert main(["init", "--force", str(path)]) == 0
    assert load_stack(path).stack.models[0].name == "qwen3.6-35b"


def test_init_unknown_preset_suggests_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "--preset", "qwen3.5-72b", str(tmp_path / "s.yaml")]) == 2
    assert "did you mean 'qwen3.5-27b'?" in capsys.readouterr().err
    assert not (tmp_path / "s.yaml").exists()


@pytest.mark.parametrize("preset", template_choices())
def test_init_commented_keys_are_valid_when_uncommented(
    preset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "lab.yaml"
    assert main(["init", "--preset", preset, str(path)]) == 0
    # Only indented "# key: value" lines are settings; the header's comments are prose.
    text = re.sub(r"(?m)^(\s+)# (?= *[A-Za-z_]+:)", r"\1", path.read_text())
    path.write_text(text)
    stack = load_stack(path).stack
    assert main(["-s", str(path), "validate"]) == 0
    # The launcher line shows the default, so uncommenting it changes nothing.
    assert stack.claude.launcher == "~/.local/bin/claude-lab"
    assert default_launcher_path(stack) == tmp_path / ".local" / "bin" / "claude-lab"
