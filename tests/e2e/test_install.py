"""Install like a tool: a wheel built from the checkout, installed with pipx into a fresh HOME,
gives a working `spark-stack` with every data file (presets, vLLM flag lists, the demo stack).

Needs PyPI (the build backend, pipx and the dependencies; pip's cache makes repeats quick)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import spark_stack
from tests.e2e.test_demo import demo_copy  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list[str], env: dict[str, str], cwd: Path,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
         dict(os.environ), out)
    (built,) = out.glob("spark_stack-*.whl")
    return built


def test_a_wheel_installed_with_pipx_in_a_fresh_home_runs_presets_version_and_demo(
    wheel: Path, tmp_path: Path, demo_copy: tuple[Path, int],  # noqa: F811
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "empty"
    work.mkdir()
    tools = tmp_path / "tools"
    base = {k: v for k, v in os.environ.items()
            if k not in ("SPARK_STACK", "VIRTUAL_ENV", "PYTHONPATH", "XDG_CONFIG_HOME")}
    _run([sys.executable, "-m", "venv", str(tools)], base, work)
    _run([str(tools / "bin" / "pip"), "install", "-q", "pipx"], base, work)
    bin_dir = home / ".local" / "bin"
    env = {**base, "HOME": str(home), "PIPX_HOME": str(home / ".local" / "pipx"),
           "PIPX_BIN_DIR": str(bin_dir), "SPARK_STACK_HOME": str(tmp_path / "state"),
           "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"}
    _run([str(tools / "bin" / "pipx"), "install", str(wheel)], env, work)
    tool = str(bin_dir / "spark-stack")
    assert _run([tool, "--version"], env, work).stdout == f"spark-stack {spark_stack.__version__}\n"
    listed = _run([tool, "presets"], env, work).stdout
    assert "qwen3.6-35b-a3b-nvfp4-redhat" in listed and "from built-in" in listed
    # The vLLM flag lists travel too: a plan checks every flag against the image's release.
    _run([tool, "init", "--preset", "qwen3.5-27b"], env, work)
    plan = _run([tool, "plan"], env, work).stdout
    assert "--max-num-batched-tokens 8192" in plan
    stack_file, _ = demo_copy
    demo = _run([tool, "demo", "--stack", str(stack_file), "--down"], env, work).stdout
    assert "the demo works" in demo and "answer: 204" in demo
