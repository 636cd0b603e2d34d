"""`spark-stack status [--json]`: the host, each model, the proxy; exit 4 when not healthy."""

from __future__ import annotations

from typing import Any

import typer

from ..errors import EXIT_UNHEALTHY, EXIT_UNREACHABLE
from .cmd_up import TrustOption
from .common import JsonOption, StackOption, console, load, print_json, set_exit, use_json


def status(
    stack: StackOption = None, json: JsonOption = False, trust_host_key: TrustOption = False
) -> None:
    """Show what runs: per model state, uptime, restarts, health, endpoint, image, drift."""
    from ..deploy.status import status as read_status

    use_json(json)
    loaded = load(stack)
    report = read_status(loaded.stack, trust_host_key=trust_host_key)
    if json:
        print_json(report)
    else:
        _print(report)
    if any(not h["reachable"] for h in report["hosts"]):
        set_exit(EXIT_UNREACHABLE)
    elif not report["healthy"]:
        set_exit(EXIT_UNHEALTHY)


def _print(report: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    verdict = "[green]healthy[/]" if report["healthy"] else "[red]NOT healthy[/]"
    out.print(f"stack [bold]{escape(report['stack'])}[/]: {verdict}", markup=True)
    for host in report["hosts"]:
        if host["reachable"]:
            out.print(f"host {escape(host['name'])} ({escape(host['ssh'])}): reachable",
                      markup=True)
        else:
            out.print(f"host {escape(host['name'])} ({escape(host['address'])}): "
                      f"[red]unreachable[/]: {escape(str(host['error']))}", markup=True)
        for gpu in host["gpus"]:
            out.print(f"  GPU {gpu['index']} {escape(gpu['name'])}: "
                      f"{gpu['memory_used_mib']}/{gpu['memory_total_mib']} MiB, "
                      f"{gpu['utilization_percent']}% busy", markup=True)
    table = Table(show_edge=False, pad_edge=False)
    for column in ("model", "state", "health", "uptime", "restarts", "served name",
                   "endpoint", "image", "drift"):
        table.add_column(column, overflow="fold")
    for model in report["models"]:
        uptime = model.get("uptime_seconds")
        table.add_row(
            model["name"],
            model["state"],
            "[green]ok[/]" if model.get("healthy") else "[red]no[/]",
            _duration(uptime),
            str(model.get("restarts", 0)),
            escape(str(model.get("served_name") or "")),
            escape(str(model.get("endpoint") or "")),
            escape(str(model.get("image") or "")),
            escape(", ".join(model.get("drift_fields") or [])) or "-",
        )
    out.print(table)
    proxy = report["proxy"]
    if proxy["running"]:
        health = "[green]healthy[/]" if proxy["healthy"] else "[red]not answering[/]"
        out.print(f"proxy: {escape(str(proxy['url']))} (pid {proxy['pid']}) {health}",
                  markup=True)
    else:
        out.print("proxy: not running", markup=True)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def register(app: typer.Typer) -> None:
    app.command("status")(status)
