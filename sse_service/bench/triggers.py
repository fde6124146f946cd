"""``bench triggers``: what the triggers cost the core API's single-row updates.

Single-row item UPDATEs (autocommit, one connection, one statement per
transaction) on a fresh database, with the triggers uninstalled and
installed, for each number of viewers of the wishlist. A LISTEN connection in
a process of its own counts the notifications, as the service would.

Rates of one and the same configuration drift by +-10 % within a minute on a
small, shared machine, so the two configurations are never compared run
against run. Each run (``--updates`` timed UPDATEs) is split into short
rounds of at most ``ROUND_UPDATES``, and the rounds alternate between
without and with the triggers in ABBA order (a linear drift cancels out, and
every other switch is free). The figures:

* ``ratio`` / ``cost_fraction``: the median over the pairs of rounds of
  rate(with) / rate(without), with its spread (quartiles, min, max);
* ``backend_cpu_*``: the CPU time of the PostgreSQL backend that serves the
  UPDATEs (``pg_backend_pid()``), per update, read from ``/proc/<pid>``
  around every round. Far steadier than a rate, and blind to the client and
  to the machine's other load; available when PostgreSQL runs on this host
  (the backend is recognised by its process title naming the benchmark's
  database), else ``null``. ``/proc/<pid>/schedstat`` gives nanoseconds;
  without it ``utime + stime`` of ``/proc/<pid>/stat`` (clock ticks) is used.
* ``cost_fraction_from_backend_cpu``: the throughput cost that the added
  backend CPU predicts, added / (1 / rate without + added): the client waits
  for each UPDATE, so the backend's extra work adds to every update's time.

Each round is preceded by untimed warm-up UPDATEs (plans and the trigger
functions are compiled again after every install) and delimited by a marker
notification, after which the listener reports what it counted: the counts
are exact without waiting for notifications to trickle in.
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
from sse_service.bench.backend import BackendCpu
from sse_service.bench.clients import recv
from sse_service.bench.common import Conn, progress
from sse_service.bench.machine import machine_info
from sse_service.bench.report import now_iso
from sse_service.bench.rounds import Pairs, Round, run_json
from sse_service.settings import Settings

UPDATE = "UPDATE items SET title = $2, updated_at = now() WHERE id = $1"

# Timed UPDATEs per round at most (a run is split evenly into rounds).
ROUND_UPDATES = 1000
# Untimed UPDATEs before every round.
WARMUP_UPDATES = 100
# Payload of the marker notification (trigger payloads are JSON objects).
_MARK = "sse-bench-mark"


def _listen_worker(dsn: str, channel: str, pipe: Connection) -> None:
    """A LISTEN connection in a process of its own, as the service would hold.

    Counts notifications; on a marker notification it sends the count since
    the previous marker down the pipe. Notifications arrive in commit order,
    so the count covers exactly what committed before the marker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def go() -> None:
        count = 0

        def got(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            nonlocal count
            if payload == _MARK:
                pipe.send(count)
                count = 0
            else:
                count += 1

        conn = await asyncpg.connect(dsn)
        await conn.add_listener(channel, got)
        pipe.send("listening")
        while await recv(pipe) != "stop":
            pass
        await conn.close()

    asyncio.run(go())


async def run_triggers(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Run ``bench triggers`` on a fresh database (dropped again); the JSON result."""
    admin_dsn: str = args.admin_dsn or settings.database_url
    machine = machine_info()
    parameters = {"viewers": args.viewers, "updates": args.updates, "repeat": args.repeat,
                  "items": args.items, "listen": args.listen, "channel": settings.channel,
                  "round_updates": min(ROUND_UPDATES, args.updates),
                  "warmup_updates": WARMUP_UPDATES}
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
        backend = await BackendCpu.find(conn, database.database_name(dsn))
        parameters["backend_cpu_source"] = backend.source if backend else None
        updates = _Updates(args, settings, conn, items, pipe, backend)
        runs, rounds, summary = await updates.measure(wishlist, viewers)
        result["runs"] = runs
        result["rounds"] = rounds
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


def _split(total: int, most: int) -> list[int]:
    """``total`` split into as few near-equal parts as keep each at most ``most``."""
    parts = -(-total // most)
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class _Updates:
    """Timed rounds of single-row UPDATEs, rotating over the wishlist's items."""

    def __init__(self, args: argparse.Namespace, settings: Settings, conn: Conn,
                 items: list[Any], pipe: Connection | None, backend: BackendCpu | None) -> None:
        self.args, self.settings, self.conn = args, settings, conn
        self.items, self.pipe, self.backend = items, pipe, backend
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
        await self.conn.execute("SELECT pg_notify($1, $2)", self.settings.channel, _MARK)
        async with asyncio.timeout(30):
            count: int = await recv(self.pipe)
        return count

    async def round(self, viewers: int, repeat: int, pair: int, on: bool, n: int) -> Round:
        """Warm up, then ``n`` timed UPDATEs with the triggers ``on`` or not."""
        await self.triggers(on)
        await self.run(WARMUP_UPDATES)
        await self.notified()  # reset the listener's counter
        cpu0 = self.backend.seconds() if self.backend else None
        seconds = await self.run(n)
        cpu1 = self.backend.seconds() if self.backend else None
        notified = await self.notified()
        cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        return Round(viewers, repeat, pair, on, n, seconds, cpu, notified)

    async def measure(self, wishlist: Any, viewers: list[Any]) -> tuple[
            list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """(runs, rounds, summary): every run (a repeat's rounds of one
        configuration, added up), every round, and the figures per viewer count."""
        args, conn = self.args, self.conn
        runs: list[dict[str, Any]] = []
        rounds: list[dict[str, Any]] = []
        summary: list[dict[str, Any]] = []
        sizes = _split(args.updates, ROUND_UPDATES)
        for count in args.viewers:
            await conn.execute("DELETE FROM shared_wishlist_bookmarks")
            await conn.execute(
                "INSERT INTO shared_wishlist_bookmarks (user_id, wishlist_id, share_token) "
                "SELECT v, $1, md5(v::text) FROM unnest($2::uuid[]) AS v",
                wishlist, viewers[:count])
            await conn.execute("VACUUM ANALYZE")
            pairs = Pairs()
            for rep in range(args.repeat):
                done: dict[bool, list[Round]] = {False: [], True: []}
                for i, n in enumerate(sizes):
                    # ABBA...: whatever ran last runs first again, no switch.
                    order = (self.installed, not self.installed)
                    got = {on: await self.round(count, rep, i, on, n) for on in order}
                    pairs.pairs.append((got[False], got[True]))
                    for on in (False, True):
                        done[on].append(got[on])
                        rounds.append(got[on].as_json())
                for on in (False, True):
                    runs.append(run_json(count, on, rep, done[on]))
                ratios = [b.rate / a.rate for a, b in pairs.pairs[-len(sizes):]]
                progress(f"viewers={count} run {rep + 1}: {len(sizes)} pairs of "
                         f"{sizes[0]} updates, {runs[-2]['updates_per_second']:,.0f} -> "
                         f"{runs[-1]['updates_per_second']:,.0f} updates/s, median ratio "
                         f"{statistics.median(ratios):.3f}")
            summary.append(pairs.summary(count))
            s = summary[-1]
            cpu = ("" if s["cost_fraction_from_backend_cpu"] is None else
                   f"; backend CPU {s['backend_cpu_us_per_update_without_triggers']:.1f} -> "
                   f"{s['backend_cpu_us_per_update_with_triggers']:.1f} us/update, "
                   f"cost from it {s['cost_fraction_from_backend_cpu']:.1%}")
            progress(f"viewers={count}: cost {s['cost_fraction']:.1%} "
                     f"(ratio {s['ratio_spread']['q1']:.3f}..{s['ratio_spread']['q3']:.3f} "
                     f"over {s['pairs']} pairs){cpu}")
        return runs, rounds, summary
