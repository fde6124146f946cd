"""Counters kept by the hot path as plain integers.

Incrementing an ``int`` attribute is the cheapest bookkeeping Python has; the
Prometheus exporter (:mod:`sse_service.metrics`) reads these at scrape time,
so the fan-out loop never calls into a metrics library.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

# Seconds; commit-to-write latency of an event's first write.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Cumulative-bucket histogram in the shape Prometheus expects."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        total = 0
        out: list[tuple[str, int]] = []
        for bound, n in zip((*map(str, self.buckets), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class Stats:
    """Everything the service counts. Reasons are short, stable strings."""

    def __init__(self) -> None:
        self.streams_opened = 0
        self.streams_closed: Counter[str] = Counter()
        self.notifications_received = 0
        self.notifications_rejected: Counter[str] = Counter()
        self.events_delivered = 0
        self.events_dropped = 0
        self.replays = 0
        self.replayed_events = 0
        self.resets: Counter[str] = Counter()
        self.listen_reconnects = 0
        self.latency = Histogram()
