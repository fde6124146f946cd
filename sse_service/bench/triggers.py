"""``bench triggers``: what the triggers cost the core API's single-row updates.

Single-row item UPDATEs (autocommit, one connection, one statement per
transaction) on a fresh database, for each number of viewers of the
wishlist, in three configurations (see :mod:`.rounds`): no trigger, a
reference trigger that only sends the notification the real triggers would
send (NOTIFY's own cost), and the real triggers. A LISTEN connection in a
process of its own counts the notifications, as the service would.

Rates of one and the same configuration drift by +-10 % within a minute on a
small, shared machine, so configurations are never compared run against
run. Each run (``--updates`` timed UPDATEs per configuration) is split into
sets of short rounds (at most ``ROUND_UPDATES`` each), one round per
configuration, and each set runs the configurations in the reverse order of
the previous one (ABC CBA ...: a linear drift cancels out, and every other
switch is free). The figures:

* ``ratio`` / ``cost_fraction``: the median over the sets of
  rate(triggers) / rate(none), with its spread (quartiles, min, max); the
  same for the reference under ``notify_only``, and
  ``cost_fraction_beyond_notify`` from rate(triggers) / rate(reference);
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
from sse_service.bench.rounds import CONFIGS, NONE, NOTIFY, SSE, Round, Sets, run_json
from sse_service.settings import Settings

UPDATE = "UPDATE items SET title = $2, updated_at = now() WHERE id = $1"

# Timed UPDATEs per round at most (a run is split evenly into rounds).
ROUND_UPDATES = 1000
# Untimed UPDATEs before every round.
WARMUP_UPDATES = 100
# Payload of the marker notification (trigger payloads are JSON objects).
_MARK = "sse-bench-mark"
# The reference configuration's trigger (a name the real triggers never use).
_REFERENCE = "bench_notify_only"


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
                                         install=False, channel=settings.channel,
                                         prefix="sse_bench_")
    parameters["database"] = database.database_name(dsn)
    listener: Any = None
    pipe: Connection | None = None
    conn = await asyncpg.connect(dsn)
    try:
        machine["postgres"] = await conn.fetchval("SHOW server_version")
        owner, wishlist, items, viewers = await _seed(conn, args.items, max(args.viewers))
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
        runs, rounds, summary = await updates.measure(owner, wishlist, viewers)
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


async def _seed(conn: Conn, n_items: int,
                n_viewers: int) -> tuple[Any, Any, list[Any], list[Any]]:
    """(owner, wishlist, items, viewers): an owner's wishlist with ``n_items``
    items, and ``n_viewers`` would-be viewers."""
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
    return owner, wishlist, items, viewers


def reference_payload(owner: Any, wishlist: Any, item: Any, viewers: list[Any]) -> str:
    """What the real triggers send for an UPDATE of ``item`` (an id and a time
    of the same widths): the reference trigger sends these bytes."""
    users = '","'.join(str(u) for u in [owner, *viewers])
    return (f'{{"id":1000000,"ts":1790000000.123456,"event":"items:updated",'
            f'"data":{{"id": "{item}", "wishlist_id": "{wishlist}"}},"users":["{users}"]}}')


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
        self.config = NONE
        self.payload = ""  # the reference trigger's, for the current viewer count

    async def run(self, n: int) -> float:
        """``n`` UPDATEs; the seconds they took."""
        started = time.perf_counter()
        for _ in range(n):
            self.counter += 1
            await self.conn.execute(UPDATE, self.items[self.counter % len(self.items)],
                                    f"title {self.counter}")
        return time.perf_counter() - started

    async def configure(self, config: str) -> None:
        """Leave the current configuration for ``config`` (if not in it already)."""
        if config == self.config:
            return
        if self.config == SSE:
            await sqlinstall.uninstall(self.conn)
        elif self.config == NOTIFY:
            await self.conn.execute(f"DROP TRIGGER {_REFERENCE} ON items")
        if config == SSE:
            await sqlinstall.install(self.conn, self.settings.channel)
        elif config == NOTIFY:
            await self._reference()
        self.config = config

    async def _reference(self) -> None:
        """Create the reference trigger, sending ``self.payload`` on every UPDATE.

        Written as the real triggers' hot path is (a PL/pgSQL AFTER ROW
        trigger, pg_notify in an assignment) minus all that computes the
        payload: the recipient lookup, the event id, the time, format()."""
        await self.conn.execute(f"""
            CREATE OR REPLACE FUNCTION {_REFERENCE}() RETURNS trigger
            LANGUAGE plpgsql AS $f$
            DECLARE
                _sent boolean;
            BEGIN
                _sent := pg_notify({_literal(self.settings.channel)},
                                   {_literal(self.payload)}) IS NOT NULL;
                RETURN NULL;
            END
            $f$;
            CREATE TRIGGER {_REFERENCE} AFTER UPDATE ON items
                FOR EACH ROW EXECUTE FUNCTION {_REFERENCE}();""")

    async def notified(self) -> int | None:
        """The listener's count since it was last asked (None without a listener)."""
        if self.pipe is None:
            return None
        await self.conn.execute("SELECT pg_notify($1, $2)", self.settings.channel, _MARK)
        async with asyncio.timeout(30):
            count: int = await recv(self.pipe)
        return count

    async def round(self, viewers: int, repeat: int, index: int, config: str,
                    n: int) -> Round:
        """Warm up, then ``n`` timed UPDATEs in configuration ``config``."""
        await self.configure(config)
        await self.run(WARMUP_UPDATES)
        await self.notified()  # reset the listener's counter
        cpu0 = self.backend.seconds() if self.backend else None
        seconds = await self.run(n)
        cpu1 = self.backend.seconds() if self.backend else None
        notified = await self.notified()
        cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        return Round(viewers, repeat, index, config, n, seconds, cpu, notified)

    async def measure(self, owner: Any, wishlist: Any, viewers: list[Any]) -> tuple[
            list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """(runs, rounds, summary): every run (a repeat's rounds of one
        configuration, added up), every round, and the figures per viewer count."""
        args, conn = self.args, self.conn
        runs: list[dict[str, Any]] = []
        rounds: list[dict[str, Any]] = []
        summary: list[dict[str, Any]] = []
        sizes = _split(args.updates, ROUND_UPDATES)
        for count in args.viewers:
            await self.configure(NONE)  # the reference's payload changes
            await conn.execute("DELETE FROM shared_wishlist_bookmarks")
            await conn.execute(
                "INSERT INTO shared_wishlist_bookmarks (user_id, wishlist_id, share_token) "
                "SELECT v, $1, md5(v::text) FROM unnest($2::uuid[]) AS v",
                wishlist, viewers[:count])
            await conn.execute("VACUUM ANALYZE")
            self.payload = reference_payload(owner, wishlist, self.items[0], viewers[:count])
            sets = Sets()
            order = list(CONFIGS)
            for rep in range(args.repeat):
                done: dict[str, list[Round]] = {config: [] for config in CONFIGS}
                for i, n in enumerate(sizes):
                    got = {config: await self.round(count, rep, i, config, n)
                           for config in order}
                    order.reverse()  # ABC CBA ...: whatever ran last runs first again
                    sets.sets.append(got)
                    for config, got_round in got.items():  # in the order they ran
                        done[config].append(got_round)
                        rounds.append(got_round.as_json())
                rates: dict[str, float] = {}
                for config in CONFIGS:
                    runs.append(run_json(count, config, rep, done[config]))
                    rates[config] = runs[-1]["updates_per_second"]
                last = Sets(sets.sets[-len(sizes):])
                progress(f"viewers={count} run {rep + 1}: {len(sizes)} sets of {sizes[0]} "
                         f"updates, {rates[NONE]:,.0f} / {rates[NOTIFY]:,.0f} / "
                         f"{rates[SSE]:,.0f} updates/s (none / reference / triggers), "
                         f"median ratios {statistics.median(last.ratios(NOTIFY)):.3f} / "
                         f"{statistics.median(last.ratios(SSE)):.3f}")
            summary.append(sets.summary(count))
            s = summary[-1]
            ref = s["notify_only"]
            cpu = ("" if s["cost_fraction_from_backend_cpu"] is None else
                   f"; backend CPU {s['backend_cpu_us_per_update_without_triggers']:.1f} -> "
                   f"{ref['backend_cpu_us_per_update_notify_only']:.1f} -> "
                   f"{s['backend_cpu_us_per_update_with_triggers']:.1f} us/update")
            progress(f"viewers={count}: cost {s['cost_fraction']:.1%} "
                     f"(ratio {s['ratio_spread']['q1']:.3f}..{s['ratio_spread']['q3']:.3f} "
                     f"over {s['sets']} sets), of it NOTIFY alone {ref['cost_fraction']:.1%}"
                     f"{cpu}")
        return runs, rounds, summary


def _literal(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
