"""The ``top`` screen: figures (``spark_stack.top.figures``) → rich renderables.

A header (stack, time, keys), one line per host, one table row per model, the proxy's line,
then the selected model in detail with sparklines of its recent rates. Everything that could
not be read says so in words (``down``, ``not running``, ``unreachable``), never as a blank.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

BLOCKS = "▁▂▃▄▅▆▇█"
HISTORY = 60  # reads kept for the sparklines
KEYS = "q quit · ←/→ model"
STATE_STYLE = {"serving": "green", "running": "green"}


def sparkline(values: Iterable[float | None], width: int) -> str:
    """The last ``width`` values as block characters scaled to their maximum (blank: unknown)."""
    shown = list(values)[-width:]
    top = max((v for v in shown if v is not None), default=0.0)
    out = []
    for value in shown:
        if value is None:
            out.append(" ")
        elif top <= 0:
            out.append(BLOCKS[0])
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, int(value / top * (len(BLOCKS) - 1) + 0.5))])
    return "".join(out).rjust(width)


@dataclass
class History:
    """Recent rates per model (and the proxy) for the sparklines."""

    series: dict[tuple[str, str], deque[float | None]] = field(default_factory=dict)

    def add(self, report: Mapping[str, Any]) -> None:
        for model in report["models"]:
            self._push((model["name"], "prompt"), model["prompt_tokens_per_s"])
            self._push((model["name"], "generation"), model["generation_tokens_per_s"])
        self._push(("", "proxy"), report["proxy"]["requests_per_s"])

    def _push(self, key: tuple[str, str], value: float | None) -> None:
        self.series.setdefault(key, deque(maxlen=HISTORY)).append(value)

    def get(self, name: str, what: str) -> list[float | None]:
        return list(self.series.get((name, what), ()))


def render(report: Mapping[str, Any], history: History, selected: int, width: int,
           now: float | None = None) -> RenderableType:
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    head = Text.assemble(("spark-stack top", "bold"), f" · {report['stack']} · {clock}")
    keys = Text(KEYS, style="dim")
    pad = max(1, width - len(head.plain) - len(keys.plain))
    lines: list[RenderableType] = [Text.assemble(head, " " * pad, keys)]
    lines += [_host_line(host) for host in report["hosts"]]
    lines.append(_model_table(report["models"], selected))
    lines.append(_proxy_line(report["proxy"]))
    keys_line = _keys_line(report["proxy"].get("keys") or [], width)
    if keys_line is not None:
        lines.append(keys_line)
    if report["models"]:
        model = report["models"][selected % len(report["models"])]
        lines.append(Text(""))
        lines += _details(model, report["proxy"], history, width)
    return Group(*lines)


def _host_line(host: Mapping[str, Any]) -> Text:
    name = f"host {host['name']}" if host["name"] != "this machine" else "this machine"
    if not host["reachable"]:
        error = host["error"] or "no answer"
        style = "yellow" if error == "connecting" else "red"
        word = "connecting…" if error == "connecting" else f"unreachable: {error}"
        return Text.assemble(f"{name} ", (word, style))
    memory = host["memory"]
    parts = []
    if memory["available_bytes"] is not None and memory["total_bytes"]:
        parts.append(f"memory {_gib(memory['available_bytes'])} of "
                     f"{_gib(memory['total_bytes'])} GiB free "
                     f"({_percent(memory['available_fraction'])})")
    for gpu in host["gpus"]:
        busy = _percent(None if gpu["utilization_percent"] is None
                        else gpu["utilization_percent"] / 100)
        temp = "-" if gpu["temperature_c"] is None else f"{gpu['temperature_c']:.0f}°C"
        parts.append(f"GPU{gpu['index']} {busy} busy {temp}")
    if not host["gpus"]:
        parts.append("no GPU readable")
    return Text(f"{name}: " + " · ".join(parts))


def _model_table(models: list[Mapping[str, Any]], selected: int) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold",
                  collapse_padding=True)
    table.add_column("model", no_wrap=True, overflow="ellipsis", max_width=18)
    table.add_column("state", no_wrap=True)
    for column in ("run", "wait", "KV", "prefix", "prompt t/s", "gen t/s", "TTFT p50/p95"):
        table.add_column(column, justify="right", no_wrap=True)
    for index, model in enumerate(models):
        mark = "›" if index == selected % max(1, len(models)) else " "
        state = model["state"]
        style = STATE_STYLE.get(state, "red")
        ttft = model["ttft_seconds"]
        table.add_row(
            f"{mark}{escape(model['name'])}", f"[{style}]{escape(state)}[/]",
            _count(model["requests_running"]), _count(model["requests_waiting"]),
            _percent(model["kv_cache_usage"]),
            _percent(model["prefix_cache_hit_rate"]["recent"]),
            _rate(model["prompt_tokens_per_s"]), _rate(model["generation_tokens_per_s"]),
            f"{_ms(ttft['p50'])}/{_ms(ttft['p95'])}",
        )
    return table


def _proxy_line(proxy: Mapping[str, Any]) -> Text:
    if proxy["state"] != "running":
        hint = " (spark-stack up)" if proxy["state"] == "not running" else ""
        return Text.assemble(f"proxy {proxy['url']} ", (f"{proxy['state']}{hint}", "red"))
    errors = proxy["errors_by_type"]
    error_text = ", ".join(f"{k} {v:.0f}" for k, v in errors.items()) if errors else "none"
    return Text.assemble(
        f"proxy {proxy['url']} ", ("running", "green"),
        f" · {_rate(proxy['requests_per_s'])} req/s · errors {error_text}",
    )


def _keys_line(keys: list[Mapping[str, Any]], width: int) -> Text | None:
    """Per-key load, when the stack has a team (the owner alone shows nothing new)."""
    if not keys or [k["name"] for k in keys] == ["owner"]:
        return None
    parts = [f"{k['name']} {k['running']:.0f} run {k['queued']:.0f} queued "
             f"{_rate(k['output_tokens_per_s'])} tok/s" for k in keys]
    text = "keys " + " · ".join(parts)
    return Text(text if len(text) <= width else text[: max(1, width - 1)] + "…")


def _details(model: Mapping[str, Any], proxy: Mapping[str, Any], history: History,
             width: int) -> list[RenderableType]:
    name = model["name"]
    title = Text.assemble((name, "bold"), f" · {model['served_name']} · {model['kind']}")
    if model["state"] != "serving":
        hint = "spark-stack up, then spark-stack status" if model["state"] == "down" else (
            "check the host (spark-stack status)")
        return [title, Text.assemble(("  " + model["state"], "red"),
                                     f": {model['error'] or 'no answer'} ({hint})")]
    spark_width = max(8, min(HISTORY, width - 30))
    rows: list[RenderableType] = [title]
    for label, what, value in (
        ("prompt tok/s", "prompt", model["prompt_tokens_per_s"]),
        ("gen tok/s", "generation", model["generation_tokens_per_s"]),
    ):
        rows.append(Text(f"  {label:<13} {sparkline(history.get(name, what), spark_width)} "
                         f"{_rate(value):>8}"))
    rows.append(Text(f"  {'proxy req/s':<13} {sparkline(history.get('', 'proxy'), spark_width)} "
                     f"{_rate(proxy['requests_per_s']):>8}"))
    hits = model["prefix_cache_hit_rate"]
    rows.append(Text(f"  {'prefix hits':<13} recent {_percent(hits['recent'])} · "
                     f"since start {_percent(hits['since_start'])}"))
    recent, total = model["ttft_seconds"], model["ttft_seconds_since_start"]
    rows.append(Text(f"  {'TTFT':<13} p50 {_ms(recent['p50'])} p95 {_ms(recent['p95'])} · "
                     f"since start p50 {_ms(total['p50'])} p95 {_ms(total['p95'])}"))
    added = proxy["added_ttft_ms"].get(name) or {}
    if added.get("since_start") is not None or added.get("recent") is not None:
        rows.append(Text(f"  {'proxy adds':<13} {_signed_ms(added.get('recent'))} recent · "
                         f"{_signed_ms(added.get('since_start'))} since start (TTFT)"))
    spec = model["spec_decode"]
    if spec is not None:
        rows.append(Text(
            f"  {'spec decode':<13} acceptance {_percent(spec['acceptance_rate']['recent'])} · "
            f"since start {_percent(spec['acceptance_rate']['since_start'])} · "
            f"{_number(spec['mean_acceptance_length']['since_start'])} tokens/step"))
    bar_width = max(10, min(40, width - 30))
    usage = model["kv_cache_usage"]
    filled = 0 if usage is None else round(usage * bar_width)
    rows.append(Text(f"  {'KV cache':<13} {'█' * filled}{'░' * (bar_width - filled)} "
                     f"{_percent(usage)}"))
    totals = model["totals"]
    rows.append(Text(f"  {'since start':<13} {_count(totals['requests'])} requests · "
                     f"{_count(totals['prompt_tokens'])} prompt · "
                     f"{_count(totals['generation_tokens'])} generated tokens"))
    return rows


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 10:
        return f"{seconds:.0f}s"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"


def _signed_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} ms"


def _gib(value: float) -> str:
    return f"{value / 2**30:.1f}"
