"""Readiness proves it talks to the process `up` started, not whatever holds its port (issue
23, item 8): through the CLI, a second stack's simulator on a port another simulator holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import free_port, run_cli


def _stack_file(directory: Path, name: str, port: int) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"""
name: {name}
models:
  - name: sim
    kind: simulator
    port: {port}
    startup_seconds: 0.2
proxy:
  listen: 127.0.0.1:{free_port()}
""")
    return path


def test_a_simulator_port_another_process_holds_fails_preflight_and_is_never_ready(
    tmp_path: Path, spark_stack_home: Path, fake_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    first = _stack_file(tmp_path, "first", port)
    second = _stack_file(tmp_path, "second", port)
    try:
        code, out, err = run_cli(capsys, "-s", str(first), "up", "--no-proxy")
        assert code == 0, out + err
        # The port is taken: a preflight failure with the fix, before anything starts.
        code, out, err = run_cli(capsys, "-s", str(second), "up", "--no-proxy")
        assert code != 0 and "ready" not in out, out + err
        assert f"preflight port: port {port} on this machine is in use (simulator sim)" in err
        assert "spark-stack -s demo down" in err and "--skip-preflight port" in err
        # Past the check, the first stack's simulator answering on the port is not "ready":
        # the second one died of the taken port, and `up` says so.
        code, out, err = run_cli(capsys, "-s", str(second), "up", "--no-proxy",
                                 "--skip-preflight", "port")
        assert code == 4, out + err
        assert "already in use" in err
    finally:
        run_cli(capsys, "-s", str(second), "down")
        run_cli(capsys, "-s", str(first), "down")
