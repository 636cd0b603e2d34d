"""A stand-in's network: its namespace and a veth pair from this machine into it.

Host 1: namespace ``sparkhost``, 10.213.0.1/24 (here) <-> 10.213.0.2/24 (inside); host 2:
``sparkhost2``, 10.213.1.1/24 <-> 10.213.1.2/24. No default route inside, so a host and its
containers reach nothing but the machine that runs the tests, which reaches them like
machines on the LAN.
"""

from __future__ import annotations

import json
from typing import Any

from .layout import HOST1, PREFIX_LEN, Layout
from .procs import run


def link_info(argv_prefix: list[str], name: str) -> dict[str, Any] | None:
    """``ip -j addr`` facts of interface ``name`` (``argv_prefix`` picks the namespace)."""
    done = run([*argv_prefix, "-j", "addr", "show"])
    for link in json.loads(done.stdout or "[]"):
        if link.get("ifname") == name:
            return dict(link)
    return None


def has_address(link: dict[str, Any] | None, address: str, prefix_len: int = PREFIX_LEN) -> bool:
    """The interface is up and carries ``address/prefix_len``."""
    if link is None or "UP" not in link.get("flags", []):
        return False
    return any(
        info.get("local") == address and info.get("prefixlen") == prefix_len
        for info in link.get("addr_info", [])
    )


def is_up(layout: Layout = HOST1) -> bool:
    """Both ends of the host's link exist, are up and carry their addresses."""
    if not layout.netns_path.exists():
        return False
    host_side = link_info(["ip"], layout.host_side_link)
    guest = link_info(["ip", "-n", layout.netns], layout.guest_link)
    return has_address(host_side, layout.host_side_address) and has_address(
        guest, layout.address
    )


def ensure(layout: Layout = HOST1) -> None:
    """Create or repair the namespace and its link (idempotent)."""
    if is_up(layout):
        return
    ns = layout.netns
    if not layout.netns_path.exists():
        run(["ip", "netns", "add", ns])
    if link_info(["ip"], layout.host_side_link) is None:
        # A half-made pair (one end left over) cannot be reused: start the pair afresh.
        if link_info(["ip", "-n", ns], layout.guest_link) is not None:
            run(["ip", "-n", ns, "link", "del", layout.guest_link])
        run(["ip", "link", "add", layout.host_side_link, "type", "veth", "peer", "name",
             layout.guest_link_tmp, "netns", ns])
        run(["ip", "-n", ns, "link", "set", layout.guest_link_tmp, "name", layout.guest_link])
    run(["ip", "addr", "replace", f"{layout.host_side_address}/{PREFIX_LEN}", "dev",
         layout.host_side_link])
    run(["ip", "link", "set", layout.host_side_link, "up"])
    run(["ip", "-n", ns, "addr", "replace", f"{layout.address}/{PREFIX_LEN}", "dev",
         layout.guest_link])
    run(["ip", "-n", ns, "link", "set", layout.guest_link, "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])


def remove(layout: Layout = HOST1) -> None:
    """Delete the namespace; its end of each veth pair takes the other end with it."""
    if layout.netns_path.exists():
        run(["ip", "netns", "del", layout.netns])
    if link_info(["ip"], layout.host_side_link) is not None:
        run(["ip", "link", "del", layout.host_side_link])
