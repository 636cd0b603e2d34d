"""`spark-stack plan`: what `up` would run, from the stack file alone (secrets masked)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import (
    JsonOption,
    StackOption,
    console,
    load,
    print_json,
    set_exit,
    use_json,
)
from .deploy_options import TrustOption

if TYPE_CHECKING:
    from rich.console import Console

    from ..render import ModelPlan, PlanDocument


def plan(
    stack: StackOption = None,
    json: JsonOption = False,
    diff: Annotated[
        bool, typer.Option("--diff", help="Also compare with what runs on the host (SSH).")
    ] = False,
    trust_host_key: TrustOption = False,
) -> None:
    """Show each model's docker run and vLLM flags, the proxy routes and the launcher."""
    from ..deploy.session import resolve_for_this_machine
    from ..errors import EXIT_UNREACHABLE
    from ..render import plan_document

    use_json(json)
    loaded = load(stack)
    deployment = resolve_for_this_machine(loaded.stack)
    document = plan_document(loaded, deployment)
    host_diff = None
    local_diff = None
    if diff:
        from ..deploy.plan_diff import host_diff as compare_with_host
        from ..deploy.simulators import plan_simulators

        host_diff = compare_with_host(deployment, trust_host_key=trust_host_key)
        local_diff = [{"model": a.model, "action": a.kind, "reason": a.reason,
                       "changed": list(a.changed)} for a in plan_simulators(deployment)]
    unreachable = [h for h in host_diff or [] if not h["reachable"]]
    if json:
        data = document.to_json()
        if host_diff is not None:
            data["host_diff"] = host_diff
            data["local_diff"] = local_diff
        print_json(data)
    else:
        if unreachable:  # said first, so it is not lost below the plan
            _print_unreachable(unreachable, console(stderr=True))
        print_plan(document, console())
        if host_diff is not None:
            print_host_diff(host_diff, console())
        if local_diff:
            out = console()
            out.print()
            out.print("[bold]against this machine (simulators)[/]", markup=True)
            _print_actions(local_diff, out)
    if unreachable:
        set_exit(EXIT_UNREACHABLE)


def _print_unreachable(entries: list[dict[str, Any]], out: Console) -> None:
    from rich.markup import escape

    for entry in entries:
        out.print(f"[red]error:[/] host {escape(entry['host'])} ({escape(entry['address'])}) "
                  f"is unreachable: {escape(str(entry['error']))}", markup=True)
        if entry.get("fix"):
            out.print(f"  fix: {escape(str(entry['fix']))}", markup=True)


def print_host_diff(diff: list[dict[str, Any]], out: Console) -> None:
    from rich.markup import escape

    for entry in diff:
        out.print()
        out.print(f"[bold]against host {escape(entry['host'])} ({escape(entry['address'])})[/]",
                  markup=True)
        if not entry["reachable"]:
            out.print(f"  [red]unreachable[/]: {escape(str(entry['error']))}", markup=True)
            continue
        _print_actions(entry["actions"], out)


def _print_actions(actions: list[dict[str, Any]], out: Console) -> None:
    from rich.markup import escape

    style = {"create": "green", "replace": "yellow", "remove": "red", "keep": "dim"}
    for action in actions:
        mark = {"create": "+", "replace": "~", "remove": "-", "keep": "="}[action["action"]]
        out.print(f"  [{style[action['action']]}]{mark} {action['action']:<7}[/] "
                  f"{escape(action['model'])}: {escape(action['reason'])}", markup=True)


def print_plan(document: PlanDocument, out: Console) -> None:
    from rich.text import Text

    def text(line: str = "") -> None:
        out.print(line, markup=False)

    def head(line: str) -> None:
        out.print(Text(line, style="bold"))

    text(f"stack '{document.stack}' ({document.file})")
    for model in document.models:
        text()
        head(f"model {model.name} ({model.kind})")
        _print_model(model, text)
    text()
    head(f"proxy on {document.proxy_listen} (token: {document.proxy_token})")
    width = max(len(row.pattern) for row in document.routes) if document.routes else 0
    for row in document.routes:
        text(f"  {row.pattern:<{width}}  → {row.model} as '{row.served_name}' at "
             f"{row.upstream}  ({row.source})")
    text()
    head(f"launcher {document.launcher.path}")
    for name, value in document.launcher.env:
        text(f"  {name}={value}")
    if document.warnings:
        text()
        head(f"{len(document.warnings)} warning(s)")
        for problem in document.warnings:
            out.print("[yellow]warning:[/] ", end="", markup=True)
            text(problem.render())


def _print_model(model: ModelPlan, text: Callable[[str], None]) -> None:
    text(f"  serves '{model.served_name}' at {model.upstream}")
    if model.host:
        text(f"  host: {model.host}")
    if model.docker_run is None:
        if model.kind == "remote":
            text(f"  already running; spark-stack only proxies to it (api key: {model.api_key})")
        return
    text(f"  image: {model.image} (flags checked against vLLM {model.vllm_flags_version})")
    text(f"  api key: {model.api_key}")
    if model.nodes:
        text(f"  across {len(model.nodes)} hosts (workers start first, then the head):")
        for node in model.nodes:
            text(f"  node {node.rank}: {node.role} on {node.host}, link {node.link}")
            text(f"    container: {node.container}")
            for name, value in node.env.items():
                text(f"    env {name}={value}")
            text("    docker run:")
            text(f"      {node.docker_run}")
        text("  vllm serve argv (the head's):")
        for line in _argv_lines(model.vllm_argv):
            text(f"    {line}")
        return
    text(f"  container: {model.container} (spec hash {model.spec_hash})")
    for name, value in model.env.items():
        text(f"  env {name}={value}")
    if model.replicas:
        text(f"  {len(model.replicas)} replicas (each session sticks to one; `up` replaces "
             "them one at a time):")
        for replica in model.replicas:
            weight = "" if replica.weight == 1 else f", weight {replica.weight:g}"
            text(f"  replica on {replica.host}{weight}, serves at {replica.upstream}")
            text("    docker run:")
            text(f"      {replica.docker_run}")
    else:
        text("  docker run:")
        text(f"    {model.docker_run}")
    text("  vllm serve argv:")
    for line in _argv_lines(model.vllm_argv):
        text(f"    {line}")


def _argv_lines(argv: list[str]) -> list[str]:
    """One line per flag with its values, shell-quoted."""
    lines: list[list[str]] = []
    for token in argv:
        if token.startswith("--") or not lines:
            lines.append([token])
        else:
            lines[-1].append(token)
    return [" ".join(shlex.quote(t) for t in line) for line in lines]


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
