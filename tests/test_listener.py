"""The LISTEN connection class: our channel's notifications go straight to the
sink as asyncpg parses them; anything else takes asyncpg's own path."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from sse_service.listener import ListenConnection


async def test_our_channel_goes_to_the_sink_not_to_the_callback(
        database_dsn: str, db: Any) -> None:
    """Also the guard of the override: should an asyncpg release stop calling
    ``Connection._process_notification`` (renamed, say), the service would
    silently fall back to the slower callback path; then nothing reaches the
    sink and this fails."""
    conn = await asyncpg.connect(database_dsn, connection_class=ListenConnection)
    try:
        sunk: list[tuple[int, str]] = []
        called_back: list[tuple[str, str]] = []
        conn.sse_channel = "sse_test_direct"
        conn.sse_sink = lambda pid, payload: sunk.append((pid, payload))
        for channel in ("sse_test_direct", "sse_test_other"):
            await conn.add_listener(
                channel, lambda _c, _p, ch, payload: called_back.append((ch, payload)))
        # One transaction: all of them arrive in one read, in order; the last one
        # (on the other channel) is the barrier.
        async with db.transaction():
            await db.execute("SELECT pg_notify('sse_test_direct', 'a'), "
                             "pg_notify('sse_test_other', 'b'), "
                             "pg_notify('sse_test_direct', 'c'), "
                             "pg_notify('sse_test_other', 'z')")
        async with asyncio.timeout(10):
            while ("sse_test_other", "z") not in called_back:
                await asyncio.sleep(0.01)
        sender = db.get_server_pid()
        assert sunk == [(sender, "a"), (sender, "c")]  # with the notifying backend's pid
        # asyncpg's callback path still serves every other channel, and only it.
        assert called_back == [("sse_test_other", "b"), ("sse_test_other", "z")]
    finally:
        await conn.close()


async def test_without_a_sink_asyncpg_calls_the_listener_callback(database_dsn: str,
                                                                  db: Any) -> None:
    """The fallback: a connection not (yet) given a sink behaves like asyncpg's."""
    conn = await asyncpg.connect(database_dsn, connection_class=ListenConnection)
    try:
        got: asyncio.Queue[str] = asyncio.Queue(maxsize=10)
        await conn.add_listener("sse_test_plain",
                                lambda _c, _p, _ch, payload: got.put_nowait(payload))
        await db.execute("SELECT pg_notify('sse_test_plain', 'x')")
        async with asyncio.timeout(5):
            assert await got.get() == "x"
    finally:
        await conn.close()
