"""`spark-stack down`: remove this stack's containers and stop its local processes."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonOption, StackOption, console, load, print_json, use_json
from .deploy_options import TrustOption, WaitLockOption
from .progress import RichReporter


def down(
    stack: StackOption = None,
    json: JsonOption = False,
    trust_host_key: TrustOption = False,
    wait_lock: WaitLockOption = 0.0,
    purge: Annotated[
        bool,
        typer.Option("--purge", help="Also remove the launcher and the stack's local secrets "
                     "and state (never the host's caches)."),
    ] = False,
) -> None:
    """Stop and remove the stack's containers (never other containers, never the caches).

    The launcher, the stack's secrets and the host's caches stay unless --purge.
    """
    from ..deploy.down import down as run_down
    from ..deploy.report import QuietReporter

    use_json(json)
    loaded = load(stack)
    out = console()
    result = run_down(loaded.stack, trust_host_key=trust_host_key, wait_lock=wait_lock,
                      reporter=QuietReporter() if json else RichReporter(out), purge=purge)
    if json:
        print_json({"ok": True, "stack": loaded.stack.name, "removed": result.removed,
                    "stopped_simulators": result.stopped_local,
                    "proxy_stopped": result.proxy_stopped, "purged": result.purged,
                    "kept": result.kept})
        return
    parts = [f"{len(result.removed)} container(s) removed"]
    if result.stopped_local:
        parts.append(f"{len(result.stopped_local)} simulator(s) stopped")
    if result.proxy_stopped:
        parts.append("proxy stopped")
    out.print(f"[green]down[/]: stack {loaded.stack.name}: " + ", ".join(parts), markup=True)
    for path in result.purged:
        out.print(f"removed {path}", markup=False)
    if result.kept:
        out.print("kept: " + "; ".join(result.kept)
                  + ("" if purge else " (`down --purge` removes all but the caches)"),
                  markup=False)


def register(app: typer.Typer) -> None:
    app.command("down")(down)
