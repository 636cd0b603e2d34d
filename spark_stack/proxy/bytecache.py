"""A least-recently-used map bounded by the memory its entries hold, not by their count.

A count alone let 1,000 requests with distinct multi-megabyte values hold gigabytes: each
entry here states its size, entries larger than the whole budget are not kept, and the
oldest go until the rest fit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteBoundedCache(Generic[K, V]):
    """LRU cache holding at most ``max_bytes`` by its entries' declared sizes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V, size: int) -> None:
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._entries[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped

    def touch(self, key: K) -> None:
        """Mark ``key`` as just used."""
        self._entries.move_to_end(key)

    def recent_first(self) -> Iterator[tuple[K, V]]:
        for key, (value, _) in reversed(self._entries.items()):
            yield key, value
