"""The ``sse-service`` command: serve, and the operator's tools around it.

Exit codes (sysexits.h): 0 success, 1 a check failed, 2 bad usage,
69 the database is unavailable, 70 internal error, 71 cannot bind the port,
78 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence

import asyncpg
from aiohttp import web

from sse_service import __version__, logs, sdnotify, sites, sqlinstall
from sse_service.app import create_app
from sse_service.events import NAME_RE
from sse_service.settings import ConfigError, Settings
from sse_service.state import SERVICE

EX_OK, EX_FAILED, EX_USAGE = 0, 1, 2
EX_UNAVAILABLE, EX_SOFTWARE, EX_OSERR, EX_CONFIG = 69, 70, 71, 78

log = logging.getLogger("sse_service")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sse-service",
        description="Server-Sent Events push for Wish With Me, fed by PostgreSQL NOTIFY. "
                    "Configuration comes from SSE_* environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", help="run the service (the default)")
    sub.add_parser("install-sql", help="install or update the triggers on SSE_DATABASE_URL")
    sub.add_parser("uninstall-sql", help="remove everything install-sql added")
    sub.add_parser("check", help="check config, database, triggers and LISTEN end to end")
    send = sub.add_parser("send", help="send an event to users through PostgreSQL NOTIFY")
    send.add_argument("event", help="event name, e.g. items:updated")
    send.add_argument("users", nargs="+", help="recipient user ids")
    send.add_argument("--data", default="{}", help="JSON object for the event's data")
    from sse_service import bench  # imported here: only the bench needs it
    bench.add_arguments(sub.add_parser(
        "bench", help="benchmark: streams, memory, fan-out, latency, trigger cost (JSON out)"))
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ if env is None else env)
    except ConfigError as exc:
        print(f"sse-service: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.command == "bench":  # stdout is for its JSON result: no logging set up there
        from sse_service import bench
        return bench.main(args, settings, os.environ if env is None else env)
    logs.setup(settings.log_level, settings.token_cookie)
    command = args.command or "serve"
    if command == "serve":
        return serve(settings, env)
    try:
        if command == "install-sql":
            return asyncio.run(_with_db(settings, lambda c: _install(c, settings.channel)))
        if command == "uninstall-sql":
            return asyncio.run(_with_db(settings, _uninstall))
        if command == "check":
            return asyncio.run(check(settings))
        if command == "send":
            try:
                data = json.loads(args.data)
            except ValueError:
                data = None
            if not isinstance(data, dict) or not NAME_RE.match(args.event):
                print("sse-service: send needs an event name [A-Za-z0-9_.:-] and --data "
                      "with a JSON object", file=sys.stderr)
                return EX_USAGE
            # An id of its own, the same for every instance that receives it, so that
            # clients can resume across instances after it as after a trigger's event.
            payload = json.dumps({"id": uuid.uuid4().hex, "event": args.event,
                                  "users": args.users, "data": data})
            return asyncio.run(_with_db(settings, lambda c: _send(c, settings, payload)))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"sse-service: database unavailable: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return EX_UNAVAILABLE
    raise AssertionError(command)  # argparse only lets known commands through


def serve(settings: Settings, env: Mapping[str, str] | None = None) -> int:
    """Run the service until SIGTERM or SIGINT; the process exit code.

    ``env`` (the process environment by default) supplies systemd's
    ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``/``WATCHDOG_PID``.
    """
    tune_gc()
    return asyncio.run(_serve(settings, os.environ if env is None else env))


# Collect the youngest generation every 50,000 net allocations instead of 700;
# a full pass needs 100 passes of the middle one instead of 10.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Make the garbage collector's full passes rare (the serving process only).

    With 10,000 open streams the heap holds ~500,000 tracked objects, and a full
    pass over them stops the event loop for ~300 ms (measured with a gc
    callback: the p99 latency of a whole benchmark run went from 5 to 200 ms).
    CPython starts one once the objects promoted to the oldest generation reach
    a quarter of it, and at thousands of notifications a second the few objects
    alive at each young collection add up to that within a minute or two.
    Fewer young collections promote far fewer of them. ``gc.freeze()`` takes
    what exists at start-up (modules, classes, functions) out of every later
    pass: none of it ever becomes garbage.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _serve(settings: Settings, env: Mapping[str, str]) -> int:
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


async def _with_db(settings: Settings,
                   action: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    conn = await asyncpg.connect(settings.database_url, timeout=settings.listen_connect_timeout)
    try:
        return await action(conn)
    finally:
        await conn.close()


async def _install(conn: asyncpg.Connection, channel: str) -> int:
    await sqlinstall.install(conn, channel)
    print(f"installed; triggers notify channel {channel!r}")
    return EX_OK


async def _uninstall(conn: asyncpg.Connection) -> int:
    await sqlinstall.uninstall(conn)
    print("uninstalled")
    return EX_OK


async def _send(conn: asyncpg.Connection, settings: Settings, payload: str) -> int:
    await conn.execute("SELECT pg_notify($1, $2)", settings.channel, payload)
    print(f"sent on channel {settings.channel!r}")
    return EX_OK


async def check(settings: Settings) -> int:
    """Config is valid (we got here), the database answers, triggers are installed
    on the right channel, and a NOTIFY comes back through LISTEN."""
    ok = True

    def report(passed: bool, what: str) -> None:
        nonlocal ok
        ok = ok and passed
        print(f"{'ok  ' if passed else 'FAIL'} {what}")

    report(True, "configuration is valid")
    conn = await asyncpg.connect(settings.database_url, timeout=settings.listen_connect_timeout)
    try:
        report(True, "database reachable")
        # Warnings, not failures: who else can send events or LISTEN (docs/threat-model.md).
        if await conn.fetchval(
                "SELECT has_database_privilege('public', current_database(), 'CONNECT')"):
            print("warn PUBLIC may connect to this database: any role can send events and"
                  " read every payload with LISTEN; REVOKE CONNECT ON DATABASE ... FROM PUBLIC")
        if not settings.notify_roles:
            print("warn SSE_NOTIFY_ROLES is not set: notifications from any role are accepted")
        channel = None
        if await conn.fetchval("SELECT to_regprocedure('sse.channel()') IS NOT NULL"):
            channel = await conn.fetchval("SELECT sse.channel()")
        triggers = await conn.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'sse\\_%' AND NOT tgisinternal")
        report(channel is not None and triggers > 0, f"triggers installed ({triggers} found)")
        report(channel == settings.channel,
               f"triggers notify channel {channel!r}, service listens on {settings.channel!r}")
        listener = await asyncpg.connect(settings.database_url,
                                         timeout=settings.listen_connect_timeout)
        try:
            got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            token = uuid.uuid4().hex

            def received(_conn: object, _pid: int, _channel: str, payload: str) -> None:
                if token in payload and not got.done():
                    got.set_result(payload)

            await listener.add_listener(settings.channel, received)
            await conn.execute("SELECT pg_notify($1, $2)", settings.channel, json.dumps(
                {"event": "cli:check", "users": [f"check-{token}"], "data": {}}))
            try:
                await asyncio.wait_for(got, 5)
                report(True, "LISTEN/NOTIFY round trip")
            except TimeoutError:
                report(False, "LISTEN/NOTIFY round trip (nothing within 5 s)")
        finally:
            await listener.close()
    finally:
        await conn.close()
    return EX_OK if ok else EX_FAILED
