"""The hub (sse_service.hub) against an in-memory transport: registry, caps,
eviction, order, slow consumers, resume points and expiry, with no sockets."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from sse_service.errors import OverCapacity
from sse_service.history import History
from sse_service.hub import Hub
from sse_service.stats import Stats
from sse_service.subscriber import Subscriber
from sse_service.wire import ID_RE, Event, dumps_bytes
from tests.memtransport import MemoryTransport


def make_hub(*, max_streams: int = 100, per_user: int = 3, window: int = 100) -> Hub:
    return Hub(history=History(window=window, per_user=50, max_age=60), stats=Stats(),
               max_streams=max_streams, max_streams_per_user=per_user, retry_ms=3000,
               evicted_retry_ms=3_600_000)


def open_stream(hub: Hub, user: str, last_id: str | None = None, *, chunked: bool = False,
                max_buffer: int = 10_000, expires_at: float = float("inf"),
                ) -> tuple[Subscriber, MemoryTransport]:
    transport = MemoryTransport()
    sub = Subscriber(user, transport, chunked=chunked,
                     max_buffer=max_buffer, expires_at=expires_at)
    hub.reserve()
    hub.attach(sub, last_id)
    return sub, transport


def event(hub: Hub, n: int, users: list[str], name: str = "items:updated") -> Event:
    ev = Event.build(str(n), name, dumps_bytes({"n": n}))
    hub.history.record(ev, users, time.monotonic())
    return ev


# -- registry and caps ---------------------------------------------------------


async def test_attach_and_detach_keep_the_registry() -> None:
    hub = make_hub()
    a1, _ = open_stream(hub, "a")
    a2, _ = open_stream(hub, "a")
    b, _ = open_stream(hub, "b")
    assert hub.count == 3 and hub.streams_of("a") == 2 and hub.streams_of("c") == 0
    assert set(hub.subscribers()) == {a1, a2, b}
    a1.close("disconnected")
    hub.detach(a1)
    hub.detach(a1)  # idempotent: the handler's finally may run after a close
    assert hub.count == 2 and hub.streams_of("a") == 1
    assert hub.stats.streams_opened == 3 and hub.stats.streams_closed["disconnected"] == 1
    for sub in (a2, b):
        hub.detach(sub)
    assert hub.count == 0 and hub.subscribers() == []


async def test_the_global_cap_counts_streams_still_opening() -> None:
    hub = make_hub(max_streams=2)
    hub.reserve()
    hub.reserve()  # two opens in flight, none attached yet
    with pytest.raises(OverCapacity):
        hub.reserve()
    hub.release()  # one of them failed
    hub.reserve()
    assert hub.opening == 2
    with pytest.raises(RuntimeError):
        for _ in range(3):
            hub.release()
    assert hub.opening == 0


async def test_attach_needs_a_reserved_place() -> None:
    hub = make_hub()
    sub = Subscriber("a", MemoryTransport(), chunked=False, max_buffer=1)
    with pytest.raises(RuntimeError):
        hub.attach(sub, None)


async def test_the_per_user_cap_evicts_the_oldest_with_a_long_retry() -> None:
    hub = make_hub(per_user=2)
    streams = [open_stream(hub, "a") for _ in range(4)]
    other, _ = open_stream(hub, "b")
    closed = [sub.close_reason for sub, _ in streams]
    assert closed == ["too_many_streams", "too_many_streams", None, None]
    first = streams[0][1]
    assert first.events() == [("sync:closed", {"reason": "too_many_streams", "limit": 2})]
    assert "retry: 3600000" in b"".join(first.writes).decode()
    assert not other.closed


# -- order, staging, slow consumers --------------------------------------------


async def test_events_arrive_in_order_whether_written_at_once_or_staged() -> None:
    hub = make_hub()
    _, ta = open_stream(hub, "a")
    _, tb = open_stream(hub, "b", chunked=True)
    before = len(ta.writes)
    hub.stage(event(hub, 1, ["a"]), ["a"])
    hub.stage(event(hub, 2, ["a", "b"]), ["a", "b"])
    hub.write_now(event(hub, 3, ["a"]), ["a"])  # staged behind 1 and 2: never ahead of them
    assert len(ta.writes) == before  # nothing written before the flush
    hub.flush()
    hub.write_now(event(hub, 4, ["a"]), ["a"])  # nothing staged: written at once
    assert [d["n"] for _, d in ta.events()] == [1, 2, 3, 4]
    assert len(ta.writes) == before + 2  # one write for the batch, one for 4
    chunk = tb.writes[-1]
    size, _, rest = chunk.partition(b"\r\n")
    assert int(size, 16) == len(rest) - 2 and rest.endswith(b"\r\n")
    assert b'"n":2' in rest
    assert hub.stats.events_delivered == 5


async def test_a_user_gets_only_their_own_events() -> None:
    hub = make_hub()
    _, owner = open_stream(hub, "owner")
    _, viewer = open_stream(hub, "viewer")
    hub.write_now(event(hub, 1, ["viewer"], "marks:updated"), ["viewer"])
    hub.write_now(event(hub, 2, ["owner", "viewer"]), ["owner", "viewer"])
    assert owner.events() == [("items:updated", {"n": 2})]
    assert [e for e, _ in viewer.events()] == ["marks:updated", "items:updated"]


async def test_a_slow_consumer_is_cut_off_and_the_others_get_everything() -> None:
    hub = make_hub()
    slow, ts = open_stream(hub, "a", max_buffer=500)
    fast, tf = open_stream(hub, "a")
    ts.stalled = True
    for n in range(20):
        hub.write_now(event(hub, n, ["a"]), ["a"])
    assert slow.closed and slow.close_reason == "slow_consumer" and ts.aborted
    assert not fast.closed and [d["n"] for _, d in tf.events()] == list(range(20))
    assert hub.stats.events_dropped > 0
    written = len(ts.writes)
    hub.write_now(event(hub, 99, ["a"]), ["a"])
    assert len(ts.writes) == written  # nothing more for a closed stream


async def test_a_stream_whose_peer_is_gone_is_closed_on_the_next_write() -> None:
    hub = make_hub()
    sub, t = open_stream(hub, "a")
    t.closing = True
    hub.ping()
    assert sub.closed and sub.close_reason == "disconnected"


# -- resume points -------------------------------------------------------------


async def test_every_stream_starts_with_a_resume_point_on_a_ping() -> None:
    hub = make_hub(window=5)
    for n in range(50):  # the window turned over many times
        event(hub, n, ["other"])
    _, t = open_stream(hub, "a")
    hub.history.clear()  # a gap
    _, t2 = open_stream(hub, "a")
    for tr in (t, t2):
        first = tr.blocks
        assert first[0] == {"retry": "3000"}
        assert first[1]["event"] == "sync:ping" and ID_RE.match(first[1]["id"])
        assert set(json.loads(first[1]["data"])) == {"timestamp"}
    assert t.blocks[1]["id"] != t2.blocks[1]["id"]


async def test_a_resume_replays_then_gives_a_new_resume_point() -> None:
    hub = make_hub()
    sub, t = open_stream(hub, "a")
    point = t.blocks[1]["id"]
    hub.detach(sub)
    event(hub, 1, ["a"])
    event(hub, 2, ["b"])
    event(hub, 3, ["a"])
    _, t2 = open_stream(hub, "a", point)
    got = t2.blocks
    assert [b.get("id") for b in got[1:3]] == ["1", "3"]
    assert got[3]["event"] == "sync:ping" and got[3]["id"] not in (point, "3")
    assert hub.stats.replays == 1 and hub.stats.replayed_events == 2
    _, t3 = open_stream(hub, "a", "not a valid id!")
    assert t3.events() == [("sync:reset", {"reason": "invalid_last_event_id"})]
    assert ID_RE.match(t3.blocks[1]["id"])
    assert hub.stats.resets["invalid_last_event_id"] == 1


async def test_resets_and_pings_reach_every_stream_with_fresh_ids() -> None:
    hub = make_hub()
    transports = [open_stream(hub, user)[1] for user in ("a", "b", "b")]
    hub.ping()
    hub.reset_all("listen_reconnected")
    hub.ping()
    for t in transports:
        got = t.blocks[2:]
        assert [b["event"] for b in got] == ["sync:ping", "sync:reset", "sync:ping"]
        assert len({b["id"] for b in got}) == 3
    assert hub.stats.resets["listen_reconnected"] == 3


# -- expiry and shutdown -------------------------------------------------------


async def test_a_stream_ends_with_auth_expired_when_its_token_does() -> None:
    hub = make_hub()
    expired, t = open_stream(hub, "a", expires_at=time.time() - 0.5)
    alive, _ = open_stream(hub, "a", expires_at=time.time() + 3600)
    async with asyncio.timeout(5):
        await expired.done
    assert expired.close_reason == "token_expired"
    assert t.events()[-1] == ("auth:expired", {"reason": "token_expired"})
    assert not alive.closed
    hub.detach(expired)
    assert len(hub.expiries) == 1


async def test_shutdown_ends_every_stream_and_refuses_late_ones() -> None:
    hub = make_hub()
    subs = [open_stream(hub, "a")[0] for _ in range(2)]
    assert hub.shutdown(1000) == 2
    assert all(s.closed and s.close_reason == "shutdown" for s in subs)
    late, t = open_stream(hub, "a")
    assert late.closed and late.close_reason == "shutdown" and hub.opening == 0
    text = b"".join(t.writes).decode()
    retry = int(text.split("retry: ")[1].split("\n")[0])
    assert ": server restarting" in text and 500 <= retry <= 1500
