"""Helpers shared by `spark-stack claude` and `demo`: health verdicts, headless results, env."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from spark_stack import claude_run
from spark_stack.errors import NotHealthy


def test_healthy_proxy_passes() -> None:
    claude_run.require_healthy(claude_run.Health(200, {"status": "ok"}), "http://p")


def test_silent_proxy_says_to_run_up() -> None:
    with pytest.raises(NotHealthy) as info:
        claude_run.require_healthy(claude_run.Health(None, {}), "http://127.0.0.1:4000")
    assert info.value.message == "the proxy at http://127.0.0.1:4000 does not answer"
    assert info.value.fix is not None and "spark-stack up" in info.value.fix


def test_degraded_proxy_names_each_unhealthy_upstream() -> None:
    body = {
        "status": "degraded",
        "upstreams": {
            "big": {"ok": False, "status": None, "error": "Cannot connect to host"},
            "small": {"ok": True, "status": 200},
            "mid": {"ok": False, "status": 503},
        },
    }
    with pytest.raises(NotHealthy) as info:
        claude_run.require_healthy(claude_run.Health(503, body), "http://p",
                                   up_hint="spark-stack -s lab.yaml up")
    assert info.value.message == (
        "model big is not serving (Cannot connect to host); model mid is not serving (HTTP 503)"
    )
    assert info.value.fix is not None
    assert info.value.fix.startswith("run `spark-stack -s lab.yaml up` (it restarts the model)")


def test_wrong_token_is_its_own_message() -> None:
    with pytest.raises(NotHealthy, match="refused the stack's token"):
        claude_run.require_healthy(claude_run.Health(401, {}), "http://p")


def test_parse_headless_reads_the_json_result() -> None:
    stdout = "noise\n" + json.dumps(
        {"type": "result", "result": "204", "is_error": False, "num_turns": 1}
    )
    result = claude_run.parse_headless(0, stdout, "")
    assert result == claude_run.HeadlessResult(0, "204", False, 1, "")


def test_parse_headless_without_json_falls_back_to_stderr() -> None:
    result = claude_run.parse_headless(1, "", "Not logged in\n")
    assert result.is_error and result.result == "Not logged in" and result.num_turns is None


def test_hermetic_environment_replaces_anthropic_vars_and_home(tmp_path: Path) -> None:
    base = {"PATH": "/bin", "HOME": "/root", "ANTHROPIC_API_KEY": "user-key", "KEEP": "1"}
    env = claude_run.hermetic_environment(base, {"ANTHROPIC_BASE_URL": "http://x"}, tmp_path)
    assert env["HOME"] == str(tmp_path)
    assert "ANTHROPIC_API_KEY" not in env  # a user's real key never reaches the run
    assert env["ANTHROPIC_BASE_URL"] == "http://x"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "1" and env["KEEP"] == "1"


def test_prepare_home_skips_onboarding(tmp_path: Path) -> None:
    home = claude_run.prepare_home(tmp_path / "h")
    assert json.loads((home / ".claude.json").read_text()) == {"hasCompletedOnboarding": True}
    assert (home / ".claude").is_dir()


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's handler naming
        ok = self.headers.get("x-api-key") == "tok"
        body = json.dumps({"status": "ok" if ok else "denied"}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture()
def health_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_proxy_health_sends_the_token_over_a_real_socket(health_url: str) -> None:
    assert claude_run.proxy_health(health_url, "tok") == claude_run.Health(200, {"status": "ok"})
    assert claude_run.proxy_health(health_url, None).status == 401


def test_proxy_health_of_nothing_is_none() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert not claude_run.proxy_health(f"http://127.0.0.1:{port}", None, timeout=2).answers
