"""Run the real service on a real socket, the way production does.

``AppRunner`` + ``TCPSite`` with the production access logger and
``handler_cancellation=True`` (as ``sse-service serve`` runs it), not
pytest-aiohttp's ``TestServer``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from sse_service import logs
from sse_service.app import create_app
from sse_service.settings import Settings
from sse_service.state import SERVICE, Service

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

    async def wait_listening(self, timeout: float = 10.0) -> None:
        """Until the LISTEN connection is up and its recovery reached the hub."""
        async with asyncio.timeout(timeout):
            while not self.service.listener.state.connected or self.service.dispatcher.backlog:
                await asyncio.sleep(0.01)

    async def wait_streams(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.service.hub.count != count:
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


async def wait_ready(port: int, timeout: float = 15.0) -> None:
    """Until ``/readyz`` of a service on ``port`` answers 200."""
    from tests.sseclient import request

    async with asyncio.timeout(timeout):
        while True:
            try:
                if (await request(port, "/readyz")).status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)
