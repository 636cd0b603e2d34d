"""``python -m spark_stack.proxy --config FILE.json``: the proxy in the foreground."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spark_stack.errors import SparkStackError
from spark_stack.proxy.config import ConfigError, ProxyConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spark_stack.proxy")
    parser.add_argument("--config", required=True, type=Path, help="ProxyConfig JSON file")
    args = parser.parse_args(argv)
    try:
        config = ProxyConfig.from_json(args.config.read_bytes())
    except (OSError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from spark_stack.proxy.serve import run_proxy

    try:
        run_proxy(config)
    except SparkStackError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"fix: {exc.fix}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
