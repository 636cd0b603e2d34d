"""Shared pieces of the CLI: the Typer app, global options, output helpers."""

from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from rich.console import Console
    from typer import _click as click

    from ..stack.loader import LoadedStack

# Placeholders in `--help` for values whose option names do not say them well; any other option
# or argument shows its name in capitals (never typer's Python types: <str>, <list[str]>).
METAVARS = {
    "stack": "PATH", "config": "PATH", "output": "PATH", "path": "PATH",
    "host": "HOST", "port": "PORT", "preset": "PRESET", "model": "MODEL",
    "timeout": "SECONDS", "interval": "SECONDS", "wait_lock": "SECONDS",
    "count": "N", "requests": "N", "tail": "N", "max_tokens": "N",
    "concurrency": "N,N…", "sizes": "SIZE,SIZE…", "skip_preflight": "CHECK",
}


def name_placeholders(command: click.Command) -> None:
    """Give every option that takes a value, and every argument, a metavar (recursively)."""
    for param in command.params:
        if param.metavar is None and not getattr(param, "is_flag", False) and param.name:
            param.metavar = METAVARS.get(param.name, param.name.upper())
        if param.param_type_name == "argument":
            # typer prints an argument's Python type after its name ("MODEL <str>").
            param.__dict__["display_type_rich"] = _no_type
    for sub in getattr(command, "commands", {}).values():
        name_placeholders(sub)


def _no_type(ctx: click.Context) -> None:
    return None


class SparkGroup(TyperGroup):
    """The root command: plain placeholders, and whole one-line command summaries."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        name_placeholders(self)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click cuts each summary to fit one line ("Check the stack file: exit 0 …"); show the
        # docstring's whole first sentence, wrapped, instead.
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    cls=SparkGroup,
    name="spark-stack",
    help="Run Claude Code on a self-hosted model served by vLLM on a DGX Spark, "
    "from one stack file.",
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
    # Plain click help: typer's rich help formatter alone costs ~0.3 s of imports.
    rich_markup_mode=None,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish)
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class CliState:
    stack: str | None = None
    debug: bool = False
    json: bool = False
    exit_code: int = 0


state = CliState()

StackOption = Annotated[
    str | None,
    typer.Option(
        "--stack",
        "-s",
        help="Stack file (default ./spark-stack.yaml, env SPARK_STACK); "
        "'demo' is the built-in demo.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def _print_version(value: bool) -> None:
    # Eager and raising Exit before the group asks for a command: `spark-stack --version` works.
    if value:
        from .. import __version__

        print(f"spark-stack {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    stack: Annotated[
        str | None,
        typer.Option(
            "--stack",
            "-s",
            envvar="SPARK_STACK",
            help="Stack file (default ./spark-stack.yaml); 'demo' is the built-in demo stack.",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="SPARK_STACK_DEBUG", help="Show tracebacks on errors."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            is_eager=True,
            callback=_print_version,
            expose_value=False,
        ),
    ] = False,
) -> None:
    # One process may run several commands (tests call main() in turn): start clean.
    # (state.json is set by main() from the command line, before parsing can fail.)
    state.exit_code = 0
    state.stack = stack
    state.debug = debug


def stack_path(local: str | None) -> str | None:
    """The stack file chosen by the command's own --stack, else the global one."""
    return local or state.stack or os.environ.get("SPARK_STACK")


def load(local: str | None, *, lint: bool = True) -> LoadedStack:
    from ..stack.loader import load_stack

    return load_stack(stack_path(local), lint=lint)


def use_json(enabled: bool) -> None:
    """Remember that this command speaks JSON, so errors are JSON too."""
    state.json = enabled


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def set_exit(code: int) -> None:
    """Exit code for a command that printed its result and still must fail (e.g. unhealthy)."""
    state.exit_code = max(state.exit_code, code)


def emit_error(message: str, fix: str | None, exit_code: int, exc: BaseException) -> None:
    if state.debug:
        traceback.print_exception(exc)
    problems = getattr(exc, "problems", None)
    warnings = getattr(exc, "warnings", None) or []
    if state.json:
        # One shape for every error: `problems` and `warnings` always there, empty when none.
        payload: dict[str, Any] = {
            "message": message, "fix": fix, "exit_code": exit_code,
            "problems": [p.as_json() for p in problems or []],
            "warnings": [p.as_json() for p in warnings],
        }
        print_json({"ok": False, "error": payload})
        return
    err = console(stderr=True)
    if problems and len(problems) > 1:
        what = getattr(exc, "what", "stack file")
        err.print(f"[bold red]error:[/] {len(problems)} problems in the {what}:", markup=True)
        for problem in problems:
            err.print(f"  {problem.render()}", markup=False)
    else:
        err.print("[bold red]error:[/] ", end="", markup=True)
        err.print(message, markup=False)
    if fix:
        err.print("[yellow]fix:[/] ", end="", markup=True)
        err.print(fix, markup=False)
    for warning in warnings:
        err.print("[yellow]warning:[/] ", end="", markup=True)
        err.print(warning.render(), markup=False)

def relpath(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
