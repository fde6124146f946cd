"""``kill -9`` of the service in the middle of a write burst, then a restart.

The service runs as a real process. After the restart, every client that
reconnects with its ``Last-Event-ID`` (as EventSource does) has, for each
event addressed to it, either received it or received a ``sync:reset``
before anything newer.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from typing import Any

import asyncpg
import pytest

from sse_service.ids import IdCodec
from sse_service.scratchdb import free_port
from tests import factories
from tests.conftest import NotificationLog
from tests.guarantee import check_stream
from tests.harness import (
    JWT_KEY,
    ChannelSync,
    base_env,
    send_barrier,
    service_env,
    token,
    wait_ready,
)
from tests.sseclient import BARRIER_EVENT, PRESENCE_TIMEOUT, SSE, SSEClient


def spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sse_service", "serve"],
                            env=service_env(env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


class EventSourceLike:
    """Reconnects on its own, sending the last id it saw, like a browser."""

    def __init__(self, port: int, user: str) -> None:
        self.port = port
        self.user = user
        self.connections: list[list[SSE]] = []
        self.last_id: str | None = None
        self.attached = asyncio.Event()  # a first stream is registered
        self._barriers: set[str] = set()
        self._progress = asyncio.Event()
        self._stop = False
        self._client: SSEClient | None = None

    async def run(self) -> None:
        while not self._stop:
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                client = await SSEClient.open(self.port, token=token(self.user), headers=headers)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            self._client = client
            seen: list[SSE] = []
            self.connections.append(seen)
            try:
                seen.extend(await client.preamble())
                self.attached.set()
                while not self._stop:
                    # No timeout: stop() ends the read by closing the connection.
                    ev = await client.next_event(timeout=3600)
                    if ev.event == BARRIER_EVENT:
                        self._barriers.add(ev.json["barrier"])
                        self._progress.set()
                    else:
                        seen.append(ev)
                    self.last_id = client.last_event_id
            except (EOFError, ConnectionError, OSError, ValueError, asyncio.IncompleteReadError):
                pass
            finally:
                if client.last_event_id:
                    self.last_id = client.last_event_id
                self._client = None
                await client.close()
            await asyncio.sleep(0.05)

    async def wait_barrier(self, tag: str, timeout: float = PRESENCE_TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while tag not in self._barriers:
                self._progress.clear()
                await self._progress.wait()

    async def stop(self) -> None:
        self._stop = True
        if self._client is not None:
            await self._client.close()


@pytest.mark.slow
async def test_kill_9_during_a_write_burst(database_dsn: str, db: Any) -> None:
    port = free_port()
    env = base_env(database_dsn, port)
    users = [await factories.user(db) for _ in range(4)]
    items = {}
    for u in users:
        items[u] = await factories.item(db, await factories.wishlist(db, u))
    notifications = NotificationLog()
    listen = await asyncpg.connect(database_dsn)
    await listen.add_listener("sse_events", notifications.callback)
    sync = await ChannelSync.on(listen)
    proc = spawn(env)
    clients: list[EventSourceLike] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await wait_ready(port)
        await sync()  # the factories' notifications are in the log: forget them
        notifications.clear()
        clients = [EventSourceLike(port, u) for u in users]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        async with asyncio.timeout(PRESENCE_TIMEOUT):
            for c in clients:
                await c.attached.wait()  # every event of the burst is after its preamble

        async def burst(start: int, count: int) -> None:
            for i in range(start, start + count):
                u = users[i % len(users)]
                await db.execute("UPDATE items SET title = $2 WHERE id = $1",
                                 uuid.UUID(items[u]), f"t{i}")
                await asyncio.sleep(0.002)

        await burst(0, 100)
        proc.send_signal(signal.SIGKILL)
        proc.wait(20)
        await burst(100, 100)  # nobody listens now: these are gone from NOTIFY
        proc = spawn(env)
        await wait_ready(port)
        await burst(200, 100)
        # Each client has whatever the service sent it before its sentinel; the log
        # has every notification before the sync.
        for c in clients:
            await c.wait_barrier(await send_barrier(db, c.user))
        await sync()
    finally:
        for c in clients:
            await c.stop()
        await asyncio.gather(*tasks)
        await listen.close()
        proc.kill()
        proc.wait(20)

    sent = [p for p in notifications.payloads if p["event"] == "items:updated"]
    ids = IdCodec(JWT_KEY)
    for client in clients:
        mine = [ids.public(str(p["id"])) for p in sent if client.user in p["users"]]
        assert len(mine) == 75
        received = [e.id for conn in client.connections for e in conn
                    if e.event == "items:updated"]
        assert len(received) == len(set(received)), "an event was delivered twice"
        assert set(received) <= set(mine)
        assert len(client.connections) >= 2
        timeline = [e for conn in client.connections for e in conn]
        assert set(mine) - set(received), "the test should have produced a gap"
        check_stream(timeline, mine)
