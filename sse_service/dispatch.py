"""From the LISTEN callback to the hub: a bounded inbox and its consumer.

The LISTEN connection (:class:`~sse_service.listener.ListenConnection`) calls
:meth:`Dispatcher.notify` synchronously for every notification, while asyncpg
parses the read that brought it; it only appends to a bounded deque and, if
none is pending, schedules one drain with ``loop.call_soon``, which so finds
the whole read in the deque. The drain parses each payload, records the
event in the history and fans it out, a batch at a time, rescheduling itself
while work remains (a plain callback is cheaper to wake than a task waiting on
an event, which matters at thousands of notifications a second). Changes of
the LISTEN connection's state travel through the same deque, so they take
effect exactly between the notifications received before and after them.

If the inbox overflows, it is emptied and replaced by one gap marker: the
events are lost, and every stream is told so (``sync:reset``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from sse_service.history import History
from sse_service.hub import Hub
from sse_service.ids import IdCodec
from sse_service.logs import RateLimited
from sse_service.notification import InvalidNotification, parse
from sse_service.stats import Stats
from sse_service.wire import Event

log = logging.getLogger("sse_service.dispatch")

_NOTIFY, _UP, _DOWN = 0, 1, 2
_BATCH = 256  # items handled before giving other callbacks a turn


class Dispatcher:
    """Owns the inbox; :meth:`run` is its consumer task."""

    def __init__(self, *, hub: Hub, history: History, stats: Stats, size: int,
                 ids: IdCodec) -> None:
        self.hub = hub
        self._ids = ids
        self.history = history
        self.stats = stats
        self._size = size
        self._inbox: deque[tuple[int, str, float]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._stamps: list[float] = []  # "ts" of the notifications in this batch
        self._bad = RateLimited(log)

    # -- producers (synchronous, cheap) ----------------------------------------

    def notify(self, payload: str) -> None:
        """The notification callback's whole work: enqueue."""
        inbox = self._inbox
        if len(inbox) >= self._size:
            inbox.clear()  # what was queued is lost with this one: say so
            self.gap("inbox_overflow")
            return
        inbox.append((_NOTIFY, payload, time.monotonic()))
        self._wake()

    def listen_up(self) -> None:
        """The LISTEN connection is (again) receiving notifications."""
        self._inbox.append((_UP, "listen_reconnected", 0.0))
        self._wake()

    def gap(self, reason: str) -> None:
        """Events were lost upstream, here: everybody gets ``sync:reset``."""
        self._inbox.append((_DOWN, reason, 0.0))
        self._inbox.append((_UP, reason, 0.0))
        self._wake()

    def listen_down(self, reason: str) -> None:
        """The LISTEN connection is gone; what follows is a gap."""
        self._inbox.append((_DOWN, reason, 0.0))
        self._wake()

    @property
    def backlog(self) -> int:
        return len(self._inbox)

    # -- consumer ----------------------------------------------------------------

    def start(self) -> None:
        """Begin draining on the running loop (and drain what arrived before)."""
        self._loop = asyncio.get_running_loop()
        self._scheduled = False
        self._wake()

    def stop(self) -> None:
        """Stop draining; what is still queued is dropped with the process."""
        self._loop = None

    def _wake(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Handle up to a batch of items, write them out, reschedule while more remain."""
        self._scheduled = False
        try:
            self._handle_batch()
        finally:
            if self._inbox:
                self._wake()  # whatever happens below, the rest is drained later
            self.hub.flush()
            if self._stamps:  # latency up to the write, which happens at the flush
                now = time.time()
                observe = self.stats.latency.observe
                for sent_at in self._stamps:
                    observe(max(0.0, now - sent_at))
                self._stamps.clear()

    def _handle_batch(self) -> None:
        inbox = self._inbox
        for _ in range(_BATCH):
            if not inbox:
                return
            kind, value, received = inbox.popleft()
            try:
                if kind == _NOTIFY:
                    self._handle(value, received)
                elif kind == _UP:
                    self._handle_up(value)
                else:
                    self._handle_down(value)
            except Exception:  # one bad item must never stop the stream of events
                log.exception("internal error while dispatching; item skipped")
                self.stats.notifications_rejected["internal_error"] += 1

    def _handle(self, payload: str, received: float) -> None:
        stats = self.stats
        stats.notifications_received += 1
        try:
            note = parse(payload)
        except InvalidNotification as exc:
            stats.notifications_rejected[exc.reason] += 1
            self._bad.warning(exc.reason, "rejected a notification (%s): %s",
                              exc.reason, exc.detail)
            return
        event_id = None if note.id is None else self._ids.public(note.id)
        if event_id is None or self.history.knows(event_id):
            # No id, or one seen before (a reused id must not move anybody's resume
            # point back): an id of our own, resumable on this instance only.
            event_id = self.history.local_id()
        event = Event.build(event_id, note.event, note.data, note.sent_at)
        self.history.record(event, note.users, received)
        if self._inbox:  # more behind it: stage, so that a stream gets one write for all
            self.hub.stage(event, note.users)
        else:
            self.hub.write_now(event, note.users)
        if note.sent_at is not None:
            self._stamps.append(note.sent_at)

    def _handle_up(self, reason: str) -> None:
        # Everything from before is unprovable now; give clients a new resume point.
        self.history.clear()
        self.hub.reset_all(reason)

    def _handle_down(self, reason: str) -> None:
        self.history.clear()
        log.warning("event gap begins: %s", reason)
