"""The serving process: bind, LISTEN, tell systemd, serve until a signal, drain.

``sse-service serve`` (:mod:`sse_service.cli`) ends up here. Only what serving
needs is imported on this path: never the benchmark (``gc.freeze()`` would keep
it alive for the life of the process) nor the operator's tools.

Exit codes (sysexits.h), shared with the CLI: 0 success, 1 a check failed,
2 bad usage, 69 the database is unavailable, 70 internal error, 71 cannot bind
the port, 78 bad configuration.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Mapping

from aiohttp import web

from sse_service import __version__, logs, sdnotify, sites
from sse_service.app import create_app
from sse_service.service import SERVICE
from sse_service.settings import ConfigError, Settings

EX_OK, EX_FAILED, EX_USAGE = 0, 1, 2
EX_UNAVAILABLE, EX_SOFTWARE, EX_OSERR, EX_CONFIG = 69, 70, 71, 78

log = logging.getLogger("sse_service")


def serve(settings: Settings, env: Mapping[str, str] | None = None) -> int:
    """Run the service until SIGTERM or SIGINT; the process exit code.

    ``env`` (the process environment by default) supplies systemd's
    ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``/``WATCHDOG_PID``.
    """
    tune_gc()
    return asyncio.run(run(settings, os.environ if env is None else env))


# Collect the youngest generation every 50,000 net allocations instead of 700;
# a full pass needs 100 passes of the middle one instead of 10.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Make the garbage collector's full passes rare (the serving process only).

    With thousands of open streams the heap holds hundreds of thousands of
    tracked objects, and a full pass over them stops the event loop for long
    enough to show in the latency's p99 (docs/performance.md). CPython starts
    one once the objects promoted to the oldest generation reach a quarter of
    it, and at thousands of notifications a second the few objects alive at
    each young collection add up to that within a minute or two.
    Fewer young collections promote far fewer of them. ``gc.freeze()`` takes
    what exists at start-up (modules, classes, functions) out of every later
    pass: none of it ever becomes garbage.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def run(settings: Settings, env: Mapping[str, str]) -> int:
    """Bind, wait for LISTEN, tell systemd READY=1, serve until a signal, drain.

    READY=1 waits for the LISTEN connection so that systemd (and anything
    ordered after this unit) sees the service active only once it can deliver
    events; HTTP is served meanwhile and /readyz answers 503 until then.
    """
    notifier = sdnotify.Notifier(env)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.info("%s received again; already stopping", sig.name)
            return
        log.info("%s received; stopping", sig.name)
        stop.set()

    try:
        app = create_app(settings, exit_on_crash=True)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return EX_CONFIG
    service = app[SERVICE]
    runner = web.AppRunner(app, handler_cancellation=True, access_log_class=logs.AccessLogger,
                           shutdown_timeout=settings.shutdown_timeout)
    watchdog: asyncio.Task[None] | None = None
    code = EX_OK
    log.info("sse-service %s starting on %s%s", __version__, sites.tcp_address(settings),
             f" and {settings.unix_socket}" if settings.unix_socket else "")
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await runner.setup()
        async with sites.serving(runner, settings):
            where = ", ".join(sites.address_text(a) for a in runner.addresses)
            log.info("serving on %s; waiting for the LISTEN connection", where)
            notifier.status(f"serving on {where}; waiting for the LISTEN connection")
            waits = [asyncio.create_task(service.listener.ready.wait()),
                     asyncio.create_task(stop.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()
            if not stop.is_set():
                notifier.ready(f"serving on {where}; listening on channel {settings.channel!r}")
                log.info("ready")
                watchdog = notifier.start_watchdog(lambda: _status(app))
                await stop.wait()
    except sites.SiteError as exc:
        log.error("%s", exc)
        notifier.status(str(exc))
        code = EX_OSERR
    finally:
        if watchdog is not None:
            watchdog.cancel()
        # On a failure keep its STATUS= (what `systemctl status` shows) as it is.
        notifier.stopping(f"stopping; closing {service.hub.count} streams"
                          if code == EX_OK else None)
        await runner.cleanup()
        for sig in signals:
            loop.remove_signal_handler(sig)
        notifier.close()
    if code != EX_OK:
        return code
    if service.failures:
        log.error("stopped after an internal error: %s", "; ".join(service.failures))
        return EX_SOFTWARE
    log.info("stopped")
    return EX_OK


def _status(app: web.Application) -> str:
    """The STATUS= line ``systemctl status`` shows while serving."""
    service = app[SERVICE]
    listen = "up" if service.listener.state.connected else "DOWN (reconnecting)"
    return f"{service.hub.count} streams; LISTEN {listen}"
