"""One open event stream: a transport to write to, and how it ends.

Writes go straight to the connection's asyncio transport, without awaiting:
the transport's own write buffer is the stream's bounded buffer. When a
client stops reading, that buffer grows; past ``max_buffer`` bytes the stream
is aborted (the client resumes later with ``Last-Event-ID``), so a slow
reader can cost neither memory nor the other streams' latency.
"""

from __future__ import annotations

import asyncio
import math

from sse_service.wire import frame


class Subscriber:
    """A registered stream of one user. Created and owned by the stream handler."""

    __slots__ = ("chunked", "close_reason", "closed", "done", "expires_at", "max_buffer",
                 "transport", "user")

    def __init__(self, user: str, transport: asyncio.Transport, *, chunked: bool,
                 max_buffer: int, expires_at: float = math.inf) -> None:
        self.user = user
        self.expires_at = expires_at  # the token's exp: the hub ends the stream then
        self.transport = transport
        self.chunked = chunked
        self.max_buffer = max_buffer
        self.closed = False
        self.close_reason: str | None = None
        # Resolved by close(); the stream's handler awaits it, then unregisters.
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def write(self, framed: bytes) -> bool:
        """Queue already-framed bytes; False (and closed) if the stream is gone or stuck."""
        if self.closed:
            return False
        transport = self.transport
        if transport.is_closing():
            self.close("disconnected")
            return False
        transport.write(framed)
        if transport.get_write_buffer_size() > self.max_buffer:
            self.close("slow_consumer", abort=True)
            return False
        return True

    def close(self, reason: str, *, final: bytes | None = None, abort: bool = False) -> None:
        """End the stream, optionally after one last SSE block. Idempotent."""
        if self.closed:
            return
        if final is not None and not self.transport.is_closing():
            self.transport.write(frame(final, self.chunked))
        self.closed = True
        self.close_reason = reason
        if abort:
            self.transport.abort()
        if not self.done.done():
            self.done.set_result(None)
