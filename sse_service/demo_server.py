"""The demo's service: a database on the private cluster, the sample data, the
real application plus the demo's routes, served until a signal.

:mod:`sse_service.demo` owns the cluster around this and the command line.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import jwt
from aiohttp import web

from sse_service import demo_app, demo_data, logs, scratchdb
from sse_service.app import create_app
from sse_service.cli import EX_OK, EX_OSERR, EX_UNAVAILABLE
from sse_service.service import SERVICE
from sse_service.settings import Settings

log = logging.getLogger("sse_service.demo")

TOKEN_TTL = 24 * 3600.0  # seconds: a demo left open all day keeps working
SIGNALS = (signal.SIGINT, signal.SIGTERM)
LISTEN_TIMEOUT = 30.0  # seconds to wait for the LISTEN connection


@dataclass(frozen=True, slots=True)
class Running:
    """What the banner tells the user."""

    url: str
    stream_url: str
    dsn: str
    sample: demo_data.Sample
    tokens: dict[str, str]


class _Cluster(scratchdb.PrivateCluster):
    """A private cluster that leaves no directory behind when ``initdb`` fails or is
    interrupted (the directory exists before it runs; the caller never gets it)."""

    def __init__(self) -> None:
        try:
            super().__init__()
        except BaseException:
            if hasattr(self, "dir"):
                shutil.rmtree(self.dir, ignore_errors=True)
            raise


def new_cluster() -> scratchdb.PrivateCluster:
    """A fresh private cluster (initialised, not started)."""
    return _Cluster()


def tokens_for(sample: demo_data.Sample, key: str) -> dict[str, str]:
    """HS256 tokens, by role, as the core API would issue them."""
    expires = int(time.time() + TOKEN_TTL)
    return {role: jwt.encode({"sub": person.id, "name": person.name, "exp": expires}, key,
                             algorithm="HS256")
            for role, person in (("owner", sample.owner), ("viewer", sample.viewer))}


async def prepare(admin_dsn: str) -> tuple[str, demo_data.Sample]:
    """A database with the core schema, the triggers and the sample data."""
    dsn = await scratchdb.create_database(admin_dsn, install=True, prefix="wishwithme_demo_")
    conn = await asyncpg.connect(dsn)
    try:
        sample = await demo_data.seed(conn)
    finally:
        await conn.close()
    return dsn, sample


async def run(admin_dsn: str, port: int, log_level: str,
              announce: Callable[[Running], None]) -> int:
    """Serve the demo on 127.0.0.1:``port`` (0: a free one) until SIGINT or SIGTERM.

    ``announce`` is called once the service can deliver events. The exit code
    (as the CLI's): 0 after a signal, 71 if the port is taken, 69 if LISTEN
    never came up.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        dsn, sample = await prepare(admin_dsn)
        key = secrets.token_urlsafe(48)  # a new key each run: old tokens stop working
        settings = Settings.from_env({
            "SSE_DATABASE_URL": dsn, "SSE_JWT_KEY": key, "SSE_HOST": "127.0.0.1",
            "SSE_PORT": str(port), "SSE_LOG_LEVEL": log_level,
        })
        tokens = tokens_for(sample, key)
        app = create_app(settings)
        demo_app.setup(app, demo_app.Demo(sample=sample, tokens=tokens, dsn=dsn))
        runner = web.AppRunner(app, handler_cancellation=True,
                               access_log_class=logs.AccessLogger,
                               shutdown_timeout=settings.shutdown_timeout)
        await runner.setup()
        try:
            try:
                await web.TCPSite(runner, settings.host, port, backlog=settings.backlog).start()
            except OSError as exc:
                log.error("cannot serve on 127.0.0.1:%d: %s", port, exc)
                return EX_OSERR
            if not await _until_listening(app, stop):
                return EX_OK if stop.is_set() else EX_UNAVAILABLE
            bound = runner.addresses[0][1]
            base = f"http://127.0.0.1:{bound}"
            announce(Running(url=base + demo_app.PAGE_PATH,
                             stream_url=base + "/api/v1/events/stream",
                             dsn=dsn, sample=sample, tokens=tokens))
            await stop.wait()
            log.info("stopping")
            return EX_OK
        finally:
            await runner.cleanup()
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)


async def _until_listening(app: web.Application, stop: asyncio.Event) -> bool:
    """Whether the LISTEN connection came up before a signal or the timeout."""
    ready = asyncio.create_task(app[SERVICE].listener.ready.wait())
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([ready, stopped], timeout=LISTEN_TIMEOUT,
                                 return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    stopped.cancel()
    if ready in done and not stop.is_set():
        return True
    if not done:
        log.error("the LISTEN connection did not come up within %.0f s", LISTEN_TIMEOUT)
    return False
