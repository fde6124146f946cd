"""Property: random interleavings of writes, disconnects and reconnects.

Two instances listen on the same database; clients reconnect to either one
with the last id they saw, as EventSource does behind a load balancer. For
every client and every event addressed to it: the event arrives exactly once
and in order, or a ``sync:reset`` arrives where it would have been.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import asyncpg
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sse_service.ids import IdCodec
from tests import factories
from tests.conftest import NotificationLog
from tests.guarantee import check_stream
from tests.harness import JWT_KEY, ChannelSync, Running, barrier, running, settings_for, token
from tests.sseclient import SSE, SSEClient

USERS = 3

write = st.tuples(st.just("write"), st.integers(0, USERS - 1))
op = st.one_of(
    write, write, write,  # writes are the common case
    st.tuples(st.just("drop"), st.integers(0, USERS - 1)),
    st.tuples(st.just("connect"), st.integers(0, USERS - 1), st.integers(0, 1)),
)


@dataclass
class Client:
    user: str
    item: str
    conn: SSEClient | None = None
    last_id: str | None = None
    since: int | None = None  # notifications before the first connect are not its concern
    timeline: list[SSE] = field(default_factory=list)


async def scenario(dsn: str, ops: list[tuple[int | str, ...]]) -> None:
    db = await asyncpg.connect(dsn)
    log = NotificationLog()
    await db.add_listener("sse_events", log.callback)
    sync = await ChannelSync.on(db)  # the log has everything committed before a sync()
    clients: list[Client] = []
    for _ in range(USERS):
        u = await factories.user(db)
        clients.append(Client(u, await factories.item(db, await factories.wishlist(db, u))))
    try:
        # Small, different histories, so that evictions and truncations happen.
        small_a = settings_for(dsn, SSE_REPLAY_WINDOW="6", SSE_REPLAY_PER_USER="2")
        small_b = settings_for(dsn, SSE_REPLAY_WINDOW="12", SSE_REPLAY_PER_USER="3")
        async with running(small_a) as a, running(small_b) as b:
            instances: list[Running] = [a, b]
            await sync()
            start = len(log.raw)  # both instances LISTEN from here on

            async def caught_up(inst: Running) -> None:
                """Until ``inst`` has handled every notification committed so far."""
                await sync()
                await inst.wait_received(len(log.raw) - start)

            serial = 0
            for step in ops:
                kind = step[0]
                c = clients[int(step[1])]
                if kind == "write":
                    serial += 1
                    await db.execute("UPDATE items SET title = $2 WHERE id = $1",
                                     uuid.UUID(c.item), f"t{serial}")
                    if c.conn is not None:
                        c.timeline.append(await c.conn.next_event())
                        c.last_id = c.conn.last_event_id
                elif kind == "drop" and c.conn is not None:
                    await c.conn.close()
                    c.conn = None
                elif kind == "connect" and c.conn is None:
                    inst = instances[int(step[2])]
                    # Every earlier write is in the log and handled by inst: none of
                    # them can reach the new stream live, after its `since`.
                    await caught_up(inst)
                    if c.since is None:
                        c.since = len(log.raw)
                    headers = {"Last-Event-ID": c.last_id} if c.last_id else {}
                    c.conn = await SSEClient.open(inst.port, token=token(c.user),
                                                  headers=headers)
                    c.timeline.extend(await c.conn.preamble())  # the replay or reset
                    c.last_id = c.conn.last_event_id or c.last_id
            for c in clients:
                if c.conn is None and c.since is not None:  # come back once, as a tab would
                    headers = {"Last-Event-ID": c.last_id} if c.last_id else {}
                    c.conn = await SSEClient.open(b.port, token=token(c.user), headers=headers)
                    c.timeline.extend(await c.conn.preamble())
                if c.conn is not None:
                    # Barriers only now: as events, they would take places in the
                    # small histories and change what the steps above exercise.
                    c.timeline.extend(await barrier(db, c.conn, c.user))
                    await c.conn.close()
            await sync()
    finally:
        await db.close()

    for c in clients:
        if c.since is None:
            continue
        mine = [IdCodec(JWT_KEY).public(str(p["id"])) for p in log.payloads[c.since:]
                if c.user in p["users"] and p["event"] == "items:updated"]
        check_stream(c.timeline, mine)


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=5, max_size=40))
# Paths worth covering every time: truncation of a user's history on A, eviction
# from A's window, and a resume point that only A knows used on B.
@example(ops=[("connect", 0, 0), ("write", 0), ("drop", 0), *[("write", 0)] * 4,
              ("connect", 0, 0), ("write", 0)])
@example(ops=[("connect", 0, 0), ("write", 0), ("drop", 0), *[("write", 1)] * 8,
              ("write", 0), ("connect", 0, 0)])
@example(ops=[("connect", 0, 0), ("drop", 0), ("write", 0), ("connect", 0, 1), ("write", 0)])
def test_random_interleavings_never_lose_an_event_silently(
        database_dsn: str, ops: list[tuple[int | str, ...]]) -> None:
    asyncio.run(scenario(database_dsn, ops))
