"""`spark-stack bench`: TTFT and decode rate, direct to vLLM and through the proxy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .common import JsonOption, StackOption, console, load, print_json, set_exit, use_json

if TYPE_CHECKING:
    from rich.table import Table

    from ..bench import BenchReport, Cell


def bench(
    stack: StackOption = None,
    json: JsonOption = False,
    requests: Annotated[
        int, typer.Option("--requests", "-n", help="Requests per path and cell.", min=1)
    ] = 8,
    concurrency: Annotated[
        str, typer.Option("--concurrency", "-c", help="Comma list of concurrency levels.")
    ] = "1,4",
    sizes: Annotated[
        str,
        typer.Option("--sizes", help="Comma list of prompt sizes: short, or tokens like 8k."),
    ] = "short,8k,25k",
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Output tokens asked per request.", min=2)
    ] = 128,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Only this model (repeatable).", show_default=False),
    ] = None,
) -> None:
    """Measure the source document's latency table on the running stack.

    For each model, prompt size and concurrency level: time to first token (p50/p90) and
    decode tokens/s, straight to vLLM and through the proxy, and what the proxy adds. Every
    prompt is unique, so vLLM's prefix cache never hides prefill. Exit 4 if a request fails.
    """
    from ..bench import parse_concurrency, parse_sizes, run_bench
    from ..deploy.session import resolve_for_this_machine
    from ..errors import NotHealthy, UsageError
    from ..smoke.endpoints import Endpoints, running_endpoints
    from ..smoke.pipeline import stack_is_up

    use_json(json)
    loaded = load(stack)
    size_list = parse_sizes(sizes)
    levels = parse_concurrency(concurrency)
    ends = running_endpoints(resolve_for_this_machine(loaded.stack))
    if ends is None or not stack_is_up(loaded.stack):
        raise NotHealthy(
            f"stack '{loaded.stack.name}' is not up (its proxy is not running)",
            fix="run `spark-stack up` first",
        )
    if model:
        unknown = sorted(set(model) - {m.name for m in ends.models})
        if unknown:
            raise UsageError(
                f"no running model named {', '.join(unknown)}",
                fix=f"use one of: {', '.join(m.name for m in ends.models)}",
            )
        ends = Endpoints(
            ends.proxy_url, ends.proxy_token,
            tuple(m for m in ends.models if m.name in model), ends.host,
        )

    def limit(name: str) -> int | None:
        found = loaded.stack.model(name)
        return None if found is None else found.max_model_len

    out = console(stderr=True)
    if not json:
        out.print(
            f"benchmarking stack {loaded.stack.name}: {requests} request(s) per path, "
            f"sizes {sizes}, concurrency {concurrency}",
            markup=False,
        )
    report = run_bench(
        loaded.stack.name, ends, sizes=size_list, concurrency=levels, requests=requests,
        max_tokens=max_tokens, max_model_len=limit,
        on_cell=None if json else lambda cell: out.print(_progress(cell), markup=False),
    )
    if json:
        print_json(report.to_dict())
    else:
        _print_table(report)
    if not report.ok:
        set_exit(4)


def _progress(cell: Cell) -> str:
    state = f"skipped: {cell.skipped}" if cell.skipped else f"{cell.failures} failed"
    return f"  measured {cell.model} {cell.size} c={cell.concurrency} ({state})"


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}"


def _pair(p50: float | None, p90: float | None) -> str:
    return "-" if p50 is None else f"{_fmt(p50)} / {_fmt(p90)}"


# Two-line headers and no-wrap numbers keep the table inside 80 columns; the model names
# (long, and the same down a table) head one table each, and reasons go below the table.
_COLUMNS = (
    ("prompt", "left"), ("tokens", "right"), ("c", "right"),
    ("TTFT direct\np50/p90 ms", "right"), ("TTFT proxy\np50/p90 ms", "right"),
    ("proxy\nadds", "right"), ("decode tok/s\ndirect/proxy", "right"), ("failed", "right"),
)


def _print_table(report: BenchReport) -> None:
    out = console()
    out.print(
        f"TTFT and decode rate: stack {report.stack}, {report.requests} request(s) per path, "
        f"{report.max_tokens} output tokens", markup=False)
    models = list(dict.fromkeys(cell.model for cell in report.cells))
    for model in models:
        cells = [cell for cell in report.cells if cell.model == model]
        out.print(f"\nmodel {model}", markup=False)
        out.print(_table(cells))
        for cell in cells:
            where = f"  {cell.size} c={cell.concurrency}"
            if cell.skipped:
                out.print(f"{where} skipped: {cell.skipped}", markup=False)
            for path, stats in cell.stats.items():
                for error in stats.errors:
                    out.print(f"{where} {path}: {error}", markup=False)
    out.print(f"{report.total_s:.1f} s", markup=False)


def _table(cells: list[Cell]) -> Table:
    from rich import box
    from rich.table import Table

    from ..bench import percentile

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    for header, justify in _COLUMNS:
        table.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for cell in cells:
        direct, proxy = cell.stats["direct"], cell.stats["proxy"]
        if cell.skipped:
            table.add_row(cell.size, "-", str(cell.concurrency), "skipped", "", "", "", "")
            continue
        added = cell.proxy_added_ms()
        tokens = direct.to_dict()["prompt_tokens"] or proxy.to_dict()["prompt_tokens"]
        table.add_row(
            cell.size,
            _fmt(tokens),
            str(cell.concurrency),
            _pair(percentile(direct.ttft_ms, 50), percentile(direct.ttft_ms, 90)),
            _pair(percentile(proxy.ttft_ms, 50), percentile(proxy.ttft_ms, 90)),
            "-" if added is None else f"{added:+.1f} ms",
            f"{_fmt(percentile(direct.decode_tps, 50))} / {_fmt(percentile(proxy.decode_tps, 50))}",
            str(cell.failures) if cell.failures else "",
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
