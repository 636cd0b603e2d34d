"""``invoke``, imported only when paramiko really uses it.

paramiko's ``SSHConfig`` imports ``invoke`` at its own import, and ``invoke`` pulls in
``unittest.mock`` and ``asyncio`` (~40 ms, twice that on a loaded machine: a tenth of a no-op
``up``), all to run the command of a ``Match exec`` line, which few ``~/.ssh/config`` files
have. Installed before paramiko is imported, this stand-in module imports the real ``invoke``
at its first attribute read, so such a line still works.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

NAME = "invoke"


class _Deferred(types.ModuleType):
    def __getattr__(self, attribute: str) -> Any:
        if sys.modules.get(NAME) is self:
            del sys.modules[NAME]
        return getattr(importlib.import_module(NAME), attribute)


def install() -> None:
    """Stand in for ``invoke`` unless it is imported already (or paramiko is)."""
    if NAME not in sys.modules and "paramiko" not in sys.modules:
        sys.modules[NAME] = _Deferred(NAME)
