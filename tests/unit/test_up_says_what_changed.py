"""`up` says "up to date" only when it changed nothing: a run that started the proxy is "ready"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import free_port, run_cli


def test_a_first_up_that_only_starts_the_proxy_is_not_up_to_date(
    tmp_path: Path, fake_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "s.yaml"
    stack.write_text(f"name: upfront\nmodels:\n  - name: far\n"
                     f"    url: http://127.0.0.1:{free_port()}/v1\n"
                     f"proxy:\n  listen: 127.0.0.1:{free_port()}\n"
                     f"claude:\n  launcher: {tmp_path / 'claude-upfront'}\n")
    try:
        code, out, err = run_cli(capsys, "-s", str(stack), "up")
        assert code == 0, err
        assert "ready" in out and "up to date" not in out, out
        code, out, err = run_cli(capsys, "-s", str(stack), "up")
        assert code == 0, err
        assert "up to date" in out, out
        code, out, err = run_cli(capsys, "-s", str(stack), "up", "--json")
        assert json.loads(out)["changed"] is False
    finally:
        run_cli(capsys, "-s", str(stack), "down")
