"""`spark-stack top [--once] [--json]`: the stack at work, live — per model requests, KV cache,
prefix hits, token rates, TTFT; the proxy's traffic and errors; the hosts' memory and GPU."""

from __future__ import annotations

import json as json_lib
import os
import select
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import JsonOption, StackOption, console, load, print_json, use_json
from .deploy_options import TrustOption

if TYPE_CHECKING:
    from ..top.sampler import Sampler

OnceOption = Annotated[
    bool, typer.Option("--once", help="Print one snapshot (two reads INTERVAL apart) and exit.")
]
IntervalOption = Annotated[
    float, typer.Option("--interval", help="Seconds between reads.", min=0.2)
]
ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="The model shown in detail first.")
]
# Bounds the live view for tests and scripts; hidden from --help.
CountOption = Annotated[int | None, typer.Option("--count", hidden=True, min=1)]

NEXT_KEYS = {"\x1b[C", "\x1b[B", "\t", "n", "j", "l"}
PREVIOUS_KEYS = {"\x1b[D", "\x1b[A", "\x1b[Z", "p", "k", "h"}
QUIT_KEYS = {"q", "Q", "\x03", "\x1b"}


def top(
    stack: StackOption = None,
    once: OnceOption = False,
    json: JsonOption = False,
    interval: IntervalOption = 1.0,
    model: ModelOption = None,
    trust_host_key: TrustOption = False,
    count: CountOption = None,
) -> None:
    """Watch the stack work: each model's load, cache and token rates, the proxy, the hosts."""
    from ..deploy.session import resolve_for_this_machine
    from ..top.sampler import Sampler
    from ..top.sampler import once as read_once
    from .top_view import History, render

    use_json(json)
    deployment = resolve_for_this_machine(load(stack).stack)
    names = [m.name for m in deployment.models]
    if model is not None and model not in names:
        raise typer.BadParameter(f"no model {model!r} in the stack (models: {', '.join(names)})",
                                 param_hint="--model")
    selected = names.index(model) if model is not None else 0
    if once:
        report = read_once(deployment, interval=interval, trust_host_key=trust_host_key)
        if json:
            print_json(report)
        else:
            out = console()
            out.print(render(report, History(), selected, out.width))
        return
    with Sampler(deployment, trust_host_key=trust_host_key, interval=interval) as sampler:
        sampler.wait_for_hosts(3.0)
        if json:
            _json_lines(sampler, interval, count)
        else:
            _live(sampler, interval, count, selected, len(names))


def _json_lines(sampler: Sampler, interval: float, count: int | None) -> None:
    rounds = 0
    try:
        while count is None or rounds < count:
            report = sampler.read()
            if rounds:  # the first read has no rates yet
                sys.stdout.write(json_lib.dumps(report) + "\n")
                sys.stdout.flush()
            rounds += 1
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def _live(sampler: Sampler, interval: float, count: int | None, selected: int,
          models: int) -> None:
    from rich.live import Live

    from .top_view import History, render

    out = console()
    history = History()
    rounds = 0
    report: dict[str, Any] | None = None
    try:
        with _keys() as read_key, Live(console=out, auto_refresh=False, screen=True) as live:
            while count is None or rounds < count:
                report = sampler.read()
                history.add(report)
                rounds += 1
                deadline = time.monotonic() + interval
                while True:
                    live.update(render(report, history, selected, out.width), refresh=True)
                    key = read_key(deadline - time.monotonic())
                    if key is None:
                        break
                    if key in QUIT_KEYS:
                        return
                    if key in NEXT_KEYS:
                        selected = (selected + 1) % max(1, models)
                    elif key in PREVIOUS_KEYS:
                        selected = (selected - 1) % max(1, models)
    except KeyboardInterrupt:
        return


@contextmanager
def _keys() -> Iterator[Any]:
    """A reader of single keys (arrows as their escape sequences) that waits at most the given
    seconds and returns None on timeout; without a terminal it only waits."""
    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    if fd is None:
        def wait_only(timeout: float) -> str | None:
            time.sleep(max(0.0, timeout))
            return None

        yield wait_only
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)

    def read_key(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
        if not ready:
            return None
        data = os.read(fd, 16).decode(errors="replace")
        return data or None

    try:
        tty.setcbreak(fd)
        yield read_key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def register(app: typer.Typer) -> None:
    app.command("top")(top)
