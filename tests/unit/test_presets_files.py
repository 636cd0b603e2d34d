"""Presets as data: built-in YAML files, the user's own in the config directory, a file named
by its path; `spark-stack presets` lists them, `presets show` prints one; a broken one is
reported at its file:line:col."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from spark_stack.errors import StackFileError
from spark_stack.stack import schema
from spark_stack.stack.loader import load_stack, load_stack_text
from spark_stack.stack.template import _scalar
from tests.helpers import run_cli

MINE = """\
# a recipe of my own
description: Qwen3-8B for a quick test
vllm_version: 0.28.0
sources: [https://example.invalid/qwen3-8b]
name: qwen3-8b
image: vllm/vllm-openai:v0.28.0
model: Qwen/Qwen3-8B
max_model_len: 40960
gpu_memory_utilization: 0.3
tool_call_parser: hermes
reasoning_parser: qwen3
"""


def _user_dir() -> Path:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "spark-stack" / "presets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_presets_lists_built_in_and_user_ones_and_says_which_replaces_a_built_in(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (_user_dir() / "mine.yaml").write_text(MINE)
    (_user_dir() / "qwen3.5-27b.yaml").write_text(MINE)
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0
    assert "qwen3.6-35b-a3b-nvfp4-redhat" in out and "from built-in" in out
    assert "mine" in out and "Qwen3-8B for a quick test" in out
    assert f"from {_user_dir() / 'qwen3.5-27b.yaml'} (replaces the built-in one)" in out
    code, out, _ = run_cli(capsys, "presets", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["mine"]["origin"] == "user" and rows["mine"]["ok"] is True
    assert rows["qwen3.5-27b"]["replaces_builtin"] is True
    assert rows["qwen3.6-35b-a3b-nvfp4-nvidia"]["origin"] == "built-in"
    assert rows["qwen3.6-35b-a3b-nvfp4-nvidia"]["vllm_version"] == "0.28.0"


def test_presets_show_prints_the_file_and_its_settings_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, "presets", "show", "qwen3.5-27b")
    assert code == 0 and "from built-in" in err
    assert "model: Intel/Qwen3.5-27B-int4-AutoRound" in out and out.startswith("#")
    code, out, _ = run_cli(capsys, "presets", "show", "qwen3.5-27b", "--json")
    shown = json.loads(out)
    assert shown["settings"]["model"] == "Intel/Qwen3.5-27B-int4-AutoRound"
    assert shown["sources"]


def test_a_broken_user_preset_is_reported_at_its_line_never_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _user_dir() / "mine.yaml"
    path.write_text(MINE.replace("max_model_len: 40960", "max_model_lenn: 40960")
                    .replace("gpu_memory_utilization: 0.3", "gpu_memory_utilization: lots"))
    code, _, err = run_cli(capsys, "presets", "show", "mine")
    assert code == 2
    assert "2 problems in the preset file" in err
    assert f"{path}:8:1: max_model_lenn: unknown key 'max_model_lenn'" in err
    assert "did you mean 'max_model_len'?" in err
    assert f"{path}:9:25: gpu_memory_utilization:" in err
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0 and "BROKEN:" in out and f"{path}:" in out
    path.write_text("description: x\n  image: [\n")
    code, _, err = run_cli(capsys, "presets", "show", "mine")
    assert code == 2 and f"{path}:2:8: YAML syntax error" in err and "Traceback" not in err


def test_a_preset_may_not_place_the_model(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(MINE + "host: spark\npreset: qwen3.5-27b\n")
    with pytest.raises(StackFileError) as caught:
        load_stack_text("name: s\nhost: {address: h}\nmodels:\n  - {name: m, preset: ./p.yaml}\n",
                        filename=str(tmp_path / "s.yaml"), path=tmp_path / "s.yaml")
    rendered = [p.render() for p in caught.value.problems]
    assert any(f"{tmp_path / 'p.yaml'}:12:1: host: a preset cannot set 'host'" in r
               for r in rendered), rendered
    assert any("a preset cannot start from another preset" in r for r in rendered), rendered


def test_preset_path_in_a_stack_file_is_relative_to_the_stack_file(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text(MINE)
    stack = tmp_path / "lab.yaml"
    stack.write_text("name: lab\nhost: {address: h}\nmodels:\n"
                     "  - {name: m, preset: ./recipes/mine.yaml, max_model_len: 32768}\n")
    model = load_stack(stack).stack.models[0]
    assert isinstance(model, schema.ContainerModel)
    assert model.model == "Qwen/Qwen3-8B" and model.max_model_len == 32768
    assert model.name == "m"  # the preset's name is only what init writes


def test_a_broken_preset_named_by_a_stack_is_reported_in_the_preset_file(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(MINE.replace("gpu_memory_utilization: 0.3",
                                                     "gpu_memory_utilization: 3"))
    stack = tmp_path / "lab.yaml"
    stack.write_text("name: lab\nhost: {address: h}\nmodels:\n"
                     "  - name: m\n    preset: ./mine.yaml\n  - name: n\n    preset: ./gone.yaml\n")
    with pytest.raises(StackFileError) as caught:
        load_stack(stack)
    rendered = [p.render() for p in caught.value.problems]
    assert any(r.startswith(f"{tmp_path / 'mine.yaml'}:9:25: gpu_memory_utilization:")
               for r in rendered), rendered
    assert any(r.startswith(f"{stack}:7:13: models[1].preset: preset file "
                            f"{tmp_path / 'gone.yaml'} not found") for r in rendered), rendered


def test_init_uses_a_user_preset_by_name_and_a_file_by_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (_user_dir() / "mine.yaml").write_text(MINE)
    target = tmp_path / "a.yaml"
    code, _, err = run_cli(capsys, "init", "--preset", "mine", "--host", "h", str(target))
    assert code == 0, err
    assert "preset: mine" in target.read_text()
    assert load_stack(target).stack.models[0].name == "qwen3-8b"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "x.yaml").write_text(MINE)
    (tmp_path / "stacks").mkdir()
    code, _, err = run_cli(capsys, "init", "--preset", "./recipes/x.yaml", "stacks/b.yaml")
    assert code == 0, err
    assert "preset: ../recipes/x.yaml" in (tmp_path / "stacks/b.yaml").read_text()
    model = load_stack(tmp_path / "stacks/b.yaml").stack.models[0]
    assert isinstance(model, schema.ContainerModel) and model.model == "Qwen/Qwen3-8B"


def test_a_user_preset_replaces_the_built_in_one_and_init_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (_user_dir() / "qwen3.5-27b.yaml").write_text(MINE)
    target = tmp_path / "a.yaml"
    code, _, err = run_cli(capsys, "init", "--preset", "qwen3.5-27b", str(target))
    assert code == 0
    assert "using your" in err and "replaces the built-in one" in err
    model = load_stack(target).stack.models[0]
    assert isinstance(model, schema.ContainerModel) and model.model == "Qwen/Qwen3-8B"


def test_a_stack_using_a_replaced_built_in_preset_is_warned(tmp_path: Path) -> None:
    (_user_dir() / "qwen3.5-27b.yaml").write_text(MINE)
    stack = tmp_path / "lab.yaml"
    stack.write_text("name: lab\nhost: {address: h}\nmodels:\n  - name: m\n"
                     "    preset: qwen3.5-27b\n")
    warnings = [p.render() for p in load_stack(stack).warnings]
    assert any(w.startswith(f"{stack}:5:13: models[0].preset: preset 'qwen3.5-27b' is your "
                            f"{_user_dir() / 'qwen3.5-27b.yaml'}") for w in warnings), warnings


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1))
def test_a_preset_reference_reads_back_from_the_stack_file_unchanged(reference: str) -> None:
    assert yaml.safe_load(f"preset: {_scalar(reference)}\n") == {"preset": reference}
