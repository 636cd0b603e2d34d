"""`spark-stack logs [MODEL] [--follow] [--tail N]`: a model's server log."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .common import StackOption, load
from .deploy_options import TrustOption


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
    from ..deploy.session import resolve_for_this_machine

    loaded = load(stack)
    deployment = resolve_for_this_machine(loaded.stack)
    # A model across hosts (or with replicas) prints each host's log under its own
    # "==> model [host] <==".
    several = (model is None and len(loaded.stack.models) > 1) or any(
        m.nodes or len(m.replicas) > 1 for m in deployment.models if model in (None, m.name))
    try:
        for name, chunk in read_logs(deployment, model, tail=tail, follow=follow,
                                     trust_host_key=trust_host_key):
            if several:
                sys.stdout.write(f"==> {name} <==\n")
            sys.stdout.write(chunk)
            if several and chunk and not chunk.endswith("\n"):
                sys.stdout.write("\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        if not follow:
            raise
        # Ctrl-C is how following ends (as for `status --watch` and `top`): exit 0.


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)
