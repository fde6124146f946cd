"""The LISTEN connection class: our channel's notifications go straight to the
sink as asyncpg parses them; anything else takes asyncpg's own path."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from sse_service.listener import ListenConnection


async def test_our_channel_goes_to_the_sink_not_to_the_callback(
        database_dsn: str, db: Any) -> None:
    conn = await asyncpg.connect(database_dsn, connection_class=ListenConnection)
    try:
        sunk: list[str] = []
        called_back: list[tuple[str, str]] = []
        conn.sse_channel = "sse_test_direct"
        conn.sse_sink = sunk.append
        for channel in ("sse_test_direct", "sse_test_other"):
            await conn.add_listener(
                channel, lambda _c, _p, ch, payload: called_back.append((ch, payload)))
        # One transaction: both notifications arrive in one read, in order.
        async with db.transaction():
            await db.execute("SELECT pg_notify('sse_test_direct', 'a'), "
                             "pg_notify('sse_test_other', 'b'), "
                             "pg_notify('sse_test_direct', 'c')")
        async with asyncio.timeout(5):
            while len(sunk) < 2 or not called_back:
                await asyncio.sleep(0.01)
        assert sunk == ["a", "c"]
        # asyncpg's callback path still serves every other channel, and only it.
        assert called_back == [("sse_test_other", "b")]
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


def test_asyncpg_still_has_the_hook() -> None:
    """Should asyncpg rename it, the service would silently fall back to the
    slower callback path: fail here instead, so that someone looks."""
    assert callable(getattr(asyncpg.Connection, "_process_notification", None))
