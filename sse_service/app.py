"""The aiohttp application: its routes, its background lifecycles and its shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator

from aiohttp import web

from sse_service import errors, routes
from sse_service.service import SERVICE, Service
from sse_service.settings import Settings

log = logging.getLogger("sse_service.app")

HOUSEKEEPING_TICK = 5.0  # seconds between history expiry passes (at most)
EXIT_ON_CRASH = web.AppKey("exit_on_crash", bool)


def create_app(settings: Settings, *, exit_on_crash: bool = False) -> web.Application:
    """A ready-to-run application for ``settings``; nothing starts until it runs.

    With ``exit_on_crash`` (the CLI sets it) a background loop that dies of a bug
    makes the process shut down and exit non-zero, so that systemd restarts it
    rather than leaving it serving streams that never receive an event.
    """
    app = web.Application()  # no middleware: see errors.json_errors
    app[SERVICE] = Service.build(settings)
    app[EXIT_ON_CRASH] = exit_on_crash
    routes.setup(app)
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_close_streams)
    app.on_response_prepare.append(errors.on_response_prepare)
    return app


async def _background(app: web.Application) -> AsyncIterator[None]:
    """Run the dispatcher, the listener and the keepalive while the app runs."""
    service = app[SERVICE]
    service.dispatcher.start()
    tasks = [
        asyncio.create_task(service.listener.run(), name="sse-listener"),
        asyncio.create_task(_housekeeping(service), name="sse-housekeeping"),
    ]
    def crashed(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        service.failures.append(f"{task.get_name()}: {task.exception()!r}")
        log.critical("%s stopped unexpectedly: %r", task.get_name(), task.exception())
        if app[EXIT_ON_CRASH]:
            signal.raise_signal(signal.SIGTERM)

    for task in tasks:
        task.add_done_callback(crashed)
    try:
        yield
    finally:
        for task in tasks:
            task.remove_done_callback(crashed)
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        service.dispatcher.stop()


async def _housekeeping(service: Service) -> None:
    """Every stream's ``sync:ping``, and expiry of old history."""
    interval = service.settings.keepalive_interval
    tick = min(interval, HOUSEKEEPING_TICK)
    next_ping = time.monotonic() + interval
    while True:
        await asyncio.sleep(tick)
        now = time.monotonic()
        service.history.expire(now)
        if now >= next_ping:
            service.hub.ping()
            next_ping = now + interval


async def _close_streams(app: web.Application) -> None:
    """On shutdown: tell every stream to come back soon (jittered), then end it."""
    service = app[SERVICE]
    closed = service.hub.shutdown(service.settings.shutdown_retry_ms)
    if closed:
        log.info("closed %d streams for shutdown", closed)
