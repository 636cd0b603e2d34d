"""The `spark-stack` command line: a thin Typer layer over the library.

Commands live one per module (``cmd_<name>.py``), each exposing ``register(app)``; this module
finds them, runs the app and turns every :class:`SparkStackError` into a one-line cause and fix
with its exit code. Heavy libraries (docker, paramiko, the proxy) are imported inside command
bodies so that ``spark-stack --help`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from functools import cache

from .common import app, emit_error

# Order here is the order of `spark-stack --help`.
COMMAND_MODULES = (
    "init",
    "validate",
    "plan",
    "up",
    "down",
    "status",
    "logs",
    "claude",
    "proxy",
    "smoke",
    "bench",
    "export",
    "demo",
)

__all__ = ["app", "main"]


@cache  # main() may run many times in one process (tests): register each command once
def _register_commands() -> None:
    for name in COMMAND_MODULES:
        module_name = f"{__name__}.cmd_{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    import click

    from ..errors import EXIT_FAILED, EXIT_USAGE, SparkStackError
    from .common import state

    _register_commands()
    try:
        # Typer turns Ctrl-C into Exit(130) and, not standalone, returns that code.
        result = app(args=argv, prog_name="spark-stack", standalone_mode=False)
    except SparkStackError as exc:
        emit_error(exc.message, exc.fix, exc.exit_code, exc)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code if exc.exit_code else EXIT_USAGE
    except Exception as exc:  # a bug: one line, the traceback only with --debug
        emit_error(
            f"internal error: {type(exc).__name__}: {exc}",
            "run again with --debug for the traceback, and please report it",
            EXIT_FAILED,
            exc,
        )
        return EXIT_FAILED
    if isinstance(result, int) and result:
        if result == 130:
            print("interrupted", file=sys.stderr)
        return result
    return state.exit_code


def run() -> None:
    sys.exit(main())
