"""Ending streams when their token expires: one timer for all of them.

A stream may not outlive its token (a revoked user would keep receiving
events), so each one ends when its token stops being accepted (``exp`` plus
the configured leeway) with ``auth:expired``. A timer per stream would cost
an event-loop timer handle for every idle stream; instead streams are kept in
buckets by the whole second in which they expire, and a single timer wakes
up for the earliest bucket. ``exp`` is a whole second anyway, so no stream
ends early and none more than a second late.

The heap of bucket keys is cleaned lazily (an emptied bucket's key stays in
it until due), and rebuilt whenever stale keys outnumber live buckets, so it
stays bounded by the number of open streams however often they reconnect.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable

from sse_service.subscriber import Subscriber

_SLACK = 16  # stale keys tolerated beyond the live buckets before a rebuild


class Expiries:
    """The open streams by expiry second; calls ``expire(sub)`` when one is due."""

    def __init__(self, expire: Callable[[Subscriber], None],
                 clock: Callable[[], float] = time.time) -> None:
        self._expire = expire
        self._clock = clock
        self._buckets: dict[int, set[Subscriber]] = {}
        self._seconds: list[int] = []  # a heap of the buckets' keys
        self._stale = 0  # keys in the heap whose bucket is gone
        self._timer: asyncio.TimerHandle | None = None
        self._timer_second: int | None = None

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    def add(self, sub: Subscriber) -> None:
        """Watch ``sub`` until its ``expires_at`` (epoch seconds; infinite: never)."""
        second = _second(sub)
        if second is None:
            return
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = set()
            heapq.heappush(self._seconds, second)
        bucket.add(sub)
        if self._timer_second is None or second < self._timer_second:
            self._schedule(second)

    def discard(self, sub: Subscriber) -> None:
        """Stop watching ``sub`` (it ended); nothing if it is not watched."""
        second = _second(sub)
        if second is None:
            return
        bucket = self._buckets.get(second)
        if bucket is not None:
            bucket.discard(sub)
            if not bucket:
                del self._buckets[second]
                self._stale += 1
                if self._stale > len(self._buckets) + _SLACK:
                    self._compact()

    def _compact(self) -> None:
        # Rare (amortised over as many discards as there are stale keys).
        self._seconds = list(self._buckets)
        heapq.heapify(self._seconds)
        self._stale = 0

    def close(self) -> None:
        """Cancel the timer (the streams themselves are ended by their owner)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_second = None

    def _schedule(self, second: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, second - self._clock()), self._fire)
        self._timer_second = second

    def _fire(self) -> None:
        self._timer = self._timer_second = None
        now = self._clock()
        seconds = self._seconds
        while seconds and seconds[0] <= now:
            bucket = self._buckets.pop(heapq.heappop(seconds), None)
            if bucket is None:
                self._stale -= 1
            for sub in bucket or ():
                self._expire(sub)
        while seconds and seconds[0] not in self._buckets:
            heapq.heappop(seconds)  # emptied buckets
            self._stale -= 1
        if seconds:
            self._schedule(seconds[0])


def _second(sub: Subscriber) -> int | None:
    """The bucket of ``sub``: the whole second its token expires in (None: never)."""
    return math.ceil(sub.expires_at) if math.isfinite(sub.expires_at) else None
