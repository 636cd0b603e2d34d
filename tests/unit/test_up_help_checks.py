"""`up --help` and the README name every preflight check `--skip-preflight` accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spark_stack.deploy.preflight import CHECKS
from tests.helpers import run_cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_up_help_lists_every_check_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "up", "--help")
    assert code == 0
    text = re.sub(r"\s+", " ", out)
    assert f"Skip a preflight check (repeatable): {', '.join(CHECKS)}." in text


def test_the_readme_describes_every_check() -> None:
    preflight = README[README.index("**Preflight**"):]
    preflight = preflight[:preflight.index("\n\n")]
    for check in CHECKS:
        assert f"`{check}` (" in preflight, check
