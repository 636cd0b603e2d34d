"""The README's commands for the stand-in host are the ones `python -m tests.testhost` takes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.testhost import __main__ as testhost_cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_the_readme_says_how_to_stop_the_stand_in_host() -> None:
    assert ".venv/bin/python -m tests.testhost down" in README
    for verb in re.findall(r"`… (\w+)`", README.split("tests.testhost down", 1)[1][:300]):
        assert verb in ("status", "up")


@pytest.mark.parametrize("verb", ["up", "down", "status"])
def test_each_documented_verb_is_accepted(verb: str) -> None:
    assert verb in testhost_cli.USAGE


def test_an_unknown_verb_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert testhost_cli.main(["stop"]) == 2
    assert "up|down|status" in capsys.readouterr().err


def test_ci_takes_it_down_and_a_developer_run_keeps_it() -> None:
    script = (Path(__file__).resolve().parents[2] / "scripts" / "test.sh").read_text()
    assert 'if [ "${CI:-}" = "true" ]' in script
    assert "python -m tests.testhost down" in script
