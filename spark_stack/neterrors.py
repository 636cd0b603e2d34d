"""Why a connection failed, in words ("connection refused"), not a library's repr — for the
proxy's errors and the CLI's alike. Standard library only (the proxy's hot path imports it)."""

from __future__ import annotations

import os

_PHRASES = ("connection refused", "no route to host", "name or service not known",
            "network is unreachable", "timed out")


def connect_reason(exc: BaseException) -> str:
    """The first OS-level reason in ``exc``'s chain, else a known phrase in its text."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno).lower()
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    text = str(exc).lower()
    return next((words for words in _PHRASES if words in text), "the connection failed")
