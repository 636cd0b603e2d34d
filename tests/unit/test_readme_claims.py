"""README sentences about behaviour, each checked against the behaviour it describes."""

from __future__ import annotations

import re
from pathlib import Path

from spark_stack import launcher
from spark_stack.deployment import resolve
from spark_stack.stack.loader import load_stack_text

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_the_launcher_probe_order_is_the_one_the_readme_gives() -> None:
    stack = load_stack_text(
        "name: lab\nmodels:\n  - {name: m, kind: simulator}\nproxy: {token: auto}\n", lint=False
    ).stack
    script = launcher.render_launcher(resolve(stack), token_path=Path("/t"))
    order = [script.index(probe) for probe in
             ("command -v python3", "command -v curl", "/dev/tcp/")]
    assert order == sorted(order)
    readme = _flat(README)
    assert ("python3 parses it, else curl shows its body, else bash's `/dev/tcp` checks the port"
            in readme)
    assert "the launcher's probe uses `python3`'s `urllib`, else `curl`, else bash's" in readme
    # "never on a command line": the token reaches python3 by environment and curl by stdin
    assert "no command line ever does" in readme
    assert "$ANTHROPIC_AUTH_TOKEN\" <<" not in script and "-H @-" in script


def test_the_readme_says_a_foreign_launcher_path_is_refused() -> None:
    # tests/unit/test_launcher_path.py proves the behaviour through `up` and `down --purge`
    readme = _flat(README)
    assert ("a file there that spark-stack did not write, or a directory, is never replaced: "
            "`up` refuses before it starts anything") in readme


def test_the_readme_says_what_a_reference_is_and_that_empty_is_an_error() -> None:
    # tests/unit/test_secret_references.py proves each of these through the CLI
    readme = _flat(README)
    assert "An unset or empty variable is an error at its line" in readme
    assert "`up` lists every one before it starts anything" in readme
    assert ("`${NAME:-default}` and an unclosed `${NAME` are errors, a bare `$NAME` is a warning"
            in readme)


def test_the_readme_states_the_bounds_the_schema_and_proxy_enforce() -> None:
    from spark_stack.proxy.server import MAX_BODY_BYTES
    from spark_stack.stack.schema import MAX_MODEL_LEN_LIMIT

    readme = _flat(README)
    assert f"and at most {MAX_MODEL_LEN_LIMIT} |" in readme
    assert "never with `user:pass@` (refused" in readme
    assert MAX_BODY_BYTES == 64 * 1024 * 1024
    assert "| 64 MiB | 413, connection closed (at once when `content-length` declares more) |" in (
        readme)


def test_the_readme_names_the_moe_backend_the_presets_use() -> None:
    from spark_stack.stack.loader import load_preset

    row = next(line for line in README.splitlines() if line.startswith("| `moe_backend` |"))
    for name in ("qwen3.6-35b-a3b-nvfp4-nvidia", "qwen3.6-35b-a3b-nvfp4-redhat"):
        assert load_preset(name).settings["moe_backend"] == "marlin"
    assert "both Qwen3.6 NVFP4 presets use `marlin`" in row
    assert "`flashinfer_cutlass` for RedHatAI's" not in README


def test_the_readme_says_which_window_claude_code_reports_without_aliases() -> None:
    # tests/e2e/test_claude_code_sessions.py runs the pinned CLI and checks it
    readme = _flat(README)
    contract = readme[readme.index("**The context window.**"):]
    assert ("*Without `claude.models` aliases* the launcher still sets each alias variable, to the "
            "model the proxy routes Claude Code's own id for that alias to") in contract
    e2e = (Path(__file__).resolve().parents[1] / "e2e" / "test_claude_code_sessions.py")
    assert "test_without_aliases_claude_code_still_reports_the_stacks_window" in e2e.read_text()
    stack = load_stack_text("name: s\nmodels:\n  - {name: q, kind: simulator, "
                            "max_model_len: 40000}\n", lint=False).stack
    script = launcher.render_launcher(resolve(stack), token_path=Path("/t"))
    for alias in ("OPUS", "SONNET", "HAIKU"):
        assert f"export ANTHROPIC_DEFAULT_{alias}_MODEL=q\n" in script


def test_the_readme_says_what_down_purge_removes() -> None:
    # tests/unit/test_up_fake_host.py, tests/e2e/test_deploy.py (lock files) and
    # tests/unit/test_deploy_status_down.py (no state directory after a purge) prove it
    readme = _flat(README)
    assert ("`down --purge` also removes the launcher (only one `up` wrote), that state directory "
            "and the stack's lock files on each host") in readme
    assert "A `down` after a purge leaves no state directory behind." in readme


def test_the_test_command_shows_progress_per_file_and_the_slowest_tests() -> None:
    script = (Path(__file__).resolve().parents[2] / "scripts" / "test.sh").read_text()
    [pytest_line] = [line for line in script.splitlines() if "-m pytest" in line]
    assert "--durations=15" in pytest_line
    assert " -q " not in pytest_line  # -q prints dots only, without the file they belong to
    assert ("The test command prints a line per test file as it goes, then the 15 slowest tests"
            in _flat(README))


def test_the_readme_opens_with_the_quickstart_and_names_the_one_command() -> None:
    """The first code block is the two quickstart commands (the demo, the test command that
    .ci/run calls); the first lines name the one command for a Spark."""
    first_block = re.search(r"```bash\n(.*?)```", README, re.DOTALL)
    assert first_block is not None
    assert first_block.group(1).splitlines() == [
        "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/spark-stack demo",
        "bash scripts/test.sh",
    ]
    assert "spark-stack claude --host spark" in "\n".join(README.splitlines()[:4])
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "exec bash scripts/test.sh" in ci
