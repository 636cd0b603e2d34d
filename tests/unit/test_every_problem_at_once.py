"""README: "Every problem is listed at once" — each bad map entry, and the warnings beside the
errors, in one run (text and --json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import run_cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")

STACK = """\
name: t
host: {address: spark}
models:
  - name: m
    image: vllm/vllm-openai:v0.28.0
    model: Qwen/Qwen3-8B
    gpu_memory_utilization: 0.8
    env:
      A-1: x
      GOOD: y
      2B: z
    ulimits:
      nofile: "10:5"
      bogus: 1
      nproc: abc
"""


def test_each_bad_env_and_ulimit_entry_and_the_warnings_are_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text(STACK)
    code, out, err = run_cli(capsys, "-s", str(stack), "validate", "--json")
    assert code == 2
    error = json.loads(out)["error"]
    assert [(p["line"], p["key_path"]) for p in error["problems"]] == [
        (9, "models[0].env.A-1"), (11, "models[0].env.2B"), (13, "models[0].ulimits.nofile"),
        (14, "models[0].ulimits.bogus"), (15, "models[0].ulimits.nproc")]
    assert "models[0].gpu_memory_utilization" in [w["key_path"] for w in error["warnings"]]

    code, out, err = run_cli(capsys, "-s", str(stack), "validate")
    assert code == 2
    assert "error: 5 problems in the stack file:" in err
    assert re.search(rf"warning: {re.escape(str(stack))}:7:\d+: models\[0\]"
                     r"\.gpu_memory_utilization: gpu_memory_utilization 0\.8 is above 0\.6", err)


def test_a_set_aside_value_gives_no_warning_about_its_absence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text(STACK.split("    env:")[0].replace("0.8", "2"))
    code, out, err = run_cli(capsys, "-s", str(stack), "validate", "--json")
    assert code == 2
    error = json.loads(out)["error"]
    assert [p["key_path"] for p in error["problems"]] == ["models[0].gpu_memory_utilization"]
    assert error["warnings"]  # the others stay, but not "gpu_memory_utilization is not set"
    assert not [w for w in error["warnings"] if "gpu_memory_utilization" in w["message"]]


def test_the_readme_says_so() -> None:
    readme = re.sub(r"\s+", " ", README)
    assert "each bad entry of an `env` or `ulimits` map is its own problem, and the warnings " \
           "about the rest are listed too" in readme
    assert '"warnings": [same shape]' in readme
