"""The hub's token-expiry buckets (sse_service.expiry), on a fake wall clock."""

from __future__ import annotations

import asyncio
from typing import Any

from sse_service.expiry import Expiries


class Stream:
    """What Expiries needs of a subscriber: its expiry, and identity."""

    def __init__(self, name: str, expires_at: float) -> None:
        self.name, self.expires_at = name, expires_at

    def __repr__(self) -> str:
        return self.name


async def test_streams_end_at_their_second_in_order_and_ended_ones_never() -> None:
    now = [100.95]
    fired: list[Any] = []
    expiries = Expiries(fired.append, clock=lambda: now[0])
    a, b, c = Stream("a", 100.2), Stream("b", 100.7), Stream("c", 101.5)
    for s in (c, a, b):
        expiries.add(s)  # type: ignore[arg-type]
    expiries.discard(b)  # type: ignore[arg-type]  # b's stream ended on its own
    assert len(expiries) == 2
    await asyncio.sleep(0.1)  # the timer (due in 0.05 s) fires before its second...
    assert fired == []  # ...and finds nothing due yet: never early
    now[0] = 101.0
    await asyncio.sleep(0.1)
    assert fired == [a]
    now[0] = 102.0
    await asyncio.sleep(1.1)  # rescheduled 1 s ahead for c's second
    assert fired == [a, c]
    assert len(expiries) == 0


async def test_an_earlier_stream_moves_the_timer_and_a_past_one_ends_at_once() -> None:
    now = [200.0]
    fired: list[Any] = []
    expiries = Expiries(fired.append, clock=lambda: now[0])
    late, past = Stream("late", 500.0), Stream("past", 150.0)
    never = Stream("never", float("inf"))  # a Subscriber's default: no token expiry
    expiries.add(never)  # type: ignore[arg-type]
    expiries.discard(never)  # type: ignore[arg-type]
    expiries.add(never)  # type: ignore[arg-type]
    expiries.add(late)  # type: ignore[arg-type]
    expiries.add(past)  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert fired == [past]
    expiries.close()  # the shutdown: no timer left behind
    now[0] = 600.0
    await asyncio.sleep(0.05)
    assert fired == [past]


async def test_reconnects_on_one_token_leave_the_heap_bounded() -> None:
    """100,000 reconnects on one token must not leave 100,000 heap entries until exp."""
    now = [1000.0]
    expiries = Expiries(lambda _sub: None, clock=lambda: now[0])
    alive = [Stream(f"alive{i}", 5000.0 + i) for i in range(3)]
    for s in alive:
        expiries.add(s)  # type: ignore[arg-type]
    for i in range(100_000):
        churn = Stream(f"c{i}", 4000.0 + i % 7)  # a few tokens, reconnecting over and over
        expiries.add(churn)  # type: ignore[arg-type]
        expiries.discard(churn)  # type: ignore[arg-type]
        assert len(expiries._seconds) <= 2 * len(alive) + 20
    assert len(expiries) == len(alive)
    expiries.close()


async def test_the_timer_still_fires_in_order_after_a_rebuild() -> None:
    now = [100.0]
    fired: list[Any] = []
    expiries = Expiries(fired.append, clock=lambda: now[0])
    keep = [Stream("k1", 100.5), Stream("k2", 101.5)]
    for s in keep:
        expiries.add(s)  # type: ignore[arg-type]
    for i in range(200):  # enough stale keys to force rebuilds
        s = Stream(f"s{i}", 100.2 + i)
        expiries.add(s)  # type: ignore[arg-type]
        expiries.discard(s)  # type: ignore[arg-type]
    now[0] = 102.0
    await asyncio.sleep(0.05)  # the timer is due (it was scheduled for 101 s)
    async with asyncio.timeout(5):
        while len(fired) < 2:
            await asyncio.sleep(0.01)
    assert fired == keep
    assert len(expiries._seconds) <= 2  # only stale keys beyond the last due second
    expiries.close()
