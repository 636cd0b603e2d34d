"""The stand-in CX7 cable: a veth pair straight from host 1's namespace to host 2's.

``cx7a`` 10.214.0.1/24 in ``sparkhost`` <-> ``cx7b`` 10.214.0.2/24 in ``sparkhost2``, MTU
9000 like NVIDIA's two-Spark setup. Containers run with host networking share their host's
namespace and see the interface as they would on a Spark. Deleting either namespace deletes
the pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import TestHostError
from .layout import HOST1, HOST2, LINK, Layout
from .netns import has_address, link_info
from .procs import run

ENDS: tuple[Layout, Layout] = (HOST1, HOST2)


@dataclass(frozen=True)
class LinkInfo:
    """The link as tests see it: each host's interface name and address, and the MTU."""

    interfaces: tuple[str, str]
    addresses: tuple[str, str]
    prefix_len: int
    mtu: int

    @property
    def head_address(self) -> str:
        """Host 1's link address: what ``--master-addr`` / ``ray start --address`` use."""
        return self.addresses[0]


def _ends() -> list[tuple[Layout, str, str]]:
    return [(layout, LINK.interfaces[i], LINK.addresses[i]) for i, layout in enumerate(ENDS)]


def is_up() -> bool:
    """Both ends exist in their namespaces, are up and carry their addresses."""
    if not all(layout.netns_path.exists() for layout in ENDS):
        return False
    return all(
        has_address(link_info(["ip", "-n", layout.netns], name), address, LINK.prefix_len)
        for layout, name, address in _ends()
    )


def ensure() -> None:
    """Create or repair the pair (both namespaces must exist); its MTU becomes the default."""
    missing = [layout.netns for layout in ENDS if not layout.netns_path.exists()]
    if missing:
        raise TestHostError(f"the link needs both namespaces; missing: {', '.join(missing)}")
    if not is_up():
        for layout, name, _ in _ends():
            if link_info(["ip", "-n", layout.netns], name) is not None:
                run(["ip", "-n", layout.netns, "link", "del", name])
        # Created in host 1's namespace with its peer placed straight into host 2's.
        run(["ip", "-n", HOST1.netns, "link", "add", LINK.interfaces[0], "type", "veth",
             "peer", "name", LINK.interfaces[1], "netns", HOST2.netns])
        for layout, name, address in _ends():
            run(["ip", "-n", layout.netns, "addr", "replace",
                 f"{address}/{LINK.prefix_len}", "dev", name])
            run(["ip", "-n", layout.netns, "link", "set", name, "up"])
    set_mtu(LINK.default_mtu)


def mtu() -> int:
    """The MTU ``ip link`` reports on host 1's end."""
    info = link_info(["ip", "-n", HOST1.netns], LINK.interfaces[0])
    if info is None:
        raise TestHostError(f"no {LINK.interfaces[0]} in {HOST1.netns}",
                            fix="python -m tests.testhost up --hosts 2")
    return int(info["mtu"])


def set_mtu(value: int) -> None:
    """Give both ends ``value`` (1500 is the doctor's "no jumbo frames" case)."""
    for layout, name, _ in _ends():
        run(["ip", "-n", layout.netns, "link", "set", name, "mtu", str(value)])


@contextmanager
def mtu_set_to(value: int) -> Iterator[None]:
    """The link at ``value`` for the block, then back at the default."""
    set_mtu(value)
    try:
        yield
    finally:
        set_mtu(LINK.default_mtu)


def info() -> LinkInfo:
    return LinkInfo(interfaces=LINK.interfaces, addresses=LINK.addresses,
                    prefix_len=LINK.prefix_len, mtu=mtu())


def remove() -> None:
    """Delete the pair if host 1's end is there (the peer goes with it)."""
    if HOST1.netns_path.exists() and link_info(["ip", "-n", HOST1.netns],
                                               LINK.interfaces[0]) is not None:
        run(["ip", "-n", HOST1.netns, "link", "del", LINK.interfaces[0]])
    if HOST2.netns_path.exists() and link_info(["ip", "-n", HOST2.netns],
                                               LINK.interfaces[1]) is not None:
        run(["ip", "-n", HOST2.netns, "link", "del", LINK.interfaces[1]])
