"""`spark-stack logs [MODEL] [--follow] [--tail N]`: a model's server log."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .cmd_up import TrustOption
from .common import StackOption, load


def logs(
    model: Annotated[str | None, typer.Argument(help="The model (default: every model).")] = None,
    stack: StackOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", "-n", metavar="N", help="Only the last N lines.")
    ] = None,
    trust_host_key: TrustOption = False,
) -> None:
    """Print the logs of the stack's models (containers and simulators)."""
    from ..deploy.logs import logs as read_logs

    loaded = load(stack)
    several = model is None and len(loaded.stack.models) > 1
    for name, chunk in read_logs(loaded.stack, model, tail=tail, follow=follow,
                                 trust_host_key=trust_host_key):
        if several:
            sys.stdout.write(f"==> {name} <==\n")
        sys.stdout.write(chunk)
        if several and chunk and not chunk.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)
