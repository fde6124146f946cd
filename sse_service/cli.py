"""The ``sse-service`` command: serve, and the operator's tools around it.

Serving itself lives in :mod:`sse_service.server`. Each command validates only
the settings it uses: the database-only commands (``install-sql``,
``uninstall-sql``, ``send``) need no JWT key. ``bench`` is parsed and imported
only when it is the command, so that the serving process never loads it.

Exit codes (sysexits.h): 0 success, 1 a check failed, 2 bad usage,
69 the database is unavailable, 70 internal error, 71 cannot bind the port,
78 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import asyncpg

from sse_service import __version__, logs, sqlinstall
from sse_service.server import (
    EX_CONFIG,
    EX_FAILED,
    EX_OK,
    EX_OSERR,
    EX_SOFTWARE,
    EX_UNAVAILABLE,
    EX_USAGE,
    serve,
)
from sse_service.settings import ConfigError, DatabaseSettings, Settings
from sse_service.wire import NAME_RE

__all__ = ["EX_CONFIG", "EX_FAILED", "EX_OK", "EX_OSERR", "EX_SOFTWARE", "EX_UNAVAILABLE",
           "EX_USAGE", "build_parser", "check", "main", "serve"]

log = logging.getLogger("sse_service")

_BENCH_HELP = "benchmark: streams, memory, fan-out, latency, trigger cost (JSON out)"
_DEMO_HELP = "try it: a throw-away database, sample data, the service and a demo page"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; ``bench`` in it is a placeholder (see :func:`parse`)."""
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
    # Placeholders: their own arguments are parsed by a parser that imports the
    # benchmark or the demo, only when it is the command (see parse()).
    sub.add_parser("bench", help=_BENCH_HELP, add_help=False)
    sub.add_parser("demo", help=_DEMO_HELP, add_help=False)
    return parser


# Commands whose own arguments come from a module imported only when it is the
# command, so that ``serve`` never imports the benchmark or the demo.
_LAZY_COMMANDS = {"bench": ("sse_service.bench", _BENCH_HELP),
                  "demo": ("sse_service.demo", _DEMO_HELP)}


def command_parser(command: str) -> argparse.ArgumentParser:
    """The parser of a lazily loaded command's own arguments (imports its module)."""
    module_name, description = _LAZY_COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"sse-service {command}", description=description)
    module.add_arguments(parser)
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, as :func:`main` sees it."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command in _LAZY_COMMANDS:
        return command_parser(args.command).parse_args(rest, namespace=args)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


# The commands that only talk to the database: no JWT key, no serving settings
# (``check`` is not one: it checks what serving needs).
DATABASE_COMMANDS = frozenset({"install-sql", "uninstall-sql", "send"})


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the command in ``argv`` with the settings in ``env`` (the process's
    by default); the process exit code."""
    args = parse(argv)
    environ = os.environ if env is None else env
    command = args.command or "serve"
    if command == "demo":  # brings its own database and settings
        from sse_service import demo
        return demo.main(args, environ)
    try:
        if command in DATABASE_COMMANDS:
            return _database_command(args, DatabaseSettings.from_env(environ))
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        print(f"sse-service: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if command == "bench":  # stdout is for its JSON result: no logging set up there
        from sse_service import bench
        return bench.main(args, settings, environ)
    logs.setup(settings.log_level, settings.token_cookie)
    if command == "serve":
        return serve(settings, env)
    if command == "check":
        return _run(check(settings))
    raise AssertionError(command)  # argparse only lets known commands through


def _database_command(args: argparse.Namespace, database: DatabaseSettings) -> int:
    logs.setup(database.log_level)
    if args.command == "install-sql":
        return _run(_with_db(database, lambda c: _install(c, database.channel)))
    if args.command == "uninstall-sql":
        return _run(_with_db(database, _uninstall))
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
    return _run(_with_db(database, lambda c: _send(c, database.channel, payload)))


def _run(action: Coroutine[Any, Any, int]) -> int:
    """Run ``action``; the database's failures become a message and an exit code."""
    try:
        return asyncio.run(action)
    except asyncpg.ClientConfigurationError as exc:
        # asyncpg checks the URL's options (sslmode=...) only when it connects.
        print(f"sse-service: configuration error: SSE_DATABASE_URL: {exc}", file=sys.stderr)
        return EX_CONFIG
    except sqlinstall.UnsupportedServer as exc:
        print(f"sse-service: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except asyncpg.PostgresError as exc:  # e.g. a role without the privileges it needs
        print(f"sse-service: the database refused: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return EX_UNAVAILABLE
    except (OSError, asyncpg.InterfaceError, TimeoutError) as exc:
        print(f"sse-service: database unavailable: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return EX_UNAVAILABLE


async def _with_db(settings: DatabaseSettings | Settings,
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


async def _send(conn: asyncpg.Connection, channel: str, payload: str) -> int:
    await conn.execute("SELECT pg_notify($1, $2)", channel, payload)
    print(f"sent on channel {channel!r}")
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
