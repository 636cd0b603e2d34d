"""How a use case tells a person what it is doing: the :class:`Reporter` protocol the CLI
renders, and a silent one for ``--json`` and library use."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .actions import Action
from .diagnose import Diagnosis
from .preflight import PreflightCheck
from .readiness import Progress


class Reporter(Protocol):
    def step(self, message: str) -> None: ...
    def action(self, action: Action) -> None: ...
    def check(self, result: PreflightCheck) -> None: ...
    def progress(self, model: str, progress: Progress) -> None: ...
    def pull(self, image: str, layer: str, status: str, current: int, total: int) -> None: ...
    def pull_done(self, image: str) -> None: ...
    def failure(self, model: str, lines: list[str], log_path: Path,
                diagnosis: Diagnosis) -> None: ...


class QuietReporter:
    """A reporter that says nothing."""

    def step(self, message: str) -> None:
        pass

    def action(self, action: Action) -> None:
        pass

    def check(self, result: PreflightCheck) -> None:
        pass

    def progress(self, model: str, progress: Progress) -> None:
        pass

    def pull(self, image: str, layer: str, status: str, current: int, total: int) -> None:
        pass

    def pull_done(self, image: str) -> None:
        pass

    def failure(self, model: str, lines: list[str], log_path: Path,
                diagnosis: Diagnosis) -> None:
        pass
