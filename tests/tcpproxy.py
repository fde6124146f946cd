"""A TCP proxy on 127.0.0.1 that can black-hole traffic, for fault tests.

``blackhole()`` stops forwarding in both directions and leaves every socket
open: no FIN, no RST, exactly what a dropped network looks like to the ends.
New connections are accepted and black-holed as well. ``heal()`` forwards
again for connections made from then on (the stalled ones stay dead).
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._blackholed = False
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def blackhole(self) -> None:
        self._blackholed = True

    def heal(self) -> None:
        self._blackholed = False

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.sleep(0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self._blackholed:
            return  # keep the socket open and never answer
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await src.read(65536)
                if not data:
                    dst.close()
                    return
                if self._blackholed:
                    # Swallow this and everything after it: the peer hears nothing.
                    while await src.read(65536):
                        pass
                    await asyncio.Event().wait()
                dst.write(data)
                await dst.drain()
