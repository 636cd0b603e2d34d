"""Real stand-ins for DGX Sparks (GB10): sshd + dockerd in network namespaces.

Host 1 (``sparkhost``, 10.213.0.2) is the single-Spark stand-in: ``ensure_up()`` returns its
:class:`HostInfo`. ``ensure_pair_up()`` adds host 2 (``sparkhost2``, 10.213.1.2) and the CX7
link between them (``cx7a`` 10.214.0.1 <-> ``cx7b`` 10.214.0.2) and returns a
:class:`HostPair`. For people: ``python -m tests.testhost up [--hosts 2]|down|status``.
"""

from __future__ import annotations

from .errors import TestHostError
from .host import HostPair, down, ensure_pair_up, ensure_up, status
from .layout import HOST1, HOST2, LINK, HostInfo
from .link import LinkInfo, mtu_set_to

__all__ = [
    "HOST1",
    "HOST2",
    "LINK",
    "HostInfo",
    "HostPair",
    "LinkInfo",
    "TestHostError",
    "down",
    "ensure_pair_up",
    "ensure_up",
    "mtu_set_to",
    "status",
]
