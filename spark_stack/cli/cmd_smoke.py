"""`spark-stack smoke`: prove the deployed stack works end to end (exit 0 only if it does)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .common import JsonOption, StackOption, console, load, print_json, set_exit, use_json

# Turns of `smoke --soak` without N: enough for an intermittent parser failure to show.
DEFAULT_SOAK_TURNS = 20

if TYPE_CHECKING:
    from rich.console import Console

    from ..deploy.up import UpOptions
    from ..smoke import CheckResult, SmokeReport
    from ..smoke.pipeline import SmokeOptions
    from ..stack.loader import LoadedStack


def smoke(
    stack: StackOption = None,
    json: JsonOption = False,
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Leave the stack running when smoke brought it up itself."),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds each request may take.", min=1)
    ] = 120.0,
    trust_host_key: Annotated[
        bool, typer.Option("--trust-host-key", help="Accept an unknown SSH host key.")
    ] = False,
    soak: Annotated[
        bool,
        typer.Option("--soak", help="Then a tool-call soak: N turns (default 20) of one "
                     "agentic session with Claude Code's tools, each turn checked."),
    ] = False,
    turns: Annotated[
        int | None,
        typer.Argument(metavar="[N]", min=1, show_default=False,
                       help="Turns of the soak (`--soak N`; default 20)."),
    ] = None,
) -> None:
    """Check the stack through the proxy (Anthropic API) and straight to vLLM.

    A known-answer completion, a streamed tool call round trip, count_tokens, a thinking
    request when the model reasons, and the same completion direct to vLLM. A stack that is
    not up is brought up first and taken down after (unless --keep). Exit 0 only when every
    check passes, else 4 (or the failed `up`'s own code).
    """
    from ..deploy.up import UpOptions
    from ..smoke.pipeline import SmokeOptions

    use_json(json)
    if turns is not None and not soak:
        raise typer.BadParameter("N is the number of soak turns: give it after --soak")
    options = SmokeOptions(
        bring_up="auto", keep=keep, up=UpOptions(trust_host_key=trust_host_key), timeout=timeout,
        soak=(turns or DEFAULT_SOAK_TURNS) if soak else None,
    )
    run_smoke_command(load(stack), options, as_json=json)


def smoke_after_up(loaded: LoadedStack, up_options: UpOptions, *, as_json: bool) -> None:
    """`up --smoke`: run `up`, then every check; the stack stays up. One report, one exit."""
    from ..smoke.pipeline import SmokeOptions

    use_json(as_json)
    run_smoke_command(loaded, SmokeOptions(bring_up="always", up=up_options), as_json=as_json)


def run_smoke_command(loaded: LoadedStack, options: SmokeOptions, *, as_json: bool) -> None:
    from ..deploy.report import Reporter
    from ..smoke.pipeline import smoke_deployment
    from .progress import JsonEvents, RichReporter

    out = console(stderr=as_json)
    # With --json the report is stdout; `up`'s progress and a failed start's last log lines go
    # to stderr as events (the report's reason points at them).
    reporter: Reporter = JsonEvents() if as_json else RichReporter(out)
    report = smoke_deployment(
        loaded,
        options,
        reporter=reporter,
        on_result=None if as_json else lambda result: _print_result(out, result),
    )
    if as_json:
        print_json(report.to_dict())
    else:
        _print_summary(out, report)
    set_exit(report.exit_code)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _print_result(out: Console, result: CheckResult) -> None:
    mark = {"passed": "[green]PASS[/]", "failed": "[bold red]FAIL[/]",
            "skipped": "[yellow]skipped[/]"}[result.status]
    where = f"{result.replica or result.model}/" if result.model else ""
    ttft = f", TTFT {_ms(result.ttft_ms)}" if result.ttft_ms is not None else ""
    out.print(f"{mark} ", end="", markup=True)
    out.print(
        f"{where}{result.name} ({result.via}): {_ms(result.latency_ms)}{ttft} — {result.reason}",
        markup=False,
    )


def _print_summary(out: Console, report: SmokeReport) -> None:
    for model in report.endpoints.models:
        ttft = report.ttft_ms(model.name)
        if ttft["proxy_added"] is not None:
            out.print(
                f"{model.name}: TTFT direct {_ms(ttft['direct'])}, through the proxy "
                f"{_ms(ttft['proxy'])} (proxy adds {ttft['proxy_added']:+.1f} ms)",
                markup=False,
            )
        if model.drift_fields:
            out.print(f"{model.name}: drift in {', '.join(model.drift_fields)}", markup=False)
    if report.error:
        out.print(f"[bold red]error:[/] {report.error}", markup=True)
    if report.hint:
        out.print(f"[yellow]hint:[/] {report.hint}", markup=True)
    passed = sum(1 for c in report.checks if c.status == "passed")
    skipped = sum(1 for c in report.checks if c.skipped)
    run = len(report.checks) - skipped
    verdict = "[green]smoke passed[/]" if report.ok else "[bold red]smoke failed[/]"
    out.print(
        f"{verdict}: {passed}/{run} checks in {report.total_ms / 1000:.1f} s"
        + (f", {skipped} skipped" if skipped else ""),
        markup=True,
    )


def register(app: typer.Typer) -> None:
    app.command("smoke")(smoke)
