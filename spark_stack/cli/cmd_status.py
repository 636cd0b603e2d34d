"""`spark-stack status [--json] [--watch]`: the host, each model, the proxy; 4 when not healthy."""

from __future__ import annotations

import json as json_lib
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import JsonOption, StackOption, console, load, print_json, set_exit, use_json
from .deploy_options import TrustOption

if TYPE_CHECKING:
    from rich.console import Group

    from ..stack.schema import Stack

WatchOption = Annotated[
    bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C (with --json: JSON lines).")
]
IntervalOption = Annotated[
    float, typer.Option("--interval", help="Seconds between refreshes with --watch.", min=0.1)
]
# Bounds --watch for tests and scripts; hidden from --help.
CountOption = Annotated[int | None, typer.Option("--count", hidden=True, min=1)]


def status(
    stack: StackOption = None,
    json: JsonOption = False,
    trust_host_key: TrustOption = False,
    watch: WatchOption = False,
    interval: IntervalOption = 2.0,
    count: CountOption = None,
) -> None:
    """Show what runs: per model state, uptime, restarts, health, endpoint, image, drift."""
    from ..deploy.session import resolve_for_this_machine
    from ..deploy.status import exit_code
    from ..deploy.status import status as read_status

    use_json(json)
    loaded = load(stack)
    if watch:
        _watch(loaded.stack, json=json, trust_host_key=trust_host_key, interval=interval,
               count=count)
        return
    report = read_status(resolve_for_this_machine(loaded.stack), trust_host_key=trust_host_key)
    if json:
        print_json(report)
    else:
        console().print(_render(report))
    set_exit(exit_code(report))


def _watch(stack: Stack, *, json: bool, trust_host_key: bool, interval: float,
           count: int | None) -> None:
    """Redraw (or print one JSON line) every ``interval`` s; Ctrl-C ends it with exit 0."""
    from rich.live import Live

    from ..deploy.session import resolve_for_this_machine
    from ..deploy.status import exit_code
    from ..deploy.status import status as read_status

    deployment = resolve_for_this_machine(stack)
    rounds = 0
    code = 0
    try:
        if json:
            while True:
                report = read_status(deployment, trust_host_key=trust_host_key)
                sys.stdout.write(json_lib.dumps(report, default=str) + "\n")
                sys.stdout.flush()
                code, rounds = exit_code(report), rounds + 1
                if count is not None and rounds >= count:
                    break
                time.sleep(interval)
        else:
            with Live(console=console(), auto_refresh=False) as live:
                while True:
                    report = read_status(deployment, trust_host_key=trust_host_key)
                    live.update(_render(report), refresh=True)
                    code, rounds = exit_code(report), rounds + 1
                    if count is not None and rounds >= count:
                        break
                    time.sleep(interval)
    except KeyboardInterrupt:
        return  # the normal way to stop watching
    set_exit(code)


def _render(report: dict[str, Any]) -> Group:
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    lines: list[Any] = []
    verdict = "[green]healthy[/]" if report["healthy"] else "[red]NOT healthy[/]"
    lines.append(Text.from_markup(f"stack [bold]{escape(report['stack'])}[/]: {verdict}"))
    for host in report["hosts"]:
        if host["error"] is None:
            lines.append(Text.from_markup(
                f"host {escape(host['name'])} ({escape(str(host['ssh']))}): reachable"))
        else:
            where = host["ssh"] or host["address"]
            lines.append(Text.from_markup(
                f"host {escape(host['name'])} ({escape(str(where))}): "
                f"[red]unreachable[/]: {escape(str(host['error']))}"))
            if host["fix"]:
                lines.append(Text.from_markup(f"  [yellow]fix:[/] {escape(str(host['fix']))}"))
        for gpu in host["gpus"]:
            lines.append(Text(
                f"  GPU {gpu['index']} {gpu['name']}: "
                f"{gpu['memory_used_mib']}/{gpu['memory_total_mib']} MiB, "
                f"{gpu['utilization_percent']}% busy"))
    # Short columns in the table, long values (names, URLs, images) on a line of their own:
    # readable in an 80-column terminal.
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("model", no_wrap=True)
    # The JSON's words: `serves` is health + models_listed, `healthy` also wants no drift.
    for column in ("state", "serves", "healthy", "uptime", "restarts"):
        table.add_column(column, no_wrap=True)
    table.add_column("drift", overflow="fold")
    details: list[Any] = []
    # A model with replicas has one row per host: "qwen [a]", "qwen [b]".
    copies = Counter(m["name"] for m in report["models"]
                     if m.get("rank") is None and m["served_name"] is not None)
    for model in report["models"]:
        restarts = model["restarts"]
        # A node of a model across hosts: "big [b] rank 1, joined" (or "not joined").
        name = model["name"] if model.get("rank") is None else (
            f"{model['name']} [{model['host']}] rank {model['rank']}, "
            f"{'joined' if model['joined'] else 'not joined'}")
        if copies[model["name"]] > 1 and model.get("rank") is None:
            name = f"{model['name']} [{model['host']}]"
        if model["served_name"] is None and model["container"]:
            # A container beside the model's own (an interrupted replace's): named by it.
            name = f"{model['name']} ({model['container']})"
        table.add_row(
            escape(name),
            model["state"],
            _yes_no(bool(model["health"] and model["models_listed"])),
            _yes_no(bool(model["healthy"])),
            _duration(model["uptime_seconds"]),
            "-" if restarts is None else str(restarts),
            escape(", ".join(model["drift_fields"] or [])) or "-",
        )
        served = f"serves '{model['served_name']}'" if model["served_name"] else "serves ?"
        detail = f"  {name}: {served} at {model['endpoint'] or '-'}"
        if model["image"]:
            detail += f"\n    image {model['image']}"
        details.append(Text(detail))
    lines.append(table)
    lines.extend(details)
    proxy = report["proxy"]
    if proxy["running"]:
        health = "[green]healthy[/]" if proxy["healthy"] else "[red]not answering[/]"
        keys = proxy.get("keys")
        team = "" if not keys else f" · {keys} team key{'s' if keys != 1 else ''}"
        lines.append(Text.from_markup(
            f"proxy: {escape(str(proxy['url']))} (pid {proxy['pid']}) {health}{team}"))
        if proxy.get("keys_error"):
            lines.append(Text(f"  keys: {proxy['keys_error']}", style="red"))
    else:
        lines.append(Text.from_markup("proxy: [red]not running[/] (run `spark-stack up`)"))
    lines.append(Text("live load, cache hits and token rates: spark-stack top", style="dim"))
    return Group(*lines)


def _yes_no(value: bool) -> str:
    return "[green]yes[/]" if value else "[red]no[/]"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def register(app: typer.Typer) -> None:
    app.command("status")(status)
