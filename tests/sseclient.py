"""A raw HTTP/1.1 client for ``text/event-stream``, over a plain socket.

It keeps every byte it read (``raw``), undoes the chunked framing itself and
parses SSE the way the WHATWG spec says a browser does, including
``lastEventId`` and ``retry``. Tests can also stop reading (to play a stalled
client) or drop the connection.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field
from typing import Any

# A barrier's event (tests.harness.barrier): a sentinel sent after the action under test.
BARRIER_EVENT = "test:barrier"
PRESENCE_TIMEOUT = 20.0  # for what must arrive: generous, on a loaded 2-core machine


@dataclass
class SSE:
    event: str
    data: str
    id: str | None  # the stream's last event id after this event

    @property
    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class SSEClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    headers: dict[str, str]
    chunked: bool
    raw: bytearray = field(default_factory=bytearray)  # the body as received (de-chunked)
    last_event_id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    eof: bool = False
    chunks: int = 0  # HTTP/1.1 chunks received
    _text: str = ""
    _chunk_size: int | None = None  # read from a size line; its data not yet read
    _events: list[SSE] = field(default_factory=list)

    # -- connecting ------------------------------------------------------------

    @classmethod
    async def open(cls, port: int, path: str = "/api/v1/events/stream", *,
                   token: str | None = None, headers: dict[str, str] | None = None,
                   version: str = "1.1", host: str = "127.0.0.1",
                   rcvbuf: int | None = None, unix: str | None = None) -> SSEClient:
        if unix is not None:  # the service's SSE_UNIX_SOCKET instead of host:port
            reader, writer = await asyncio.open_unix_connection(unix)
        elif rcvbuf is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:  # a small receive window, set before the handshake advertises one
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock)
        lines = [f"GET {path} HTTP/{version}", f"Host: {host}:{port}",
                 "Accept: text/event-stream"]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status, hdrs = await _read_head(reader)
        client = cls(reader, writer, status, hdrs,
                     chunked=hdrs.get("transfer-encoding", "").lower() == "chunked")
        return client

    async def read_body(self, timeout: float = 5.0) -> bytes:
        """For a non-stream response: the whole body."""
        await asyncio.wait_for(self._drain_until_eof(), timeout)
        return bytes(self.raw)

    # -- reading ---------------------------------------------------------------

    async def next_event(self, timeout: float = PRESENCE_TIMEOUT, *,
                         skip_pings: bool = True) -> SSE:
        """The next dispatched event (by default skipping ``sync:ping``)."""
        async with asyncio.timeout(timeout):
            while True:
                while self._events:
                    ev = self._events.pop(0)
                    if skip_pings and ev.event == "sync:ping":
                        continue
                    return ev
                if self.eof:
                    raise EOFError("stream ended")
                await self._read_some()

    async def events_within(self, seconds: float, *, skip_pings: bool = True) -> list[SSE]:
        """Every event that arrives within ``seconds`` (stops early at EOF)."""
        out: list[SSE] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return out
            try:
                out.append(await self.next_event(remaining, skip_pings=skip_pings))
            except (TimeoutError, EOFError):
                return out

    async def preamble(self, timeout: float = PRESENCE_TIMEOUT) -> list[SSE]:
        """Read the service's first write to the stream; the events in it.

        The hub registers a stream and writes its preamble in one go: ``retry:``
        first, then a resume point, a replay or a ``sync:reset``. Once it is read,
        the stream is registered and whatever is sent from now on arrives after it.
        """
        async with asyncio.timeout(timeout):
            while self.retry is None or self._text:
                if self.eof:
                    raise EOFError("stream ended before its preamble")
                await self._read_some()
        out = [ev for ev in self._events if ev.event != "sync:ping"]
        self._events.clear()
        return out

    async def until_barrier(self, tag: str, timeout: float = PRESENCE_TIMEOUT, *,
                            skip_pings: bool = True) -> list[SSE]:
        """Every event before the barrier ``tag`` (other barriers left out)."""
        out: list[SSE] = []
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.next_event(timeout, skip_pings=skip_pings)
                if ev.event != BARRIER_EVENT:
                    out.append(ev)
                elif ev.json.get("barrier") == tag:
                    return out

    async def wait_eof(self, timeout: float = 10.0) -> list[SSE]:
        """Read until the server ends the stream; the events seen on the way."""
        out: list[SSE] = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    out.append(await self.next_event(timeout, skip_pings=False))
                except EOFError:
                    return out

    async def _drain_until_eof(self) -> None:
        while not self.eof:
            await self._read_some()

    async def _read_some(self) -> None:
        if self.chunked:
            # Safe to cancel (a timeout may strike between a size line and its data):
            # the size is kept until the chunk's data is read.
            if self._chunk_size is None:
                size_line = await self.reader.readline()
                if not size_line:
                    raise ConnectionError("connection closed inside a chunked body")
                self._chunk_size = int(size_line.strip().split(b";")[0], 16)
            size = self._chunk_size
            if size == 0:
                await self.reader.readline()
                self._chunk_size = None
                self.eof = True
                return
            data = await self.reader.readexactly(size + 2)
            self._chunk_size = None
            if data[-2:] != b"\r\n":
                raise ValueError("bad chunk framing")
            data = data[:-2]
            self.chunks += 1
        else:
            data = await self.reader.read(65536)
            if not data:
                self.eof = True
                return
        self.raw += data
        self._feed(data.decode("utf-8"))

    def _feed(self, text: str) -> None:
        # WHATWG "interpret an event stream"; a complete event ends with a blank line.
        self._text += text
        while True:
            cut = _end_of_event(self._text)
            if cut is None:
                return
            block, self._text = self._text[: cut[0]], self._text[cut[1]:]
            self._interpret(block)

    def _interpret(self, block: str) -> None:
        event, data_lines = "", []
        for line in block.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data_lines.append(value)
            elif name == "id" and "\0" not in value:
                self.last_event_id = value
            elif name == "retry" and value.isdigit():
                self.retry = int(value)
        if data_lines:
            self._events.append(SSE(event or "message", "\n".join(data_lines),
                                    self.last_event_id))

    # -- faults ------------------------------------------------------------------

    def stop_reading(self) -> None:
        """Play a client that stopped reading: the socket stays open, unread."""
        transport = self.writer.transport
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def _end_of_event(text: str) -> tuple[int, int] | None:
    best: tuple[int, int] | None = None
    for sep in ("\r\n\r\n", "\n\n", "\r\r"):
        i = text.find(sep)
        if i != -1 and (best is None or i < best[0]):
            best = (i, i + len(sep))
    return best


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def request(port: int, path: str, *, token: str | None = None,
                  headers: dict[str, str] | None = None, method: str = "GET",
                  unix: str | None = None) -> Response:
    """A plain request/response over the same raw socket code."""
    if unix is not None:
        reader, writer = await asyncio.open_unix_connection(unix)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    try:
        status, hdrs = await _read_head(reader)
        body = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Response(status, hdrs, body)


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        line, _, rest = body.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return bytes(out)
