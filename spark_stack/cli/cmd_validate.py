"""`spark-stack validate`: check the stack file; every problem listed, warnings exit 0."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from .common import JsonOption, StackOption, console, load, print_json, use_json

if TYPE_CHECKING:
    from ..errors import Problem


def validate(stack: StackOption = None, json: JsonOption = False) -> None:
    """Check the stack file: exit 0 (warnings listed) or 2 (every problem listed)."""
    use_json(json)
    loaded = load(stack)
    models = [m.name for m in loaded.stack.models]
    if json:
        print_json({
            "ok": True,
            "file": loaded.filename,
            "stack": loaded.stack.name,
            "models": models,
            "warnings": [p.as_json() for p in loaded.warnings],
        })
        return
    count = len(loaded.warnings)
    out = console()
    out.print("[green]ok:[/] ", end="", markup=True)
    out.print(
        f"{loaded.filename}: stack '{loaded.stack.name}', "
        f"{len(models)} model{'s' if len(models) != 1 else ''}, "
        f"{count} warning{'s' if count != 1 else ''}",
        markup=False,
    )
    print_warnings(loaded.warnings)


def print_warnings(warnings: list[Problem]) -> None:
    out = console()
    for problem in warnings:
        out.print("[yellow]warning:[/] ", end="", markup=True)
        out.print(problem.render(), markup=False)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
