"""The sending side: notifications due at a rate, sent by ``pg_notify`` or by the triggers.

Each emitter records when it sent every key and when it saw the commit
(:class:`Emission`), and counts the deliveries due per client worker
(:class:`Audience`), so that the receipts can be matched and loss counted.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sse_service.bench.common import Conn, progress
from sse_service.ids import IdCodec

BENCH_EVENT = "bench:tick"
WARMUP_EVENT = "bench:warmup"  # sent before the measurement; clients count none of it
# What a client counts: one key per received event.
NOTIFY_PATTERN = rb'"seq":(\d+)'  # data {"t":...,"seq":N} of bench:tick
TRIGGERS_PATTERN = rb"id: (\d+)\nevent: items:updated\n"  # the event id on the wire
MAX_PAYLOAD = 7900  # bytes; NOTIFY refuses 8000

# A real UPDATE of an items row, in its own (autocommit) transaction, that
# also returns the id the trigger gave its event. Temporary: nothing persists.
TOUCH_FUNCTION = """
CREATE FUNCTION pg_temp.sse_bench_touch(item uuid, n int) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.items SET quantity = n, updated_at = now() WHERE id = item;
    RETURN currval('sse.event_id');
END
$$
"""


@dataclass
class Emission:
    """What was sent: (send, commit) times per key, and the deliveries due per worker.

    The commit time is when the writer saw its COMMIT (autocommit statement)
    complete; the send time, when it sent the statement. The true commit lies
    in between: send-to-receipt is an upper bound of commit-to-receipt, and
    commit-to-receipt can even come out negative when the writer's own event
    loop was late to see its commit.
    """

    commits: dict[int, tuple[float, float]] = field(default_factory=dict)
    expected: list[int] = field(default_factory=list)
    sent: int = 0  # notifications / transactions
    round_trips: list[float] = field(default_factory=list)  # seconds, emitter side
    first_send: float = 0.0
    last_commit: float = 0.0


class Audience:
    """Open streams per user per worker, to know the deliveries due."""

    def __init__(self, held: list[list[int]], users: int) -> None:
        # held[w] = the user of each of worker w's connected streams
        self.per_worker: list[list[int]] = []
        for users_of_worker in held:
            counts = [0] * users
            for u in users_of_worker:
                counts[u] += 1
            self.per_worker.append(counts)

    def add(self, expected: list[int], recipients: Sequence[int]) -> None:
        """Add to ``expected`` (per worker) the deliveries of one event to ``recipients``."""
        for w, counts in enumerate(self.per_worker):
            expected[w] += sum(map(counts.__getitem__, recipients))


async def tick_loop(rate: float, duration: float, tick: float,
                    send: Callable[[int], Any]) -> None:
    """Call ``send(n)`` every ``tick`` seconds with the notifications due by then."""
    total = max(1, round(rate * duration))
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    next_tick = start
    while sent < total:
        elapsed = loop.time() - start
        due = total if elapsed >= duration else min(total, int(rate * elapsed) + 1)
        if due > sent:
            await send(due - sent)
            sent = due
        next_tick += tick
        delay = next_tick - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            next_tick = loop.time()
            await asyncio.sleep(0)


class NotifyEmitter:
    """``pg_notify`` with bench:tick payloads; one transaction per tick."""

    def __init__(self, conn: Conn, channel: str, user_ids: list[str], fanout: int,
                 audience: Audience, emission: Emission, seed: int, *,
                 event: str = BENCH_EVENT, key: str = "seq") -> None:
        self.event, self.key = event, key  # the warm-up's data has no "seq"
        self.conn = conn
        self.channel = channel
        self.quoted = [json.dumps(u) for u in user_ids]
        self.fanout = fanout
        self.audience = audience
        self.emission = emission
        self.rng = random.Random(seed)
        self.population = range(len(user_ids))
        self.seq = 0

    def _payloads(self, seq: int, t: float, recipients: list[int]) -> list[str]:
        tail = f'],"data":{{"t":{t!r},"{self.key}":{seq}}}}}'
        head = f'{{"event":"{self.event}","users":['
        room = MAX_PAYLOAD - len(head) - len(tail)
        payloads: list[str] = []
        part: list[str] = []
        size = 0
        for u in recipients:
            q = self.quoted[u]
            if part and size + len(q) + 1 > room:
                payloads.append(head + ",".join(part) + tail)
                part, size = [], 0
            part.append(q)
            size += len(q) + 1
        payloads.append(head + ",".join(part) + tail)
        return payloads

    async def send(self, n: int) -> None:
        """Send ``n`` notifications, each to ``fanout`` random users, in one transaction."""
        em = self.emission
        t = time.time()
        if not em.first_send:
            em.first_send = t
        payloads: list[str] = []
        seqs: list[int] = []
        for _ in range(n):
            self.seq += 1
            recipients = self.rng.sample(self.population, self.fanout)
            payloads.extend(self._payloads(self.seq, t, recipients))
            self.audience.add(em.expected, recipients)
            seqs.append(self.seq)
        await self.conn.execute(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS x(p, n) "
            "ORDER BY n", self.channel, payloads)
        committed = time.time()
        em.round_trips.append(committed - t)
        for seq in seqs:
            em.commits[seq] = (t, committed)
        em.sent += n
        em.last_commit = committed


class TriggerEmitter:
    """UPDATEs of items rows; the triggers notify owner + viewers."""

    def __init__(self, conns: list[Conn], items: list[str], audiences: list[list[int]],
                 audience: Audience, emission: Emission, ids: IdCodec) -> None:
        self.conns = conns
        self.ids = ids  # the trigger's sequence number -> the id clients see
        self.items = [uuid.UUID(i) for i in items]
        self.audiences = audiences
        self.audience = audience
        self.emission = emission
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.seq = 0
        self.tasks = [asyncio.create_task(self._writer(c)) for c in conns]

    async def _writer(self, conn: Conn) -> None:
        em = self.emission
        while True:
            k = await self.queue.get()
            try:
                slot = k % len(self.items)
                t = time.time()
                if not em.first_send:
                    em.first_send = t
                # Count the deliveries due first: the event may arrive before we resume.
                self.audience.add(em.expected, self.audiences[slot])
                event_id = await conn.fetchval("SELECT pg_temp.sse_bench_touch($1, $2)",
                                               self.items[slot], 1 + k % 1000)
                committed = time.time()
                em.round_trips.append(committed - t)
                em.commits[int(self.ids.public(str(event_id)))] = (t, committed)
                em.sent += 1
                em.last_commit = max(em.last_commit, committed)
            finally:
                self.queue.task_done()

    async def send(self, n: int) -> None:
        """Queue ``n`` single-row UPDATEs for the writer connections."""
        for _ in range(n):
            self.seq += 1
            self.queue.put_nowait(self.seq)

    async def finish(self) -> None:
        """Wait for every queued UPDATE, then stop the writers."""
        await self.queue.join()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def warm_up(emitter: NotifyEmitter, rate: float, seconds: float, tick: float) -> None:
    """The same load, unmeasured and uncounted, for ``seconds`` before the measurement.

    Right after thousands of connections open, the service still owes the
    garbage collector a full pass over them (~0.3 s of CPU with 10,000
    streams), which the first seconds of load would otherwise pay inside
    the measurement. Clients ignore these events (no key in their data).
    """
    if seconds <= 0:
        return
    progress(f"warming up for {seconds:g} s")
    await tick_loop(rate, seconds, tick, emitter.send)
    await asyncio.sleep(1.0)  # let the last of them through
