"""`spark-stack up`: bring the stack's models, the proxy and the launcher to the desired state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import JsonOption, StackOption, console, load, print_json, relpath, use_json
from .deploy_options import TrustOption, WaitLockOption
from .progress import JsonEvents, RichReporter, escape

if TYPE_CHECKING:
    from ..deploy.up import UpOptions, UpResult
    from ..stack.loader import LoadedStack


def up(
    stack: StackOption = None,
    json: JsonOption = False,
    trust_host_key: TrustOption = False,
    skip_preflight: Annotated[
        list[str] | None,
        typer.Option("--skip-preflight", metavar="CHECK",
                     help="Skip a preflight check (repeatable): docker, nvidia, gpus, arch, "
                     "disk, port, memory, engines, hf_token."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", metavar="SECONDS",
                     help="Readiness timeout per model (default: its readiness_timeout, 900)."),
    ] = None,
    wait_lock: WaitLockOption = 0.0,
    pull: Annotated[
        bool, typer.Option("--pull", help="Pull every image first; a moved tag replaces.")
    ] = False,
    no_rollback: Annotated[
        bool, typer.Option("--no-rollback",
                           help="When a replaced model fails to start, leave it down instead of "
                           "bringing the previous container back.")
    ] = False,
    drop_caches: Annotated[
        bool, typer.Option("--drop-caches",
                           help="Drop the host's page cache before starting a model (NVIDIA's "
                           "advice on the Spark's unified memory; needs root or sudo -n).")
    ] = False,
    no_proxy: Annotated[
        bool, typer.Option("--no-proxy", help="Do not start the proxy or write the launcher.")
    ] = False,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="Then run every `spark-stack smoke` check (exit 4 "
                           "if one fails); with --json print the smoke report.")
    ] = False,
) -> None:
    """Deploy the stack: containers on the host, simulators, the proxy and the launcher."""
    from ..deploy.up import UpOptions
    from ..stack.references import check_resolvable
    from .common import stack_path

    use_json(json)
    loaded = load(stack)
    check_resolvable(loaded)  # every unset or empty ${VAR} at its line, before anything starts
    out = console(stderr=True) if json else console()
    options = UpOptions(
        trust_host_key=trust_host_key,
        skip_preflight=frozenset(skip_preflight or ()),
        timeout=timeout,
        wait_lock=wait_lock,
        pull=pull,
        start_proxy=not no_proxy,
        rollback=not no_rollback,
        drop_caches=drop_caches,
        stack_file=stack_path(stack) and relpath(loaded.path),
    )
    if smoke:
        from .cmd_smoke import smoke_after_up

        if not json:
            out.print(f"stack [bold]{escape(loaded.stack.name)}[/] ({relpath(loaded.path)})",
                      markup=True)
        smoke_after_up(loaded, options, as_json=json)
        return
    deploy(loaded, options, json=json)


def deploy(loaded: LoadedStack, options: UpOptions, *, json: bool,
           stdout: bool = True) -> UpResult:
    """``up`` with its live progress (or JSON events) and its summary; also the deploy step of
    ``claude --host``, which keeps stdout for Claude Code (``stdout=False``: all on stderr,
    no result object)."""
    from ..deploy.report import Reporter
    from ..deploy.up import up as run_up

    out = console(stderr=json or not stdout)
    reporter: Reporter = JsonEvents() if json else RichReporter(out)
    if not json:
        out.print(f"stack [bold]{escape(loaded.stack.name)}[/] ({relpath(loaded.path)})",
                  markup=True)
    result = run_up(loaded.stack, options, reporter)
    if json:
        if stdout:
            print_json(_result_json(loaded.stack.name, result))
        return result
    if not result.changed:
        out.print(f"[green]up to date[/] ({result.elapsed:.1f} s)", markup=True)
    else:
        out.print(f"[green]ready[/] ({result.elapsed:.1f} s)", markup=True)
    for name, endpoint in result.endpoints.items():
        out.print(f"  {name}: {endpoint}", markup=False)
    if result.proxy_url:
        out.print(f"proxy: {result.proxy_url}", markup=False)
    if result.launcher:
        out.print(f"launcher: {result.launcher}", markup=False)
    return result


def _result_json(stack: str, result: Any) -> dict[str, Any]:
    return {
        "ok": True,
        "stack": stack,
        "changed": result.changed,
        "actions": [
            {"model": a.model, "action": a.kind, "reason": a.reason, "changed": list(a.changed),
             # a node of a model across hosts: which host and rank; a replica: which host
             "host": a.host, "rank": a.spec.rank if a.host is not None and a.spec else None}
            for a in result.actions
        ],
        "endpoints": dict(result.endpoints),
        "ready_seconds": {k: round(v, 2) for k, v in result.ready.items()},
        "proxy_url": result.proxy_url,
        "launcher": str(result.launcher) if result.launcher else None,
        "elapsed_seconds": round(result.elapsed, 2),
    }


def register(app: typer.Typer) -> None:
    app.command("up")(up)
