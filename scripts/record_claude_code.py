#!/usr/bin/env python3
"""Record the requests the pinned Claude Code CLI really sends, as the proxy's fixture.

A loopback capture server answers ``HEAD /`` and ``POST /v1/messages`` like Anthropic's API
(turn 1: a Bash ``tool_use`` for ``echo recorded``; turn 2: the text ``done``); the real CLI
runs headless against it with a fresh HOME and every non-essential connection switched off.
Each ``/v1/messages`` request (path with query, headers without auth, JSON body) is scrubbed of
machine-specific values and written to ``tests/fixtures/claude_code/<version>/turnN.json``.

Re-record after bumping CLAUDE_CODE_VERSION in scripts/test.sh (which installs the CLI):

    bash scripts/test.sh tests/unit -q   # installs the pinned CLI into .testhost/claude
    .venv/bin/python scripts/record_claude_code.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEST_SH = REPO / "scripts" / "test.sh"
FIXTURES = REPO / "tests" / "fixtures" / "claude_code"
DEFAULT_BIN = REPO / ".testhost" / "claude" / "node_modules" / ".bin" / "claude"
PROMPT = "Run the shell command `echo recorded` with the Bash tool, then say done."
TOOL_USE_ID = "toolu_01RecordedBashCall000001"
TOOL_INPUT = {"command": "echo recorded", "description": "Print the word recorded"}
# Stable stand-ins for what differs between machines and runs.
HOME_PLACEHOLDER = "/home/recorder"
HOST_PLACEHOLDER = "recorder-host"
USER_PLACEHOLDER = "recorder"
SERVER_PLACEHOLDER = "127.0.0.1:8089"
UUID_PLACEHOLDER = "00000000-0000-4000-8000-000000000000"
DATE_PLACEHOLDER = "2000-01-01"
DROPPED_HEADERS = frozenset({"authorization", "x-api-key"})
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_ID = re.compile(r"\b[0-9a-f]{64}\b")
_BILLING_VERSION = re.compile(r"(cc_version=[0-9.]+)\.[0-9a-f]+;")
_KERNEL = re.compile(re.escape(os.uname().release))


class RecordError(RuntimeError):
    """The recording could not be made; the message says why."""


def pinned_version() -> str:
    match = re.search(r"^CLAUDE_CODE_VERSION=(\S+)$", TEST_SH.read_text(), re.MULTILINE)
    if match is None:
        raise RecordError(f"no CLAUDE_CODE_VERSION= line in {TEST_SH}")
    return match.group(1)


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events
    )


def _start(model: str, number: int) -> dict[str, Any]:
    usage = {"input_tokens": 1000, "output_tokens": 1, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0}
    return {"type": "message_start", "message": {
        "id": f"msg_recorded{number:04d}", "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": usage}}


def _end(stop_reason: str) -> list[dict[str, Any]]:
    return [
        {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
         "usage": {"output_tokens": 12}},
        {"type": "message_stop"},
    ]


def answer(body: dict[str, Any], number: int) -> bytes:
    """The scripted reply: a Bash call first, ``done`` once the tool result came back."""
    model = str(body.get("model", "claude"))
    head = [_start(model, number), {"type": "ping"}]
    if _has_tool_result(body):
        return sse(head + [
            {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "done"}},
            {"type": "content_block_stop", "index": 0},
        ] + _end("end_turn"))
    return sse(head + [
        {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": TOOL_USE_ID, "name": "Bash", "input": {}}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "input_json_delta", "partial_json": json.dumps(TOOL_INPUT)}},
        {"type": "content_block_stop", "index": 0},
    ] + _end("tool_use"))


def _has_tool_result(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    content = messages[-1].get("content") if messages else None
    return isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    )


class Capture:
    """What the capture server saw: every ``/v1/messages`` request, in order."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.other: list[str] = []
        self.lock = threading.Lock()


def _handler(capture: Capture) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _reply(self, status: int, kind: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def do_HEAD(self) -> None:  # noqa: N802
            self._reply(200, "text/plain", b"")

        def do_GET(self) -> None:  # noqa: N802
            with capture.lock:
                capture.other.append(f"GET {self.path}")
            self._reply(404, "application/json", b'{"type":"error","error":{"type":'
                        b'"not_found_error","message":"not recorded"}}')

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            path = self.path.split("?", 1)[0]
            if path == "/v1/messages/count_tokens":
                with capture.lock:
                    capture.other.append(f"POST {self.path}")
                self._reply(200, "application/json", b'{"input_tokens": 1000}')
                return
            if path != "/v1/messages":
                with capture.lock:
                    capture.other.append(f"POST {self.path}")
                self._reply(404, "application/json", b"{}")
                return
            body = json.loads(raw)
            with capture.lock:
                capture.requests.append({
                    "method": "POST",
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()
                                if k.lower() not in DROPPED_HEADERS},
                    "body_bytes": len(raw),
                    "body": body,
                })
                number = len(capture.requests)
            self._reply(200, "text/event-stream", answer(body, number))

    return Handler


@contextmanager
def capture_server() -> Iterator[tuple[str, Capture]]:
    capture = Capture()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(capture))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", capture
    finally:
        server.shutdown()
        server.server_close()


def run_cli(claude: Path, address: str, home: Path, workdir: Path) -> dict[str, Any]:
    (home / ".claude").mkdir()
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": f"http://{address}",
        "ANTHROPIC_AUTH_TOKEN": "recording-placeholder-token",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    argv = [str(claude), "-p", PROMPT, "--output-format", "json",
            "--allowedTools", "Bash", "--max-turns", "3"]
    done = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        output = (done.stderr or done.stdout)[-2000:]
        raise RecordError(f"claude exited {done.returncode}: {output}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def scrub(value: Any, replacements: list[tuple[str, str]]) -> Any:
    """``value`` with machine- and run-specific strings replaced by stable placeholders."""
    if isinstance(value, dict):
        return {key: scrub(item, replacements) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub(item, replacements) for item in value]
    if not isinstance(value, str):
        return value
    for old, new in replacements:
        value = value.replace(old, new)
    value = _UUID.sub(UUID_PLACEHOLDER, value)
    value = _HEX_ID.sub("0" * 64, value)
    value = _KERNEL.sub("6.1.0-recorder", value)
    return _BILLING_VERSION.sub(r"\1.000;", value)


def _slug(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", str(path))


def replacements_for(root: Path, home: Path, address: str) -> list[tuple[str, str]]:
    workdir = home / "project"
    # Claude Code names its per-project directory after the working directory's path.
    pairs = [(_slug(workdir), _slug(Path(HOME_PLACEHOLDER) / "project")),
             (str(home), HOME_PLACEHOLDER), (str(root), "/tmp/recorder"),
             (address, SERVER_PLACEHOLDER)]
    # Only the run's own dates: beta names and anthropic-version carry dates that must stay.
    now = datetime.datetime.now(datetime.UTC)
    for day in {now.date(), now.astimezone().date()}:
        pairs.append((day.isoformat(), DATE_PLACEHOLDER))
    resolved = home.resolve()
    if str(resolved) != str(home):
        pairs.insert(0, (str(resolved), HOME_PLACEHOLDER))
    for name in {socket.gethostname(), socket.getfqdn()}:
        if len(name) > 2 and name != "localhost":
            pairs.append((name, HOST_PLACEHOLDER))
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if user and len(user) > 2 and user != "root":
        pairs.append((user, USER_PLACEHOLDER))
    return pairs


def record(claude: Path, out_root: Path) -> Path:
    version = pinned_version()
    shown = subprocess.run([str(claude), "--version"], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL).stdout.strip()
    if not shown.startswith(f"{version} "):
        raise RecordError(f"{claude} is {shown!r}, not the pinned {version}; "
                          "run `bash scripts/test.sh tests/unit` to install the pin")
    with tempfile.TemporaryDirectory(prefix="cc-record-") as tmp:
        root = Path(tmp)
        home = root / "home"
        workdir = home / "project"
        workdir.mkdir(parents=True, mode=0o700)
        with capture_server() as (address, capture):
            result = run_cli(claude, address, home, workdir)
        if result.get("result") != "done" or len(capture.requests) != 2:
            raise RecordError(f"expected 2 requests and the answer 'done', got "
                              f"{len(capture.requests)} requests, result {result.get('result')!r}"
                              f", other calls {capture.other}")
        pairs = replacements_for(root, home, address)
        turns = [scrub(request, pairs) for request in capture.requests]
        leaked = [old for old, _ in pairs if old in json.dumps(turns)]
        if leaked:
            raise RecordError(f"scrubbing left {len(leaked)} machine-specific strings in place")
    target = out_root / version
    target.mkdir(parents=True, exist_ok=True)
    for number, turn in enumerate(turns, 1):
        turn = {"claude_code_version": version, **turn}
        (target / f"turn{number}.json").write_text(json.dumps(turn, indent=1) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claude", type=Path,
                        default=Path(os.environ.get("SPARK_STACK_CLAUDE_BIN", DEFAULT_BIN)))
    parser.add_argument("--out", type=Path, default=FIXTURES)
    args = parser.parse_args(argv)
    if not (args.claude.is_file() or shutil.which(str(args.claude))):
        print(f"error: no Claude Code CLI at {args.claude}\nfix: run `bash scripts/test.sh "
              "tests/unit` once (it installs the pinned CLI)", file=sys.stderr)
        return 1
    try:
        target = record(args.claude, args.out)
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"recorded {sorted(p.name for p in target.glob('turn*.json'))} in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
