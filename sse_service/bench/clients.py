"""The client side: N SSE streams spread over worker processes of their own.

Each worker is a raw asyncio protocol per stream (no HTTP library: the
clients must cost far less than the service) that counts the keys of the
events it receives and their receipt times. The parent talks to each worker
over a pipe: "connected" report, "go", then the drain order and the result.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import signal
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from multiprocessing.connection import Connection
from typing import Any

from sse_service.stream import STREAM_PATH


@dataclass(frozen=True)
class WorkerConfig:
    """One worker's share: its streams' tokens and what to count in their events."""

    index: int
    host: str
    port: int
    tokens: list[str]
    pattern: bytes
    unix: str | None = None  # a Unix socket path instead of host:port
    concurrency: int = 200
    connect_timeout: float = 30.0


async def recv(pipe: Connection) -> Any:
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
                    if cfg.unix is not None:
                        _, stream = await self.loop.create_unix_connection(
                            lambda: _Stream(self), cfg.unix)
                    else:
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

        msg = await recv(self.pipe)  # "go"
        assert msg == "go", msg
        self.keys = array("q")
        self.times = array("d")
        self.received = 0
        cpu0 = os.times()
        wall0 = time.monotonic()
        self.pipe.send("going")

        msg = await recv(self.pipe)  # {"drain": expected, "quiet": s, "deadline": s}
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
                 pattern: bytes, unix: str | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.workers = workers
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for w in range(workers):
            ours, theirs = ctx.Pipe()
            cfg = WorkerConfig(w, host, port, tokens[w::workers], pattern, unix)
            proc = ctx.Process(target=_client_worker, args=(cfg, theirs), daemon=True,
                               name=f"sse-bench-client-{w}")
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    async def _all(self, within: float) -> list[Any]:
        async with asyncio.timeout(within):
            return list(await asyncio.gather(*(recv(p) for p in self.pipes)))

    async def connected(self, within: float) -> list[dict[str, Any]]:
        """Each worker's report once its streams are open: connected, failed, errors."""
        return await self._all(within)

    async def go(self) -> None:
        """Start counting from now (what arrived before is forgotten)."""
        for pipe in self.pipes:
            pipe.send("go")
        await self._all(10)

    async def drain(self, expected: list[int], quiet: float,
                    deadline: float) -> list[dict[str, Any]]:
        """Wait for the deliveries due (or ``quiet`` s of silence); each worker's result."""
        for pipe, exp in zip(self.pipes, expected, strict=True):
            pipe.send({"expected": exp, "quiet": quiet, "deadline": deadline})
        return await self._all(deadline + 30)

    def close(self) -> None:
        """Let the workers exit (terminate the ones that do not)."""
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()
