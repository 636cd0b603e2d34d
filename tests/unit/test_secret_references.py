"""`${VAR}` references as a user meets them: an empty one refused at its line (it would turn
the proxy's authentication off), every unset one listed in one run, and text that only looks
like a reference (`$A`, `${A`, `${A:-x}`) named instead of passed on literally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spark_stack.errors import MissingSecret
from spark_stack.stack.secrets import resolve
from tests.helpers import free_port, run_cli


def _simulator_stack(tmp_path: Path, proxy_extra: str = "") -> Path:
    path = tmp_path / "sec.yaml"
    path.write_text(
        "name: secrefs\n"
        f"models:\n  - name: sim\n    kind: simulator\n    port: {free_port()}\n"
        f"proxy:\n  listen: 127.0.0.1:{free_port()}\n"
        "  token: ${SECREF_TOKEN}\n" + proxy_extra
    )
    return path


def test_an_empty_token_is_refused_at_its_line_before_anything_starts(
    tmp_path: Path, spark_stack_home: Path, fake_home: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SECREF_TOKEN", "")
    stack = _simulator_stack(tmp_path)
    try:
        code, out, err = run_cli(capsys, "-s", str(stack), "up")
        assert code == 2, err
        assert f"{stack}:8:10: proxy.token: environment variable SECREF_TOKEN is empty" in err
        assert "would turn authentication off" in err and "fix: export SECREF_TOKEN" in err
        assert not list(spark_stack_home.rglob("*.pid"))  # no simulator, no proxy

        code, out, _ = run_cli(capsys, "-s", str(stack), "up", "--json")
        [problem] = json.loads(out)["error"]["problems"]
        assert code == 2 and problem["line"] == 8 and problem["key_path"] == "proxy.token"
    finally:
        run_cli(capsys, "-s", str(stack), "down")


def test_every_unset_variable_is_listed_in_one_run(
    tmp_path: Path, fake_home: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("SECREF_HF", "SECREF_KEY", "SECREF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    stack = tmp_path / "sec.yaml"
    stack.write_text(
        "name: secrefs\nhost: {address: spark}\nmodels:\n  - name: m\n"
        "    preset: qwen3.6-35b-a3b-nvfp4-redhat\n"
        "    api_key: ${SECREF_KEY}\n"
        "    env:\n      HF_TOKEN: ${SECREF_HF}\n"
        "proxy:\n  token: ${SECREF_TOKEN}\n"
    )
    code, out, err = run_cli(capsys, "-s", str(stack), "up", "--json")
    assert code == 2
    problems = json.loads(out)["error"]["problems"]
    assert [(p["line"], p["key_path"]) for p in problems] == [
        (6, "models[0].api_key"), (8, "models[0].env.HF_TOKEN"), (10, "proxy.token")]
    assert all("is not set" in p["message"] for p in problems)


def test_resolving_an_empty_variable_anywhere_is_an_error() -> None:
    with pytest.raises(MissingSecret, match="V is empty .used by proxy.token."):
        resolve("${V}", {"V": ""}, where="proxy.token")
    assert resolve("${V}", {"V": "x"}) == "x"


@pytest.mark.parametrize("written", ["${SECREF_A", "${SECREF_A:-hunter2}", "pre${}post"])
def test_a_broken_reference_in_env_is_an_error_that_never_echoes_a_default(
    written: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text("name: s\nhost: {address: spark}\nmodels:\n  - name: m\n"
                     "    preset: qwen3.6-35b-a3b-nvfp4-redhat\n"
                     f"    env:\n      SOME_SETTING: '{written}'\n")
    code, out, err = run_cli(capsys, "-s", str(stack), "validate")
    assert code == 2
    assert f"{stack}:7:" in err and "is not a reference: only ${NAME} is replaced" in err
    assert "hunter2" not in err


def test_a_broken_reference_as_the_token_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text("name: s\nmodels:\n  - {name: m, kind: simulator}\n"
                     "proxy:\n  token: ${SECREF_A:-hunter2}\n")
    code, out, err = run_cli(capsys, "-s", str(stack), "validate")
    assert code == 2
    assert f"{stack}:5:" in err and "this is not a reference" in err and "hunter2" not in err


def test_a_bare_dollar_name_is_a_warning_naming_the_reference_to_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text("name: s\nhost: {address: spark}\nmodels:\n  - name: m\n"
                     "    preset: qwen3.6-35b-a3b-nvfp4-redhat\n"
                     "    env:\n      SOME_SETTING: $SECREF_A\n      OTHER: ${SECREF_B}\n")
    code, out, err = run_cli(capsys, "-s", str(stack), "validate")
    assert code == 0
    assert f"{stack}:7:" in err + out and "'$SECREF_A' is not a reference" in err + out
    assert "write ${SECREF_A}" in err + out and "SECREF_B" not in err + out
