"""A model that did not become ready: save its whole log, show the tail and the diagnosis,
raise :class:`~spark_stack.errors.NotHealthy` (exit 4)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from ..errors import NotHealthy
from ..paths import stack_dir, write_private
from .readiness import Failed
from .report import Reporter

FAILURE_TAIL = 25


def save_failure_log(stack: str, model: str, text: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = stack_dir(stack) / "logs" / f"{model}-{stamp}.log"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, text)
    return path


def fail(stack: str, model: str, full_log: str, outcome: Failed,
         reporter: Reporter, *, note: str | None = None) -> NoReturn:
    path = save_failure_log(stack, model, full_log)
    lines = full_log.splitlines()[-FAILURE_TAIL:]
    reporter.failure(model, lines, path, outcome.diagnosis)
    what = {"exited": "failed to start", "timeout": "did not become ready",
            "bad answer": "answers wrongly"}.get(outcome.reason, "failed")
    after = f"; {note}" if note else ""
    raise NotHealthy(
        f"model {model} {what} after {outcome.elapsed:.1f} s: {outcome.diagnosis.message} "
        f"(full log: {path}){after}",
        fix=outcome.diagnosis.fix,
    )
