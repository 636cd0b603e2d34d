"""`spark-stack up`: bring the stack's models, the proxy and the launcher to the desired state."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import JsonOption, StackOption, console, load, print_json, relpath, use_json

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from ..deploy.actions import Action
    from ..deploy.diagnose import Diagnosis
    from ..deploy.preflight import CheckResult

TrustOption = Annotated[
    bool,
    typer.Option("--trust-host-key",
                 help="Accept an unknown SSH host key and add it to ~/.ssh/known_hosts."),
]
WaitLockOption = Annotated[
    float,
    typer.Option("--wait-lock", metavar="SECONDS",
                 help="Wait this long for another up/down on the same stack to finish."),
]


class RichReporter:
    """Progress for people: steps, preflight results, phases with elapsed time, pulls."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._phases: dict[str, str] = {}

    def step(self, message: str) -> None:
        self.out.print(f"[dim]·[/] {_escape(message)}", markup=True)

    def action(self, action: Action) -> None:
        style = {"create": "green", "replace": "yellow", "remove": "red", "keep": "dim"}
        self.out.print(
            f"  [{style[action.kind]}]{action.kind:<7}[/] {_escape(action.model)}: "
            f"{_escape(action.reason)}", markup=True)

    def check(self, result: CheckResult) -> None:
        mark = "[green]ok[/]  " if result.ok else "[red]FAIL[/]"
        self.out.print(f"  {mark} {result.name:<8} {_escape(result.message)}", markup=True)

    def phase(self, model: str, phase: str, elapsed: float) -> None:
        if self._phases.get(model) == phase:
            return
        self._phases[model] = phase
        colour = "green" if phase == "ready" else "cyan"
        self.out.print(f"  {_escape(model)}: [{colour}]{phase}[/] [dim]({elapsed:.1f} s)[/]",
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
        self.out.print(f"  pulled {_escape(image)}", markup=True)

    def failure(self, model: str, lines: list[str], log_path: Path,
                diagnosis: Diagnosis) -> None:
        err = self.out
        err.print(f"[bold red]{_escape(model)} failed.[/] Last {len(lines)} log lines:",
                  markup=True)
        for line in lines:
            err.print(f"  | {line}", markup=False, highlight=False)
        err.print(f"[bold]diagnosis:[/] {_escape(diagnosis.message)}", markup=True)
        err.print(f"full log saved to {log_path}", markup=False)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def up(
    stack: StackOption = None,
    json: JsonOption = False,
    trust_host_key: TrustOption = False,
    skip_preflight: Annotated[
        list[str] | None,
        typer.Option("--skip-preflight", metavar="CHECK",
                     help="Skip a preflight check (repeatable): docker, nvidia, gpus, arch, "
                     "disk, port, memory, hf_token."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", metavar="SECONDS",
                     help="Readiness timeout per model (default: its readiness_timeout, 900)."),
    ] = None,
    wait_lock: WaitLockOption = 0.0,
    pull: Annotated[
        bool, typer.Option("--pull", help="Pull every image first; a moved tag replaces.")
    ] = False,
    no_proxy: Annotated[
        bool, typer.Option("--no-proxy", help="Do not start the proxy or write the launcher.")
    ] = False,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="Then run every `spark-stack smoke` check (exit 4 "
                           "if one fails); with --json print the smoke report.")
    ] = False,
) -> None:
    """Deploy the stack: containers on the host, simulators, the proxy and the launcher."""
    from ..deploy.engine import QuietReporter, UpOptions
    from ..deploy.engine import up as run_up
    from .common import stack_path

    use_json(json)
    loaded = load(stack)
    out = console(stderr=True) if json else console()
    reporter = QuietReporter() if json else RichReporter(out)
    options = UpOptions(
        trust_host_key=trust_host_key,
        skip_preflight=frozenset(skip_preflight or ()),
        timeout=timeout,
        wait_lock=wait_lock,
        pull=pull,
        start_proxy=not no_proxy,
        stack_file=stack_path(stack) and relpath(loaded.path),
    )
    if not json:
        out.print(f"stack [bold]{_escape(loaded.stack.name)}[/] ({relpath(loaded.path)})",
                  markup=True)
    if smoke:
        from .cmd_smoke import smoke_after_up

        smoke_after_up(loaded, options, as_json=json)
        return
    result = run_up(loaded.stack, options, reporter)
    if json:
        print_json(_result_json(loaded.stack.name, result))
        return
    if not result.changed:
        out.print(f"[green]up to date[/] ({result.elapsed:.1f} s)", markup=True)
    else:
        out.print(f"[green]ready[/] ({result.elapsed:.1f} s)", markup=True)
    for name, endpoint in result.endpoints.items():
        out.print(f"  {name}: {endpoint.base_url}", markup=False)
    if result.proxy_url:
        out.print(f"proxy: {result.proxy_url}", markup=False)
    if result.launcher:
        out.print(f"launcher: {result.launcher}", markup=False)


def _result_json(stack: str, result: Any) -> dict[str, Any]:
    return {
        "ok": True,
        "stack": stack,
        "changed": result.changed,
        "actions": [
            {"model": a.model, "action": a.kind, "reason": a.reason, "changed": list(a.changed)}
            for a in result.actions
        ],
        "endpoints": {name: e.base_url for name, e in result.endpoints.items()},
        "ready_seconds": {k: round(v, 2) for k, v in result.ready.items()},
        "proxy_url": result.proxy_url,
        "launcher": str(result.launcher) if result.launcher else None,
        "elapsed_seconds": round(result.elapsed, 2),
    }


def register(app: typer.Typer) -> None:
    app.command("up")(up)
