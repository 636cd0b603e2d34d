"""The stand-in's network: namespace ``sparkhost``, veth 10.213.0.1/24 <-> 10.213.0.2/24.

No default route inside, so the host and its containers reach nothing but the machine that
runs the tests, which reaches them at 10.213.0.2 like a machine on the LAN.
"""

from __future__ import annotations

import json
from typing import Any

from .layout import (
    ADDRESS,
    GUEST_LINK,
    HOST_SIDE_ADDRESS,
    HOST_SIDE_LINK,
    NETNS,
    NETNS_PATH,
    PREFIX_LEN,
)
from .procs import run


def _link(argv_prefix: list[str], name: str) -> dict[str, Any] | None:
    done = run([*argv_prefix, "-j", "addr", "show"])
    for link in json.loads(done.stdout or "[]"):
        if link.get("ifname") == name:
            return dict(link)
    return None


def _has_address(link: dict[str, Any] | None, address: str) -> bool:
    if link is None or "UP" not in link.get("flags", []):
        return False
    return any(
        info.get("local") == address and info.get("prefixlen") == PREFIX_LEN
        for info in link.get("addr_info", [])
    )


def is_up() -> bool:
    """Both ends of the link exist, are up and carry their addresses."""
    if not NETNS_PATH.exists():
        return False
    host_side = _link(["ip"], HOST_SIDE_LINK)
    guest = _link(["ip", "-n", NETNS], GUEST_LINK)
    return _has_address(host_side, HOST_SIDE_ADDRESS) and _has_address(guest, ADDRESS)


def ensure() -> None:
    """Create or repair the namespace and its link (idempotent)."""
    if is_up():
        return
    if not NETNS_PATH.exists():
        run(["ip", "netns", "add", NETNS])
    if _link(["ip"], HOST_SIDE_LINK) is None:
        # A half-made pair (one end left over) cannot be reused: start the pair afresh.
        if _link(["ip", "-n", NETNS], GUEST_LINK) is not None:
            run(["ip", "-n", NETNS, "link", "del", GUEST_LINK])
        run(["ip", "link", "add", HOST_SIDE_LINK, "type", "veth", "peer", "name", "sparkhost1",
             "netns", NETNS])
        run(["ip", "-n", NETNS, "link", "set", "sparkhost1", "name", GUEST_LINK])
    run(["ip", "addr", "replace", f"{HOST_SIDE_ADDRESS}/{PREFIX_LEN}", "dev", HOST_SIDE_LINK])
    run(["ip", "link", "set", HOST_SIDE_LINK, "up"])
    run(["ip", "-n", NETNS, "addr", "replace", f"{ADDRESS}/{PREFIX_LEN}", "dev", GUEST_LINK])
    run(["ip", "-n", NETNS, "link", "set", GUEST_LINK, "up"])
    run(["ip", "-n", NETNS, "link", "set", "lo", "up"])


def remove() -> None:
    """Delete the namespace; its end of the veth pair takes the host side with it."""
    if NETNS_PATH.exists():
        run(["ip", "netns", "del", NETNS])
    if _link(["ip"], HOST_SIDE_LINK) is not None:
        run(["ip", "link", "del", HOST_SIDE_LINK])
