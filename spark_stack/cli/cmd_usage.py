"""`spark-stack usage [--since DATE] [--by key|model|day] [--json|--csv]`: who used what."""

from __future__ import annotations

import csv
import sys
from dataclasses import asdict
from typing import Annotated

import typer

from .common import JsonOption, StackOption, console, load, print_json, use_json

_FIELDS = ("name", "requests", "input_tokens", "cached_input_tokens", "output_tokens",
           "errors", "wait_seconds")


def usage(
    since: Annotated[
        str | None, typer.Option("--since", metavar="DATE",
                                 help="From this day or time on (UTC, YYYY-MM-DD[THH:MM]).")
    ] = None,
    by: Annotated[
        str, typer.Option("--by", metavar="key|model|day", help="Group by key, model or day.")
    ] = "key",
    stack: StackOption = None,
    json: JsonOption = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout.")] = False,
) -> None:
    """Requests, tokens (input, cached, output), errors and queue time per key, model or day."""
    from rich.table import Table

    from ..errors import UsageError
    from ..paths import stack_dir
    from ..team import GROUPINGS, usage_report

    use_json(json)
    if by not in GROUPINGS:
        raise UsageError(f"--by {by!r} is not one of {', '.join(GROUPINGS)}",
                         fix="use --by key, --by model or --by day")
    name = load(stack, lint=False).stack.name
    report = usage_report(stack_dir(name), name, by, since)
    rows = [asdict(line) for line in report.lines]
    if json:
        print_json({"by": report.by, "since": report.since, "complete": not report.incomplete,
                    "incomplete": report.incomplete, "rows": rows})
        return
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        return
    out = console()
    if not rows:
        out.print("no requests recorded" + (f" since {since}" if since else ""), markup=False)
    else:
        table = Table(by, "requests", "input", "cached", "output", "errors", "queued s")
        for row in rows:
            table.add_row(*(str(row[f]) for f in _FIELDS))
        out.print(table)
    for note in report.incomplete:
        out.print(f"incomplete: {note}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)
