"""examples/: the generated files are current, and the CI workflow does what it says."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _regenerate_module() -> Any:
    spec = importlib.util.spec_from_file_location("regenerate", EXAMPLES / "regenerate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_examples_are_current() -> None:
    module = _regenerate_module()
    for path, text in module.generated().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is stale: run `python examples/regenerate.py`"
        )
    assert module.main(["--check"]) == 0
    assert os.access(EXAMPLES / "claude-demo", os.X_OK)


def test_generated_litellm_config_is_the_seed_recipe() -> None:
    config = yaml.safe_load((EXAMPLES / "litellm_config.yaml").read_text())
    names = [entry["model_name"] for entry in config["model_list"]]
    assert names[:3] == [
        "claude-sonnet-4-20250514", "claude-3-5-sonnet-20241022", "claude-3-opus-20240229",
    ]  # fmt: skip
    assert all(e["litellm_params"]["model"].startswith("hosted_vllm/")
               for e in config["model_list"])
    assert config["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"


def _workflow() -> dict[Any, Any]:
    return dict(yaml.safe_load((EXAMPLES / "github-actions-smoke.yml").read_text()))


def test_workflow_deploys_with_smoke_uploads_and_always_tears_down() -> None:
    steps = _workflow()["jobs"]["smoke"]["steps"]
    by_name = {step.get("name"): step for step in steps}
    assert by_name["Deploy and smoke-test"]["run"] == (
        "spark-stack up --smoke --json > smoke-report.json"
    )
    upload = by_name["Upload the reports and failure logs"]
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["if"] == "always()" and "smoke-report.json" in upload["with"]["path"]
    assert by_name["Tear down"] == {
        "name": "Tear down", "if": "always()", "run": "spark-stack down"
    }
    assert steps[-1] is by_name["Tear down"]


def test_workflow_summary_renders_a_real_report(tmp_path: Path) -> None:
    step = next(s for s in _workflow()["jobs"]["smoke"]["steps"]
                if s.get("name") == "Summarise the report")
    heredoc = step["run"].split("<<'PY'", 1)[1].split("\n", 1)[1]
    script = heredoc.split("\nPY", 1)[0]
    report = {
        "ok": False,
        "error": None,
        "checks": [
            {"name": "completion", "model": "qwen", "via": "proxy", "status": "passed",
             "ok": True, "latency_ms": 12.5, "ttft_ms": 10.1, "reason": "answered 204"},
            {"name": "thinking", "model": "qwen", "via": "proxy", "status": "skipped",
             "ok": True, "latency_ms": None, "ttft_ms": None,
             "reason": "no reasoning_parser"},
            {"name": "up", "model": "", "via": "deploy", "status": "failed", "ok": False,
             "latency_ms": 900.0, "ttft_ms": None, "reason": "model qwen failed to start"},
        ],
    }
    (tmp_path / "smoke-report.json").write_text(json.dumps(report))
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30, check=True)
    assert done.stdout.splitlines() == [
        "### spark-stack smoke: FAILED (1 skipped)",
        "| check | model | via | result | latency ms | TTFT ms | reason |",
        "|---|---|---|---|---|---|---|",
        "| completion | qwen | proxy | pass | 12.5 | 10.1 | answered 204 |",
        "| thinking | qwen | proxy | skipped |  |  | no reasoning_parser |",
        "| up |  | deploy | **FAIL** | 900.0 |  | model qwen failed to start |",
    ]
    (tmp_path / "smoke-report.json").unlink()
    missing = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                             text=True, timeout=30, check=True)
    assert missing.stdout.startswith("### spark-stack smoke: FAILED")
