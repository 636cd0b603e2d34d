"""Parse `vllm serve` command lines with vLLM's own parser, without serving (engine's Python).

    python parse_argv.py < {"argvs": [[...], ...]}  →  {"flags": [...], "results": [...]}

``flags`` are every option string the real ``vllm serve`` parser accepts; each result is
``{"ok": true}`` or ``{"ok": false, "error": "<argparse's message>"}`` for one argv (the
arguments after ``vllm serve``, as spark-stack renders them).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys


def serve_parser() -> argparse.ArgumentParser:
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    root = FlexibleArgumentParser(prog="vllm")
    subparsers = root.add_subparsers(dest="subparser")
    ServeSubcommand().subparser_init(subparsers)
    return subparsers.choices["serve"]  # type: ignore[no-any-return]


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, object]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit:
        lines = [line for line in err.getvalue().splitlines() if "error:" in line]
        return {"ok": False, "error": lines[-1] if lines else err.getvalue().strip()[-500:]}
    return {"ok": True}


def main() -> None:
    request = json.load(sys.stdin)
    parser = serve_parser()
    flags = sorted({option for action in parser._actions for option in action.option_strings
                    if option.startswith("--")})
    results = [parse(parser, argv) for argv in request.get("argvs", [])]
    json.dump({"flags": flags, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
