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

import pytest

from sse_service.ids import IdCodec
from sse_service.scratchdb import free_port
from tests import factories
from tests.conftest import NotificationLog
from tests.guarantee import check_stream
from tests.harness import JWT_KEY, base_env, service_env, token, wait_ready
from tests.sseclient import SSE, SSEClient


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
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                client = await SSEClient.open(self.port, token=token(self.user), headers=headers)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            seen: list[SSE] = []
            self.connections.append(seen)
            try:
                while not self._stop.is_set():
                    try:
                        ev = await client.next_event(timeout=0.1)
                    except TimeoutError:
                        continue
                    seen.append(ev)
                    self.last_id = client.last_event_id
            except (EOFError, ConnectionError, OSError, ValueError, asyncio.IncompleteReadError):
                pass
            finally:
                if client.last_event_id:
                    self.last_id = client.last_event_id
                await client.close()
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()


@pytest.mark.slow
async def test_kill_9_during_a_write_burst(database_dsn: str, db: Any,
                                           notifications: NotificationLog) -> None:
    port = free_port()
    env = base_env(database_dsn, port)
    users = [await factories.user(db) for _ in range(4)]
    items = {}
    for u in users:
        items[u] = await factories.item(db, await factories.wishlist(db, u))
    proc = spawn(env)
    clients: list[EventSourceLike] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await wait_ready(port)
        notifications.clear()
        clients = [EventSourceLike(port, u) for u in users]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        await asyncio.sleep(0.5)

        async def burst(start: int, count: int) -> None:
            for i in range(start, start + count):
                u = users[i % len(users)]
                await db.execute("UPDATE items SET title = $2 WHERE id = $1",
                                 uuid.UUID(items[u]), f"t{i}")
                await asyncio.sleep(0.002)

        await burst(0, 100)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        await burst(100, 100)  # nobody listens now: these are gone from NOTIFY
        proc = spawn(env)
        await wait_ready(port)
        await burst(200, 100)
        await notifications.settle()
        await asyncio.sleep(1.0)
    finally:
        for c in clients:
            c.stop()
        await asyncio.gather(*tasks)
        proc.kill()
        proc.wait(5)

    sent = notifications.payloads
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
