"""``sse-service bench``: measure what one service process can carry.

Two benchmarks, each printing ONE JSON object on stdout (progress goes to
stderr):

``bench fanout``
    Starts the service as a separate process (``python -m sse_service serve``
    on a free port, on a fresh database ``sse_bench_<random>`` that it creates
    and drops) -- or targets a running one with ``--target`` -- opens N streams
    for U users from several client worker processes, measures the service's
    memory per idle stream, then sends R notifications per second for S
    seconds, each to F users, either with plain ``pg_notify`` (``--source
    notify``) or by updating real ``items`` rows so that the real triggers
    fire (``--source triggers``). Reports deliveries per second, loss,
    commit-to-receipt latency, service CPU per delivered event, and the CPU
    the clients, the emitter and the PostgreSQL backends used, so that a
    reader can tell whether the benchmark itself saturated the machine.

``bench triggers``
    What the triggers cost the core API: single-row item UPDATEs per second
    (autocommit, one connection, one statement per transaction) on a fresh
    database, with the triggers uninstalled and installed, for each number of
    viewers of the wishlist.

The service's memory and CPU come from ``/proc/<pid>`` (``VmRSS``; ``utime``
+ ``stime``), so the benchmark's own work never counts in them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from itertools import repeat
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import jwt

from sse_service import __version__, sqlinstall
from sse_service.settings import Settings

STREAM_PATH = "/api/v1/events/stream"
DEFAULT_SCHEMA = sqlinstall.SQL_DIR.parent.parent / "shared" / "wishwithme-schema.sql"
BENCH_EVENT = "bench:tick"
# What a client counts: one key per received event.
NOTIFY_PATTERN = rb'"seq":(\d+)'  # data {"t":...,"seq":N} of bench:tick
TRIGGERS_PATTERN = rb"id: (\d+)\nevent: items:updated\n"  # the trigger's event id
MAX_PAYLOAD = 7900  # bytes; NOTIFY refuses 8000
EX_OK, EX_FAILED, EX_USAGE, EX_UNAVAILABLE = 0, 1, 2, 69

Conn = Any  # asyncpg.Connection (asyncpg ships no type hints)


class BenchError(RuntimeError):
    """The benchmark cannot run (setup failed); the message says why."""


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` subcommand's own subcommands and options."""
    modes = parser.add_subparsers(dest="bench_mode", metavar="MODE", required=True)

    fan = modes.add_parser(
        "fanout", help="streams held, memory per stream, fan-out throughput and latency",
        description="Open N streams for U users, then send R notifications/s for S seconds, "
                    "each to F users; report one JSON object on stdout.")
    fan.add_argument("--streams", type=_positive_int, default=1000, help="streams to open (N)")
    fan.add_argument("--users", type=_positive_int, default=None,
                     help="distinct users (U <= N; default N); stream s belongs to user s %% U")
    fan.add_argument("--rate", type=_positive_float, default=200.0,
                     help="notifications (or trigger-firing transactions) per second")
    fan.add_argument("--fanout", type=_positive_int, default=100,
                     help="recipients (users) of each notification")
    fan.add_argument("--duration", type=_positive_float, default=10.0,
                     help="seconds of emission")
    fan.add_argument("--source", choices=("notify", "triggers"), default="notify",
                     help="plain pg_notify, or UPDATEs of real items rows through the triggers")
    fan.add_argument("--target", default=None, metavar="URL",
                     help="a running service (http://host:port) instead of starting one; it "
                          "must listen on SSE_DATABASE_URL with the same SSE_JWT_KEY")
    fan.add_argument("--pid", type=_positive_int, default=None,
                     help="with --target: the service's process id, to measure memory and CPU")
    fan.add_argument("--clients", type=_positive_int, default=None,
                     help="client worker processes (default: the number of CPUs, at most 4)")
    fan.add_argument("--tick", type=_positive_float, default=5.0,
                     help="emission tick in ms: notifications due are sent together, "
                          "in one transaction (notify source)")
    fan.add_argument("--connections", type=_positive_int, default=4,
                     help="database connections writing rows (triggers source)")
    fan.add_argument("--drain", type=_positive_float, default=10.0,
                     help="at most this many seconds to wait for late deliveries")
    fan.add_argument("--seed", type=int, default=1, help="random seed for recipient choice")
    fan.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE",
                     help="extra environment for the started service (repeatable)")
    fan.add_argument("--profile", default=None, metavar="PATH",
                     help="record the service with py-spy (raw format) during emission")
    fan.add_argument("--samples", default=None, metavar="PATH",
                     help="write every delivery (worker,key,send,commit,receipt) as CSV")
    _common(fan)

    trig = modes.add_parser(
        "triggers", help="what the triggers cost the core API's single-row updates",
        description="Single-row item UPDATEs per second (autocommit, one connection) on a "
                    "fresh database, triggers uninstalled vs installed, per viewer count.")
    trig.add_argument("--viewers", type=_int_list, default=[0, 100],
                      help="comma-separated viewer counts of the wishlist (default 0,100)")
    trig.add_argument("--updates", type=_positive_int, default=5000,
                      help="timed updates per run")
    trig.add_argument("--repeat", type=_positive_int, default=3,
                      help="runs per configuration (the median is reported)")
    trig.add_argument("--items", type=_positive_int, default=100,
                      help="items of the wishlist that the updates rotate over")
    trig.add_argument("--no-listen", dest="listen", action="store_false",
                      help="do not LISTEN while the triggers notify (the service would)")
    _common(trig)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA,
                        help=f"core API schema to load into the fresh database "
                             f"(default {DEFAULT_SCHEMA})")
    parser.add_argument("--admin-dsn", default=None,
                        help="where to CREATE/DROP the fresh database (default "
                             "SSE_DATABASE_URL; needs CREATEDB)")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {raw}")
    return value


def _int_list(raw: str) -> list[int]:
    try:
        values = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {raw!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError("expected non-negative numbers")
    return values


def main(args: argparse.Namespace, settings: Settings) -> int:
    """Entry point of ``sse-service bench``; prints the JSON result on stdout."""
    try:
        if args.bench_mode == "fanout":
            result = asyncio.run(run_fanout(args, settings))
        else:
            result = asyncio.run(run_triggers(args, settings))
    except BenchError as exc:
        print(f"sse-service bench: {exc}", file=sys.stderr)
        return EX_FAILED
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(f"sse-service bench: database or service unavailable: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    print(json.dumps(result, indent=2))
    return EX_OK


# ---------------------------------------------------------------------------
# /proc and the machine
# ---------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid``, all its threads."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def _try_cpu(pids: Iterable[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        try:
            user, system = cpu_times(pid)
        except (OSError, ValueError, IndexError):
            continue
        out[pid] = user + system
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return total - idle, total


def machine_info() -> dict[str, Any]:
    model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_total = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_total = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {"sse_service": __version__}
    for module in ("aiohttp", "aiohttp-sse", "asyncpg", "PyJWT"):
        try:
            versions[module] = package_version(module)
        except PackageNotFoundError:
            versions[module] = None
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_bytes": mem_total,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "versions": versions,
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def raise_nofile(wanted: int) -> int:
    """Raise this process's (and so its children's) open-files limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:  # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/p99.9/max/mean/min of ``values`` (nearest rank), in the same unit."""
    if not values:
        return {k: None for k in ("p50", "p90", "p99", "p999", "max", "mean", "min")}
    ordered = sorted(values)
    last = len(ordered) - 1

    def rank(q: float) -> float:
        return ordered[min(last, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "p999": rank(0.999),
            "max": ordered[-1], "mean": statistics.fmean(ordered), "min": ordered[0]}


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# ---------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------

def with_database(dsn: str, dbname: str) -> str:
    """``dsn`` pointed at another database on the same server."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + dbname))


def read_schema(schema: Path) -> str:
    try:
        return schema.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot read the core API schema {schema} (use --schema): "
                         f"{exc}") from None


async def create_database(admin_dsn: str, schema_sql: str, *, install: bool,
                          channel: str) -> str:
    """A new database ``sse_bench_<random>`` with the core schema (and triggers)."""
    name = "sse_bench_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(admin_dsn, name)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(schema_sql)
            if install:
                await sqlinstall.install(conn, channel)
        finally:
            await conn.close()
    except BaseException:
        await drop_database(admin_dsn, dsn)
        raise
    return dsn


async def drop_database(admin_dsn: str, dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def postgres_version(dsn: str) -> str | None:
    conn = await asyncpg.connect(dsn)
    try:
        version: str = await conn.fetchval("SHOW server_version")
        return version
    finally:
        await conn.close()


async def backend_pids(conn: Conn) -> list[int]:
    """Server processes of the benchmark's database (listener, writers)."""
    rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return [r["pid"] for r in rows]


# ---------------------------------------------------------------------------
# The service process
# ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def http_get(host: str, port: int, path: str, within: float = 5.0) -> tuple[int, bytes]:
    """A plain HTTP/1.0 GET; (status, body)."""
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            raw = await reader.read()
        finally:
            writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return status, body


class ServiceProcess:
    """``python -m sse_service serve`` in a process of its own."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.port = port
        self.env = env
        self.log = tempfile.NamedTemporaryFile(  # kept open while the service runs
            prefix="sse-bench-service-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sse_service", "serve"],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 20) -> str:
        try:
            text = Path(self.log.name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the service exited with {self.proc.returncode}:\n"
                                 + self.tail())
            try:
                status, _ = await http_get("127.0.0.1", self.port, "/readyz", within=2)
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise BenchError("the service did not become ready:\n" + self.tail())

    async def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        self.log.close()
        return self.proc.returncode

    def discard_log(self) -> None:
        Path(self.log.name).unlink(missing_ok=True)


def service_env(settings: Settings, dsn: str, port: int, streams: int, per_user: int,
                extra: Sequence[str]) -> dict[str, str]:
    env = dict(os.environ)
    env["SSE_DATABASE_URL"] = dsn
    env["SSE_HOST"] = "127.0.0.1"
    env["SSE_PORT"] = str(port)
    env["SSE_MAX_STREAMS"] = str(max(settings.max_streams, streams + 100))
    env["SSE_MAX_STREAMS_PER_USER"] = str(max(settings.max_streams_per_user, per_user))
    env["SSE_BACKLOG"] = str(max(settings.backlog, 4096))
    env.setdefault("SSE_LOG_LEVEL", "WARNING")
    env.pop("NOTIFY_SOCKET", None)  # not systemd's child
    env.pop("WATCHDOG_USEC", None)
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("SSE_"):
            raise BenchError(f"--service-env wants SSE_KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def find_py_spy() -> str:
    candidates = [str(Path(sys.executable).parent / "py-spy"), shutil.which("py-spy")]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise BenchError("--profile needs py-spy (pip install py-spy)")


# ---------------------------------------------------------------------------
# Client workers: raw asyncio protocols in processes of their own
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerConfig:
    index: int
    host: str
    port: int
    tokens: list[str]
    pattern: bytes
    concurrency: int = 200
    connect_timeout: float = 30.0


async def _recv(pipe: Connection) -> Any:
    """``pipe.recv()`` without blocking the event loop."""
    loop = asyncio.get_running_loop()
    fd = pipe.fileno()
    while not pipe.poll():
        ready: asyncio.Future[None] = loop.create_future()

        def wake(f: asyncio.Future[None] = ready) -> None:
            if not f.done():
                f.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
    return pipe.recv()


class _Stream(asyncio.Protocol):
    """One SSE stream: finds the response head, then counts complete events."""

    __slots__ = ("buf", "head", "ready", "status", "transport", "worker")

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.buf = b""
        self.status = 0
        self.ready: asyncio.Future[None] = worker.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.status:
            head = self.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self.head = head
                return
            self.head = b""
            try:
                self.status = int(head[9:12])
            except ValueError:
                self.status = -1
            if self.status != 200:
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(f"HTTP status {self.status}"))
                if self.transport is not None:
                    self.transport.close()
                return
            if not self.ready.done():
                self.ready.set_result(None)
            data = head[end + 4:]
        # Events end with a blank line; the HTTP chunk framing around each
        # event ("<hex>\r\n" ... "\r\n") never contains "\n\n".
        buf = self.buf + data if self.buf else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.buf = buf
            return
        end += 2
        self.buf = buf[end:]
        keys = self.worker.findall(buf, 0, end)
        if keys:
            self.worker.record(keys)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(str(exc) if exc else "closed"))
        elif self.status == 200:
            self.worker.lost += 1


class _Worker:
    """The client side in one process: its share of the streams."""

    def __init__(self, cfg: WorkerConfig, pipe: Connection) -> None:
        self.cfg = cfg
        self.pipe = pipe
        self.loop = asyncio.get_running_loop()
        self.findall: Callable[[bytes, int, int], list[bytes]] = re.compile(cfg.pattern).findall
        self.keys = array("q")
        self.times = array("d")
        self.received = 0
        self.expected = -1
        self.last = 0.0
        self.lost = 0
        self.done: asyncio.Future[None] | None = None
        self.streams: list[_Stream] = []

    def record(self, keys: list[bytes]) -> None:
        now = time.time()
        self.keys.extend(map(int, keys))
        self.times.extend(repeat(now, len(keys)))
        self.received += len(keys)
        self.last = now
        if self.received >= self.expected >= 0 and self.done is not None \
                and not self.done.done():
            self.done.set_result(None)

    async def _open(self, tok: str, gate: asyncio.Semaphore) -> str | None:
        cfg = self.cfg
        request = (f"GET {STREAM_PATH} HTTP/1.1\r\nHost: {cfg.host}:{cfg.port}\r\n"
                   f"Accept: text/event-stream\r\nAuthorization: Bearer {tok}\r\n\r\n").encode()
        stream: _Stream | None = None
        async with gate:
            try:
                async with asyncio.timeout(cfg.connect_timeout):
                    _, stream = await self.loop.create_connection(
                        lambda: _Stream(self), cfg.host, cfg.port)
                    assert stream.transport is not None
                    stream.transport.write(request)
                    await stream.ready
            except (OSError, TimeoutError) as exc:
                if stream is not None and stream.transport is not None:
                    stream.transport.abort()
                return f"{type(exc).__name__}: {exc}"[:200]
        self.streams.append(stream)
        return None

    async def run(self) -> None:
        gate = asyncio.Semaphore(self.cfg.concurrency)
        outcomes = await asyncio.gather(*(self._open(t, gate) for t in self.cfg.tokens))
        failed = [i for i, err in enumerate(outcomes) if err is not None]
        errors = sorted({err for err in outcomes if err is not None})[:5]
        self.pipe.send({"connected": len(self.streams), "failed": failed, "errors": errors})

        msg = await _recv(self.pipe)  # "go"
        assert msg == "go", msg
        self.keys = array("q")
        self.times = array("d")
        self.received = 0
        cpu0 = os.times()
        wall0 = time.monotonic()
        self.pipe.send("going")

        msg = await _recv(self.pipe)  # {"drain": expected, "quiet": s, "deadline": s}
        self.expected = int(msg["expected"])
        self.done = self.loop.create_future()
        if self.received >= self.expected:
            self.done.set_result(None)
        deadline = time.monotonic() + float(msg["deadline"])
        quiet = float(msg["quiet"])
        start = time.time()
        while not self.done.done() and time.monotonic() < deadline:
            if time.time() - max(self.last, start) > quiet:
                break
            await asyncio.wait([self.done], timeout=0.05)
        cpu1 = os.times()
        wall1 = time.monotonic()
        self.pipe.send({
            "received": self.received,
            "expected": self.expected,
            "keys": self.keys.tobytes(),
            "times": self.times.tobytes(),
            "cpu_user": cpu1.user - cpu0.user,
            "cpu_system": cpu1.system - cpu0.system,
            "wall": wall1 - wall0,
            "lost_streams": self.lost,
        })
        for stream in self.streams:
            if stream.transport is not None:
                stream.transport.abort()
        await asyncio.sleep(0)


def _client_worker(cfg: WorkerConfig, pipe: Connection) -> None:
    """Process entry point of one client worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C

    async def go() -> None:
        await _Worker(cfg, pipe).run()

    asyncio.run(go())


class ClientPool:
    """N streams spread over W worker processes; stream s goes to worker s % W."""

    def __init__(self, host: str, port: int, tokens: list[str], workers: int,
                 pattern: bytes) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.workers = workers
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for w in range(workers):
            ours, theirs = ctx.Pipe()
            cfg = WorkerConfig(w, host, port, tokens[w::workers], pattern)
            proc = ctx.Process(target=_client_worker, args=(cfg, theirs), daemon=True,
                               name=f"sse-bench-client-{w}")
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    async def _all(self, within: float) -> list[Any]:
        async with asyncio.timeout(within):
            return list(await asyncio.gather(*(_recv(p) for p in self.pipes)))

    async def connected(self, within: float) -> list[dict[str, Any]]:
        return await self._all(within)

    async def go(self) -> None:
        for pipe in self.pipes:
            pipe.send("go")
        await self._all(10)

    async def drain(self, expected: list[int], quiet: float,
                    deadline: float) -> list[dict[str, Any]]:
        for pipe, exp in zip(self.pipes, expected, strict=True):
            pipe.send({"expected": exp, "quiet": quiet, "deadline": deadline})
        return await self._all(deadline + 30)

    def close(self) -> None:
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()


# ---------------------------------------------------------------------------
# Emission
# ---------------------------------------------------------------------------

@dataclass
class Emission:
    """What was sent: (send, commit) times per key, and the deliveries due per worker.

    The commit time is when the writer saw its COMMIT (autocommit statement)
    complete; the send time, when it sent the statement. The true commit lies
    in between: send-to-receipt is an upper bound of commit-to-receipt, and
    commit-to-receipt can even come out negative when the writer's own event
    loop was late to see its commit.
    """

    commits: dict[int, tuple[float, float]] = field(default_factory=dict)
    expected: list[int] = field(default_factory=list)
    sent: int = 0  # notifications / transactions
    round_trips: list[float] = field(default_factory=list)  # seconds, emitter side
    first_send: float = 0.0
    last_commit: float = 0.0


class Audience:
    """Open streams per user per worker, to know the deliveries due."""

    def __init__(self, held: list[list[int]], users: int) -> None:
        # held[w] = the user of each of worker w's connected streams
        self.per_worker: list[list[int]] = []
        for users_of_worker in held:
            counts = [0] * users
            for u in users_of_worker:
                counts[u] += 1
            self.per_worker.append(counts)

    def add(self, expected: list[int], recipients: Sequence[int]) -> None:
        for w, counts in enumerate(self.per_worker):
            expected[w] += sum(map(counts.__getitem__, recipients))


async def tick_loop(rate: float, duration: float, tick: float,
                    send: Callable[[int], Any]) -> None:
    """Call ``send(n)`` every ``tick`` seconds with the notifications due by then."""
    total = max(1, round(rate * duration))
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    next_tick = start
    while sent < total:
        elapsed = loop.time() - start
        due = total if elapsed >= duration else min(total, int(rate * elapsed) + 1)
        if due > sent:
            await send(due - sent)
            sent = due
        next_tick += tick
        delay = next_tick - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            next_tick = loop.time()
            await asyncio.sleep(0)


class NotifyEmitter:
    """``pg_notify`` with bench:tick payloads; one transaction per tick."""

    def __init__(self, conn: Conn, channel: str, user_ids: list[str], fanout: int,
                 audience: Audience, emission: Emission, seed: int) -> None:
        self.conn = conn
        self.channel = channel
        self.quoted = [json.dumps(u) for u in user_ids]
        self.fanout = fanout
        self.audience = audience
        self.emission = emission
        self.rng = random.Random(seed)
        self.population = range(len(user_ids))
        self.seq = 0

    def _payloads(self, seq: int, t: float, recipients: list[int]) -> list[str]:
        tail = f'],"data":{{"t":{t!r},"seq":{seq}}}}}'
        head = f'{{"event":"{BENCH_EVENT}","users":['
        room = MAX_PAYLOAD - len(head) - len(tail)
        payloads: list[str] = []
        part: list[str] = []
        size = 0
        for u in recipients:
            q = self.quoted[u]
            if part and size + len(q) + 1 > room:
                payloads.append(head + ",".join(part) + tail)
                part, size = [], 0
            part.append(q)
            size += len(q) + 1
        payloads.append(head + ",".join(part) + tail)
        return payloads

    async def send(self, n: int) -> None:
        em = self.emission
        t = time.time()
        if not em.first_send:
            em.first_send = t
        payloads: list[str] = []
        seqs: list[int] = []
        for _ in range(n):
            self.seq += 1
            recipients = self.rng.sample(self.population, self.fanout)
            payloads.extend(self._payloads(self.seq, t, recipients))
            self.audience.add(em.expected, recipients)
            seqs.append(self.seq)
        await self.conn.execute(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS x(p, n) "
            "ORDER BY n", self.channel, payloads)
        committed = time.time()
        em.round_trips.append(committed - t)
        for seq in seqs:
            em.commits[seq] = (t, committed)
        em.sent += n
        em.last_commit = committed


# A real UPDATE of an items row, in its own (autocommit) transaction, that
# also returns the id the trigger gave its event. Temporary: nothing persists.
TOUCH_FUNCTION = """
CREATE FUNCTION pg_temp.sse_bench_touch(item uuid, n int) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.items SET quantity = n, updated_at = now() WHERE id = item;
    RETURN currval('sse.event_id');
END
$$
"""


class TriggerEmitter:
    """UPDATEs of items rows; the triggers notify owner + viewers."""

    def __init__(self, conns: list[Conn], items: list[str], audiences: list[list[int]],
                 audience: Audience, emission: Emission) -> None:
        self.conns = conns
        self.items = [uuid.UUID(i) for i in items]
        self.audiences = audiences
        self.audience = audience
        self.emission = emission
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.seq = 0
        self.tasks = [asyncio.create_task(self._writer(c)) for c in conns]

    async def _writer(self, conn: Conn) -> None:
        em = self.emission
        while True:
            k = await self.queue.get()
            try:
                slot = k % len(self.items)
                t = time.time()
                if not em.first_send:
                    em.first_send = t
                # Count the deliveries due first: the event may arrive before we resume.
                self.audience.add(em.expected, self.audiences[slot])
                event_id = await conn.fetchval("SELECT pg_temp.sse_bench_touch($1, $2)",
                                               self.items[slot], 1 + k % 1000)
                committed = time.time()
                em.round_trips.append(committed - t)
                em.commits[int(event_id)] = (t, committed)
                em.sent += 1
                em.last_commit = max(em.last_commit, committed)
            finally:
                self.queue.task_done()

    async def send(self, n: int) -> None:
        for _ in range(n):
            self.seq += 1
            self.queue.put_nowait(self.seq)

    async def finish(self) -> None:
        await self.queue.join()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def create_rows(conn: Conn, users: int, fanout: int,
                      wishlists: int) -> tuple[list[str], list[str], list[list[int]]]:
    """Users, wishlists with one item each, and F-1 viewers per wishlist.

    Wishlist j is owned by user (j*F) % U and viewed by the next F-1 users.
    Returns (user ids, item ids, audience of each item as user indices).
    """
    user_ids = [str(uuid.uuid4()) for _ in range(users)]
    await conn.execute(
        "INSERT INTO users (id, email, name) "
        "SELECT u, u::text || '@bench.example', 'bench' FROM unnest($1::uuid[]) AS u",
        user_ids)
    audiences: list[list[int]] = []
    owners: list[str] = []
    wishlist_ids = [str(uuid.uuid4()) for _ in range(wishlists)]
    item_ids = [str(uuid.uuid4()) for _ in range(wishlists)]
    viewer_rows: tuple[list[str], list[str]] = ([], [])
    for j in range(wishlists):
        members = [(j * fanout + i) % users for i in range(fanout)]
        audiences.append(members)
        owners.append(user_ids[members[0]])
        for v in members[1:]:
            viewer_rows[0].append(user_ids[v])
            viewer_rows[1].append(wishlist_ids[j])
    await conn.execute(
        "INSERT INTO wishlists (id, user_id, name) "
        "SELECT w, o, 'bench' FROM unnest($1::uuid[], $2::uuid[]) AS x(w, o)",
        wishlist_ids, owners)
    await conn.execute(
        "INSERT INTO items (id, wishlist_id, title) "
        "SELECT i, w, 'bench item' FROM unnest($1::uuid[], $2::uuid[]) AS x(i, w)",
        item_ids, wishlist_ids)
    await conn.execute(
        "INSERT INTO shared_wishlist_bookmarks (user_id, wishlist_id, share_token) "
        "SELECT u, w, md5(u::text || w::text) FROM unnest($1::uuid[], $2::uuid[]) AS x(u, w)",
        *viewer_rows)
    return user_ids, item_ids, audiences


def make_tokens(settings: Settings, user_ids: list[str], streams: int) -> list[str]:
    """One token per stream; stream s belongs to user s % U."""
    algorithm = settings.jwt_algorithms[0]
    if not algorithm.startswith("HS"):
        raise BenchError("bench signs tokens with SSE_JWT_KEY: it needs an HMAC algorithm")
    exp = int(time.time()) + 24 * 3600
    per_user: list[str] = []
    for uid in user_ids:
        claims: dict[str, Any] = {settings.jwt_user_claim: uid, "sub": uid, "exp": exp}
        if settings.jwt_audience:
            claims["aud"] = settings.jwt_audience
        if settings.jwt_issuer:
            claims["iss"] = settings.jwt_issuer
        per_user.append(jwt.encode(claims, settings.jwt_key, algorithm=algorithm))
    return [per_user[s % len(user_ids)] for s in range(streams)]


# ---------------------------------------------------------------------------
# bench fanout
# ---------------------------------------------------------------------------

async def run_fanout(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    streams: int = args.streams
    users: int = args.users or streams
    fanout: int = args.fanout
    if users > streams:
        raise BenchError(f"--users ({users}) must not exceed --streams ({streams})")
    if fanout > users:
        raise BenchError(f"--fanout ({fanout}) must not exceed --users ({users})")
    if args.pid and not args.target:
        raise BenchError("--pid only goes with --target")
    nproc = len(os.sched_getaffinity(0))
    workers = min(args.clients or max(1, min(4, nproc)), streams)
    nofile = raise_nofile(streams + 1024)
    if nofile < streams // workers + 256:
        raise BenchError(f"open files limit {nofile} is too low for {streams} streams")
    if nofile < streams + 256 and not args.target:
        progress(f"warning: open files limit {nofile} is low for a service with "
                 f"{streams} streams")

    machine = machine_info()
    parameters = {
        "streams": streams, "users": users, "rate": args.rate, "fanout": fanout,
        "duration": args.duration, "source": args.source, "target": args.target,
        "pid": args.pid, "clients": workers, "tick_ms": args.tick,
        "connections": args.connections if args.source == "triggers" else 1,
        "drain_timeout": args.drain, "seed": args.seed, "service_env": args.service_env,
        "channel": settings.channel,
    }
    admin_dsn: str = args.admin_dsn or settings.database_url
    fresh = args.target is None
    result: dict[str, Any] = {"benchmark": "fanout", "started_at": _now_iso(),
                              "machine": machine, "parameters": parameters}
    dsn = settings.database_url
    service: ServiceProcess | None = None
    pool: ClientPool | None = None
    writers: list[Conn] = []
    created_users: list[str] = []
    ok = False
    try:
        if fresh:
            progress("creating a fresh database")
            dsn = await create_database(admin_dsn, read_schema(args.schema),
                                        install=args.source == "triggers",
                                        channel=settings.channel)
            parameters["database"] = urlsplit(dsn).path.lstrip("/")
        machine["postgres"] = await postgres_version(dsn)

        # Recipients and (for the triggers source) their rows.
        audiences: list[list[int]] = []
        item_ids: list[str] = []
        if args.source == "triggers":
            conns = args.connections
            writers = [await asyncpg.connect(dsn) for _ in range(conns)]
            wishlists = max(math.ceil(users / fanout), 4 * conns)
            progress(f"creating {users} users, {wishlists} wishlists with "
                     f"{fanout - 1} viewers each")
            user_ids, item_ids, audiences = await create_rows(writers[0], users, fanout,
                                                              wishlists)
            created_users = user_ids
            for conn in writers:
                await conn.execute(TOUCH_FUNCTION)
        else:
            user_ids = [str(uuid.uuid4()) for _ in range(users)]
            writers = [await asyncpg.connect(dsn)]

        # The service.
        if fresh:
            port = free_port()
            env = service_env(settings, dsn, port, streams, math.ceil(streams / users),
                              args.service_env)
            progress(f"starting the service on port {port}")
            service = ServiceProcess(env, port)
            await service.wait_ready()
            host, pid = "127.0.0.1", service.pid
        else:
            parts = urlsplit(args.target if "://" in args.target else "http://" + args.target)
            if parts.scheme != "http" or not parts.hostname:
                raise BenchError("--target wants http://host:port")
            host, port, pid = parts.hostname, parts.port or 80, args.pid
            status, _ = await http_get(host, port, "/readyz")
            if status != 200:
                raise BenchError(f"the target's /readyz answered {status}")
        result["service"] = {"spawned": fresh, "pid": pid, "host": host, "port": port}

        # Idle streams and their memory.
        await asyncio.sleep(0.5)
        rss_before = rss_bytes(pid) if pid else None
        tokens = make_tokens(settings, user_ids, streams)
        pattern = TRIGGERS_PATTERN if args.source == "triggers" else NOTIFY_PATTERN
        progress(f"opening {streams} streams for {users} users from {workers} client processes")
        t0 = time.monotonic()
        pool = ClientPool(host, port, tokens, workers, pattern)
        reports = await pool.connected(within=120 + streams / 100)
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
        service_streams = await _service_streams(host, port, held)
        await asyncio.sleep(1.0)
        rss_idle = rss_bytes(pid) if pid else None
        result.update({
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

        # Emission.
        audience = Audience(held_users, users)
        emission = Emission(expected=[0] * workers)
        pg_pids = await backend_pids(writers[0])
        await pool.go()
        profiler = _start_profiler(args.profile, pid)
        cpu0 = cpu_times(pid) if pid else None
        pg0 = _try_cpu(pg_pids)
        busy0, total0 = machine_ticks()
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.time()
        progress(f"emitting {args.rate:g}/s x {fanout} recipients for {args.duration:g} s "
                 f"({args.source})")
        tick = args.tick / 1000
        if args.source == "triggers":
            temitter = TriggerEmitter(writers, item_ids, audiences, audience, emission)
            try:
                await tick_loop(args.rate, args.duration, tick, temitter.send)
                await temitter.finish()
            finally:
                for task in temitter.tasks:
                    task.cancel()
        else:
            nemitter = NotifyEmitter(writers[0], settings.channel, user_ids, fanout, audience,
                                     emission, args.seed)
            await tick_loop(args.rate, args.duration, tick, nemitter.send)
        emit_end = time.time()
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        progress(f"sent {emission.sent} in {emit_end - wall0:.2f} s; waiting for deliveries")
        results = await pool.drain(emission.expected, quiet=min(3.0, args.drain),
                                   deadline=args.drain + 2)
        cpu1 = cpu_times(pid) if pid else None
        pg1 = _try_cpu(pg_pids)
        busy1, total1 = machine_ticks()
        wall1 = time.time()
        profile = _stop_profiler(profiler, args.profile)

        # Figures.
        deliveries = analyse(results, emission, args.samples)
        expected = sum(emission.expected)
        received = sum(r["received"] for r in results)
        loss = max(0, expected - received)
        window = (deliveries.last_receipt - emission.first_send) if deliveries.last_receipt \
            else 0.0
        client_cpu = [r["cpu_user"] + r["cpu_system"] for r in results]
        service_cpu = None
        if cpu0 is not None and cpu1 is not None:
            user_s, sys_s = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
            service_cpu = {"user": round(user_s, 3), "system": round(sys_s, 3),
                           "total": round(user_s + sys_s, 3)}
        pg_cpu = (round(sum(pg1[p] - pg0[p] for p in pg0 if p in pg1), 3)
                  if pg0 and pg1 else None)
        result.update({
            "notifications_sent": emission.sent,
            "emit_seconds": round(emit_end - wall0, 3),
            "notification_rate_achieved": round(emission.sent / max(1e-9, emit_end - wall0), 1),
            "expected_deliveries": expected,
            "deliveries_received": received,
            "loss_count": loss,
            "loss_fraction": (loss / expected) if expected else 0.0,
            "unmatched_events": deliveries.unmatched,
            "streams_lost_during_run": sum(r["lost_streams"] for r in results),
            "deliveries_per_second": round(received / window, 1) if window > 0 else None,
            "latency_ms": {k: _round(v) for k, v in percentiles(deliveries.latencies).items()},
            "latency_samples": len(deliveries.latencies),
            "send_to_receipt_ms": {
                k: _round(v) for k, v in percentiles(deliveries.from_send).items()},
            "latency_timeline": deliveries.timeline(),
            "emitter_round_trip_ms": {
                k: _round(v) for k, v in
                percentiles([x * 1000 for x in emission.round_trips]).items()
                if k in ("p50", "p99", "max")},
            "service_cpu_seconds": service_cpu,
            "service_cpu_us_per_delivery": (
                round(service_cpu["total"] * 1e6 / received, 2)
                if service_cpu is not None and received else None),
            "service_rss_after_bytes": rss_bytes(pid) if pid else None,
            "client_cpu_seconds": round(sum(client_cpu), 3),
            "client_workers": [
                {"received": r["received"], "expected": r["expected"],
                 "cpu_seconds": round(c, 3),
                 "cpu_utilization": round(c / r["wall"], 3) if r["wall"] else None}
                for r, c in zip(results, client_cpu, strict=True)],
            "emitter_cpu_seconds": round(
                (self1.ru_utime - self0.ru_utime) + (self1.ru_stime - self0.ru_stime), 3),
            "postgres_cpu_seconds": pg_cpu,
            "machine_cpu_utilization": (
                round((busy1 - busy0) / (total1 - total0), 3) if total1 > total0 else None),
            "measure_seconds": round(wall1 - wall0, 3),
            "profile": profile,
            "samples": args.samples,
        })
        ok = True
        return result
    finally:
        if pool is not None:
            pool.close()
        for conn in writers:
            await conn.close()
        if service is not None:
            code = await service.stop()
            if ok:
                service.discard_log()
            else:
                progress(f"service log kept at {service.log.name} (exit {code})")
        if fresh and dsn != settings.database_url:
            await drop_database(admin_dsn, dsn)
        elif created_users:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("DELETE FROM users WHERE id = ANY($1::uuid[])",
                                   created_users)
            finally:
                await conn.close()


@dataclass
class Deliveries:
    """Every matched delivery's latency (ms), by commit second too."""

    latencies: list[float] = field(default_factory=list)
    from_send: list[float] = field(default_factory=list)
    per_second: dict[int, list[float]] = field(default_factory=dict)
    unmatched: int = 0
    last_receipt: float = 0.0

    def timeline(self) -> list[dict[str, Any]]:
        """p50/p99/max per second of emission: shows stalls and falling behind."""
        out = []
        for second in sorted(self.per_second):
            values = self.per_second[second]
            stats = percentiles(values)
            out.append({"second": second, "deliveries": len(values),
                        "p50_ms": _round(stats["p50"]), "p99_ms": _round(stats["p99"]),
                        "max_ms": _round(stats["max"])})
        return out


def analyse(results: list[dict[str, Any]], emission: Emission,
            samples_path: str | None) -> Deliveries:
    """Match every received key with its commit; optionally write them all as CSV."""
    out = Deliveries()
    commits = emission.commits
    first = emission.first_send
    samples = open(samples_path, "w", encoding="ascii") if samples_path else None
    try:
        if samples is not None:
            samples.write("worker,key,send,commit,receipt\n")
        for w, r in enumerate(results):
            keys = array("q")
            keys.frombytes(r["keys"])
            times = array("d")
            times.frombytes(r["times"])
            for key, at in zip(keys, times, strict=True):
                sent_commit = commits.get(key)
                if sent_commit is None:
                    out.unmatched += 1
                    continue
                sent, committed = sent_commit
                ms = (at - committed) * 1000
                out.latencies.append(ms)
                out.from_send.append((at - sent) * 1000)
                out.per_second.setdefault(int(committed - first), []).append(ms)
                if samples is not None:
                    samples.write(f"{w},{key},{sent:.6f},{committed:.6f},{at:.6f}\n")
            if times:
                out.last_receipt = max(out.last_receipt, max(times))
    finally:
        if samples is not None:
            samples.close()
    return out


async def _service_streams(host: str, port: int, held: int) -> int | None:
    """The service's own count of open streams, once it reached ``held`` (or 10 s)."""
    deadline = time.monotonic() + 10
    count = None
    while time.monotonic() < deadline:
        try:
            status, body = await http_get(host, port, "/healthz")
            if status == 200:
                count = int(json.loads(body).get("streams", 0))
                if count >= held:
                    return count
        except (OSError, ValueError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    return count


def _start_profiler(path: str | None, pid: int | None) -> subprocess.Popen[bytes] | None:
    if path is None:
        return None
    if pid is None:
        raise BenchError("--profile needs the service's pid")
    return subprocess.Popen(
        [find_py_spy(), "record", "--format", "raw", "--nonblocking", "--rate", "200",
         "-o", path, "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_profiler(proc: subprocess.Popen[bytes] | None, path: str | None) -> str | None:
    if proc is None:
        return None
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return path


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------------------
# bench triggers
# ---------------------------------------------------------------------------

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
            msg = await _recv(pipe)
            if msg == "stop":
                break
            await asyncio.sleep(0.2)  # let the last notifications in
            pipe.send(count)
            count = 0
        await conn.close()

    asyncio.run(go())


async def run_triggers(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    admin_dsn: str = args.admin_dsn or settings.database_url
    machine = machine_info()
    parameters = {"viewers": args.viewers, "updates": args.updates, "repeat": args.repeat,
                  "items": args.items, "listen": args.listen, "channel": settings.channel}
    result: dict[str, Any] = {"benchmark": "triggers", "started_at": _now_iso(),
                              "machine": machine, "parameters": parameters}
    progress("creating a fresh database")
    dsn = await create_database(admin_dsn, read_schema(args.schema), install=False,
                                channel=settings.channel)
    parameters["database"] = urlsplit(dsn).path.lstrip("/")
    listener: Any = None
    pipe: Connection | None = None
    conn = await asyncpg.connect(dsn)
    try:
        machine["postgres"] = await conn.fetchval("SHOW server_version")
        owner = await conn.fetchval(
            "INSERT INTO users (email, name) VALUES ('owner@bench.example', 'owner') "
            "RETURNING id")
        wishlist = await conn.fetchval(
            "INSERT INTO wishlists (user_id, name) VALUES ($1, 'bench') RETURNING id", owner)
        items = [r["id"] for r in await conn.fetch(
            "INSERT INTO items (wishlist_id, title) SELECT $1, 'item ' || n "
            "FROM generate_series(1, $2) AS n RETURNING id", wishlist, args.items)]
        viewers = [r["id"] for r in await conn.fetch(
            "INSERT INTO users (email, name) SELECT 'viewer' || n || '@bench.example', 'v' "
            "FROM generate_series(1, $1) AS n RETURNING id", max(args.viewers))]
        if args.listen:
            ctx = multiprocessing.get_context("spawn")
            pipe, theirs = ctx.Pipe()
            listener = ctx.Process(target=_listen_worker, args=(dsn, settings.channel, theirs),
                                   daemon=True, name="sse-bench-listen")
            listener.start()
            theirs.close()
            async with asyncio.timeout(30):
                await _recv(pipe)

        update = "UPDATE items SET title = $2, updated_at = now() WHERE id = $1"
        warmup = max(50, min(1000, args.updates // 10))
        counter = 0

        async def run(n: int) -> float:
            nonlocal counter
            started = time.perf_counter()
            for _ in range(n):
                counter += 1
                await conn.execute(update, items[counter % len(items)], f"title {counter}")
            return time.perf_counter() - started

        runs: list[dict[str, Any]] = []
        summary: list[dict[str, Any]] = []
        installed = False
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
                    if with_triggers != installed:
                        if with_triggers:
                            await sqlinstall.install(conn, settings.channel)
                        else:
                            await sqlinstall.uninstall(conn)
                        installed = with_triggers
                    await run(warmup)
                    if pipe is not None:
                        pipe.send("count")  # reset the listener's counter
                        await _recv(pipe)
                    seconds = await run(args.updates)
                    notified = None
                    if pipe is not None:
                        pipe.send("count")
                        notified = await _recv(pipe)
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
        await drop_database(admin_dsn, dsn)
