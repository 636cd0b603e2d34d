"""The `spark-stack` command line: a thin Typer layer over the library.

Commands live one per module (``cmd_<name>.py``), each exposing ``register(app)``; this module
finds them, runs the app and turns every :class:`SparkStackError` into a one-line cause and fix
with its exit code. Heavy libraries (docker, paramiko, the proxy) are imported inside command
bodies so that ``spark-stack --help`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from .common import app, emit_error

# Order here is the order of `spark-stack --help`.
COMMAND_MODULES = (
    "init",
    "presets",
    "validate",
    "plan",
    "up",
    "down",
    "status",
    "top",
    "logs",
    "doctor",
    "claude",
    "proxy",
    "keys",
    "usage",
    "smoke",
    "bench",
    "export",
    "demo",
)

__all__ = ["app", "main"]


_registered: list[str] = []  # main() may run many times in one process (tests)


def _register_commands(only: str | None = None) -> None:
    """Register ``only`` that command, or every command (for help, usage errors, a typo).

    Building every command's options costs more than a no-op ``up``'s own work; the one the
    command line names is enough to run it. Every command comes back in --help's order.
    """
    wanted = [only] if only in COMMAND_MODULES else list(COMMAND_MODULES)
    if set(wanted) <= set(_registered):
        return
    if len(wanted) > 1 and _registered:  # start over, so --help lists them in order
        app.registered_commands.clear()
        app.registered_groups.clear()
        _registered.clear()
    for name in wanted:
        module_name = f"{__name__}.cmd_{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(app)
        _registered.append(name)


def _command_of(args: list[str]) -> str | None:
    """The command the arguments name (None: none, or help asked before it)."""
    at = 0
    while at < len(args):
        arg = args[at]
        if arg in ("--help", "-h", "--version"):
            return None
        if arg in ("-s", "--stack"):
            at += 2
            continue
        if not arg.startswith("-"):
            return arg
        at += 1
    return None


def _click_kinds(exc: BaseException) -> set[str]:
    """Class names of click's exceptions in ``exc``'s ancestry.

    Typer vendors its own copy of click (``typer._click``) in recent releases, so the exceptions
    it raises are not the ``click`` package's classes: match by name in either package.
    """
    return {
        cls.__name__
        for cls in type(exc).__mro__
        if cls.__module__.split(".")[0] in ("click", "typer")
    }


def _own_args_end(argv: list[str]) -> int:
    """Where spark-stack's own arguments end: at ``--`` or Claude Code's pass-through ones."""
    for index, arg in enumerate(argv):
        if arg in ("--", "claude"):
            return index
    return len(argv)


def _take_debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """Accept ``--debug`` anywhere before the arguments passed through to Claude Code."""
    stop = _own_args_end(argv)
    head = [a for a in argv[:stop] if a != "--debug"]
    return head + argv[stop:], len(head) != stop


def _asks_for_json(argv: list[str]) -> bool:
    """``--json`` among spark-stack's own arguments: errors, usage errors too, are JSON then."""
    return "--json" in argv[: _own_args_end(argv)]


def _usage_fix(exc: BaseException) -> str:
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "spark-stack"
    return f"see `{command} --help`"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    from ..errors import EXIT_FAILED, EXIT_USAGE, SparkStackError
    from .common import state

    args, debug = _take_debug_flag(list(sys.argv[1:] if argv is None else argv))
    _register_commands(_command_of(args))
    state.debug = debug or os.environ.get("SPARK_STACK_DEBUG", "") not in ("", "0", "false")
    state.json = _asks_for_json(args)
    if debug:
        args.insert(0, "--debug")
    try:
        # Typer turns Ctrl-C into Exit(130) and, not standalone, returns that code.
        result = app(args=args, prog_name="spark-stack", standalone_mode=False)
    except SparkStackError as exc:
        emit_error(exc.message, exc.fix, exc.exit_code, exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        kinds = _click_kinds(exc)
        if "Exit" in kinds:
            return int(getattr(exc, "exit_code", 0))
        if "Abort" in kinds:
            print("aborted", file=sys.stderr)
            return 130
        if "ClickException" in kinds:
            if "NoArgsIsHelpError" in kinds:
                exc.show()  # type: ignore[attr-defined]
                return 0  # bare `spark-stack`: the help is the answer
            code = int(getattr(exc, "exit_code", 0)) or EXIT_USAGE
            # One line of cause and one of fix, as for every other error (not click's block).
            message = exc.format_message()  # type: ignore[attr-defined]
            emit_error(message, _usage_fix(exc), code, exc)
            return code
        # A bug: one line, the traceback only with --debug.
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
