"""`spark-stack doctor [--json]`: check the link between the hosts of a model across hosts."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonOption, StackOption, console, load, print_json, set_exit, use_json
from .deploy_options import TrustOption


def doctor(
    stack: StackOption = None,
    json: JsonOption = False,
    trust_host_key: TrustOption = False,
    bandwidth: Annotated[bool, typer.Option(
        "--bandwidth", help="Also time a short TCP transfer between the hosts over the link "
        "(GB/s against the ~24 GB/s NCCL reaches).")] = False,
) -> None:
    """Check the link between two Sparks before deploying: interfaces, addresses, MTU, each
    host reaching the other over the link, the image and the model files on every node."""
    from rich.markup import escape

    from ..deploy.doctor import as_json
    from ..deploy.doctor import doctor as run_doctor
    from ..deploy.session import resolve_for_this_machine
    from ..errors import EXIT_UNHEALTHY

    use_json(json)
    loaded = load(stack)
    verdicts = run_doctor(resolve_for_this_machine(loaded.stack), trust_host_key=trust_host_key,
                          bandwidth=bandwidth)
    report = as_json(verdicts)
    if json:
        print_json(report)
    else:
        out = console()
        if not verdicts:
            out.print("no model runs across hosts: nothing to check", markup=False)
        style = {"ok": "green", "warn": "yellow", "fail": "red"}
        for v in verdicts:
            out.print(f"[{style[v.level]}]{v.level:<4}[/] {escape(v.check):<11} "
                      f"{escape(v.message)}", markup=True)
            if v.fix and v.level != "ok":
                out.print(f"     fix: {escape(v.fix)}", markup=True)
    if not report["ok"]:
        set_exit(EXIT_UNHEALTHY)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
