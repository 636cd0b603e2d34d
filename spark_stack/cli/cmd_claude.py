"""`spark-stack claude [ARGS…]`: Claude Code on the stack, every argument passed through.

With ``--host HOST`` it is the one command from zero (:mod:`.claude_host`): write the stack file
for the host when there is none, run ``up``, then Claude Code. Otherwise it starts the local
proxy when it is not running, checks that the model behind it is healthy, then execs ``claude``
with the launcher's environment. ``--print-env`` prints ``export`` lines for
``eval`` (with the token's value: the user asked for it) and ``--write-settings [PATH]`` merges
the ``env`` block into a project's ``.claude/settings.json`` (the token only by reference).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..launcher import UNSET_ENV, up_command
from .common import JsonOption, StackOption, console, load, relpath, stack_path, use_json
from .deploy_options import TrustOption

if TYPE_CHECKING:
    from ..stack.schema import Stack

HELP = (
    "Run Claude Code against the stack; every other argument goes to `claude` untouched "
    "(put `--` before arguments that spark-stack would take, as in `-- --help`). With --host "
    "and no stack file: look at the host, write ./spark-stack.yaml for it, run up, then "
    "Claude Code."
)


def claude(
    ctx: typer.Context,
    stack: StackOption = None,
    print_env: Annotated[
        bool,
        typer.Option(
            "--print-env",
            help="Print `export` lines for `eval \"$(spark-stack claude --print-env)\"` "
            "(they include the proxy token's value).",
        ),
    ] = False,
    write_settings: Annotated[
        bool,
        typer.Option(
            "--write-settings",
            help="Merge the stack's `env` block into .claude/settings.json (or the PATH "
            "given after it); the token is referenced through apiKeyHelper, never copied.",
        ),
    ] = False,
    host: Annotated[
        str | None,
        typer.Option("--host", help="The Spark (IP, hostname, user@host or ~/.ssh/config "
                     "alias): without a stack file, write one for it and run up first; with "
                     "one, it must be that file's host (and up runs first).",
                     show_default=False),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="With --host and no stack file: the preset (a name from "
                     "`spark-stack presets` or a file's path; default: the one recommended "
                     "for the host).", show_default=False),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option("--image", help="With --host and no stack file: the vLLM image instead "
                     "of the preset's.", show_default=False),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Write the stack file without asking.")
    ] = False,
    trust_host_key: TrustOption = False,
    json: JsonOption = False,
) -> None:
    from ..claude_env import claude_environment, client_token, export_lines
    from ..errors import UsageError

    args = list(ctx.args)
    use_json(json)
    if host is not None or preset is not None or image is not None:
        if print_env or write_settings:
            raise UsageError("--host, --preset and --image start Claude Code; they do not "
                             "combine with --print-env or --write-settings",
                             fix="run `spark-stack claude --host …` first, then --print-env or "
                                 "--write-settings on the stack file it wrote")
        from .claude_host import bring_up

        stack = bring_up(stack, host, preset, image, yes=yes, json=json,
                         trust_host_key=trust_host_key)
    stack_obj = load(stack, lint=False).stack
    if print_env and write_settings:
        raise UsageError("--print-env and --write-settings cannot be combined",
                         fix="run them one at a time")
    if print_env:
        if args:
            raise UsageError(f"--print-env takes no arguments (got {' '.join(args)})",
                             fix="eval \"$(spark-stack claude --print-env)\", then run claude")
        token = client_token(stack_obj)
        sys.stdout.write(export_lines(claude_environment(stack_obj, token)))
        return
    if write_settings:
        _write_settings(stack_obj, args)
        return
    _run(stack_obj, args, up_command(stack_path(stack)))


def _write_settings(stack_obj: Stack, args: list[str]) -> None:
    from ..claude_env import client_token, write_settings
    from ..errors import UsageError

    if len(args) > 1:
        raise UsageError(f"--write-settings takes at most one PATH (got {' '.join(args)})",
                         fix="name one settings file, e.g. .claude/settings.json")
    client_token(stack_obj)  # the apiKeyHelper reads the token file: make sure it exists
    target = write_settings(stack_obj, Path(args[0]) if args else None)
    console(stderr=True).print(
        f"merged the Claude Code env block for stack '{stack_obj.name}' into {relpath(target)}",
        markup=False,
    )


def _run(stack_obj: Stack, args: list[str], up_hint: str) -> None:
    from ..claude_env import claude_environment, find_claude
    from ..claude_run import exec_claude, proxy_health, require_healthy, restart_proxy
    from ..launcher import claude_settings, proxy_base_url

    claude_bin = find_claude()
    base_url = proxy_base_url(stack_obj)
    token = restart_proxy(stack_obj, up_hint=up_hint)
    require_healthy(proxy_health(base_url, token), base_url, up_hint=up_hint)
    env = {k: v for k, v in os.environ.items() if k not in UNSET_ENV}
    env.update(claude_environment(stack_obj, token))
    sys.stdout.flush()
    sys.stderr.flush()
    from ..deployment import resolve

    exec_claude(claude_bin, ["--settings", claude_settings(resolve(stack_obj)), *args], env)


def register(app: typer.Typer) -> None:
    app.command(
        "claude",
        help=HELP,
        options_metavar="[OPTIONS] [CLAUDE ARGS]...",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(claude)
