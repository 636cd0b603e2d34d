"""The dispatcher's pure cores (replica choice, the fair queue, the token window) by property,
and its admission (fast path, queueing, release, clients leaving) on a real event loop."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_stack.proxy.dispatch import (
    Caller,
    Dispatcher,
    FairQueue,
    KeyLimits,
    RateLimited,
    Ticket,
    TokenWindow,
    Waiter,
    rendezvous,
    session_key,
)

names = st.lists(st.text("abcdefghij-0123456789", min_size=1, max_size=24), min_size=1,
                 max_size=8, unique=True)
sessions = st.lists(st.binary(min_size=1, max_size=32), min_size=1, max_size=60, unique=True)


# --- rendezvous ---------------------------------------------------------------------------

@given(sessions, names, st.randoms())
def test_rendezvous_ignores_the_order_of_replicas(keys, replicas, rnd):
    shuffled = list(replicas)
    rnd.shuffle(shuffled)
    assert [rendezvous(k, replicas) for k in keys] == [rendezvous(k, shuffled) for k in keys]


@given(sessions, names, st.text("xyz", min_size=1, max_size=30))
def test_adding_a_replica_moves_only_sessions_to_it(keys, replicas, extra):
    if extra in replicas:
        return
    for key in keys:
        before, after = rendezvous(key, replicas), rendezvous(key, [*replicas, extra])
        assert after in (before, extra)


@given(sessions, names.filter(lambda r: len(r) > 1), st.data())
def test_losing_a_replica_moves_only_its_sessions(keys, replicas, data):
    lost = data.draw(st.sampled_from(replicas))
    rest = [r for r in replicas if r != lost]
    for key in keys:
        before = rendezvous(key, replicas)
        if before != lost:
            assert rendezvous(key, rest) == before


def test_rendezvous_spreads_sessions_and_honours_weights():
    replicas = ["spark-a", "spark-b"]
    spread = Counter(rendezvous(f"session-{i}".encode(), replicas) for i in range(4000))
    assert 1800 < spread["spark-a"] < 2200
    weighted = Counter(rendezvous(f"session-{i}".encode(), replicas, {"spark-a": 3.0})
                       for i in range(4000))
    assert 2800 < weighted["spark-a"] < 3200  # 3:1


def test_session_key_prefers_the_header_then_user_id_then_the_prefix():
    body = {"system": "you are", "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"user_id": "u1"}}
    assert session_key(b"abc", body) == b"s:abc"
    assert session_key(None, body) == b"u:u1"
    no_user = {k: v for k, v in body.items() if k != "metadata"}
    later_turn = {**no_user, "messages": [*no_user["messages"],
                                          {"role": "assistant", "content": "hello"},
                                          {"role": "user", "content": "more"}]}
    assert session_key(None, no_user) == session_key(None, later_turn)
    assert session_key(None, no_user) != session_key(None, {**no_user, "system": "other"})


# --- the fair queue -----------------------------------------------------------------------

operations = st.lists(
    st.one_of(st.tuples(st.just("push"), st.sampled_from("ABCD")),
              st.tuples(st.just("pop"), st.just("")),
              st.tuples(st.just("remove"), st.sampled_from("ABCD"))),
    max_size=200)


@given(operations)
def test_fair_queue_serves_each_item_once_in_order_per_key(ops):
    queue: FairQueue[int] = FairQueue()
    pushed: dict[str, list[int]] = {}
    served: dict[str, list[int]] = {}
    removed: set[int] = set()
    counter = 0
    for op, key in ops:
        if op == "push":
            counter += 1
            queue.push(key, counter)
            pushed.setdefault(key, []).append(counter)
        elif op == "remove":
            waiting = [i for i in pushed.get(key, []) if i not in removed
                       and i not in served.get(key, [])]
            if waiting:
                assert queue.remove(key, waiting[-1])
                removed.add(waiting[-1])
        else:
            popped = queue.pop()
            if popped is not None:
                served.setdefault(popped[0], []).append(popped[1])
    while (popped := queue.pop()) is not None:
        served.setdefault(popped[0], []).append(popped[1])
    assert len(queue) == 0
    for key, items in pushed.items():
        assert served.get(key, []) == [i for i in items if i not in removed]


@given(operations)
def test_a_key_that_starts_waiting_passes_any_backlog(ops):
    """However many items another key holds, it is served at most twice before a key that
    starts waiting (once, unless the newcomer itself was served just before: its own share)."""
    queue: FairQueue[str] = FairQueue()
    served_before: dict[str, dict[str, int]] = {}  # waiting key → pops of each other key
    for op, key in ops:
        if op == "push":
            if queue.waiting(key) == 0:
                served_before[key] = {}
            queue.push(key, key)
        elif op == "pop":
            popped = queue.pop()
            if popped is None:
                continue
            served_before.pop(popped[0], None)
            for counts in served_before.values():
                counts[popped[0]] = counts.get(popped[0], 0) + 1
                assert counts[popped[0]] <= 2, served_before


def test_fair_queue_alternates_a_flood_with_a_single_request():
    queue: FairQueue[str] = FairQueue()
    for i in range(20):
        queue.push("A", f"a{i}")
    queue.push("B", "b0")
    order = [queue.pop()[1] for _ in range(3)]  # type: ignore[index]
    assert order == ["a0", "b0", "a1"]


def test_a_key_that_asks_again_at_once_still_gets_only_its_share():
    queue: FairQueue[str] = FairQueue()
    for _ in range(40):
        queue.push("A", "a")
    queue.push("X", "x")
    served = []
    for _ in range(20):
        key, _item = queue.pop()  # type: ignore[misc]
        served.append(key)
        if key == "X":
            queue.push("X", "x")  # the next request the moment the last is admitted
    assert served.count("X") == 10


def test_weights_give_turns_in_proportion():
    queue: FairQueue[str] = FairQueue()
    for _ in range(30):
        queue.push("A", "a", weight=2.0)
        queue.push("B", "b", weight=1.0)
    first = [queue.pop()[0] for _ in range(30)]  # type: ignore[index]
    assert first.count("A") == 20


# --- the token window ---------------------------------------------------------------------

@settings(max_examples=50)
@given(st.lists(st.tuples(st.floats(0, 200), st.integers(0, 1000)), max_size=50))
def test_token_window_counts_the_last_minute(events):
    window = TokenWindow()
    events.sort()
    for at, tokens in events:
        window.add(at, tokens)
    now = events[-1][0] if events else 0.0
    expected = sum(t for at, t in events if int(at) > int(now) - 60)
    assert window.used(now) == expected


def test_retry_after_waits_for_the_oldest_tokens():
    window = TokenWindow()
    window.add(100.0, 500)
    window.add(130.0, 500)
    assert window.retry_after(131.0, 1000) == 29  # the first 500 leave at second 160
    assert window.retry_after(131.0, 400) == 59


# --- admission ----------------------------------------------------------------------------

def test_below_capacity_admits_at_once_and_over_a_limit_refuses():
    async def scenario() -> None:
        dispatcher = Dispatcher({"m": 2})
        caller = Caller("ann", KeyLimits(max_concurrent=2))
        first = dispatcher.admit(caller, "m")
        second = dispatcher.admit(caller, "m")
        assert isinstance(first, Ticket) and isinstance(second, Ticket)
        with pytest.raises(RateLimited) as refused:
            dispatcher.admit(caller, "m")
        assert refused.value.status == 429 and refused.value.retry_after == 1
        dispatcher.release(first)
        dispatcher.release(first)  # twice: counted once
        assert caller.running == 1 and dispatcher.pools["m"].in_flight == 1

    asyncio.run(scenario())


def test_tokens_per_minute_refuses_with_retry_after():
    async def scenario() -> None:
        dispatcher = Dispatcher({"m": 4})
        caller = Caller("bob", KeyLimits(tokens_per_minute=100))
        ticket = dispatcher.admit(caller, "m", now=1000.0)
        assert isinstance(ticket, Ticket)
        dispatcher.release(ticket, tokens=150, now=1000.0)
        with pytest.raises(RateLimited) as refused:
            dispatcher.admit(caller, "m", now=1010.0)
        assert refused.value.retry_after == 50
        assert isinstance(dispatcher.admit(caller, "m", now=1060.0), Ticket)

    asyncio.run(scenario())


def test_queued_requests_are_served_by_key_in_turn():
    async def scenario() -> list[str]:
        dispatcher = Dispatcher({"m": 1})
        flood, single = Caller("a"), Caller("b")
        running = dispatcher.admit(flood, "m")
        assert isinstance(running, Ticket)
        order: list[str] = []

        async def request(caller: Caller, label: str) -> None:
            admitted = dispatcher.admit(caller, "m")
            assert isinstance(admitted, Waiter)
            ticket = await dispatcher.wait(admitted)
            order.append(label)
            await asyncio.sleep(0)
            dispatcher.release(ticket)

        tasks = [asyncio.ensure_future(request(flood, f"a{i}")) for i in range(5)]
        await asyncio.sleep(0)
        tasks.append(asyncio.ensure_future(request(single, "b")))
        await asyncio.sleep(0)
        dispatcher.release(running)
        await asyncio.gather(*tasks)
        assert flood.running == flood.queued == single.running == single.queued == 0
        assert dispatcher.pools["m"].in_flight == 0
        return order

    assert asyncio.run(scenario()) == ["a0", "b", "a1", "a2", "a3", "a4"]


def test_a_client_that_leaves_is_removed_and_pings_run_while_waiting():
    async def scenario() -> None:
        dispatcher = Dispatcher({"m": 1})
        caller = Caller("c")
        held = dispatcher.admit(caller, "m")
        assert isinstance(held, Ticket)
        pings = 0

        async def ping() -> None:
            nonlocal pings
            pings += 1

        waiter = dispatcher.admit(caller, "m")
        assert isinstance(waiter, Waiter)
        leaving = asyncio.ensure_future(dispatcher.wait(waiter, ping, interval=0.01))
        await asyncio.sleep(0.05)
        assert pings >= 2
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert caller.queued == 0 and len(dispatcher.pools["m"].queue) == 0
        dispatcher.release(held)
        assert dispatcher.pools["m"].in_flight == 0

    asyncio.run(scenario())


def test_a_slot_granted_as_the_client_leaves_goes_to_the_next():
    async def scenario() -> None:
        dispatcher = Dispatcher({"m": 1})
        caller = Caller("c")
        held = dispatcher.admit(caller, "m")
        first, second = dispatcher.admit(caller, "m"), dispatcher.admit(caller, "m")
        assert isinstance(held, Ticket)
        assert isinstance(first, Waiter) and isinstance(second, Waiter)
        leaving = asyncio.ensure_future(dispatcher.wait(first))
        staying = asyncio.ensure_future(dispatcher.wait(second))
        await asyncio.sleep(0)
        dispatcher.release(held)  # grants ``first``...
        leaving.cancel()  # ...whose client leaves before it runs
        with pytest.raises(asyncio.CancelledError):
            await leaving
        ticket = await asyncio.wait_for(staying, 1)
        assert ticket.pool.in_flight == 1 and caller.running == 1 and caller.queued == 0

    asyncio.run(scenario())


def test_replica_choice_with_one_upstream_never_hashes_the_session():
    dispatcher = Dispatcher({"a": 1, "b": 1}, replicas={"m": ["a", "b"], "one": ["a"]})

    def boom() -> bytes:
        raise AssertionError("hashed")

    assert dispatcher.replica("one", boom) == "a"
    assert dispatcher.replica("m", lambda: b"s") == rendezvous(b"s", ["a", "b"])
    dispatcher.down.add(rendezvous(b"s", ["a", "b"]))
    assert dispatcher.replica("m", lambda: b"s") != rendezvous(b"s", ["a", "b"])
