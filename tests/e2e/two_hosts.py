"""The two-Spark stand-in as a pytest fixture: ``host_pair`` (imported by conftest.py).

Brings host 1, host 2 and the CX7 link up when any part is missing (host 2 costs ~6 s cold,
~1 s warm) and fails, never skips, when it cannot. The link's MTU is back at 9000 for each
session; a test that changes it uses ``tests.testhost.mtu_set_to(1500)``.
"""

from __future__ import annotations

import pytest

from tests.testhost import HostPair, TestHostError, ensure_pair_up


@pytest.fixture(scope="session")
def host_pair() -> HostPair:
    """Two running stand-in Sparks: ``.head`` / ``.worker`` HostInfo, ``.link`` facts."""
    try:
        return ensure_pair_up()
    except TestHostError as exc:
        message = f"two stand-in GB10 hosts unavailable: {exc.message}"
        if exc.fix:
            message += f"\nfix: {exc.fix}"
        pytest.fail(message, pytrace=False)
