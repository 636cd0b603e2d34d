"""Benchmark: what choosing a replica costs the proxy per request (in-process, no network).

    .venv/bin/python benchmarks/router_cost.py

The dispatcher's choice (``spark_stack/proxy/dispatch.py``) for a Claude Code-sized body
(~78 KB, 24 tools): the session from ``X-Claude-Code-Session-Id``, from ``metadata.user_id``, or
(neither sent) a hash of the system prompt and first user message; then rendezvous hashing over
1, 2 and 8 healthy replicas. With one replica the session is never hashed.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spark_stack.proxy.dispatch import Dispatcher, session_key  # noqa: E402
from tests.claude_code_body import claude_code_body  # noqa: E402

HEADER = b"3f2a9c1e-1111-2222-3333-444455556666"


def per_call_us(dispatcher: Dispatcher, header: bytes | None, body: dict[str, Any],
                number: int) -> float:
    seconds = timeit.timeit(
        lambda: dispatcher.replica("m", lambda: session_key(header, body)), number=number)
    return seconds / number * 1e6


def main() -> None:
    body = claude_code_body()
    anonymous = {k: v for k, v in body.items() if k != "metadata"}
    print("| replicas | session from | µs per request |")
    print("|---|---|---|")
    for count in (1, 2, 8):
        names = tuple(f"r{i}" for i in range(count))
        dispatcher = Dispatcher(dict.fromkeys(names, 4), {"m": names})
        for label, header, sent in (("X-Claude-Code-Session-Id", HEADER, body),
                                    ("metadata.user_id", None, body),
                                    ("system + first user message", None, anonymous)):
            number = 20_000 if sent is anonymous else 100_000
            print(f"| {count} | {label} | {per_call_us(dispatcher, header, sent, number):.2f} |")


if __name__ == "__main__":
    main()
