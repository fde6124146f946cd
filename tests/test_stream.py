"""The stream endpoint end to end: real server, real PostgreSQL, raw bytes."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from typing import Any

import pytest
from aiohttp_sse import EventSourceResponse

from sse_service.stream import _HubStreamResponse
from tests import factories
from tests.harness import Running, barrier, running, settings_for, token
from tests.sseclient import SSEClient, request


async def notify(db: Any, event: str, users: list[str], data: dict[str, Any]) -> None:
    payload = json.dumps({"event": event, "users": users, "data": data})
    await db.execute("SELECT pg_notify('sse_events', $1)", payload)


async def test_headers_and_preamble(service: Running) -> None:
    client = await SSEClient.open(service.port, token=token(str(uuid.uuid4())))
    try:
        assert client.status == 200
        assert client.headers["content-type"].startswith("text/event-stream")
        assert client.headers["cache-control"] == "no-cache"
        assert client.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in client.headers
        assert await client.preamble() == []
        assert client.raw.startswith(b"retry: 3000\n")
        assert client.last_event_id is not None  # a resume point from the first byte
    finally:
        await client.close()


async def test_manual_notify_reaches_exactly_the_named_user(service: Running, db: Any) -> None:
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    a = await SSEClient.open(service.port, token=token(alice))
    b = await SSEClient.open(service.port, token=token(bob))
    try:
        await service.wait_streams(2)
        data = {"id": "x", "wishlist_id": "y", "status": "resolved", "title": "iPhone 15"}
        await notify(db, "items:resolved", [alice], data)
        ev = await a.next_event()
        assert ev.event == "items:resolved"
        assert ev.json == data
        assert b'event: items:resolved\ndata: {"id":"x","wishlist_id":"y","status":"resolved",' \
               b'"title":"iPhone 15"}\n\n' in a.raw
        assert await barrier(db, b, bob) == []  # nothing for bob before the sentinel
        assert await barrier(db, a, alice) == []  # and alice got it once
    finally:
        await a.close()
        await b.close()


async def test_every_stream_of_a_user_gets_every_event(service: Running, db: Any) -> None:
    alice = str(uuid.uuid4())
    clients = [await SSEClient.open(service.port, token=token(alice)) for _ in range(3)]
    try:
        await service.wait_streams(3)
        await notify(db, "wishlists:updated", [alice], {"id": "w1"})
        await notify(db, "items:updated", [alice], {"id": "i1", "wishlist_id": "w1"})
        for client in clients:
            first, second = await client.next_event(), await client.next_event()
            assert (first.event, second.event) == ("wishlists:updated", "items:updated")
    finally:
        for client in clients:
            await client.close()


async def test_trigger_to_stream(service: Running, db: Any) -> None:
    owner = await factories.user(db)
    wl = await factories.wishlist(db, owner)
    viewer = await factories.user(db)
    await factories.bookmark(db, viewer, wl)
    item = await factories.item(db, wl)
    o = await SSEClient.open(service.port, token=token(owner))
    v = await SSEClient.open(service.port, token=token(viewer))
    try:
        # The set-up's own events may reach the service after the streams opened:
        # read past them, so that the next event is the update's.
        await barrier(db, o, owner)
        await barrier(db, v, viewer)
        await db.execute("UPDATE items SET status = 'RESOLVED', title = 'Kettle' WHERE id = $1",
                         uuid.UUID(item))
        ev = await o.next_event()
        assert ev.event == "items:resolved"
        assert ev.json == {"id": item, "wishlist_id": wl, "status": "resolved", "title": "Kettle"}
        ev = await v.next_event()
        assert ev.event == "items:updated"
        assert ev.json == {"id": item, "wishlist_id": wl}
    finally:
        await o.close()
        await v.close()


async def test_status_counts_the_callers_streams(service: Running) -> None:
    alice = str(uuid.uuid4())
    resp = await request(service.port, "/api/v1/events/status", token=token(alice))
    assert resp.status == 200
    assert resp.json == {"connected": False, "total_connections": service.service.hub.count,
                         "user_connections": 0}
    clients = [await SSEClient.open(service.port, token=token(alice)) for _ in range(2)]
    try:
        await service.wait_streams(2)
        resp = await request(service.port, "/api/v1/events/status", token=token(alice))
        assert resp.json["connected"] is True
        assert resp.json["user_connections"] == 2
        assert resp.json["total_connections"] == 2
    finally:
        for client in clients:
            await client.close()
    await service.wait_streams(0)


async def test_healthz_and_readyz(service: Running) -> None:
    resp = await request(service.port, "/healthz")
    assert resp.status == 200
    assert resp.json["status"] == "ok"
    assert resp.json["listen"]["connected"] is True
    resp = await request(service.port, "/readyz")
    assert resp.status == 200 and resp.json["ready"] is True


async def test_disconnect_unregisters(service: Running) -> None:
    """A client that goes away leaves nothing behind: not in the hub, not in the
    expiry schedule, not in /status; the close is counted as a disconnect."""
    alice = str(uuid.uuid4())
    hub, stats = service.service.hub, service.service.stats
    client = await SSEClient.open(service.port, token=token(alice))
    await client.preamble()  # registered from here on
    assert hub.streams_of(alice) == 1 and hub.count == 1
    assert len(hub.expiries) == 1  # its token's exp is scheduled
    assert stats.streams_closed["disconnected"] == 0
    await client.close()
    await service.wait_streams(0)
    assert hub.streams_of(alice) == 0
    assert hub.subscribers() == []
    assert len(hub.expiries) == 0
    assert stats.streams_closed == {"disconnected": 1}
    resp = await request(service.port, "/api/v1/events/status", token=token(alice))
    assert resp.json == {"connected": False, "total_connections": 0, "user_connections": 0}


# -- the private hook of aiohttp-sse that the service overrides ---------------------------


async def test_the_librarys_own_ping_loop_never_runs(database_dsn: str, db: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub pings all streams itself; aiohttp-sse's ``: ping`` loop is switched off
    by overriding its private ``_ping``. With the library's interval made tiny, no
    ``: ping`` may reach a stream: this fails if an upgrade stops calling ``_ping``."""
    monkeypatch.setattr(_HubStreamResponse, "__init__", functools.partialmethod(
        EventSourceResponse.__init__, ping_interval=0.001))
    alice = str(uuid.uuid4())
    async with running(settings_for(database_dsn)) as svc:
        client = await SSEClient.open(svc.port, token=token(alice))
        try:
            await client.preamble()
            # Service and test share one event loop: a library ping loop, started
            # before the preamble was written, is due long before this sleep ends,
            # so its bytes would precede the sentinel's.
            await asyncio.sleep(0.05)
            assert await barrier(db, client, alice, skip_pings=False) == []
            assert client.comments == []
            assert b": ping" not in client.raw
        finally:
            await client.close()


async def test_prepare_still_starts_the_overridden_ping(
        service: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other half of the guard: aiohttp-sse's ``prepare`` still runs ``_ping``,
    so overriding it is what keeps the library's loop from running."""
    assert "_ping" in vars(EventSourceResponse)
    started = asyncio.Event()

    async def _ping(self: EventSourceResponse) -> None:
        started.set()

    monkeypatch.setattr(_HubStreamResponse, "_ping", _ping)
    client = await SSEClient.open(service.port, token=token(str(uuid.uuid4())))
    try:
        await client.preamble()
        await asyncio.wait_for(started.wait(), 20)
    finally:
        await client.close()


async def test_the_owner_sees_nothing_of_marks_not_even_in_ids(database_dsn: str,
                                                               db: Any) -> None:
    """Surprise mode end to end: the owner's stream carries the same kind of bytes
    whether or not somebody marks a gift, and its resume points are keepalive
    markers that change at every ping, not with other users' activity."""
    owner = await factories.user(db)
    wl = await factories.wishlist(db, owner)
    viewer = await factories.user(db)
    await factories.bookmark(db, viewer, wl)
    item = await factories.item(db, wl)
    async with running(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="0.2")) as svc:
        o = await SSEClient.open(svc.port, token=token(owner))
        v = await SSEClient.open(svc.port, token=token(viewer))
        try:
            await o.preamble()
            await v.preamble()
            quiet = [await o.next_event(skip_pings=False) for _ in range(3)]
            await factories.mark(db, item, viewer)
            ev = await v.next_event()
            assert ev.event == "marks:updated"
            # Everything the mark could have caused on the owner's stream is before this.
            busy = await barrier(db, o, owner, skip_pings=False)
            busy += [await o.next_event(skip_pings=False) for _ in range(3)]
            for window in (quiet, busy):
                assert {e.event for e in window} == {"sync:ping"}
            ids = [e.id for e in quiet + busy]
            assert len(set(ids)) == len(ids)  # a new marker at every ping
            assert all(i is not None and i.startswith(svc.service.history.instance + "-m")
                       for i in ids)
        finally:
            await o.close()
            await v.close()
