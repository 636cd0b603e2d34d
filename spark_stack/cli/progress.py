"""Progress of ``up``/``down`` for people: steps, preflight results, phases, pulls, failures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from ..deploy.actions import Action
    from ..deploy.diagnose import Diagnosis
    from ..deploy.preflight import PreflightCheck


class RichReporter:
    """Progress for people: steps, preflight results, phases with elapsed time, pulls."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._phases: dict[str, str] = {}

    def step(self, message: str) -> None:
        self.out.print(f"[dim]·[/] {escape(message)}", markup=True)

    def action(self, action: Action) -> None:
        style = {"create": "green", "replace": "yellow", "remove": "red", "keep": "dim"}
        self.out.print(
            f"  [{style[action.kind]}]{action.kind:<7}[/] {escape(action.model)}: "
            f"{escape(action.reason)}", markup=True)

    def check(self, result: PreflightCheck) -> None:
        mark = "[green]ok[/]  " if result.ok else "[red]FAIL[/]"
        self.out.print(f"  {mark} {result.name:<8} {escape(result.message)}", markup=True)

    def phase(self, model: str, phase: str, elapsed: float) -> None:
        if self._phases.get(model) == phase:
            return
        self._phases[model] = phase
        colour = "green" if phase == "ready" else "cyan"
        self.out.print(f"  {escape(model)}: [{colour}]{phase}[/] [dim]({elapsed:.1f} s)[/]",
                       markup=True)

    def pull(self, image: str, layer: str, status: str, current: int, total: int) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        if not layer or not total:
            return
        if self._progress is None:
            self._progress = Progress(TextColumn("  {task.description}"), BarColumn(),
                                      DownloadColumn(), console=self.out, transient=True)
            self._progress.start()
        task = self._tasks.get(layer)
        if task is None:
            task = self._progress.add_task(f"{layer[:12]} {status}", total=total)
            self._tasks[layer] = task
        self._progress.update(task, completed=current, total=total,
                              description=f"{layer[:12]} {status}")

    def pull_done(self, image: str) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()
        self.out.print(f"  pulled {escape(image)}", markup=True)

    def failure(self, model: str, lines: list[str], log_path: Path,
                diagnosis: Diagnosis) -> None:
        err = self.out
        err.print(f"[bold red]{escape(model)} failed.[/] Last {len(lines)} log lines:",
                  markup=True)
        for line in lines:
            err.print(f"  | {line}", markup=False, highlight=False)
        err.print(f"[bold]diagnosis:[/] {escape(diagnosis.message)}", markup=True)
        err.print(f"full log saved to {log_path}", markup=False)


def escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
