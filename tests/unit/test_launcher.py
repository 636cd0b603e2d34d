"""The generated launcher: its text, its mode, and what it really does when bash runs it."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spark_stack import claude_context, launcher
from spark_stack.deployment import resolve
from spark_stack.stack import schema
from spark_stack.stack.loader import load_stack_text
from tests.helpers import free_port

SENTINEL = "tok-SENTINEL-9f3a1c"
# The launcher probes with python3, else curl, else bash's /dev/tcp (with or without timeout).
PROBE_TOOLS = [["curl", "cat"], ["python3", "cat"], ["timeout", "cat"], ["cat"]]


def make_stack(port: int = 4000, *, token: str | None = "auto", **claude: object) -> schema.Stack:
    lines = [
        "name: lab",
        "models:",
        "  - name: qwen",
        "    kind: simulator",
        "    served_name: qwen3.6",
        "proxy:",
        f"  listen: 127.0.0.1:{port}",
    ]
    if token is not None:
        lines.append(f"  token: {token}")
    text = "\n".join(lines) + "\n"
    stack = load_stack_text(text, lint=False).stack
    if claude:
        stack = stack.model_copy(update={"claude": schema.ClaudeSection(**claude)})  # type: ignore[arg-type]
    return stack


DOWN_UPSTREAM = {"ok": False, "status": None, "error": "Cannot connect to host 127.0.0.1:8811"}


class _Root(http.server.BaseHTTPRequestHandler):
    """Answers like the proxy: HEAD / and GET /health (``upstreams`` says what it reports)."""

    upstreams: dict[str, dict[str, object]] = {"qwen": {"ok": True, "status": 200}}

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's handler naming
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        healthy = all(result["ok"] for result in self.upstreams.values())
        body = json.dumps({"status": "ok" if healthy else "degraded", "proxy": "ok",
                           "upstreams": self.upstreams}).encode()
        self.send_response(200 if healthy else 503)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _SlowRoot(_Root):
    """Answers /health after a pause (the probe stays alive to be looked at), noting the key."""

    keys: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802
        self.keys.append(self.headers.get("x-api-key"))
        time.sleep(0.6)
        super().do_GET()


@pytest.fixture()
def proxy_port() -> Iterator[int]:
    """A real HTTP server on loopback answering HEAD / like the proxy does."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Root)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def write_token(stack_name: str, text: str) -> None:
    path = launcher.token_file(stack_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture()
def fake_claude(tmp_path: Path) -> Path:
    """An executable standing in for `claude` that reports the argv and env it was given."""
    path = tmp_path / "bin" / "claude"
    path.parent.mkdir()
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))\n"
    )
    path.chmod(0o755)
    return path


def tool_dir(tmp_path: Path, tools: list[str]) -> Path:
    """A PATH directory with only the named tools, to exercise the launcher's fallbacks."""
    bin_dir = tmp_path / "tools"
    bin_dir.mkdir()
    for tool in tools:
        target = sys.executable if tool == "python3" else shutil.which(tool)
        assert target, tool
        (bin_dir / tool).symlink_to(target)
    return bin_dir


def run_launcher(
    script: Path, args: list[str], *, path: str, claude_bin: Path | None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": str(script.parent), "ANTHROPIC_API_KEY": "users-own-key"}
    if claude_bin is not None:
        env[launcher.CLAUDE_BIN_ENV] = str(claude_bin)
    return subprocess.run(
        ["/bin/bash", str(script), *args], env=env, capture_output=True, text=True, timeout=30
    )


def test_text_exports_what_claude_code_reads_and_never_the_token(tmp_path: Path) -> None:
    stack = make_stack(
        models={"opus": "qwen", "sonnet": "qwen", "haiku": "small"}, default_model="qwen"
    )
    text = launcher.render_launcher(resolve(stack), token_path=tmp_path / "tok",
                                    stack_file="lab.yaml")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "export ANTHROPIC_BASE_URL=http://127.0.0.1:4000\n" in text
    assert "export ANTHROPIC_DEFAULT_OPUS_MODEL=qwen\n" in text
    assert "export ANTHROPIC_DEFAULT_SONNET_MODEL=qwen\n" in text
    assert "export ANTHROPIC_DEFAULT_HAIKU_MODEL=small\n" in text
    assert "export ANTHROPIC_MODEL=qwen\n" in text
    assert "export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1\n" in text
    assert f"token_file={tmp_path / 'tok'}\n" in text
    assert 'ANTHROPIC_AUTH_TOKEN=$(cat "$token_file")' in text
    assert "spark-stack -s lab.yaml up" in text
    settings = launcher.claude_settings(resolve(stack))
    assert text.rstrip().endswith(f"exec \"$claude_bin\" --settings '{settings}' \"$@\"")
    assert "/v1" not in text


def test_without_a_proxy_token_the_placeholder_is_exported(tmp_path: Path) -> None:
    text = launcher.render_launcher(resolve(make_stack(token=None)), token_path=tmp_path / "tok")
    assert f"export ANTHROPIC_AUTH_TOKEN={claude_context.PLACEHOLDER_TOKEN}\n" in text
    assert "token_file" not in text
    assert "ANTHROPIC_MODEL=" not in text


def test_wildcard_and_ipv6_binds_are_reached_on_loopback() -> None:
    stack = make_stack()
    v4 = stack.model_copy(update={"proxy": schema.ProxySection(listen="0.0.0.0:4100")})
    v6 = stack.model_copy(update={"proxy": schema.ProxySection(listen="[::1]:4200")})
    assert launcher.proxy_base_url(v4) == "http://127.0.0.1:4100"
    assert launcher.proxy_base_url(v6) == "http://[::1]:4200"


def test_write_launcher_is_atomic_0755_at_the_stack_path(tmp_path: Path) -> None:
    target = tmp_path / "bin" / "claude-lab"
    stack = make_stack(launcher=str(target))
    write_token(stack.name, SENTINEL)
    written = launcher.write_launcher(resolve(stack))
    assert written == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert SENTINEL not in target.read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["claude-lab"]
    # Rewriting replaces the file in place; no temp files are left behind.
    launcher.write_launcher(resolve(stack))
    assert sorted(p.name for p in target.parent.iterdir()) == ["claude-lab"]


def test_default_launcher_path_is_in_local_bin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    assert launcher.default_launcher_path(make_stack()) == Path(
        "/home/someone/.local/bin/claude-lab"
    )


def test_token_file_lives_in_the_stack_state_dir(spark_stack_home: Path) -> None:
    expected = spark_stack_home / "stacks" / "lab" / "secrets" / "proxy-token"
    assert launcher.token_file("lab") == expected


@pytest.mark.parametrize("tools", PROBE_TOOLS, ids=lambda t: "+".join(t))
def test_launcher_execs_claude_with_args_and_env_when_the_proxy_answers(
    tmp_path: Path, proxy_port: int, fake_claude: Path, tools: list[str]
) -> None:
    stack = make_stack(proxy_port, models={"opus": "qwen"})
    write_token(stack.name, SENTINEL + "\n")
    script = launcher.write_launcher(resolve(stack), path=tmp_path / "claude-lab")
    args = ["-p", "what is 12*17?", "--output-format", "json", "--", "--help", "a b"]
    result = run_launcher(
        script, args, path=str(tool_dir(tmp_path, tools)), claude_bin=fake_claude
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["argv"] == ["--settings", launcher.claude_settings(resolve(stack)), *args]
    assert seen["env"]["ANTHROPIC_AUTH_TOKEN"] == SENTINEL
    assert seen["env"]["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{proxy_port}"
    assert seen["env"]["ANTHROPIC_DEFAULT_OPUS_MODEL"] == "qwen"
    assert seen["env"]["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert "ANTHROPIC_API_KEY" not in seen["env"]


@pytest.mark.parametrize("tools", PROBE_TOOLS, ids=lambda t: "+".join(t))
def test_launcher_hints_at_up_when_the_proxy_is_down(
    tmp_path: Path, fake_claude: Path, tools: list[str]
) -> None:
    stack = make_stack(free_port())
    write_token(stack.name, SENTINEL)
    script = launcher.write_launcher(resolve(stack), path=tmp_path / "claude-lab",
                                     stack_file="lab.yaml")
    result = run_launcher(
        script, ["-p", "hi"], path=str(tool_dir(tmp_path, tools)), claude_bin=fake_claude
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "does not answer" in result.stderr
    assert "spark-stack -s lab.yaml up" in result.stderr


@pytest.mark.parametrize("tools", [["python3", "cat"], ["curl", "cat"]], ids=lambda t: t[0])
def test_launcher_names_a_model_that_is_down_and_the_fix(
    tmp_path: Path, proxy_port: int, fake_claude: Path, tools: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_Root, "upstreams", {"qwen": DOWN_UPSTREAM})
    stack = make_stack(proxy_port, token=None)
    script = launcher.write_launcher(resolve(stack), path=tmp_path / "claude-lab",
                                     stack_file="lab.yaml")
    result = run_launcher(
        script, ["-p", "hi"], path=str(tool_dir(tmp_path, tools)), claude_bin=fake_claude
    )
    assert result.returncode == 1
    assert result.stdout == ""  # Claude Code never started
    assert "model qwen is not serving" in result.stderr or '"qwen"' in result.stderr
    assert "Cannot connect to host 127.0.0.1:8811" in result.stderr
    assert result.stderr.rstrip().endswith("start it with: spark-stack -s lab.yaml up")


def test_launcher_names_the_stack_file_absolutely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lab.yaml").write_text("name: lab\n")
    monkeypatch.chdir(tmp_path)
    script = launcher.write_launcher(resolve(make_stack()), path=tmp_path / "claude-lab",
                                     stack_file="lab.yaml")
    assert f"spark-stack -s {tmp_path / 'lab.yaml'} up" in script.read_text()
    # A built-in stack name is not a file: it stays as written.
    script = launcher.write_launcher(resolve(make_stack()), path=tmp_path / "claude-lab",
                                     stack_file="demo")
    assert "spark-stack -s demo up" in script.read_text()


def test_launcher_without_token_file_says_to_run_up(tmp_path: Path, fake_claude: Path) -> None:
    script = launcher.write_launcher(resolve(make_stack()), path=tmp_path / "claude-lab")
    result = run_launcher(script, [], path=os.environ["PATH"], claude_bin=fake_claude)
    assert result.returncode == 1
    assert "no proxy token" in result.stderr and "spark-stack up" in result.stderr


def test_launcher_without_claude_says_how_to_install(tmp_path: Path, proxy_port: int) -> None:
    stack = make_stack(proxy_port, token=None)
    script = launcher.write_launcher(resolve(stack), path=tmp_path / "claude-lab")
    result = run_launcher(
        script, [], path=str(tool_dir(tmp_path, ["curl"])), claude_bin=None
    )
    assert result.returncode == 127
    assert launcher.INSTALL_COMMAND in result.stderr


def test_launcher_finds_claude_on_path(tmp_path: Path, proxy_port: int, fake_claude: Path) -> None:
    stack = make_stack(proxy_port, token=None)
    script = launcher.write_launcher(resolve(stack), path=tmp_path / "claude-lab")
    path = f"{fake_claude.parent}:{tool_dir(tmp_path, ['curl'])}"
    result = run_launcher(script, ["--version"], path=path, claude_bin=None)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["argv"] == ["--settings", launcher.claude_settings(resolve(stack)), "--version"]
    assert seen["env"]["ANTHROPIC_AUTH_TOKEN"] == claude_context.PLACEHOLDER_TOKEN


def test_claude_code_starts_with_the_stacks_models_in_its_model_picker() -> None:
    stack = load_stack_text("""
name: lab
host: {address: spark}
models:
  - {name: qwen, image: "vllm/vllm-openai:v0.28.0", model: Qwen/Qwen3-8B, max_model_len: 65536,
     served_name: qwen3-8b, gpu_memory_utilization: 0.5, reasoning_parser: qwen3}
  - {name: coder, kind: simulator, port: 8802, max_model_len: 98304}
  - {name: unused, kind: remote, url: "http://127.0.0.1:9/v1"}
proxy:
  routes: {"*": qwen}
claude:
  models: {opus: qwen, sonnet: coder}
""", lint=False).stack
    settings = json.loads(launcher.claude_settings(resolve(stack)))
    assert settings == {"modelPicker": {"replaceBuiltInOptions": True, "options": [
        {"model": "qwen", "label": "qwen",
         "description": "qwen3-8b \u00b7 vLLM on spark \u00b7 65,536-token window"},
        {"model": "coder", "label": "coder",
         "description": "Qwen/Qwen3.6-35B-A3B-simulated \u00b7 the simulator on this machine "
                        "\u00b7 98,304-token window"},
    ]}}


def _argvs_while(process: subprocess.Popen[str]) -> list[bytes]:
    """Every command line seen in /proc while ``process`` runs (scanned as fast as possible)."""
    seen: set[bytes] = set()
    while process.poll() is None:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    seen.add(Path(f"/proc/{pid}/cmdline").read_bytes())
                except OSError:
                    pass  # the process ended between listing and reading
    return sorted(seen)


# The tool each probe branch runs (None: bash's /dev/tcp in a subshell, no new command line).
PROBE_PROCESS = {"python3": b"python3", "curl": b"curl", "timeout": b"timeout", "cat": None}


@pytest.mark.parametrize("tools", PROBE_TOOLS, ids=lambda t: "+".join(t))
def test_no_process_ever_has_the_token_on_its_command_line(
    tmp_path: Path, fake_claude: Path, tools: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_SlowRoot, "keys", [])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowRoot)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        stack = make_stack(server.server_address[1])
        write_token(stack.name, SENTINEL + "\n")
        script = launcher.write_launcher(resolve(stack), path=tmp_path / "claude-lab")
        env = {"PATH": str(tool_dir(tmp_path, tools)), "HOME": str(tmp_path),
               launcher.CLAUDE_BIN_ENV: str(fake_claude)}
        process = subprocess.Popen(["/bin/bash", str(script), "-p", "hi"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        argvs = _argvs_while(process)
        out, err = process.communicate(timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert process.returncode == 0, err
    assert json.loads(out)["env"]["ANTHROPIC_AUTH_TOKEN"] == SENTINEL
    assert not [argv for argv in argvs if SENTINEL.encode() in argv]
    probe = PROBE_PROCESS[tools[0]]
    if probe is not None:  # the scan did see the probe running, so it proves something
        assert [argv for argv in argvs if argv.split(b"\0")[0].endswith(probe)], argvs[:50]
    if tools[0] in ("python3", "curl"):  # these send the token, and it arrives
        assert _SlowRoot.keys == [SENTINEL]
