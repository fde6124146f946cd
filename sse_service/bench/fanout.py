"""``bench fanout``: streams held, memory per idle stream, fan-out throughput and latency.

Starts the service as a separate process on a fresh database (or targets a
running one with ``--target``), opens N streams for U users from client
worker processes, then sends R notifications per second for S seconds, each
to F users, and measures what arrived, how late, and what it cost.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from sse_service.bench import database, service
from sse_service.bench.clients import ClientPool
from sse_service.bench.common import BenchError, Conn, progress
from sse_service.bench.deployed import NginxFront
from sse_service.bench.emitters import (
    NOTIFY_PATTERN,
    TOUCH_FUNCTION,
    TRIGGERS_PATTERN,
    WARMUP_EVENT,
    Audience,
    Emission,
    NotifyEmitter,
    TriggerEmitter,
    tick_loop,
    warm_up,
)
from sse_service.bench.machine import CpuSample, machine_info, raise_nofile, rss_bytes
from sse_service.bench.options import check_target_options
from sse_service.bench.population import create_rows, make_tokens
from sse_service.bench.report import Measured, analyse, fanout_figures, now_iso
from sse_service.ids import IdCodec
from sse_service.settings import Settings


async def run_fanout(args: argparse.Namespace, settings: Settings,
                     env: Mapping[str, str]) -> dict[str, Any]:
    """Run ``bench fanout``; the JSON result. ``env`` is the started service's base env."""
    run = _Fanout(args, settings, env)
    try:
        result = await run.run()
        run.ok = True
        return result
    finally:
        await run.close()


class _Fanout:
    """One ``bench fanout`` run: its parameters, what it set up, and its result."""

    def __init__(self, args: argparse.Namespace, settings: Settings,
                 env: Mapping[str, str]) -> None:
        self.args, self.settings, self.env = args, settings, env
        self.streams: int = args.streams
        self.users: int = args.users or self.streams
        self.fanout: int = args.fanout
        if self.users > self.streams:
            raise BenchError(f"--users ({self.users}) must not exceed --streams ({self.streams})")
        if self.fanout > self.users:
            raise BenchError(f"--fanout ({self.fanout}) must not exceed --users ({self.users})")
        check_target_options(args)
        # The clients' Unix socket: the target's, or a temporary one for the started service.
        self.unix: str | None = args.unix or None
        self.unix_dir: str | None = None
        if args.unix == "":
            self.unix_dir = tempfile.mkdtemp(prefix="sse-bench-")
            self.unix = os.path.join(self.unix_dir, "sse.sock")
        nproc = len(os.sched_getaffinity(0))
        self.workers = min(args.clients or max(1, min(4, nproc)), self.streams)
        nofile = raise_nofile(self.streams + 1024)
        if nofile < self.streams // self.workers + 256:
            raise BenchError(f"open files limit {nofile} is too low for {self.streams} streams")
        if nofile < self.streams + 256 and not args.target:
            progress(f"warning: open files limit {nofile} is low for a service with "
                     f"{self.streams} streams")

        self.machine = machine_info()
        self.parameters: dict[str, Any] = {
            "streams": self.streams, "users": self.users, "rate": args.rate,
            "fanout": self.fanout, "duration": args.duration, "source": args.source,
            "target": args.target, "pid": args.pid, "clients": self.workers,
            "tick_ms": args.tick, "transport": "unix" if args.unix is not None else "tcp",
            "connections": args.connections if args.source == "triggers" else 1,
            "drain_timeout": args.drain, "warmup": args.warmup, "seed": args.seed,
            "service_env": args.service_env, "nginx": args.nginx,
            "channel": settings.channel,
        }
        self.admin_dsn: str = args.admin_dsn or settings.database_url
        self.fresh = args.target is None
        self.result: dict[str, Any] = {"benchmark": "fanout", "started_at": now_iso(),
                                       "machine": self.machine, "parameters": self.parameters}
        self.dsn = settings.database_url
        self.service: service.ServiceProcess | None = None
        self.front: NginxFront | None = None  # --nginx: the clients connect to it
        self.pool: ClientPool | None = None
        self.writers: list[Conn] = []
        self.created_users: list[str] = []
        self.ok = False

    async def run(self) -> dict[str, Any]:
        """Set up, hold the streams, emit, drain; the result."""
        user_ids, item_ids, audiences = await self._database()
        host, port, pid = await self._service()
        held_users = await self._open_streams(host, port, pid, user_ids)
        self.result.update(await self._emit(pid, held_users, user_ids, item_ids, audiences))
        if self.front is not None:
            self.result.update(self.front.figures(self.result))
        return self.result

    async def _database(self) -> tuple[list[str], list[str], list[list[int]]]:
        """The fresh database, the writers; (user ids, item ids, each item's audience)."""
        args = self.args
        if self.fresh:
            progress("creating a fresh database")
            self.dsn = await database.create_database(
                self.admin_dsn, database.read_schema(args.schema),
                install=args.source == "triggers", channel=self.settings.channel,
                prefix="sse_bench_")
            self.parameters["database"] = database.database_name(self.dsn)
        self.machine["postgres"] = await database.postgres_version(self.dsn)

        # Recipients and (for the triggers source) their rows.
        audiences: list[list[int]] = []
        item_ids: list[str] = []
        if args.source == "triggers":
            conns = args.connections
            self.writers = [await asyncpg.connect(self.dsn) for _ in range(conns)]
            wishlists = max(math.ceil(self.users / self.fanout), 4 * conns)
            progress(f"creating {self.users} users, {wishlists} wishlists with "
                     f"{self.fanout - 1} viewers each")
            user_ids, item_ids, audiences = await create_rows(
                self.writers[0], self.users, self.fanout, wishlists)
            self.created_users = user_ids
            for conn in self.writers:
                await conn.execute(TOUCH_FUNCTION)
        else:
            user_ids = [str(uuid.uuid4()) for _ in range(self.users)]
            self.writers = [await asyncpg.connect(self.dsn)]
        return user_ids, item_ids, audiences

    async def _service(self) -> tuple[str, int, int | None]:
        """Start the service (or check the target); (host, port, pid)."""
        pid: int | None
        if self.fresh:
            port = service.free_port()
            env = service.service_env(self.settings, self.env, self.dsn, port, self.streams,
                                      math.ceil(self.streams / self.users),
                                      self.args.service_env)
            if self.unix is not None:
                env["SSE_UNIX_SOCKET"] = self.unix
            progress(f"starting the service on port {port}")
            self.service = service.ServiceProcess(env, port)
            await self.service.wait_ready()
            host, pid = "127.0.0.1", self.service.pid
        else:
            host, port = service.parse_target(self.args.target)
            pid = self.args.pid
            status, _ = await service.http_get(host, port, "/readyz")
            if status != 200:
                raise BenchError(f"the target's /readyz answered {status}")
        self.result["service"] = {"spawned": self.fresh, "pid": pid, "host": host,
                                  "port": port, "unix_socket": self.unix}
        return host, port, pid

    async def _open_streams(self, host: str, port: int, pid: int | None,
                            user_ids: list[str]) -> list[list[int]]:
        """Open the idle streams and measure them; the users held by each worker."""
        streams, users, workers = self.streams, self.users, self.workers
        if self.args.nginx:  # as deployed: the clients go through nginx, over TCP
            self.front = NginxFront(f"unix:{self.unix}" if self.unix else f"{host}:{port}", streams)
        entry, unix = (await self.front.start(), None) if self.front else (port, self.unix)
        await asyncio.sleep(0.5)
        rss_before = rss_bytes(pid) if pid else None
        if self.front is not None:
            self.front.sample_idle(before=True)
        tokens = make_tokens(self.settings, user_ids, streams)
        pattern = TRIGGERS_PATTERN if self.args.source == "triggers" else NOTIFY_PATTERN
        progress(f"opening {streams} streams for {users} users from {workers} client processes")
        t0 = time.monotonic()
        self.pool = ClientPool(host, entry, tokens, workers, pattern, unix)
        reports = await self.pool.connected(within=120 + streams / 100)
        connect_seconds = time.monotonic() - t0
        held_users: list[list[int]] = []
        failed = 0
        errors: list[str] = []
        for w, report in enumerate(reports):
            bad = set(report["failed"])
            mine = range(w, streams, workers)
            held_users.append([s % users for i, s in enumerate(mine) if i not in bad])
            failed += len(bad)
            errors.extend(report["errors"])
        held = sum(len(h) for h in held_users)
        progress(f"{held} streams open ({failed} failed) in {connect_seconds:.1f} s")
        service_streams = await service.service_streams(host, port, held)
        await asyncio.sleep(1.0)
        rss_idle = rss_bytes(pid) if pid else None
        if self.front is not None:
            self.front.sample_idle(before=False)
        self.result.update({
            "streams_requested": streams,
            "streams_held": held,
            "streams_failed": failed,
            "stream_errors": sorted(set(errors))[:5],
            "service_streams": service_streams,
            "connect_seconds": round(connect_seconds, 3),
            "service_rss_before_bytes": rss_before,
            "service_rss_idle_bytes": rss_idle,
            "memory_per_idle_stream_bytes": (
                round((rss_idle - rss_before) / held) if rss_idle and rss_before and held
                else None),
        })
        return held_users

    async def _emit(self, pid: int | None, held_users: list[list[int]], user_ids: list[str],
                    item_ids: list[str], audiences: list[list[int]]) -> dict[str, Any]:
        """Send at the rate, drain the deliveries; the emission's figures."""
        args, pool = self.args, self.pool
        assert pool is not None
        audience = Audience(held_users, self.users)
        emission = Emission(expected=[0] * self.workers)
        pg_pids = await database.backend_pids(self.writers[0])
        await warm_up(NotifyEmitter(  # see warm_up: unmeasured, uncounted
            self.writers[0], self.settings.channel, user_ids, self.fanout, audience,
            Emission(expected=[0] * self.workers), args.seed + 1, event=WARMUP_EVENT,
            key="warm"), args.rate, args.warmup, args.tick / 1000)
        await pool.go()
        profiler = service.start_profiler(args.profile, pid, self.env)
        before = CpuSample.take(pid, pg_pids)
        if self.front is not None:
            self.front.sample_cpu(before=True)
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.time()
        progress(f"emitting {args.rate:g}/s x {self.fanout} recipients for "
                 f"{args.duration:g} s ({args.source})")
        tick = args.tick / 1000
        if args.source == "triggers":
            temitter = TriggerEmitter(self.writers, item_ids, audiences, audience, emission,
                                      IdCodec(self.settings.jwt_key))
            try:
                await tick_loop(args.rate, args.duration, tick, temitter.send)
                await temitter.finish()
            finally:
                for task in temitter.tasks:
                    task.cancel()
        else:
            nemitter = NotifyEmitter(self.writers[0], self.settings.channel, user_ids,
                                     self.fanout, audience, emission, args.seed)
            await tick_loop(args.rate, args.duration, tick, nemitter.send)
        emit_end = time.time()
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        progress(f"sent {emission.sent} in {emit_end - wall0:.2f} s; waiting for deliveries")
        results = await pool.drain(emission.expected, quiet=min(3.0, args.drain),
                                   deadline=args.drain + 2)
        after = CpuSample.take(pid, pg_pids)
        if self.front is not None:
            self.front.sample_cpu(before=False)
        wall1 = time.time()
        profile = service.stop_profiler(profiler, args.profile)

        deliveries = analyse(results, emission, args.samples)
        return fanout_figures(Measured(
            emission=emission, results=results, deliveries=deliveries,
            before=before, after=after, wall0=wall0, emit_end=emit_end, wall1=wall1,
            emitter_cpu=(self1.ru_utime - self0.ru_utime) + (self1.ru_stime - self0.ru_stime),
            rss_after=rss_bytes(pid) if pid else None,
            profile=profile, samples=args.samples))

    async def close(self) -> None:
        """Undo the setup: clients, writers, service, database (or the rows we added)."""
        if self.pool is not None:
            self.pool.close()
        if self.front is not None:
            await self.front.stop()
        for conn in self.writers:
            await conn.close()
        if self.service is not None:
            code = await self.service.stop()
            if self.ok:
                self.service.discard_log()
            else:
                progress(f"service log kept at {self.service.log.name} (exit {code})")
        if self.unix_dir is not None:
            shutil.rmtree(self.unix_dir, ignore_errors=True)
        if self.fresh and self.dsn != self.settings.database_url:
            await database.drop_database(self.admin_dsn, self.dsn)
        elif self.created_users:
            await database.delete_users(self.dsn, self.created_users)
