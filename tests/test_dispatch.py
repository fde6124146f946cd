"""The dispatcher against a real hub and history, with in-memory transports:
order, batching, overflow, gaps, resets and their rate limit, admission.

The transport records what the hub writes (the bytes a socket would carry);
everything else is the service's own code. End-to-end versions over real
sockets and PostgreSQL are in test_faults.py and test_hostile_db.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sse_service.dispatch import Dispatcher
from sse_service.history import History
from sse_service.hub import Hub
from sse_service.ids import IdCodec
from sse_service.stats import Stats
from sse_service.subscriber import Subscriber
from tests.memtransport import MemoryTransport

KEY = "k" * 32


class Rig:
    def __init__(self, *, size: int = 100, reset_interval: float = 5.0) -> None:
        self.stats = Stats()
        self.history = History(window=1000, per_user=100, max_age=300.0)
        self.hub = Hub(history=self.history, stats=self.stats, max_streams=100,
                       max_streams_per_user=10, retry_ms=1000, evicted_retry_ms=1000)
        self.dispatcher = Dispatcher(hub=self.hub, history=self.history, stats=self.stats,
                                     size=size, ids=IdCodec(KEY), reset_interval=reset_interval)
        self.next_id = 0

    def stream(self, user: str) -> MemoryTransport:
        transport = MemoryTransport()
        self.hub.reserve()
        self.hub.attach(Subscriber(user, transport, chunked=False, max_buffer=1 << 20), None)
        return transport

    def notify(self, *users: str, **data: Any) -> None:
        self.next_id += 1
        self.dispatcher.enqueue(json.dumps({"event": "items:updated", "users": list(users),
                                            "data": data, "id": self.next_id}))

    async def idle(self) -> None:
        """Until the drain has handled everything queued so far."""
        async with asyncio.timeout(5):
            while self.dispatcher.backlog:
                await asyncio.sleep(0)
            await asyncio.sleep(0)


def names(transport: MemoryTransport) -> list[str]:
    return [name for name, _ in transport.events()]


async def test_each_stream_gets_its_events_in_order_and_only_its_own() -> None:
    rig = Rig()
    a, b = rig.stream("a"), rig.stream("b")
    rig.dispatcher.start()
    for n in range(5):
        rig.notify("a", n=n)
        if n % 2:
            rig.notify("a", "b", n=n)
    await rig.idle()
    assert [d["n"] for _, d in a.events()] == [0, 1, 1, 2, 3, 3, 4]
    assert [d["n"] for _, d in b.events()] == [1, 3]


async def test_one_read_becomes_one_write_per_stream() -> None:
    rig = Rig()
    a = rig.stream("a")
    preamble = len(a.writes)
    rig.dispatcher.start()
    for n in range(5):  # as if asyncpg parsed them from one read: no drain in between
        rig.notify("a", n=n)
    await rig.idle()
    assert len(a.writes) == preamble + 1
    assert [d["n"] for _, d in a.events()] == [0, 1, 2, 3, 4]


async def test_overflow_is_one_reset_then_the_events_after_it() -> None:
    rig = Rig(size=4)
    a = rig.stream("a")
    rig.dispatcher.start()
    for n in range(10):  # no drain meanwhile: n=4 and n=7 overflow the inbox
        rig.notify("a", n=n)
    await rig.idle()
    # One reset (the second overflow's waits for the rate limit), where the
    # first overflow lost events; then what came after the second.
    assert a.events() == [("sync:reset", {"reason": "inbox_overflow"}),
                          ("items:updated", {"n": 8}), ("items:updated", {"n": 9})]
    assert rig.stats.resets["inbox_overflow"] == 1
    assert rig.stats.notifications_received == 10
    rig.dispatcher.stop()


async def test_listen_down_and_up_reset_and_forget_the_history() -> None:
    rig = Rig()
    a = rig.stream("a")
    rig.dispatcher.start()
    rig.notify("a", n=1)
    await rig.idle()
    assert len(rig.history) == 1
    rig.dispatcher.listen_down("listen_lost")
    rig.notify("a", n=2)  # cannot happen on a dead connection, but order must hold anyway
    rig.dispatcher.listen_up()
    rig.notify("a", n=3)
    await rig.idle()
    assert a.events() == [("items:updated", {"n": 1}), ("items:updated", {"n": 2}),
                          ("sync:reset", {"reason": "listen_reconnected"}),
                          ("items:updated", {"n": 3})]
    # Only what came after the recovery can be resumed from (markers are not
    # entries of the window: they carry their position themselves).
    assert len(rig.history) == 1
    ids = [b["id"] for b in a.blocks if "id" in b]
    assert rig.history.knows(ids[-1]) and not any(rig.history.knows(i) for i in ids[:2])


async def test_an_internal_error_is_a_reset_not_a_silent_skip() -> None:
    rig = Rig()
    a, b = rig.stream("a"), rig.stream("b")
    rig.dispatcher.start()
    a.fail_next = True  # the write of the next event to a's stream raises
    rig.notify("a", "b", n=1)  # staged for both streams: the flush fails at a's
    rig.notify("b", n=2)
    await rig.idle()
    assert rig.stats.notifications_rejected["internal_error"] == 1
    # Who missed what is unknown: everybody is told, b included.
    assert a.events() == [("sync:reset", {"reason": "internal_error"})]
    assert b.events()[-1] == ("sync:reset", {"reason": "internal_error"})
    rig.notify("a", "b", n=3)  # and the dispatcher carries on
    await rig.idle()
    assert a.events()[-1] == b.events()[-1] == ("items:updated", {"n": 3})


async def test_resets_for_one_reason_are_rate_limited_but_never_dropped() -> None:
    rig = Rig(reset_interval=0.3)
    a = rig.stream("a")
    rig.dispatcher.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(5):  # five gaps in a row: one reset now, one for the rest later
        rig.dispatcher.gap("events_dropped")
        rig.notify("a", n=n)
    await rig.idle()
    assert names(a).count("sync:reset") == 1
    async with asyncio.timeout(5):
        while names(a).count("sync:reset") < 2:
            await asyncio.sleep(0.01)
    assert loop.time() - started >= 0.25  # the coalesced reset waited for the interval
    assert names(a) == ["sync:reset"] + ["items:updated"] * 5 + ["sync:reset"]
    rig.dispatcher.gap("trigger_failed")  # another reason has a limit of its own
    rig.notify("a", n=9)  # barrier: handled after the gap
    await rig.idle()
    assert names(a)[-2:] == ["sync:reset", "items:updated"]
    assert rig.stats.resets == {"events_dropped": 2, "trigger_failed": 1}
    rig.dispatcher.stop()


async def test_invalid_payloads_are_refused_before_they_take_inbox_space() -> None:
    rig = Rig(size=2)
    a = rig.stream("a")
    for _ in range(100):
        rig.dispatcher.enqueue("junk")
        rig.dispatcher.enqueue('{"event": "sync:reset", "users": ["a"], "data": {}}')
    rig.notify("a", n=1)
    rig.dispatcher.start()
    await rig.idle()
    assert a.events() == [("items:updated", {"n": 1})]
    assert rig.stats.notifications_rejected["not_json"] == 100
    assert rig.stats.notifications_rejected["reserved_event"] == 100
    assert not rig.stats.resets


async def test_while_a_reset_is_deferred_events_get_ids_of_this_instance_only() -> None:
    """Events after an unannounced gap must not resume exactly on another
    instance (which never saw the gap) before this one's reset goes out."""
    rig = Rig(reset_interval=0.3)
    a = rig.stream("a")
    rig.dispatcher.start()
    rig.dispatcher.gap("inbox_overflow")  # announced at once
    rig.notify("a", n=1)
    await rig.idle()
    rig.dispatcher.gap("inbox_overflow")  # within the interval: its reset waits
    rig.notify("a", n=2)
    await rig.idle()
    ids = IdCodec(KEY)
    events = [b for b in a.blocks if b.get("event") == "items:updated"]
    assert events[0]["id"] == ids.public("1")  # no reset pending: the shared id
    assert events[1]["id"] != ids.public("2")  # pending: a local id
    assert events[1]["id"].startswith(rig.history.instance + "-")
    async with asyncio.timeout(5):
        while names(a).count("sync:reset") < 2:
            await asyncio.sleep(0.01)
    rig.notify("a", n=3)  # the reset is out: shared ids again
    await rig.idle()
    assert [b for b in a.blocks if b.get("event") == "items:updated"][-1]["id"] == \
        ids.public("3")
    rig.dispatcher.stop()


async def test_the_inbox_bounds_the_recipients_it_holds() -> None:
    """Many notifications naming many users each overflow the inbox (a reset)
    before they hold more than its share of recipients."""
    rig = Rig(size=10)  # at most 640 recipients queued
    a = rig.stream("a")
    crowd = [f"u{n}" for n in range(200)]
    for _ in range(5):  # the fifth finds 804 recipients queued, in 4 of 10 places
        rig.notify("a", *crowd)
    rig.dispatcher.start()
    await rig.idle()
    assert names(a)[0] == "sync:reset"
    assert rig.stats.resets == {"inbox_overflow": 1}
    rig.dispatcher.stop()
