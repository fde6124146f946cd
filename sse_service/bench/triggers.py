"""``bench triggers``: what the triggers cost the core API's single-row updates.

Single-row item UPDATEs per second (autocommit, one connection, one statement
per transaction) on a fresh database, with the triggers uninstalled and
installed, for each number of viewers of the wishlist. A LISTEN connection in
a process of its own counts the notifications, as the service would.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import signal
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

import asyncpg

from sse_service import sqlinstall
from sse_service.bench import database
from sse_service.bench.clients import recv
from sse_service.bench.common import Conn, progress
from sse_service.bench.machine import machine_info
from sse_service.bench.report import now_iso
from sse_service.settings import Settings

UPDATE = "UPDATE items SET title = $2, updated_at = now() WHERE id = $1"


def _listen_worker(dsn: str, channel: str, pipe: Connection) -> None:
    """A LISTEN connection in a process of its own, as the service would hold."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def go() -> None:
        count = 0

        def got(*_: object) -> None:
            nonlocal count
            count += 1

        conn = await asyncpg.connect(dsn)
        await conn.add_listener(channel, got)
        pipe.send("listening")
        while True:
            msg = await recv(pipe)
            if msg == "stop":
                break
            await asyncio.sleep(0.2)  # let the last notifications in
            pipe.send(count)
            count = 0
        await conn.close()

    asyncio.run(go())


async def run_triggers(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Run ``bench triggers`` on a fresh database (dropped again); the JSON result."""
    admin_dsn: str = args.admin_dsn or settings.database_url
    machine = machine_info()
    parameters = {"viewers": args.viewers, "updates": args.updates, "repeat": args.repeat,
                  "items": args.items, "listen": args.listen, "channel": settings.channel}
    result: dict[str, Any] = {"benchmark": "triggers", "started_at": now_iso(),
                              "machine": machine, "parameters": parameters}
    progress("creating a fresh database")
    dsn = await database.create_database(admin_dsn, database.read_schema(args.schema),
                                         install=False, channel=settings.channel)
    parameters["database"] = database.database_name(dsn)
    listener: Any = None
    pipe: Connection | None = None
    conn = await asyncpg.connect(dsn)
    try:
        machine["postgres"] = await conn.fetchval("SHOW server_version")
        wishlist, items, viewers = await _seed(conn, args.items, max(args.viewers))
        if args.listen:
            ctx = multiprocessing.get_context("spawn")
            pipe, theirs = ctx.Pipe()
            listener = ctx.Process(target=_listen_worker, args=(dsn, settings.channel, theirs),
                                   daemon=True, name="sse-bench-listen")
            listener.start()
            theirs.close()
            async with asyncio.timeout(30):
                await recv(pipe)
        runs, summary = await _Updates(args, settings, conn, items, pipe).measure(
            wishlist, viewers)
        result["runs"] = runs
        result["results"] = summary
        return result
    finally:
        if pipe is not None:
            try:
                pipe.send("stop")
            except OSError:
                pass
        if listener is not None:
            listener.join(timeout=5)
            if listener.is_alive():
                listener.terminate()
        await conn.close()
        await database.drop_database(admin_dsn, dsn)


async def _seed(conn: Conn, n_items: int, n_viewers: int) -> tuple[Any, list[Any], list[Any]]:
    """An owner's wishlist with ``n_items`` items, and ``n_viewers`` would-be viewers."""
    owner = await conn.fetchval(
        "INSERT INTO users (email, name) VALUES ('owner@bench.example', 'owner') "
        "RETURNING id")
    wishlist = await conn.fetchval(
        "INSERT INTO wishlists (user_id, name) VALUES ($1, 'bench') RETURNING id", owner)
    items = [r["id"] for r in await conn.fetch(
        "INSERT INTO items (wishlist_id, title) SELECT $1, 'item ' || n "
        "FROM generate_series(1, $2) AS n RETURNING id", wishlist, n_items)]
    viewers = [r["id"] for r in await conn.fetch(
        "INSERT INTO users (email, name) SELECT 'viewer' || n || '@bench.example', 'v' "
        "FROM generate_series(1, $1) AS n RETURNING id", n_viewers)]
    return wishlist, items, viewers


class _Updates:
    """Timed runs of single-row UPDATEs, rotating over the wishlist's items."""

    def __init__(self, args: argparse.Namespace, settings: Settings, conn: Conn,
                 items: list[Any], pipe: Connection | None) -> None:
        self.args, self.settings, self.conn = args, settings, conn
        self.items, self.pipe = items, pipe
        self.counter = 0
        self.installed = False

    async def run(self, n: int) -> float:
        """``n`` UPDATEs; the seconds they took."""
        started = time.perf_counter()
        for _ in range(n):
            self.counter += 1
            await self.conn.execute(UPDATE, self.items[self.counter % len(self.items)],
                                    f"title {self.counter}")
        return time.perf_counter() - started

    async def triggers(self, on: bool) -> None:
        """Install or uninstall the triggers (if not so already)."""
        if on != self.installed:
            if on:
                await sqlinstall.install(self.conn, self.settings.channel)
            else:
                await sqlinstall.uninstall(self.conn)
            self.installed = on

    async def notified(self) -> int | None:
        """The listener's count since it was last asked (None without a listener)."""
        if self.pipe is None:
            return None
        self.pipe.send("count")
        count: int = await recv(self.pipe)
        return count

    async def measure(self, wishlist: Any, viewers: list[Any]
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every run, and the median rates per viewer count: (runs, summary)."""
        args, conn = self.args, self.conn
        warmup = max(50, min(1000, args.updates // 10))
        runs: list[dict[str, Any]] = []
        summary: list[dict[str, Any]] = []
        for count in args.viewers:
            await conn.execute("DELETE FROM shared_wishlist_bookmarks")
            await conn.execute(
                "INSERT INTO shared_wishlist_bookmarks (user_id, wishlist_id, share_token) "
                "SELECT v, $1, md5(v::text) FROM unnest($2::uuid[]) AS v",
                wishlist, viewers[:count])
            await conn.execute("VACUUM ANALYZE")
            rates: dict[bool, list[float]] = {False: [], True: []}
            for rep in range(args.repeat):
                for with_triggers in (False, True):
                    await self.triggers(with_triggers)
                    await self.run(warmup)
                    await self.notified()  # reset the listener's counter
                    seconds = await self.run(args.updates)
                    notified = await self.notified()
                    ups = args.updates / seconds
                    rates[with_triggers].append(ups)
                    runs.append({"viewers": count, "triggers": with_triggers, "repeat": rep,
                                 "updates": args.updates, "seconds": round(seconds, 4),
                                 "updates_per_second": round(ups, 1),
                                 "notifications": notified})
                    progress(f"viewers={count} triggers={'on' if with_triggers else 'off'} "
                             f"run {rep + 1}: {ups:,.0f} updates/s")
            without = statistics.median(rates[False])
            with_ = statistics.median(rates[True])
            summary.append({
                "viewers": count,
                "updates_per_second_without_triggers": round(without, 1),
                "updates_per_second_with_triggers": round(with_, 1),
                "ratio": round(with_ / without, 4),
                "cost_fraction": round(1 - with_ / without, 4),
            })
        return runs, summary
