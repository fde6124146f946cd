"""An in-memory transport for unit tests of the hub and the dispatcher.

It records the bytes a socket would carry, and plays the peers the hub must
cope with: one that stopped reading (``stalled``), one that is gone
(``closing``), and a transport bug (``fail_next``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class MemoryTransport(asyncio.Transport):
    """Records every write; see the module's docstring for the peers it plays."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.buffered = 0
        self.stalled = False
        self.closing = False
        self.aborted = False
        self.fail_next = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("injected transport failure")
        self.writes.append(bytes(data))
        if self.stalled:
            self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted = self.closing = True

    @property
    def blocks(self) -> list[dict[str, str]]:
        """Every SSE block written so far (unchunked streams), as {field: value}."""
        out = []
        for block in b"".join(self.writes).decode().split("\n\n")[:-1]:
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                name, _, value = line.partition(": ")
                fields[name] = value
            out.append(fields)
        return out

    def events(self, *, pings: bool = False) -> list[tuple[str, Any]]:
        """(event name, decoded data) of every event written so far, in order;
        ``sync:ping`` only with ``pings``."""
        return [(b["event"], json.loads(b["data"])) for b in self.blocks
                if "event" in b and (pings or b["event"] != "sync:ping")]
