"""Run the real service on a real socket, the way production does.

``AppRunner`` + ``TCPSite`` with the production access logger and
``handler_cancellation=True`` (as ``sse-service serve`` runs it), not
pytest-aiohttp's ``TestServer``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import pytest
from aiohttp import web

from sse_service import logs
from sse_service.app import create_app
from sse_service.service import SERVICE, Service
from sse_service.settings import Settings
from tests.sseclient import BARRIER_EVENT, PRESENCE_TIMEOUT, SSE, SSEClient, request

JWT_KEY = "test-secret-test-secret-test-secret-0123456789"


def token(user: str, *, ttl: float = 3600, key: str = JWT_KEY, algorithm: str = "HS256",
          **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": user, "exp": int(time.time() + ttl), **claims}
    return jwt.encode(payload, key, algorithm=algorithm)


def settings_for(dsn: str, **env: str) -> Settings:
    base = {
        "SSE_DATABASE_URL": dsn,
        "SSE_JWT_KEY": JWT_KEY,
        "SSE_PORT": "0",
        "SSE_KEEPALIVE_INTERVAL": "30",
        "SSE_LISTEN_PROBE_INTERVAL": "0.5",
        "SSE_LISTEN_PROBE_TIMEOUT": "1",
        "SSE_LISTEN_BACKOFF_MAX": "0.5",
        "SSE_LISTEN_CONNECT_TIMEOUT": "2",
    }
    base.update(env)
    return Settings.from_env(base)


@dataclass
class Running:
    app: web.Application
    runner: web.AppRunner
    port: int

    @property
    def service(self) -> Service:
        return self.app[SERVICE]

    async def wait_listening(self, timeout: float = PRESENCE_TIMEOUT) -> None:
        """Until the LISTEN connection is up and its recovery reached the hub."""
        async with asyncio.timeout(timeout):
            while not self.service.listener.state.connected or self.service.dispatcher.backlog:
                await asyncio.sleep(0.01)

    async def wait_streams(self, count: int, timeout: float = PRESENCE_TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while self.service.hub.count != count:
                await asyncio.sleep(0.01)

    async def wait_received(self, count: int, timeout: float = PRESENCE_TIMEOUT) -> None:
        """Until this instance has handled ``count`` notifications since it started
        (each one recorded, and written to its streams)."""
        async with asyncio.timeout(timeout):
            while self.service.stats.notifications_received < count:
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start(settings: Settings, port: int = 0) -> Running:
    app = create_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True, access_log_class=logs.AccessLogger,
                           shutdown_timeout=settings.shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=settings.backlog)
    await site.start()
    bound = runner.addresses[0][1]
    return Running(app, runner, bound)


@asynccontextmanager
async def running(settings: Settings, *, wait: bool = True) -> AsyncIterator[Running]:
    svc = await start(settings)
    try:
        if wait:
            await svc.wait_listening()
        yield svc
    finally:
        await svc.stop()


def service_env(settings_env: dict[str, str]) -> dict[str, str]:
    """Environment for ``python -m sse_service`` in a subprocess."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_")}
    env.update(settings_env)
    return env


def base_env(dsn: str, port: int, **extra: str) -> dict[str, str]:
    env = {
        "SSE_DATABASE_URL": dsn,
        "SSE_JWT_KEY": JWT_KEY,
        "SSE_HOST": "127.0.0.1",
        "SSE_PORT": str(port),
        "SSE_LISTEN_PROBE_INTERVAL": "0.5",
        "SSE_LISTEN_PROBE_TIMEOUT": "1",
        "SSE_LISTEN_BACKOFF_MAX": "0.5",
    }
    env.update(extra)
    return env


async def wait_ready(port: int, timeout: float = PRESENCE_TIMEOUT) -> None:
    """Until ``/readyz`` of a service on ``port`` answers 200."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                if (await request(port, "/readyz")).status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)


# -- barriers: know what arrived, instead of sleeping and hoping ------------------------

Conn = Any  # asyncpg.Connection; asyncpg ships no type hints


async def send_barrier(db: Conn | str, *users: str, channel: str = "sse_events") -> str:
    """NOTIFY a sentinel event (``test:barrier``) to ``users``; its tag.

    ``db`` is a connection, or a DSN to connect to for this one NOTIFY. The
    service handles notifications in commit order, so a stream gets every event
    committed before the sentinel before it gets the sentinel.
    """
    tag = uuid.uuid4().hex
    payload = json.dumps({"event": BARRIER_EVENT, "users": list(users), "data": {"barrier": tag}})
    conn = await asyncpg.connect(db) if isinstance(db, str) else db
    try:
        await conn.execute("SELECT pg_notify($1, $2)", channel, payload)
    finally:
        if isinstance(db, str):
            await conn.close()
    return tag


async def barrier(db: Conn | str, client: SSEClient, user: str, *,
                  timeout: float = PRESENCE_TIMEOUT, skip_pings: bool = True) -> list[SSE]:
    """Send a sentinel to ``user`` and read ``client`` (a stream of ``user``) up to it:
    the events that arrived before it. Assert absence on this, never after a sleep."""
    tag = await send_barrier(db, user)
    return await client.until_barrier(tag, timeout, skip_pings=skip_pings)


SYNC_CHANNEL = "sse_test_sync"


class ChannelSync:
    """Until a LISTENing connection has received every notification committed so far.

    PostgreSQL delivers one session the notifications of all its channels in
    commit order, and asyncpg runs their callbacks in arrival order: once a
    sentinel on a channel of the test's own arrives, the callbacks of every
    notification committed before it have run. Nothing reaches the service.
    """

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._seen: set[str] = set()
        self._arrived = asyncio.Event()

    @classmethod
    async def on(cls, conn: Conn) -> ChannelSync:
        """A sync for ``conn``, which LISTENs (or will) on the channels to follow."""
        sync = cls(conn)
        await conn.add_listener(SYNC_CHANNEL, sync._callback)
        return sync

    def _callback(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._seen.add(payload)
        self._arrived.set()

    async def __call__(self, timeout: float = PRESENCE_TIMEOUT) -> None:
        tag = uuid.uuid4().hex
        await self._conn.execute("SELECT pg_notify($1, $2)", SYNC_CHANNEL, tag)
        async with asyncio.timeout(timeout):
            while tag not in self._seen:
                self._arrived.clear()
                await self._arrived.wait()


def runnable_unit(unit: Path, dest: Path) -> Path:
    """A copy of a shipped systemd ``unit`` at ``dest`` that this machine can verify
    and run: ExecStart at this venv's sse-service, no User=/Group=. Skips the test
    where the venv has no sse-service script."""
    exe = Path(sys.executable).parent / "sse-service"
    if not exe.exists():
        pytest.skip(f"{exe} not installed (pip install -e .)")
    text = unit.read_text()
    text, n = re.subn(r"^ExecStart=/opt/sse-service/\.venv/bin/sse-service serve$",
                      f"ExecStart={exe} serve", text, flags=re.MULTILINE)
    assert n == 1, "the unit's ExecStart changed"
    text, n = re.subn(r"^(User|Group)=sse-service\n", "", text, flags=re.MULTILINE)
    assert n == 2, "the unit's User=/Group= changed"
    dest.write_text(text)
    return dest
