"""Values that used to pass validation and fail later (or leak): each is now a located error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spark_stack.stack.schema import MAX_MODEL_LEN_LIMIT
from tests.helpers import run_cli

SIMULATOR = "name: t\nmodels:\n  - name: m\n    kind: simulator\n"


@pytest.mark.parametrize(
    ("setting", "message", "fix"),
    [
        ("max_model_len: 9999999999999999999999999", f"less than or equal to "
         f"{MAX_MODEL_LEN_LIMIT}", "use a smaller value"),
        ("port: true", "a number is expected here, not true or false", "true and false are not"),
        ("max_model_len: false", "not true or false", "write a number"),
        ("startup_seconds: .inf", "finite number", "write a finite number"),
    ],
)
def test_out_of_range_numbers_are_refused_at_their_line(
    setting: str, message: str, fix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text(SIMULATOR + f"    {setting}\n")
    for command in ("validate", "plan"):
        code, out, err = run_cli(capsys, "-s", str(stack), command)
        assert code == 2, (command, out, err)
        assert f"{stack}:5:" in err and message in err and fix in err


def test_the_max_model_len_limit_is_sane() -> None:
    # The largest windows served today are ~10M tokens; the limit stays far below 2**63.
    assert 10_000_000 < MAX_MODEL_LEN_LIMIT < 2**31


def test_a_port_in_the_host_section_and_proxy_limits_refuse_booleans_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text("name: t\nhost: {address: spark, port: true}\nmodels:\n  - name: m\n"
                     "    preset: qwen3.6-35b-a3b-nvfp4-redhat\n"
                     "proxy:\n  limits: {max_connections: false}\n")
    code, out, err = run_cli(capsys, "-s", str(stack), "validate", "--json")
    assert code == 2
    paths = [p["key_path"] for p in json.loads(out)["error"]["problems"]]
    assert paths == ["host.port", "proxy.limits.max_connections"]


@pytest.mark.parametrize("url", ["https://bob:hunter2@example.com/v1",
                                 "http://hunter2@10.0.0.1:8000/v1",
                                 "ftp://bob:hunter2@example.com/v1"])
def test_a_url_with_credentials_is_refused_and_never_printed(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text(f"name: t\nmodels:\n  - name: m\n    url: {url}\n")
    for command in (["plan"], ["plan", "--json"], ["validate"]):
        code, out, err = run_cli(capsys, "-s", str(stack), *command)
        assert code == 2
        assert "hunter2" not in out + err
        assert "must not hold a user name or password" in out + err
        assert "api_key: ${ENV_VAR}" in out + err


def test_a_url_with_an_at_sign_in_its_path_is_fine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text("name: t\nmodels:\n  - name: m\n    url: http://10.0.0.1:8000/v1/@x\n")
    code, out, err = run_cli(capsys, "-s", str(stack), "validate")
    assert code == 0, err
