"""The ``sse-service`` command: serve, and the operator's tools around it.

Exit codes (sysexits.h): 0 success, 1 a check failed, 2 bad usage,
69 the database is unavailable, 70 internal error, 71 cannot bind the port,
78 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence

import asyncpg
from aiohttp import web

from sse_service import __version__, logs, sqlinstall
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
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ if env is None else env)
    except ConfigError as exc:
        print(f"sse-service: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    logs.setup(settings.log_level)
    command = args.command or "serve"
    if command == "serve":
        return serve(settings)
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
            payload = json.dumps({"event": args.event, "users": args.users, "data": data})
            return asyncio.run(_with_db(settings, lambda c: _send(c, settings, payload)))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"sse-service: database unavailable: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return EX_UNAVAILABLE
    raise AssertionError(command)  # argparse only lets known commands through


def serve(settings: Settings) -> int:
    app = create_app(settings, exit_on_crash=True)
    log.info("sse-service %s starting on %s:%d", __version__, settings.host, settings.port)
    try:
        web.run_app(app, host=settings.host, port=settings.port, backlog=settings.backlog,
                    shutdown_timeout=settings.shutdown_timeout,
                    access_log_class=logs.AccessLogger, handler_cancellation=True,
                    print=None)
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", settings.host, settings.port, exc)
        return EX_OSERR
    failures = app[SERVICE].failures
    if failures:
        log.error("stopped after an internal error: %s", "; ".join(failures))
        return EX_SOFTWARE
    log.info("stopped")
    return EX_OK


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
        channel = await conn.fetchval(
            "SELECT CASE WHEN to_regprocedure('sse.channel()') IS NULL THEN NULL "
            "ELSE sse.channel() END")
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
                {"event": "sync:check", "users": [f"check-{token}"], "data": {}}))
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
