"""``python -m tests.testhost up|down|status|engine`` for people working on the e2e tests.

``up`` brings host 1 up (the single-Spark stand-in); ``up --hosts 2`` also host 2 and the CX7
link between them. ``down`` takes both down; ``down --host 2`` only the second (and the link).
``engine`` makes vLLM's real engine ready for tests/e2e/test_real_vllm.py: host 1 up, the CPU
engine installed (once per machine), its image on host 1's daemon and the tiny model.
"""

from __future__ import annotations

import sys
import time

from .errors import TestHostError
from .host import down, ensure_pair_up, ensure_up, status
from .layout import HOST1, HOST2, HostInfo

USAGE = ("usage: python -m tests.testhost up|down|status|engine   "
         "(up --hosts 2; down --host 2)")


def _parse(argv: list[str]) -> tuple[str, int] | None:
    """(verb, host count for up / the only host for down, 0 = both) or None when unknown."""
    if argv == ["engine"]:
        return "engine", 1
    if not argv or argv[0] not in {"up", "down", "status"}:
        return None
    verb, rest = argv[0], argv[1:]
    if not rest:
        return verb, 1 if verb == "up" else 0
    if verb == "up" and rest == ["--hosts", "2"]:
        return verb, 2
    if verb == "up" and rest == ["--hosts", "1"]:
        return verb, 1
    if verb == "down" and len(rest) == 2 and rest[0] == "--host" and rest[1] in {"1", "2"}:
        return verb, int(rest[1])
    return None


def _describe(host: HostInfo) -> str:
    return (f"ssh -F {host.ssh_config_path} {host.ssh_alias}   "
            f"docker -H {host.local_docker_url}")


def main(argv: list[str]) -> int:
    parsed = _parse(argv)
    if parsed is None:
        print(USAGE, file=sys.stderr)
        return 2
    verb, count = parsed
    started = time.monotonic()
    try:
        if verb == "up" and count == 1:
            host = ensure_up()
            print(f"up in {time.monotonic() - started:.1f}s: {_describe(host)}")
        elif verb == "engine":
            from .vllm_cpu import ENGINE_DIR, ENGINE_IMAGE, ensure_engine_image, make_model

            ensure_up()
            image = ensure_engine_image()
            model = make_model(ENGINE_DIR / "models")
            print(f"engine ready in {time.monotonic() - started:.1f}s: {ENGINE_IMAGE} "
                  f"({image[:19]}), model {model}")
        elif verb == "up":
            pair = ensure_pair_up()
            print(f"up in {time.monotonic() - started:.1f}s:")
            for host in pair.hosts:
                print(f"  {host.netns:10} {host.address:11} link {pair.link_interface(host)} "
                      f"{pair.link_address(host)} mtu {pair.link.mtu}   {_describe(host)}")
        elif verb == "down":
            down((count,) if count else (1, 2))
            print(f"down in {time.monotonic() - started:.1f}s")
        else:
            for layout in (HOST1, HOST2):
                for part, state in status(layout).items():
                    print(f"{layout.netns:10} {part:8} {state}")
    except TestHostError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"fix: {exc.fix}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
