"""Progress of ``up``/``down`` for people: steps, preflight results, phases, pulls, failures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.progress import Progress, TaskID

    from ..deploy.actions import Action
    from ..deploy.diagnose import Diagnosis
    from ..deploy.preflight import PreflightCheck
    from ..deploy.readiness import Progress as StartProgress


# Without a terminal (CI, a log file) the moving clock becomes a line this often.
PLAIN_EVERY = 30.0


def describe(progress: StartProgress) -> str:
    """``loading weights 2m31s`` / ``downloading 12.3 GB of 21.0 GB 4m02s`` (pure)."""
    text = progress.phase
    if progress.phase == "downloading" and progress.downloaded is not None:
        text += f" {_gb(progress.downloaded)}"
        if progress.download_total:
            text += f" of {_gb(progress.download_total)}"
    return f"{text} {clock(progress.elapsed)}"


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"


class JsonEvents:
    """``--json``: the same progress as one JSON object per line on stderr (phase changes, and
    a tick every TICK_EVERY seconds), so a script sees a long start moving."""

    TICK_EVERY = 10.0

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def _emit(self, event: dict[str, object]) -> None:
        import json
        import sys

        sys.stderr.write(json.dumps(event) + "\n")
        sys.stderr.flush()

    def step(self, message: str) -> None:
        self._emit({"event": "step", "message": message})

    def action(self, action: Action) -> None:
        self._emit({"event": "action", "model": action.model, "action": action.kind,
                    "reason": action.reason})

    def check(self, result: PreflightCheck) -> None:
        self._emit({"event": "check", "check": result.name, "ok": result.ok,
                    "message": result.message})

    def progress(self, model: str, progress: StartProgress) -> None:
        if not progress.changed and progress.elapsed - self._last.get(model, 0.0) \
                < self.TICK_EVERY:
            return
        self._last[model] = progress.elapsed
        self._emit({"event": "phase" if progress.changed else "tick", "model": model,
                    "phase": progress.phase, "elapsed_seconds": round(progress.elapsed, 1),
                    "downloaded_bytes": progress.downloaded,
                    "download_total_bytes": progress.download_total})

    def pull(self, image: str, layer: str, status: str, current: int, total: int) -> None:
        pass

    def pull_done(self, image: str) -> None:
        self._emit({"event": "pulled", "image": image})

    def failure(self, model: str, lines: list[str], log_path: Path,
                diagnosis: Diagnosis) -> None:
        self._emit({"event": "failure", "model": model, "diagnosis": diagnosis.message,
                    "fix": diagnosis.fix, "log_file": str(log_path), "last_lines": lines})


class RichReporter:
    """Progress for people: steps, preflight results, phases with elapsed time, pulls."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._live: Live | None = None
        self._last_plain: dict[str, float] = {}

    def step(self, message: str) -> None:
        self.out.print(f"[dim]·[/] {escape(message)}", markup=True)

    def action(self, action: Action) -> None:
        style = {"create": "green", "replace": "yellow", "remove": "red", "keep": "dim"}
        self.out.print(
            f"  [{style[action.kind]}]{action.kind:<7}[/] {escape(action.node)}: "
            f"{escape(action.reason)}", markup=True)

    def check(self, result: PreflightCheck) -> None:
        mark = "[green]ok[/]  " if result.ok else "[red]FAIL[/]"
        self.out.print(f"  {mark} {result.name:<8} {escape(result.message)}", markup=True)

    def progress(self, model: str, progress: StartProgress) -> None:
        """A line per phase; in between, a live line whose clock moves (a terminal) or a plain
        line every PLAIN_EVERY seconds (a log file, CI)."""
        if progress.changed or progress.phase == "ready":
            self._stop_live()
            colour = "green" if progress.phase == "ready" else "cyan"
            self.out.print(f"  {escape(model)}: [{colour}]{progress.phase}[/] "
                           f"[dim]({progress.elapsed:.1f} s)[/]", markup=True)
            self._last_plain[model] = progress.elapsed
            if progress.phase == "ready":
                return
        line = f"  {model}: {describe(progress)}"
        if self.out.is_terminal:
            from rich.live import Live
            from rich.text import Text

            if self._live is None:
                self._live = Live(console=self.out, transient=True, auto_refresh=False)
                self._live.start()
            self._live.update(Text(line, style="dim"), refresh=True)
        elif progress.elapsed - self._last_plain.get(model, 0.0) >= PLAIN_EVERY:
            self._last_plain[model] = progress.elapsed
            self.out.print(line, markup=False, highlight=False)

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

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
        self._stop_live()
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
