"""Fault injection: killed backends, restarted servers, silent networks, bad input.

No mocks: the faults are real (``pg_terminate_backend``, ``pg_ctl stop``, a
TCP proxy that swallows traffic, NOTIFY payloads from a real connection).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from sse_service.scratchdb import PrivateCluster, with_database
from tests import factories
from tests.conftest import create_database
from tests.harness import Running, barrier, running, settings_for, token
from tests.sseclient import SSEClient, request
from tests.tcpproxy import TcpProxy


async def wait_until(predicate: Any, timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.02)
    return loop.time() - start


async def next_real_event(client: SSEClient, timeout: float = 10) -> Any:
    return await client.next_event(timeout)


HOSTILE = [
    "not json",
    "",
    "[1,2,3]",
    '"a string"',
    "42",
    '{"users": ["%(u)s"], "data": {}}',
    '{"event": "items:updated", "data": {}}',
    '{"event": "items:updated", "users": ["%(u)s"]}',
    '{"event": 7, "users": ["%(u)s"], "data": {}}',
    '{"event": "items:updated", "users": "%(u)s", "data": {}}',
    '{"event": "items:updated", "users": [7], "data": {}}',
    '{"event": "items:updated", "users": [null], "data": {}}',
    '{"event": "items:updated", "users": ["%(u)s"], "data": "x"}',
    '{"event": "items:updated\\ndata: {\\"evil\\":1}", "users": ["%(u)s"], "data": {}}',
    '{"event": "items:updated\\r\\n\\r\\nevent: x", "users": ["%(u)s"], "data": {}}',
    '{"event": "items:updated", "users": ["%(u)s"], "data": {}, "id": "1\\nevent: x"}',
    '{"event": "a b", "users": ["%(u)s"], "data": {}}',
    '{"event": "items:updated", "users": ["%(u)s"], "data": {"x": NaN}}',
]


async def test_hostile_notifications_never_crash_or_leak(
        service: Running, db: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sse_service.dispatch")
    user, other = str(uuid.uuid4()), str(uuid.uuid4())
    c = await SSEClient.open(service.port, token=token(user))
    o = await SSEClient.open(service.port, token=token(other))
    await service.wait_streams(2)
    stats = service.service.stats
    rejected_before = sum(stats.notifications_rejected.values())
    for template in HOSTILE:
        await db.execute("SELECT pg_notify('sse_events', $1)", template.replace("%(u)s", user))
    # Data that tries to break SSE framing arrives as one escaped data line.
    evil = {"title": "x\n\nevent: admin\ndata: {}\r\n", "nested": {"a": ["\r"]}}
    await db.execute("SELECT pg_notify('sse_events', $1)", json.dumps(
        {"event": "items:updated", "users": [user], "data": evil}))
    # 7,999 bytes is the largest payload PostgreSQL takes; 8,000 fails in the writer.
    pad = "p" * (7999 - len(json.dumps({"event": "items:updated", "users": [user],
                                        "data": {"pad": ""}})))
    big = json.dumps({"event": "items:updated", "users": [user], "data": {"pad": pad}})
    assert len(big.encode()) == 7999
    await db.execute("SELECT pg_notify('sse_events', $1)", big)
    with pytest.raises(asyncpg.InvalidParameterValueError):
        await db.execute("SELECT pg_notify('sse_events', $1)", big + " ")

    first = await c.next_event()
    assert first.event == "items:updated" and first.json == evil
    assert b'data: {"title":"x\\n\\nevent: admin\\ndata: {}\\r\\n"' in c.raw
    second = await c.next_event()
    assert second.json == {"pad": pad}
    assert await barrier(db, c, user) == []  # nothing else, whatever came late
    assert await barrier(db, o, other) == []
    assert b"evil" not in c.raw and b"event: x" not in c.raw
    assert sum(stats.notifications_rejected.values()) - rejected_before == len(HOSTILE)
    assert service.service.listener.state.connected
    assert service.service.listener.state.reconnects == 0
    # Logged, but rate-limited: one line per kind of problem, not one per payload.
    lines = [r for r in caplog.records if r.name == "sse_service.dispatch"]
    assert 0 < len(lines) <= len({"not_json", "not_object", "bad_event", "bad_users",
                                  "bad_data", "bad_id"})
    await c.close()
    await o.close()


async def test_terminated_listener_backend_recovers_with_reset(service: Running, db: Any
                                                              ) -> None:
    user = str(uuid.uuid4())
    c = await SSEClient.open(service.port, token=token(user))
    await service.wait_streams(1)
    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'sse-service-listener' AND datname = current_database()")
    assert killed >= 1
    ev = await next_real_event(c)
    assert ev.event == "sync:reset"
    assert ev.json == {"reason": "listen_reconnected"}
    assert service.service.listener.state.reconnects == 1
    await db.execute("SELECT pg_notify('sse_events', $1)", json.dumps(
        {"event": "items:updated", "users": [user], "data": {"n": 1}}))
    ev = await next_real_event(c)
    assert ev.json == {"n": 1}
    await c.close()


@pytest.fixture
async def private_cluster() -> AsyncIterator[PrivateCluster]:
    cluster = PrivateCluster()
    await asyncio.to_thread(cluster.start)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.destroy)


@pytest.mark.slow
async def test_database_restart(private_cluster: PrivateCluster) -> None:
    dsn = await create_database(private_cluster.dsn)
    settings = settings_for(dsn, SSE_KEEPALIVE_INTERVAL="0.3")
    async with running(settings) as svc:
        user = str(uuid.uuid4())
        c = await SSEClient.open(svc.port, token=token(user))
        await svc.wait_streams(1)
        await asyncio.to_thread(private_cluster.stop, "fast")
        await wait_until(lambda: not svc.service.listener.state.connected, 10, "loss noticed")
        resp = await request(svc.port, "/readyz")
        assert resp.status == 503 and resp.json["ready"] is False
        assert (await request(svc.port, "/healthz")).status == 200
        # The stream stays open and keeps its keepalive while the database is away.
        ping = await c.next_event(timeout=3, skip_pings=False)
        assert ping.event == "sync:ping"
        # A new client can connect meanwhile too.
        late = await SSEClient.open(svc.port, token=token(user))
        assert late.status == 200
        await asyncio.to_thread(private_cluster.start)
        for client in (c, late):
            ev = await next_real_event(client, timeout=15)
            assert ev.event == "sync:reset" and ev.json == {"reason": "listen_reconnected"}
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SELECT pg_notify('sse_events', $1)", json.dumps(
                {"event": "items:updated", "users": [user], "data": {"n": 1}}))
        finally:
            await conn.close()
        for client in (c, late):
            assert (await next_real_event(client)).json == {"n": 1}
            await client.close()


@pytest.mark.slow
async def test_silent_network_drop_is_detected_within_10_s(database_dsn: str, db: Any) -> None:
    parts = urlsplit(database_dsn)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    via_proxy = with_database(
        f"postgresql://{parts.username or 'postgres'}@127.0.0.1:{proxy.port}/x",
        parts.path.lstrip("/"))
    # Production defaults for the probe: every 2 s, 2 s timeout.
    settings = settings_for(via_proxy, SSE_LISTEN_PROBE_INTERVAL="2",
                            SSE_LISTEN_PROBE_TIMEOUT="2", SSE_KEEPALIVE_INTERVAL="1")
    try:
        async with running(settings) as svc:
            user = str(uuid.uuid4())
            c = await SSEClient.open(svc.port, token=token(user))
            await svc.wait_streams(1)
            proxy.blackhole()
            took = await wait_until(lambda: not svc.service.listener.state.connected, 10,
                                    "a silent drop noticed")
            assert took < 10
            assert (await request(svc.port, "/readyz")).status == 503
            assert (await c.next_event(timeout=3, skip_pings=False)).event == "sync:ping"
            proxy.heal()
            ev = await next_real_event(c, timeout=15)
            assert ev.event == "sync:reset" and ev.json == {"reason": "listen_reconnected"}
            await db.execute("SELECT pg_notify('sse_events', $1)", json.dumps(
                {"event": "items:updated", "users": [user], "data": {"n": 2}}))
            assert (await next_real_event(c)).json == {"n": 2}
            await c.close()
    finally:
        await proxy.stop()


async def test_core_writes_succeed_with_the_service_stopped(db: Any) -> None:
    """Nobody listens: the writes commit, and the triggers still run and send
    every notification (each draws an event id), none of them failing."""
    counters = ("SELECT (SELECT CASE WHEN is_called THEN last_value ELSE 0 END"
                " FROM sse.event_id), coalesce(pg_sequence_last_value('sse.failed_events'), 0),"
                " coalesce(pg_sequence_last_value('sse.dropped_events'), 0)")
    owner = await factories.user(db)
    wl = await factories.wishlist(db, owner)
    await factories.viewers(db, wl, 50)
    ids_before, failed_before, dropped_before = await db.fetchrow(counters)
    for i in range(50):
        await factories.item(db, wl, f"item {i}")
    await db.execute("UPDATE items SET status = 'RESOLVED' WHERE wishlist_id = $1",
                     uuid.UUID(wl))
    await db.execute("DELETE FROM wishlists WHERE id = $1", uuid.UUID(wl))
    assert await db.fetchval("SELECT count(*) FROM items WHERE wishlist_id = $1",
                             uuid.UUID(wl)) == 0
    ids_after, failed_after, dropped_after = await db.fetchrow(counters)
    # 50 inserts; 50 resolutions (items:resolved to the owner, items:updated to
    # the viewers); the delete: the wishlist and each of its 50 items.
    assert ids_after - ids_before == 50 + 2 * 50 + 1 + 50
    assert (failed_after, dropped_after) == (failed_before, dropped_before)


async def test_inbox_overflow_becomes_a_reset(database_dsn: str, db: Any) -> None:
    """A burst bigger than SSE_INBOX_SIZE: what is lost is announced, not skipped."""
    async with running(settings_for(database_dsn, SSE_INBOX_SIZE="5")) as svc:
        user = str(uuid.uuid4())
        c = await SSEClient.open(svc.port, token=token(user))
        await svc.wait_streams(1)
        async with db.transaction():  # all 50 arrive together, before any drain
            for n in range(50):
                await db.execute("SELECT pg_notify('sse_events', $1)", json.dumps(
                    {"event": "items:updated", "users": [user], "data": {"n": n}}))
        # The reset is written once the burst's overflow was read; then wait for
        # the inbox to drain, and read up to a barrier behind whatever was left.
        events = [await c.next_event()]
        while events[-1].event != "sync:reset":
            events.append(await c.next_event())
        async with asyncio.timeout(20):
            while svc.service.dispatcher.backlog:
                await asyncio.sleep(0.01)
        events += await barrier(db, c, user)
        resets = [e for e in events if e.event == "sync:reset"]
        assert resets and resets[0].json == {"reason": "inbox_overflow"}
        got = [e.json["n"] for e in events if e.event == "items:updated"]
        assert len(got) < 50 and got == sorted(got)
        assert svc.service.stats.resets["inbox_overflow"] >= 1
        await db.execute("SELECT pg_notify('sse_events', $1)", json.dumps(
            {"event": "items:updated", "users": [user], "data": {"n": 99}}))
        assert (await next_real_event(c)).json == {"n": 99}
        await c.close()


async def test_a_bug_in_admission_is_a_reset_and_leaves_listen_up(
        database_dsn: str, db: Any) -> None:
    """Admission runs inside asyncpg's read of the LISTEN socket: an exception
    there (a bug, injected here) must become a gap, not break the connection."""
    async with running(settings_for(database_dsn)) as svc:
        user = str(uuid.uuid4())
        c = await SSEClient.open(svc.port, token=token(user))
        await c.preamble()
        senders = svc.service.listener.senders
        offer = senders.offer

        def broken(pid: int, payload: str) -> None:
            raise RuntimeError("injected admission bug")

        senders.offer = broken  # type: ignore[method-assign]
        try:
            await db.execute("SELECT pg_notify('sse_events', $1)", json.dumps(
                {"event": "items:updated", "users": [user], "data": {"n": 1}}))
            reset = await c.next_event()
        finally:
            senders.offer = offer  # type: ignore[method-assign]
        assert (reset.event, reset.json) == ("sync:reset", {"reason": "internal_error"})
        assert await barrier(db, c, user) == []  # and the connection still delivers
        assert svc.service.listener.state.reconnects == 0
        await c.close()
