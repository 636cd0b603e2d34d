"""A real stand-in for the DGX Spark (GB10): sshd + dockerd in a network namespace at 10.213.0.2.

Used by the e2e fixtures (``ensure_up()`` returns a :class:`HostInfo`) and by people:
``python -m tests.testhost up|down|status``.
"""

from __future__ import annotations

from .errors import TestHostError
from .host import down, ensure_up, status
from .layout import HostInfo

__all__ = ["HostInfo", "TestHostError", "down", "ensure_up", "status"]
