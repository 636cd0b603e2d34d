"""The proxy's dispatcher: the one place between "a request arrived and was routed to a model"
and "its bytes go upstream" (ARCHITECTURE.md, "Where a request goes").

It owns one state: each replica's slots (its capacity in flight: the model's ``max_num_seqs``
or the proxy's ``max_in_flight``) with the requests waiting for one, and each caller's
(key's) running and queued requests and tokens of the last minute. Its decisions are pure
functions and small classes tested alone:

- :func:`session_key` and :func:`rendezvous` choose the replica: the session (Claude Code's
  ``X-Claude-Code-Session-Id``, else ``metadata.user_id``, else the system prompt and first
  user message) goes to the healthy replica with the highest hash score, so adding or losing a
  replica moves only the sessions that must move.
- :class:`FairQueue` chooses whose request gets a freed slot: start-time fair queueing over
  the keys with waiting requests (each request costs one unit; a key's weight is its share),
  so a key with one waiting request is served before another key's third, let alone its 20th.
- :class:`TokenWindow` counts a key's tokens over the last minute for its rate limit.

Guarantees the server relies on:
- Below capacity nothing waits: :meth:`Dispatcher.admit` hands out a slot synchronously (no
  future, no task switch) when the replica has a free slot and nobody is queued for it.
- A slot is released exactly once (:meth:`Dispatcher.release`), and a freed slot goes to the
  next waiter at once; a waiter whose client left is removed from the queue
  (:meth:`Dispatcher.wait` cleans up on cancellation, giving back a slot it had just received).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from spark_stack.proxy.errors import ProxyError

T = TypeVar("T")

SESSION_HEADER = b"x-claude-code-session-id"
OWNER = "owner"  # the stack's own token (the launcher's), and every caller when there is none
TOKEN_WINDOW_S = 60


# --- choosing a replica ---------------------------------------------------------------------

def session_key(header: bytes | None, body: Mapping[str, Any]) -> bytes:
    """What identifies a request's conversation: the session header, else
    ``metadata.user_id``, else a hash of the system prompt and the first user message (the
    prefix every turn of a conversation shares)."""
    if header:
        return b"s:" + header
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        user = metadata.get("user_id")
        if isinstance(user, str) and user:
            return b"u:" + user.encode()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(orjson.dumps(body.get("system")))
    messages = body.get("messages")
    if isinstance(messages, list):
        first = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"),
                     None)
        if first is not None:
            digest.update(orjson.dumps(first.get("content")))
    return b"p:" + digest.digest()


def rendezvous(session: bytes, replicas: Sequence[str],
               weights: Mapping[str, float] | None = None) -> str:
    """The replica ``session`` belongs to among ``replicas`` (highest random weight; weighted
    as ``-w / ln(u)``). Depends only on the session and the set: the order does not matter,
    and removing a replica moves only its own sessions."""
    if not replicas:
        raise ValueError("no replica to choose from")
    best = replicas[0]
    best_score = -1.0
    for name in replicas:
        digest = hashlib.blake2b(session, digest_size=8, person=_person(name)).digest()
        unit = (int.from_bytes(digest, "big") + 0.5) / 2.0**64  # in (0, 1)
        score = -(weights.get(name, 1.0) if weights else 1.0) / math.log(unit)
        if score > best_score or (score == best_score and name < best):
            best, best_score = name, score
    return best


def _person(name: str) -> bytes:
    # blake2b's personalisation takes 16 bytes: longer names are hashed down first.
    raw = name.encode()
    return raw if len(raw) <= 16 else hashlib.blake2b(raw, digest_size=16).digest()


# --- choosing the next request ----------------------------------------------------------------

class FairQueue(Generic[T]):
    """Start-time fair queueing over keys: each waiting item is tagged, when it arrives, with
    a virtual start ``max(V, the previous finish of its key)`` and finish ``start + 1/weight``;
    the item with the smallest start goes first (ties: arrival order). ``V`` is the start of
    the item served last.

    So a key that starts waiting is tagged at most ``V+1`` (``V`` unless it was served just
    before) and is served after at most two items of any other key, however many that key has
    queued (a backlog's tags run ahead: ``V+1``, ``V+2`` …), while a key sending its next
    request the moment the last one is admitted is still held to its share (its tags also run
    ahead). Within a key, items leave in arrival order.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, T]] = []
        self._finish: dict[str, float] = {}
        self._waiting: dict[str, int] = {}
        self._virtual = 0.0
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, key: str, item: T, weight: float = 1.0) -> None:
        start = max(self._virtual, self._finish.get(key, 0.0))
        self._finish[key] = start + 1.0 / weight
        self._seq += 1
        heapq.heappush(self._heap, (start, self._seq, key, item))
        self._waiting[key] = self._waiting.get(key, 0) + 1

    def pop(self) -> tuple[str, T] | None:
        """The next item and its key (None when nothing waits)."""
        if not self._heap:
            return None
        start, _, key, item = heapq.heappop(self._heap)
        self._virtual = start
        self._left(key)
        return key, item

    def remove(self, key: str, item: T) -> bool:
        """Take ``item`` out (its client left); False when it was not waiting."""
        for index, entry in enumerate(self._heap):
            if entry[3] is item and entry[2] == key:
                self._heap[index] = self._heap[-1]
                self._heap.pop()
                heapq.heapify(self._heap)
                self._left(key)
                return True
        return False

    def waiting(self, key: str) -> int:
        return self._waiting.get(key, 0)

    def _left(self, key: str) -> None:
        count = self._waiting[key] - 1
        if count:
            self._waiting[key] = count
        else:
            del self._waiting[key]


# --- a key's limits -----------------------------------------------------------------------

class TokenWindow:
    """Tokens used over the last minute, in one-second buckets (O(1) to add, O(60) to sum)."""

    __slots__ = ("_buckets", "_seconds")

    def __init__(self) -> None:
        self._buckets = [0] * TOKEN_WINDOW_S
        self._seconds = [-1] * TOKEN_WINDOW_S

    def add(self, now: float, tokens: int) -> None:
        second = int(now)
        index = second % TOKEN_WINDOW_S
        if self._seconds[index] != second:
            self._seconds[index] = second
            self._buckets[index] = 0
        self._buckets[index] += tokens

    def used(self, now: float) -> int:
        oldest = int(now) - TOKEN_WINDOW_S + 1
        return sum(b for b, s in zip(self._buckets, self._seconds, strict=True) if s >= oldest)

    def retry_after(self, now: float, limit: int) -> int:
        """Whole seconds until the tokens of the last minute fall below ``limit``."""
        second = int(now)
        used = self.used(now)
        for wait in range(1, TOKEN_WINDOW_S + 1):
            leaving = second - TOKEN_WINDOW_S + wait  # the bucket that expires after ``wait``
            index = leaving % TOKEN_WINDOW_S
            if self._seconds[index] == leaving:
                used -= self._buckets[index]
            if used < limit:
                return wait
        return TOKEN_WINDOW_S


@dataclass(frozen=True)
class KeyLimits:
    """What one key may hold: requests in flight or waiting, and tokens per minute."""

    max_concurrent: int | None = None
    tokens_per_minute: int | None = None


class Caller:
    """One key as the dispatcher sees it: its limits and load. One object per key name, kept
    across reloads of the key file so the counts stay right."""

    __slots__ = ("name", "limits", "running", "queued", "window")

    def __init__(self, name: str, limits: KeyLimits | None = None) -> None:
        self.name = name
        self.limits = limits or KeyLimits()
        self.running = 0
        self.queued = 0
        self.window = TokenWindow()


def refusal(caller: Caller, now: float) -> ProxyError | None:
    """The 429 a new request of ``caller`` gets (None: within its limits)."""
    limits = caller.limits
    held = caller.running + caller.queued
    if limits.max_concurrent is not None and held >= limits.max_concurrent:
        return RateLimited(
            f"key {caller.name!r} has {limits.max_concurrent} requests in flight, its limit",
            retry_after=1)
    tpm = limits.tokens_per_minute
    if tpm is not None and caller.window.used(now) >= tpm:
        return RateLimited(f"key {caller.name!r} used its {tpm} tokens per minute",
                           retry_after=caller.window.retry_after(now, tpm))
    return None


class RateLimited(ProxyError):
    """429 ``rate_limit_error`` with the seconds to wait (sent as ``retry-after``)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(429, "rate_limit_error", message)
        self.retry_after = retry_after


# --- the dispatcher -----------------------------------------------------------------------

class Ticket:
    """A slot on a replica held by one request; give it back with :meth:`Dispatcher.release`."""

    __slots__ = ("pool", "caller", "waited", "released")

    def __init__(self, pool: Pool, caller: Caller, waited: float) -> None:
        self.pool = pool
        self.caller = caller
        self.waited = waited  # seconds spent in the proxy's queue
        self.released = False


class Waiter:
    """A request waiting for a slot."""

    __slots__ = ("pool", "caller", "future", "since")

    def __init__(self, pool: Pool, caller: Caller, future: asyncio.Future[Ticket]) -> None:
        self.pool = pool
        self.caller = caller
        self.future = future
        self.since = time.perf_counter()


class Pool:
    """One replica's slots and the requests waiting for them."""

    __slots__ = ("name", "capacity", "in_flight", "queue")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.in_flight = 0
        self.queue: FairQueue[Waiter] = FairQueue()


class Dispatcher:
    """Replica choice, admission, the fair queue and per-key limits (see the module doc)."""

    def __init__(self, capacities: Mapping[str, int],
                 replicas: Mapping[str, Sequence[str]] | None = None,
                 weights: Mapping[str, float] | None = None) -> None:
        """``capacities``: replica (upstream) name → slots; ``replicas``: model (upstream)
        name → the replicas serving it (default: each upstream is its own only replica);
        ``weights``: a replica's share of the sessions (default 1)."""
        self.weights = dict(weights or {})
        self.pools = {name: Pool(name, max(1, capacity)) for name, capacity in capacities.items()}
        self.replicas = {name: tuple(names) for name, names in (replicas or {}).items()}
        self.down: set[str] = set()
        # Replicas a rolling replace is about to stop: no new request goes there while
        # another replica is up (control.py); what runs there finishes.
        self.drained: frozenset[str] = frozenset()

    def replica(self, model: str, session: Callable[[], bytes]) -> str:
        """The replica serving ``model`` for this request's session (``session`` is called
        only when there is more than one healthy replica to choose from)."""
        names = self.replicas.get(model)
        if names is None:
            return model
        up = [n for n in names if n not in self.down]
        healthy = [n for n in up if n not in self.drained] or up or list(names)
        if len(healthy) == 1:
            return healthy[0]
        return rendezvous(session(), healthy, self.weights or None)

    def mark_down(self, replica: str, model: str) -> bool:
        """Take ``replica`` of ``model`` out after it failed a request (health checks bring it
        back); True when another healthy replica can take the request."""
        names = self.replicas.get(model, (model,))
        if len(names) < 2:
            return False
        self.down.add(replica)
        return any(name not in self.down for name in names)

    def busy(self, replica: str) -> int:
        """Requests ``replica`` runs or has queued."""
        pool = self.pools[replica]
        return pool.in_flight + len(pool.queue)

    def resize(self, capacities: Mapping[str, int]) -> None:
        """New slot counts (a reloaded config); a pool that grew admits its waiters at once."""
        for name, capacity in capacities.items():
            pool = self.pools[name]
            pool.capacity = max(1, capacity)
            self._grant(pool)

    def admit(self, caller: Caller, replica: str, now: float | None = None) -> Ticket | Waiter:
        """A slot now, or a place in the replica's queue (await it with :meth:`wait`).
        Raises :class:`RateLimited` when ``caller`` is over a limit."""
        if caller.limits.max_concurrent is not None or caller.limits.tokens_per_minute:
            refused = refusal(caller, time.time() if now is None else now)
            if refused is not None:
                raise refused
        pool = self.pools[replica]
        if pool.in_flight < pool.capacity and not pool.queue:
            pool.in_flight += 1
            caller.running += 1
            return Ticket(pool, caller, 0.0)
        waiter = Waiter(pool, caller, asyncio.get_running_loop().create_future())
        caller.queued += 1
        pool.queue.push(caller.name, waiter)
        return waiter

    async def wait(self, waiter: Waiter, tick: Callable[[], Awaitable[None]] | None = None,
                   interval: float = 5.0) -> Ticket:
        """The slot ``waiter`` waits for; ``tick`` runs every ``interval`` seconds meanwhile
        (the server's ``ping``). Leaving (cancelled, or ``tick`` failing) gives up the place
        in the queue, or the slot when it had just been granted."""
        try:
            while True:
                if tick is None:
                    return await asyncio.shield(waiter.future)
                try:
                    return await asyncio.wait_for(asyncio.shield(waiter.future), interval)
                except TimeoutError:
                    await tick()
        except BaseException:
            self._abandon(waiter)
            raise

    def release(self, ticket: Ticket, tokens: int = 0, now: float | None = None) -> None:
        """Give a slot back (once; later calls do nothing) and count the request's tokens
        towards its key's minute."""
        if ticket.released:
            return
        ticket.released = True
        caller = ticket.caller
        caller.running -= 1
        if tokens and caller.limits.tokens_per_minute:
            caller.window.add(time.time() if now is None else now, tokens)
        pool = ticket.pool
        pool.in_flight -= 1
        self._grant(pool)

    def _grant(self, pool: Pool) -> None:
        while pool.in_flight < pool.capacity:
            popped = pool.queue.pop()
            if popped is None:
                return
            waiter = popped[1]
            waiter.caller.queued -= 1
            if waiter.future.done():  # cancelled while waiting: not counted as running
                continue
            pool.in_flight += 1
            waiter.caller.running += 1
            waiter.future.set_result(
                Ticket(pool, waiter.caller, time.perf_counter() - waiter.since))

    def _abandon(self, waiter: Waiter) -> None:
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            self.release(future.result())  # granted as the client left: pass it on
            return
        future.cancel()
        if waiter.pool.queue.remove(waiter.caller.name, waiter):
            waiter.caller.queued -= 1

    def load(self) -> Iterable[tuple[str, int, int, int]]:
        """Per replica: name, capacity, in flight, queued."""
        for pool in self.pools.values():
            yield pool.name, pool.capacity, pool.in_flight, len(pool.queue)
