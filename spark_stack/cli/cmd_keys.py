"""`spark-stack keys add|list|revoke|rotate`: a key per person on a shared Spark."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOption, StackOption, console, load, print_json, use_json

keys_app = typer.Typer(
    help="Keys for the people sharing the stack's proxy (only hashes are stored).",
    no_args_is_help=True,
)
NameArgument = Annotated[str, typer.Argument(help="The person's key name, e.g. ann.")]


def _stack(stack: str | None) -> tuple[str, Path]:
    from ..paths import stack_dir

    name = load(stack, lint=False).stack.name
    return name, stack_dir(name)


def _teammate_url(stack: str | None) -> tuple[str, bool]:
    """The proxy's URL as a teammate dials it, and whether it is reachable from elsewhere."""
    from ..deployment import resolve

    proxy = resolve(load(stack, lint=False).stack).proxy
    if proxy.host in ("0.0.0.0", "::", ""):
        return f"http://{socket.gethostname()}:{proxy.port}", True
    loopback = proxy.host in ("127.0.0.1", "::1", "localhost") or proxy.host.startswith("127.")
    return proxy.url, not loopback


def _show_key(name: str, key: str, stack: str | None, json: bool) -> None:
    if json:
        print_json({"name": name, "key": key})
        return
    url, reachable = _teammate_url(stack)
    out = console()
    out.print(f"Key for {name} (shown once; only its hash is kept):\n", markup=False)
    out.print(f"  {key}\n", markup=False, highlight=False)
    out.print(f"{name} points Claude Code at this stack with:", markup=False)
    out.print(f"  export ANTHROPIC_BASE_URL={url}", markup=False, highlight=False)
    out.print(f"  export ANTHROPIC_AUTH_TOKEN={key}", markup=False, highlight=False)
    if not reachable:
        out.print("note: the proxy listens on loopback only; for teammates on other machines set "
                  "proxy.listen to 0.0.0.0:PORT (with a token) and run `spark-stack up`",
                  markup=False)


@keys_app.command("add")
def add(
    name: NameArgument,
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", min=1, metavar="N",
                                 help="Requests in flight or queued at once (else 429).")
    ] = None,
    tokens_per_minute: Annotated[
        int | None, typer.Option("--tokens-per-minute", min=1, metavar="N",
                                 help="Prompt + output tokens per minute (else 429).")
    ] = None,
    stack: StackOption = None,
    json: JsonOption = False,
) -> None:
    """Create a key for a person and print it once, with how to use it."""
    from ..team import add_key

    use_json(json)
    _, state = _stack(stack)
    key = add_key(state, name, max_concurrent=max_concurrent,
                  tokens_per_minute=tokens_per_minute)
    _show_key(name, key, stack, json)


@keys_app.command("list")
def list_(stack: StackOption = None, json: JsonOption = False) -> None:
    """Every key: name, created, last used, limits (never the key)."""
    from rich.table import Table

    from ..team import last_used, list_keys

    use_json(json)
    _, state = _stack(stack)
    records = list_keys(state)
    used = last_used(state)
    rows = [{"name": r.name, "created": r.created, "last_used": used.get(r.name),
             "max_concurrent": r.max_concurrent, "tokens_per_minute": r.tokens_per_minute}
            for r in records]
    if json:
        print_json(rows)
        return
    if not rows:
        console().print("no keys yet: `spark-stack keys add NAME` creates one", markup=False)
        return
    table = Table("name", "created", "last used", "max concurrent", "tokens/min")
    for row in rows:
        table.add_row(*(str(row[k]) if row[k] is not None else "-" for k in
                        ("name", "created", "last_used", "max_concurrent", "tokens_per_minute")))
    console().print(table)


@keys_app.command("revoke")
def revoke(name: NameArgument, stack: StackOption = None, json: JsonOption = False) -> None:
    """Remove a key: the proxy refuses it within a second."""
    from ..team import revoke_key

    use_json(json)
    _, state = _stack(stack)
    revoke_key(state, name)
    if json:
        print_json({"name": name, "revoked": True})
    else:
        console().print(f"revoked {name}'s key", markup=False)


@keys_app.command("rotate")
def rotate(name: NameArgument, stack: StackOption = None, json: JsonOption = False) -> None:
    """Give a person a new key (same limits); the old one stops working within a second."""
    from ..team import rotate_key

    use_json(json)
    _, state = _stack(stack)
    key = rotate_key(state, name)
    _show_key(name, key, stack, json)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
