"""README: drift and `plan --diff` name the changed settings, not `command` — for simulators too
(a real simulator process, through the CLI)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from spark_stack.deploy.simulators import simulator_changes
from tests.helpers import free_port, run_cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_a_changed_simulator_is_named_by_its_settings_in_plan_diff_status_and_up(
    tmp_path: Path, fake_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    text = (f"name: simdrift\nmodels:\n  - name: sim\n    kind: simulator\n"
            f"    port: {free_port()}\n    startup_seconds: 0.1\n    max_model_len: 65536\n")
    stack.write_text(text)
    try:
        code, out, err = run_cli(capsys, "-s", str(stack), "up", "--no-proxy")
        assert code == 0, err
        code, out, err = run_cli(capsys, "-s", str(stack), "plan", "--diff", "--json")
        assert json.loads(out)["local_diff"] == [
            {"model": "sim", "action": "keep", "reason": "simulator running", "changed": []}]

        stack.write_text(text.replace("65536", "131072"))
        code, out, err = run_cli(capsys, "-s", str(stack), "plan", "--diff", "--json")
        assert code == 0, err
        assert json.loads(out)["local_diff"] == [
            {"model": "sim", "action": "replace", "reason": "changed: max_model_len",
             "changed": ["max_model_len"]}]
        code, out, err = run_cli(capsys, "-s", str(stack), "plan", "--diff")
        assert re.search(r"against this machine \(simulators\)\n\s+~ replace\s+sim: changed: "
                         r"max_model_len", out), out
        code, out, err = run_cli(capsys, "-s", str(stack), "status", "--json")
        [model] = json.loads(out)["models"]
        assert model["drift"] is True and model["drift_fields"] == ["max_model_len"]

        code, out, err = run_cli(capsys, "-s", str(stack), "up", "--no-proxy", "--json")
        assert code == 0, err
        [action] = json.loads(out)["actions"]
        assert action["action"] == "replace" and action["changed"] == ["max_model_len"]
    finally:
        run_cli(capsys, "-s", str(stack), "down")


def test_simulator_changes_name_fields_and_fall_back_to_command() -> None:
    base = ["/py", "-m", "spark_stack.simulator", "serve", "M", "--port", "1",
            "--sim-startup-seconds", "0.2", "--served-model-name", "q"]
    changed = [*base[:6], "2", "--sim-startup-seconds", "0.5", "--served-model-name", "r"]
    assert simulator_changes(base, changed) == ("port", "served_name", "startup_seconds")
    assert simulator_changes(base, ["/other", *base[1:]]) == ("the simulator's interpreter",)
    assert simulator_changes(None, base) == ("command",)


def test_the_readme_says_simulators_too() -> None:
    readme = re.sub(r"\s+", " ", README)
    assert ("`plan --diff`, `up` and `status` drift name the settings that changed "
            "(`max_model_len`, `moe_backend`, an `extra_args` flag), not `command`, for "
            "containers and simulators alike") in readme
