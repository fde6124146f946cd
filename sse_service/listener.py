"""The one dedicated LISTEN connection, supervised.

A loop connects, LISTENs and then probes the connection with ``SELECT 1``
every ``listen_probe_interval`` seconds: asyncpg's termination callback
catches a killed backend or a server restart at once, and the probe's
timeout catches a network that silently drops packets, which nothing else
would notice. On loss the connection is torn down and re-established with
exponential backoff and full jitter; the dispatcher learns about the gap and
the recovery in order with the notifications.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from sse_service.dispatch import Dispatcher
from sse_service.senders import LOOKUP_SQL, Senders
from sse_service.settings import Settings
from sse_service.stats import Stats

log = logging.getLogger("sse_service.listener")

APPLICATION_NAME = "sse-service-listener"
LOOKUP_APPLICATION_NAME = "sse-service-lookup"
# The triggers' two loss counters (0 without our schema); only the triggers move them.
_PROBE = ("SELECT coalesce(pg_sequence_last_value(to_regclass('sse.dropped_events')), 0),"
          " coalesce(pg_sequence_last_value(to_regclass('sse.failed_events')), 0)")
# Which counter means what, in the order of _PROBE: (reason of the reset, log message).
_LOSSES = (("events_dropped", "the triggers dropped %d events (NOTIFY queue full)"),
           ("trigger_failed", "%d trigger runs failed to send their events (see the "
                              "database log)"))


@dataclass(slots=True)
class ListenState:
    """What ``/healthz`` and ``/readyz`` report."""

    connected: bool = False
    since: float | None = None  # epoch seconds of the last change
    reconnects: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"connected": self.connected, "since": self.since,
                "reconnects": self.reconnects, "last_error": self.last_error}


class ConnectionLost(Exception):
    pass


class ListenConnection(asyncpg.Connection):  # type: ignore[misc]
    """asyncpg's connection, handing our channel's notifications over directly.

    asyncpg runs every listener callback through ``loop.call_soon``: one more
    turn of the event loop for each read of the socket, and one handle per
    notification. Its protocol calls ``_process_notification`` synchronously
    while it parses a read; for our channel this passes the sender's pid and
    the payload straight to ``sink`` (admission, then the dispatcher's
    enqueue, which are as cheap as a callback must be), so the dispatcher's
    drain runs in the very next turn with every notification of that read.
    Any other channel goes the usual way. Should an asyncpg release stop
    calling this method, the callback registered with ``add_listener``
    receives the notifications instead, one turn later.
    """

    __slots__ = ("sse_channel", "sse_sink")

    sse_channel: str
    sse_sink: Callable[[int, str], None] | None

    def _process_notification(self, pid: int, channel: str, payload: str) -> None:
        sink = getattr(self, "sse_sink", None)
        if sink is not None and channel == self.sse_channel:
            sink(pid, payload)
        else:
            super()._process_notification(pid, channel, payload)


def backoff(attempt: int, cap: float, base: float = 0.25) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 30))))


class Listener:
    """Keeps one LISTEN connection alive and feeds the dispatcher."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher, stats: Stats) -> None:
        self._settings = settings
        self._dispatcher = dispatcher
        self._stats = stats
        self._last_trace = -math.inf  # when an admission error's traceback was last logged
        self.senders = Senders(roles=settings.notify_roles, enqueue=dispatcher.enqueue,
                               gap=dispatcher.gap, stats=stats, limit=settings.inbox_size)
        self.state = ListenState()
        self.ready = asyncio.Event()  # set once the first LISTEN succeeded
        self._was_up = False
        self._up_at: float | None = None  # when the current session began to LISTEN

    async def run(self) -> None:
        """Connect, listen, probe; on any failure back off and start over. Forever."""
        attempt = 0
        while True:
            self._up_at = None
            try:
                conn = await asyncpg.connect(
                    self._settings.database_url,
                    timeout=self._settings.listen_connect_timeout,
                    server_settings={"application_name": APPLICATION_NAME},
                    connection_class=ListenConnection,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(f"connect failed: {_describe(exc)}")
            else:
                try:
                    await self._session(conn)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._failed(_describe(exc))
                finally:
                    self.senders.detach()
                    conn.terminate()  # no polite close: the peer may be unreachable
                if self.state.connected:  # the session ended without an exception
                    self._failed("connection closed")
                if self._session_was_healthy():
                    attempt = 0  # start the backoff afresh
            delay = backoff(attempt, self._settings.listen_backoff_max)
            attempt += 1
            await asyncio.sleep(delay)

    async def _session(self, conn: Any) -> None:
        if self.senders.open:
            await self._listen(conn)
            return
        # Senders are looked up on a connection of their own: the LISTEN
        # connection must keep reading while a look-up waits.
        lookup_conn = await asyncpg.connect(
            self._settings.database_url, timeout=self._settings.listen_connect_timeout,
            server_settings={"application_name": LOOKUP_APPLICATION_NAME})
        try:
            lock = asyncio.Lock()  # one query at a time on it
            limit = self._settings.listen_probe_timeout

            async def lookup(pids: list[int]) -> dict[int, tuple[str, bool]]:
                async with lock:
                    rows = await lookup_conn.fetch(LOOKUP_SQL, pids, timeout=limit)
                return {row[0]: (row[1], row[2]) for row in rows}

            async def probe_lookup() -> None:
                async with lock:
                    await lookup_conn.fetchval("SELECT 1", timeout=limit)

            self.senders.attach(lookup)
            # The look-up connection is part of the session: if it dies (killed,
            # timed out while idle, a dropped network) the session ends and is
            # made again, rather than refusing every new sender from then on.
            await self._listen(conn, lookup_conn, probe_lookup)
        finally:
            self.senders.detach()
            lookup_conn.terminate()

    async def _listen(self, conn: Any, lookup_conn: Any = None,
                      probe_lookup: Callable[[], Awaitable[None]] | None = None) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        if lookup_conn is not None:
            lookup_conn.add_termination_listener(lambda _conn: lost.set())
        probe_interval = self._settings.listen_probe_interval
        probe_timeout = self._settings.listen_probe_timeout
        # The loss counters' baseline is read before LISTEN: a loss from before is
        # covered by the reset that _up() causes anyway (at worst a second reset),
        # whereas a baseline read after LISTEN could swallow a loss in between.
        lost_so_far = await self._probe(conn, probe_timeout)
        if isinstance(conn, ListenConnection):
            # Before LISTEN: asyncpg only registers a callback once LISTEN has
            # returned, and drops what arrives in the same read as its reply.
            conn.sse_channel = self._settings.channel
            conn.sse_sink = self._admit
        await conn.add_listener(self._settings.channel, self._on_notification)
        self._up()
        while True:
            try:
                await asyncio.wait_for(lost.wait(), probe_interval)
            except TimeoutError:
                pass
            if lost.is_set():
                raise ConnectionLost("the server closed the connection")
            counts = await self._probe(conn, probe_timeout)
            for (reason, message), now, before in zip(_LOSSES, counts, lost_so_far,
                                                      strict=True):
                if now != before:  # events lost in the triggers: a gap
                    log.warning(message, now - before)
                    self._dispatcher.gap(reason)
            lost_so_far = counts
            if probe_lookup is not None:
                try:
                    await probe_lookup()
                except (TimeoutError, OSError, asyncpg.InterfaceError,
                        asyncpg.PostgresError) as exc:
                    raise ConnectionLost(f"the look-up connection failed: {exc!r}") from None
            await self.senders.refresh()

    @staticmethod
    async def _probe(conn: Any, limit: float) -> tuple[int, int]:
        """One round trip (a lost network shows as a timeout); it also reads how
        many events the triggers dropped and how many of their runs failed."""
        try:
            row = await conn.fetchrow(_PROBE, timeout=limit)
        except TimeoutError:
            raise ConnectionLost(f"no answer to a probe within {limit} s") from None
        return int(row[0]), int(row[1])

    def _session_was_healthy(self) -> bool:
        """Whether the session that just ended listened for at least 10 s."""
        return self._up_at is not None and time.monotonic() - self._up_at >= 10.0

    def _on_notification(self, _conn: Any, pid: int, _channel: str, payload: str) -> None:
        self._admit(pid, payload)

    def _admit(self, pid: int, payload: str) -> None:
        """Hand one notification to admission. This runs inside asyncpg's read of
        the socket: an exception escaping here would break the LISTEN connection,
        so a bug on the way becomes a gap, like one in the dispatcher's drain."""
        try:
            self.senders.offer(pid, payload)
        except Exception:
            now = time.monotonic()
            if now - self._last_trace >= 10.0:  # a traceback, not one per notification
                self._last_trace = now
                log.exception("internal error while admitting a notification; a gap")
            self._dispatcher.gap("internal_error")

    def _up(self) -> None:
        state = self.state
        if self._was_up:
            state.reconnects += 1
            self._stats.listen_reconnects += 1
        self._was_up = True
        state.connected = True
        state.since = time.time()
        self._up_at = time.monotonic()
        self._dispatcher.listen_up()
        self.ready.set()
        log.info("listening on channel %r", self._settings.channel)

    def _failed(self, reason: str) -> None:
        state = self.state
        state.last_error = reason
        if state.connected:
            state.connected = False
            state.since = time.time()
            self._dispatcher.listen_down("listen_lost")
            log.warning("LISTEN connection lost: %s", reason)
        else:
            log.warning("LISTEN connection unavailable: %s", reason)


def _describe(exc: BaseException) -> str:
    # Class and message only: asyncpg's messages never contain the password.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
