"""The stream endpoint end to end: real server, real PostgreSQL, raw bytes."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from tests import factories
from tests.harness import Running, token
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
        await client.events_within(0.2)
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
        assert await b.events_within(0.3) == []
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
        await service.wait_streams(2)
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
    client = await SSEClient.open(service.port, token=token(str(uuid.uuid4())))
    await service.wait_streams(1)
    await client.close()
    await service.wait_streams(0)
    await asyncio.sleep(0)


async def test_the_owner_sees_nothing_of_marks_not_even_in_ids(database_dsn: str,
                                                               db: Any) -> None:
    """Surprise mode end to end: the owner's stream carries the same kind of bytes
    whether or not somebody marks a gift, and its resume points are keepalive
    markers that change at every ping, not with other users' activity."""
    from tests.harness import running, settings_for

    owner = await factories.user(db)
    wl = await factories.wishlist(db, owner)
    viewer = await factories.user(db)
    await factories.bookmark(db, viewer, wl)
    item = await factories.item(db, wl)
    async with running(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="0.2")) as svc:
        o = await SSEClient.open(svc.port, token=token(owner))
        v = await SSEClient.open(svc.port, token=token(viewer))
        await svc.wait_streams(2)
        quiet = await o.events_within(0.7, skip_pings=False)
        await factories.mark(db, item, viewer)
        ev = await v.next_event()
        assert ev.event == "marks:updated"
        busy = await o.events_within(0.7, skip_pings=False)
        for window in (quiet, busy):
            assert window and {e.event for e in window} == {"sync:ping"}
            ids = [e.id for e in window]
            assert len(set(ids)) == len(ids)  # a new marker at every ping
            assert all(i is not None and i.startswith(svc.service.history.instance)
                       for i in ids)
        await o.close()
        await v.close()
