"""Issue 3's guarantee on a live server: every event is delivered, or a reset says so."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
from aiohttp import web

from sse_service.app import create_app
from sse_service.ids import IdCodec
from sse_service.settings import Settings
from tests.harness import JWT_KEY, Running, running, settings_for, start, token
from tests.sseclient import SSEClient, request

STREAM = "/api/v1/events/stream"


async def notify(db: Any, user: str | list[str], n: int, *, id: int | None = None,
                 event: str = "items:updated") -> None:
    users = [user] if isinstance(user, str) else user
    payload: dict[str, Any] = {"event": event, "users": users, "data": {"n": n}}
    if id is not None:
        payload["id"] = id
    await db.execute("SELECT pg_notify('sse_events', $1)", json.dumps(payload))


async def next_n(client: SSEClient, count: int) -> list[int]:
    return [(await client.next_event()).json["n"] for _ in range(count)]


async def settled(port: int, db: Any) -> None:
    """The barrier: returns once the service has handled every notification sent
    before it (NOTIFY arrives in commit order, so a sentinel sent now comes last)."""
    watcher = str(uuid.uuid4())
    c = await SSEClient.open(port, token=token(watcher))
    try:
        await c.next_event(skip_pings=False)  # the connect ping: registered
        await notify(db, watcher, -1)
        assert (await c.next_event()).json == {"n": -1}
    finally:
        await c.close()


async def test_resume_with_last_event_id_header_and_query(service: Running, db: Any) -> None:
    user = str(uuid.uuid4())
    c = await SSEClient.open(service.port, token=token(user))
    await service.wait_streams(1)
    await notify(db, user, 1)
    await notify(db, user, 2)
    assert await next_n(c, 2) == [1, 2]
    last = c.last_event_id
    assert last is not None
    await c.close()
    await service.wait_streams(0)
    await notify(db, user, 3)
    await notify(db, [str(uuid.uuid4())], 99)  # somebody else's, in between
    await notify(db, user, 4)
    await settled(service.port, db)  # 3 and 4 are in the history: a replay, not live

    by_header = await SSEClient.open(service.port, token=token(user),
                                     headers={"Last-Event-ID": last})
    by_query = await SSEClient.open(service.port, f"{STREAM}?lastEventId={last}",
                                    token=token(user))
    try:
        for c2 in (by_header, by_query):
            assert await next_n(c2, 2) == [3, 4]
        await notify(db, user, 5)
        for c2 in (by_header, by_query):
            assert await next_n(c2, 1) == [5]
        assert service.service.stats.replays == 2
    finally:
        await by_header.close()
        await by_query.close()


async def test_a_burst_arrives_complete_in_order_and_coalesced(service: Running,
                                                                 db: Any) -> None:
    user, other = str(uuid.uuid4()), str(uuid.uuid4())
    c = await SSEClient.open(service.port, token=token(user))
    o = await SSEClient.open(service.port, token=token(other))
    await service.wait_streams(2)
    await c.next_event(skip_pings=False)  # the connect ping: the preamble is read
    chunks_before = c.chunks
    async with db.transaction():  # delivered together at commit
        for n in range(200):
            await notify(db, [user, other] if n % 2 else user, n)
    assert await next_n(c, 200) == list(range(200))
    assert await next_n(o, 100) == list(range(1, 200, 2))
    # Events that arrive together leave in fewer writes than events.
    assert c.chunks - chunks_before < 200
    await c.close()
    await o.close()


async def test_a_client_that_saw_no_event_still_resumes(service: Running, db: Any) -> None:
    user = str(uuid.uuid4())
    await notify(db, [str(uuid.uuid4())], 0)  # somebody else's
    handshake = await first_resume_point(service.port, user)
    await service.wait_streams(0)
    await notify(db, user, 1)
    await settled(service.port, db)
    c = await SSEClient.open(service.port, token=token(user), headers={"Last-Event-ID": handshake})
    try:
        ev = await c.next_event()
        assert (ev.event, ev.json) == ("items:updated", {"n": 1})
        assert service.service.stats.replayed_events == 1  # from the history, not live
    finally:
        await c.close()


@pytest.mark.parametrize(("last_id", "reason"), [
    ("12345678901234", "unknown_last_event_id"),
    ("bad id", "invalid_last_event_id"),
    ("x" * 100, "invalid_last_event_id"),
    ("1;DROP", "invalid_last_event_id"),
])
async def test_unfillable_gap_starts_with_sync_reset(service: Running, last_id: str,
                                                     reason: str) -> None:
    c = await SSEClient.open(service.port, token=token(str(uuid.uuid4())),
                             headers={"Last-Event-ID": last_id})
    try:
        assert c.status == 200
        ev = await c.next_event()
        assert ev.event == "sync:reset"
        assert ev.json == {"reason": reason}
        assert ev.id is not None and ev.id != last_id  # a fresh resume point
    finally:
        await c.close()


async def test_resume_on_another_instance(database_dsn: str, db: Any) -> None:
    """Ids come from the database, so instance B can resume a client of instance A."""
    user = str(uuid.uuid4())
    async with running(settings_for(database_dsn)) as a, \
            running(settings_for(database_dsn)) as b:
        c = await SSEClient.open(a.port, token=token(user))
        await a.wait_streams(1)
        base = int(await db.fetchval("SELECT nextval('sse.event_id')"))
        await notify(db, user, 1, id=base + 1)
        assert await next_n(c, 1) == [1]
        seen = c.last_event_id
        assert seen == IdCodec(JWT_KEY).public(str(base + 1))  # opaque, same everywhere
        await c.close()
        await notify(db, user, 2, id=base + 2)
        await notify(db, user, 3, id=base + 3)
        await settled(b.port, db)
        c = await SSEClient.open(b.port, token=token(user), headers={"Last-Event-ID": str(seen)})
        try:
            assert await next_n(c, 2) == [2, 3]
        finally:
            await c.close()
        # An id that only instance A made up (a NOTIFY without "id") cannot resume on B.
        c = await SSEClient.open(a.port, token=token(user))
        await notify(db, user, 4)
        assert await next_n(c, 1) == [4]
        local = c.last_event_id
        await c.close()
        c = await SSEClient.open(b.port, token=token(user), headers={"Last-Event-ID": str(local)})
        try:
            ev = await c.next_event()
            assert ev.event == "sync:reset"
        finally:
            await c.close()


async def test_keepalive_ping(database_dsn: str) -> None:
    async with running(settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="0.2")) as svc:
        c = await SSEClient.open(svc.port, token=token(str(uuid.uuid4())))
        try:
            ev = await c.next_event(skip_pings=False)
            assert ev.event == "sync:ping"
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ev.json["timestamp"])
            ev2 = await c.next_event(skip_pings=False)
            assert ev2.event == "sync:ping"
        finally:
            await c.close()


async def test_slow_consumer_is_cut_off_and_others_are_not_delayed(database_dsn: str,
                                                                   db: Any) -> None:
    settings = settings_for(database_dsn, SSE_STREAM_BUFFER_BYTES="65536")
    async with running(settings) as svc:
        slow_user, fast_user = str(uuid.uuid4()), str(uuid.uuid4())
        slow = await SSEClient.open(svc.port, token=token(slow_user))
        fast = await SSEClient.open(svc.port, token=token(fast_user))
        await svc.wait_streams(2)
        slow.stop_reading()
        big = "x" * 7000
        loop = asyncio.get_running_loop()
        for i in range(1000):  # 7 MB for the slow reader: more than the kernel buffers (~4 MB)
            await db.execute("SELECT pg_notify('sse_events', $1)", json.dumps(
                {"event": "items:updated", "users": [slow_user, fast_user],
                 "data": {"n": i, "pad": big}}))
            if i % 50 == 0:
                t0 = loop.time()
                while (await fast.next_event()).json["n"] != i:
                    pass
                assert loop.time() - t0 < 2.0  # functional deadline, not a benchmark
        await svc.wait_streams(1)
        assert svc.service.stats.streams_closed["slow_consumer"] == 1
        assert svc.service.hub.streams_of(fast_user) == 1
        await slow.close()
        await fast.close()


async def test_per_user_cap_closes_the_oldest_with_a_long_retry(database_dsn: str) -> None:
    async with running(settings_for(database_dsn, SSE_MAX_STREAMS_PER_USER="2")) as svc:
        user = str(uuid.uuid4())
        first = await SSEClient.open(svc.port, token=token(user))
        second = await SSEClient.open(svc.port, token=token(user))
        await svc.wait_streams(2)
        third = await SSEClient.open(svc.port, token=token(user))
        events = [e for e in await first.wait_eof() if e.event != "sync:ping"]
        assert [e.event for e in events] == ["sync:closed"]
        assert events[0].json == {"reason": "too_many_streams", "limit": 2}
        assert first.retry == 3_600_000
        await svc.wait_streams(2)
        assert svc.service.hub.streams_of(user) == 2
        for c in (first, second, third):
            await c.close()


async def test_reconnecting_clients_over_the_cap_settle(database_dsn: str, db: Any) -> None:
    """N+2 EventSource-like clients that honour retry: no reconnect storm. The two
    evicted ones wait the hour they are told to; the others keep their streams."""
    cap = 3
    async with running(settings_for(database_dsn, SSE_MAX_STREAMS_PER_USER=str(cap))) as svc:
        user = str(uuid.uuid4())
        connects = 0
        waiting: list[float] = []  # the retry each ended stream was told to wait
        received: list[int] = []
        stop = asyncio.Event()

        async def event_source() -> None:
            nonlocal connects
            retry = 0.05
            while not stop.is_set():
                connects += 1
                c = await SSEClient.open(svc.port, token=token(user))
                try:
                    while not stop.is_set():
                        try:
                            ev = await c.next_event(timeout=0.1)
                        except TimeoutError:
                            continue
                        if ev.event == "items:updated":
                            received.append(ev.json["n"])
                except EOFError:
                    pass
                finally:
                    await c.close()
                if c.retry is not None:
                    retry = c.retry / 1000
                if stop.is_set():
                    break
                waiting.append(retry)
                try:
                    await asyncio.wait_for(stop.wait(), retry)
                except TimeoutError:
                    pass

        tasks = [asyncio.create_task(event_source()) for _ in range(cap + 2)]
        async with asyncio.timeout(15):
            while len(waiting) < 2 or svc.service.hub.streams_of(user) != cap:
                await asyncio.sleep(0.01)
        await notify(db, user, 7)  # the barrier: the streams left are still attached
        async with asyncio.timeout(10):
            while len(received) < cap:
                await asyncio.sleep(0.01)
        assert waiting == [3600.0, 3600.0]  # evicted: told to stay away for an hour
        assert received == [7] * cap
        assert connects == cap + 2 and svc.service.hub.streams_of(user) == cap
        stop.set()
        await asyncio.gather(*tasks)


async def test_global_cap_is_503_with_retry_after(database_dsn: str) -> None:
    async with running(settings_for(database_dsn, SSE_MAX_STREAMS="2")) as svc:
        clients = [await SSEClient.open(svc.port, token=token(str(uuid.uuid4())))
                   for _ in range(2)]
        await svc.wait_streams(2)
        resp = await request(svc.port, STREAM, token=token(str(uuid.uuid4())))
        assert resp.status == 503
        assert int(resp.headers["retry-after"]) > 0
        assert resp.json["error"] == "over_capacity"
        for c in clients:
            await c.close()


async def test_stream_closes_at_token_expiry(service: Running) -> None:
    c = await SSEClient.open(service.port, token=token(str(uuid.uuid4()), ttl=1.5))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    events = await c.wait_eof(timeout=5)
    assert [e.event for e in events if e.event != "sync:ping"] == ["auth:expired"]
    assert events[-1].json == {"reason": "token_expired"}
    assert 0.4 < loop.time() - t0 < 3.5
    assert service.service.stats.streams_closed["token_expired"] >= 1
    await c.close()


async def test_graceful_shutdown_tells_clients_to_come_back_soon(database_dsn: str,
                                                                 db: Any) -> None:
    settings = settings_for(database_dsn, SSE_SHUTDOWN_RETRY_MS="400")
    svc = await start(settings)
    await svc.wait_listening()
    user = str(uuid.uuid4())
    clients = [await SSEClient.open(svc.port, token=token(user)) for _ in range(3)]
    await svc.wait_streams(3)
    await notify(db, user, 1)
    for c in clients:
        assert await next_n(c, 1) == [1]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await svc.stop()
    assert loop.time() - t0 < 3
    for c in clients:
        await c.wait_eof(timeout=2)  # a clean end of the chunked body
        assert c.retry is not None and 200 <= c.retry <= 600
        assert "server restarting" in c.comments
        await c.close()


@pytest.mark.slow
async def test_a_dead_peer_is_noticed_by_the_keepalive(database_dsn: str) -> None:
    """A peer that stops acknowledging: the kernel gives up after SSE_SEND_TIMEOUT
    (TCP_USER_TIMEOUT, which also bounds zero-window probing), and the next
    keepalive write finds the connection gone. Only pings flow: no buffer fills."""
    settings = settings_for(database_dsn, SSE_KEEPALIVE_INTERVAL="0.1", SSE_SEND_TIMEOUT="1")
    async with running(settings) as svc:
        c = await SSEClient.open(svc.port, token=token(str(uuid.uuid4())), rcvbuf=1024)
        await svc.wait_streams(1)
        c.stop_reading()
        # Fill the tiny receive window with pings; after that the peer only answers
        # zero-window probes, which TCP_USER_TIMEOUT stops waiting for.
        await svc.wait_streams(0, timeout=20)
        assert svc.service.stats.streams_closed["disconnected"] == 1
        await c.close()


async def test_a_token_within_the_leeway_lives_until_exp_plus_leeway(database_dsn: str,
                                                                      db: Any) -> None:
    """Accepted within SSE_JWT_LEEWAY, the stream must not be expired at once (the
    client would loop); it ends at exp + leeway, consistently with the check."""
    async with running(settings_for(database_dsn, SSE_JWT_LEEWAY="3")) as svc:
        user = str(uuid.uuid4())
        tok = token(user, ttl=-1)  # exp one second ago, inside the leeway
        exp = jwt.decode(tok, options={"verify_signature": False})["exp"]
        c = await SSEClient.open(svc.port, token=tok)
        try:
            assert c.status == 200
            await svc.wait_streams(1)
            await notify(db, user, 1)  # the barrier: still open when it arrives
            ev = await c.next_event()
            assert (ev.event, ev.json) == ("items:updated", {"n": 1})
            events = await c.wait_eof(timeout=10)
            assert [e.event for e in events if e.event != "sync:ping"] == ["auth:expired"]
            assert time.time() >= exp + 3 - 0.05  # never before exp + leeway
        finally:
            await c.close()


@asynccontextmanager
async def slow_to_prepare(settings: Settings, delay: float) -> AsyncIterator[Running]:
    """The service, with a response-prepare hook that awaits: every open of a stream
    suspends between the capacity check and the registration, as it may in production
    when the headers' write has to wait."""
    app = create_app(settings)

    async def slow(request: web.Request, _response: web.StreamResponse) -> None:
        if request.path == STREAM:
            await asyncio.sleep(delay)

    app.on_response_prepare.append(slow)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    svc = Running(app, runner, runner.addresses[0][1])
    try:
        await svc.wait_listening()
        yield svc
    finally:
        await svc.stop()


async def test_concurrent_opens_do_not_overshoot_the_cap(database_dsn: str) -> None:
    async with slow_to_prepare(settings_for(database_dsn, SSE_MAX_STREAMS="2"), 0.3) as svc:
        hub = svc.service.hub
        clients = await asyncio.gather(*(
            SSEClient.open(svc.port, token=token(str(uuid.uuid4()))) for _ in range(6)))
        try:
            assert sorted(c.status for c in clients) == [200, 200, 503, 503, 503, 503]
            await svc.wait_streams(2)
            assert hub.opening == 0
        finally:
            for c in clients:
                await c.close()
        await svc.wait_streams(0)
        # A client that leaves while its stream is being prepared gives its place back.
        opened = svc.service.stats.streams_opened
        for _ in range(3):
            _reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
            writer.write((f"GET {STREAM} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                          f"{token(str(uuid.uuid4()))}\r\n\r\n").encode())
            await writer.drain()
            async with asyncio.timeout(5):
                while hub.opening == 0:
                    await asyncio.sleep(0.005)
            writer.close()
        async with asyncio.timeout(10):
            while hub.opening:
                await asyncio.sleep(0.01)
        assert svc.service.stats.streams_opened == opened  # released, never attached
        again = [await SSEClient.open(svc.port, token=token(str(uuid.uuid4())))
                 for _ in range(2)]
        try:
            assert [c.status for c in again] == [200, 200]
            await svc.wait_streams(2)
        finally:
            for c in again:
                await c.close()


async def test_hostile_names_and_deep_payloads_reach_nobody_and_the_log_stays_short(
        service: Running, db: Any, caplog: pytest.LogCaptureFixture) -> None:
    user = str(uuid.uuid4())
    c = await SSEClient.open(service.port, token=token(user))
    try:
        await service.wait_streams(1)
        caplog.set_level(logging.INFO, logger="sse_service")
        for name in ("SYNC:reset", "Auth:Expired", "sync:Closed", "error", "message", "ERROR"):
            await notify(db, user, 0, event=name)
        deep = '{"a":' * 300 + "1" + "}" * 300  # decodable, too deep to encode
        for _ in range(200):
            await db.execute("SELECT pg_notify('sse_events', $1)",
                             f'{{"event":"items:updated","users":["{user}"],"data":{deep}}}')
        await notify(db, user, 1)  # the barrier: everything before it has been handled
        ev = await c.next_event()
        assert (ev.event, ev.json) == ("items:updated", {"n": 1})
        rejected = service.service.stats.notifications_rejected
        assert rejected["reserved_event"] == 6 and rejected["bad_data"] == 200
        lines = [r for r in caplog.records if r.name.startswith("sse_service")]
        assert len(lines) <= 4, [r.getMessage() for r in lines]
        assert not any(r.exc_info for r in lines)
    finally:
        await c.close()


async def test_an_absurd_ts_does_not_poison_the_latency_metric(service: Running,
                                                                db: Any) -> None:
    user = str(uuid.uuid4())
    c = await SSEClient.open(service.port, token=token(user))
    try:
        await service.wait_streams(1)
        latency = service.service.stats.latency
        count, total = latency.count, latency.sum
        for n, ts in enumerate((-1e308, 1e308, time.time() + 86400, time.time())):
            await db.execute("SELECT pg_notify('sse_events', $1)", json.dumps(
                {"event": "items:updated", "users": [user], "data": {"n": n}, "ts": ts}))
        assert await next_n(c, 4) == [0, 1, 2, 3]  # delivered all the same
        async with asyncio.timeout(5):  # observed at the flush after the write
            while latency.count == count:
                await asyncio.sleep(0.01)
        assert latency.count == count + 1
        assert 0 <= latency.sum - total < 60
    finally:
        await c.close()


def ids_only_on_dispatched_blocks(raw: bytes) -> bool:
    """True if every block with an ``id:`` also has ``data:``: a parser that drops
    id-only blocks (npm eventsource 4.x) then keeps every resume point too."""
    text = raw.decode().replace("\r\n", "\n")
    for block in text.split("\n\n"):
        lines = block.split("\n")
        if any(x.startswith("id:") for x in lines) and not any(
                x.startswith("data:") for x in lines):
            return False
    return True


async def first_resume_point(port: int, user: str) -> str:
    """Open a stream, take the id of its first event, close it."""
    c = await SSEClient.open(port, token=token(user))
    try:
        ev = await c.next_event(skip_pings=False)
        assert ev.event == "sync:ping" and ev.id is not None
        assert ids_only_on_dispatched_blocks(bytes(c.raw))
        return ev.id
    finally:
        await c.close()


async def test_every_new_stream_gets_a_resume_point_however_busy(database_dsn: str,
                                                                 db: Any) -> None:
    """Issue 12.1: with the window turned over (a busy instance) a new stream still
    gets an id at connect, on an event with data, and resumes exactly from it."""
    async with running(settings_for(database_dsn, SSE_REPLAY_WINDOW="5")) as svc:
        user, other = str(uuid.uuid4()), str(uuid.uuid4())
        o = await SSEClient.open(svc.port, token=token(other))
        try:
            await svc.wait_streams(1)
            for n in range(20):
                await notify(db, other, n)
            assert await next_n(o, 20) == list(range(20))  # all handled: window turned over
            point = await first_resume_point(svc.port, user)
            await svc.wait_streams(1)
            await notify(db, user, 100)
            await notify(db, other, 21)
            assert await next_n(o, 1) == [21]  # the barrier: 100 is in the history
            c = await SSEClient.open(svc.port, token=token(user),
                                     headers={"Last-Event-ID": point})
            try:
                assert await next_n(c, 1) == [100]
                assert svc.service.stats.replays == 1
            finally:
                await c.close()
        finally:
            await o.close()


async def test_a_new_stream_gets_a_resume_point_during_a_gap(service: Running,
                                                             db: Any) -> None:
    """Issue 12.1: after the history was cleared (LISTEN lost), before it is back."""
    dispatcher = service.service.dispatcher
    dispatcher.listen_down("test_gap")
    try:
        await service.wait_listening()  # the inbox is drained: the history is cleared
        await first_resume_point(service.port, str(uuid.uuid4()))
    finally:
        dispatcher.listen_up()
        await service.wait_listening()
