"""Settings every test gets: its own spark-stack state dir and tools that never phone home.

``SPARK_STACK_HOME`` is a private directory for the whole session and a fresh one per test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set at import, before any test module imports litellm or starts a CLI.
HERMETIC_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "DISABLE_TELEMETRY": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
}
for _name, _value in HERMETIC_ENV.items():
    os.environ.setdefault(_name, _value)
# `up` asks the Hugging Face Hub for a model's size (the download total): never from a test.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["SPARK_STACK_OFFLINE"] = "1"

# Session-scoped fixtures run before any per-test override: give them a private state dir too,
# so no test run ever writes into the real user's spark-stack state.
SESSION_STATE = Path(tempfile.mkdtemp(prefix="spark-stack-tests-"))
os.environ["SPARK_STACK_HOME"] = str(SESSION_STATE)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SESSION_STATE, ignore_errors=True)


@pytest.fixture(autouse=True)
def spark_stack_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test writes its spark-stack state into a fresh directory of its own."""
    home = tmp_path / "spark-stack-home"
    monkeypatch.setenv("SPARK_STACK_HOME", str(home))
    # User presets live under $XDG_CONFIG_HOME: never read the real user's.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    yield home


@pytest.fixture
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty ``HOME`` (and XDG dirs inside it) for code that reads or writes ``~``."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    for name, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
    ):
        monkeypatch.setenv(name, str(home / sub))
    return home
