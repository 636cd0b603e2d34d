"""`spark-stack export litellm`: the stack as a LiteLLM config, for users who keep LiteLLM."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import StackOption, console, load, relpath

export_app = typer.Typer(
    help="Write the stack in another tool's format.", no_args_is_help=True
)


@export_app.command("litellm")
def litellm(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to FILE instead of stdout.", show_default=False),
    ] = None,
    stack: StackOption = None,
) -> None:
    """A litellm_config.yaml equivalent of the stack (hosted_vllm/ models, keys by env)."""
    from ..deploy.session import resolve_for_this_machine
    from ..export_litellm import render_litellm_config
    from ..paths import write_atomic

    the_stack = load(stack).stack
    text = render_litellm_config(
        the_stack,
        # An ~/.ssh/config alias means nothing to LiteLLM: it dials the HostName.
        resolve_for_this_machine(the_stack),
        shlex.quote(relpath(output)) if output is not None else "litellm_config.yaml",
    )
    if output is None:
        sys.stdout.write(text)
        return
    # Keys are env references, never values, so the file is not secret.
    write_atomic(output, text)
    console(stderr=True).print(f"wrote {relpath(output)}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
