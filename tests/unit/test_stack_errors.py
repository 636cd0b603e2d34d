"""Malformed stack files through the real CLI: each gives its own located message and exit 2.

Each fixture in tests/fixtures/stacks/bad/ starts with three comment lines: the line the
problem must be reported at, the message and the fix it must contain.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from spark_stack.cli import main
from spark_stack.errors import StackFileError
from spark_stack.stack.loader import load_stack

BAD = Path(__file__).resolve().parents[1] / "fixtures" / "stacks" / "bad"
FIXTURES = sorted(BAD.glob("*.yaml"))
WHOLE_FILE = {"yaml_syntax", "yaml_unclosed_quote", "tab", "empty", "top_list", "missing_name"}


def expectations(path: Path) -> tuple[int, str, str]:
    header: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines()[:3]:
        match = re.match(r"# (expect(?:-line|-fix)?): (.*)", line)
        assert match is not None, f"{path.name}: header line {line!r}"
        header[match.group(1)] = match.group(2)
    return int(header["expect-line"]), header["expect"], header["expect-fix"]


def test_there_are_at_least_thirty_malformed_fixtures() -> None:
    assert len(FIXTURES) >= 30


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_malformed_stack_gives_located_message_and_exit_2(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line, message, fix = expectations(path)
    code = main(["--stack", str(path), "validate"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    assert "hf_notarealtoken" not in err  # a secret written in clear is never echoed
    matching = [row for row in err.splitlines() if message in row]
    assert matching, err
    assert f"{path}:{line}:" in matching[0]
    assert fix in err


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_every_problem_names_line_column_key_path_and_fix(path: Path) -> None:
    with pytest.raises(StackFileError) as caught:
        load_stack(path)
    for problem in caught.value.problems:
        assert problem.line is not None and problem.column is not None, problem
        assert problem.fix or caught.value.fix, problem
        # Only problems of the file as a whole have no key path.
        assert problem.key_path or path.stem in WHOLE_FILE, problem


def test_json_errors_list_each_problem_with_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    path = BAD / "unknown_flag.yaml"
    line, message, fix = expectations(path)
    assert main(["plan", "--stack", str(path), "--json"]) == 2
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is False
    problem = payload["error"]["problems"][0]
    assert problem["line"] == line and message in problem["message"] and fix in problem["fix"]
    assert payload["error"]["exit_code"] == 2


def test_several_problems_are_all_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text(
        "name: t\n"
        "host: {address: 127.0.0.1}\n"
        "models:\n"
        "  - name: m\n"
        "    image: vllm/vllm-openai:v0.28.0\n"
        "    model: Qwen/Qwen3-8B\n"
        "    moe_backend: tritn\n"
        "    extra_args: [--enable-prefix-cache]\n"
        "proxy:\n"
        "  routes: {'*': n}\n"
    )
    assert main(["-s", str(stack), "validate"]) == 2
    err = capsys.readouterr().err
    assert "3 problems in the stack file" in err
    assert f"{stack}:7:18: models[0].moe_backend" in err
    assert f"{stack}:8:18: models[0].extra_args[0]" in err
    assert f"{stack}:10:17: proxy.routes.*" in err


def test_the_console_script_prints_no_traceback(tmp_path: Path) -> None:
    path = BAD / "moe_value.yaml"
    line, message, _ = expectations(path)
    result = subprocess.run(
        [sys.executable, "-m", "spark_stack", "--stack", str(path), "plan"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}:{line}:" in result.stderr and message in result.stderr


def test_missing_stack_file_is_exit_2_with_a_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPARK_STACK", raising=False)
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "spark-stack.yaml: stack file not found" in err
    assert "spark-stack init" in err
