"""``python -m tests.testhost up|down|status`` for people working on the e2e tests."""

from __future__ import annotations

import sys
import time

from .errors import TestHostError
from .host import down, ensure_up, status

USAGE = "usage: python -m tests.testhost up|down|status"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in {"up", "down", "status"}:
        print(USAGE, file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        if argv[0] == "up":
            host = ensure_up()
            print(f"up in {time.monotonic() - started:.1f}s: ssh -F {host.ssh_config_path} "
                  f"{host.ssh_alias}   docker -H {host.local_docker_url}")
        elif argv[0] == "down":
            down()
            print(f"down in {time.monotonic() - started:.1f}s")
        else:
            for part, state in status().items():
                print(f"{part:8} {state}")
    except TestHostError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"fix: {exc.fix}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
