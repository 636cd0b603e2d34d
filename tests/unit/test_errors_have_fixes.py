"""README: "Errors are one line of cause and one line of fix" — usage errors and the proxy's
config errors included, and no raise site of spark-stack's errors leaves the fix out."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from spark_stack import errors
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ERRORS = {name for name, value in vars(errors).items()
          if isinstance(value, type) and issubclass(value, errors.SparkStackError)}
# StackFileError's problems carry a fix each; Unknown never reaches the user (keys.READ).
NOT_SHOWN_BARE = {"StackFileError"}
# The simulator is vLLM's stand-in: its own UsageError answers like vLLM's argparse.
OWN_CLI = ROOT / "spark_stack" / "simulator"


def _raise_sites_without_fix() -> list[str]:
    found = []
    for path in (ROOT / "spark_stack").rglob("*.py"):
        if OWN_CLI in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ERRORS - NOT_SHOWN_BARE
                    and not any(k.arg == "fix" for k in node.keywords)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.func.id}")
    return found


def test_every_error_spark_stack_raises_names_a_fix() -> None:
    missing = [site for site in _raise_sites_without_fix() if "deploy/keys.py" not in site]
    assert missing == []


@pytest.mark.parametrize(("argv", "cause"), [
    (["plan", "--bogus", "-s", "demo"], "error: No such option: --bogus"),
    (["bogus"], "error: No such command 'bogus'"),
    (["bench", "-n", "0", "-s", "demo"], "error: Invalid value for '--requests'"),
])
def test_a_usage_error_is_one_line_of_cause_and_one_of_fix(
    argv: list[str], cause: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(cause) and re.match(r"fix: see `spark-stack[ a-z]*--help`",
                                                   lines[1])


@pytest.mark.parametrize("content", [None, b"{bad", b'{"port": "x"}'])
def test_proxy_config_errors_name_a_fix(
    content: bytes | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "proxy.json"
    if content is not None:
        config.write_bytes(content)
    code, out, err = run_cli(capsys, "proxy", "--config", str(config))
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("error: ") and str(config) in lines[0]
    assert lines[1].startswith("fix: pass the proxy.json `up` wrote")
    assert "Errno" not in err


def test_the_readme_makes_the_claim() -> None:
    assert "Errors are one line of cause and one line of fix, never a traceback" in README
    assert "usage errors (exit 2) included" in README
