"""From the LISTEN connection to the hub: a bounded inbox and its consumer.

The LISTEN connection (:class:`~sse_service.listener.ListenConnection`) calls
:meth:`Dispatcher.enqueue` synchronously for every notification, while asyncpg
parses the read that brought it. Admission happens there: the payload is
parsed and validated at once, so junk is refused before it takes a place in
the bounded inbox (a flood of it cannot push real events out). A valid one is
appended to a deque and, if none is pending, one drain is scheduled with
``loop.call_soon``, which so finds the whole read in the deque. The drain
records each event in the history and fans it out, a batch at a time,
rescheduling itself while work remains (a plain callback is cheaper to wake
than a task waiting on an event, which matters at thousands of notifications
a second). Changes of the LISTEN connection's state travel through the same
deque, so they take effect exactly between the notifications received
before and after them.

Every gap (the inbox overflowed, the triggers dropped or failed to send
events, an internal error here) clears the history at once, so no resume
crosses it, and sends every stream ``sync:reset``. Resets for one reason are
sent at most once per ``reset_interval`` seconds: a later gap's reset is
deferred to the end of the interval and coalesced with any others until
then, never dropped. So a cause that repeats (or that somebody repeats on
purpose) cannot make every client pull everything more often than that.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from typing import cast

from sse_service.history import History
from sse_service.hub import Hub
from sse_service.ids import IdCodec
from sse_service.logs import RateLimited
from sse_service.notification import InvalidNotification, Notification, parse
from sse_service.stats import Stats
from sse_service.wire import Event

log = logging.getLogger("sse_service.dispatch")

_NOTIFY, _UP, _DOWN = 0, 1, 2
_BATCH = 256  # items handled before giving other callbacks a turn
# Recipients the inbox may hold per place, on average: bounds its memory when
# the notifications name many users each (the triggers' name a few).
_USERS_PER_PLACE = 64
RESET_INTERVAL = 5.0  # seconds between two resets for the same reason


class Dispatcher:
    """Owns the inbox; :meth:`enqueue` is its producer, :meth:`start` begins the drain."""

    def __init__(self, *, hub: Hub, history: History, stats: Stats, size: int,
                 ids: IdCodec, reset_interval: float = RESET_INTERVAL) -> None:
        self.hub = hub
        self._ids = ids
        self.history = history
        self.stats = stats
        self._size = size
        self._max_users = size * _USERS_PER_PLACE
        self._queued_users = 0  # recipients of the notifications in the inbox
        self._reset_interval = reset_interval
        self._inbox: deque[tuple[int, Notification | str, float]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._stamps: list[float] = []  # "ts" of the notifications in this batch
        self._bad = RateLimited(log)
        self._last_reset: dict[str, float] = {}  # reason -> monotonic time of its last reset
        self._deferred: dict[str, asyncio.TimerHandle] = {}  # reason -> its coming reset
        self._last_trace = -math.inf  # when an internal error's traceback was last logged

    # -- producers (synchronous, cheap) ----------------------------------------

    def enqueue(self, payload: str) -> None:
        """Admit one notification: validate it, then queue it for the drain.

        Called for every notification as it is read; an invalid payload is
        counted, logged (rate-limited) and dropped here, before it takes a
        place in the inbox."""
        stats = self.stats
        stats.notifications_received += 1
        try:
            note = parse(payload)
        except InvalidNotification as exc:
            stats.notifications_rejected[exc.reason] += 1
            self._bad.warning(exc.reason, "rejected a notification (%s): %s",
                              exc.reason, exc.detail)
            return
        inbox = self._inbox
        if len(inbox) >= self._size or self._queued_users >= self._max_users:
            # What was queued is lost with this one: say so. Resets already due
            # stay (one per reason): they are sent after the lost events were
            # committed, so they cover them too, and must not wait for the
            # rate limit of this gap.
            due = {item[1]: item for item in inbox if item[0] == _UP}
            inbox.clear()
            inbox.extend(due.values())
            self._queued_users = 0
            self.gap("inbox_overflow")
            return
        inbox.append((_NOTIFY, note, time.monotonic()))
        self._queued_users += len(note.users)
        self._wake()

    def listen_up(self) -> None:
        """The LISTEN connection is (again) receiving notifications."""
        self._inbox.append((_UP, "listen_reconnected", 0.0))
        self._wake()

    def gap(self, reason: str) -> None:
        """Events were lost upstream or here: every stream gets ``sync:reset``.

        The history forgets everything before this point now; the reset goes
        out now, or at the end of ``reset_interval`` after the last one for the
        same reason (one reset for all the gaps of that reason until then)."""
        down = (_DOWN, reason, 0.0)
        if not self._inbox or self._inbox[-1] != down:  # repeated gaps in a row: one
            self._inbox.append(down)
        if reason not in self._deferred:
            now = time.monotonic()
            last = self._last_reset.get(reason)
            if last is None or now - last >= self._reset_interval or self._loop is None:
                self._last_reset[reason] = now
                self._inbox.append((_UP, reason, 0.0))
            else:
                self._deferred[reason] = self._loop.call_later(
                    last + self._reset_interval - now, self._deferred_reset, reason)
        self._wake()

    def _deferred_reset(self, reason: str) -> None:
        del self._deferred[reason]
        self._last_reset[reason] = time.monotonic()
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
        for handle in self._deferred.values():
            handle.cancel()
        self._deferred.clear()

    def _wake(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Handle up to a batch of items, write them out, reschedule while more remain."""
        self._scheduled = False
        try:
            self._handle_batch()
            self.hub.flush()
        except Exception:  # in the flush: staged events may not have reached everybody
            self._internal_error()
        finally:
            if self._inbox:
                self._wake()  # the rest is drained later
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
                    note = cast(Notification, value)
                    self._queued_users -= len(note.users)
                    self._handle(note, received)
                elif kind == _UP:
                    self._handle_up(cast(str, value))
                else:
                    self._handle_down(cast(str, value))
            except Exception:  # one bad item must never stop the stream of events
                self._internal_error()

    def _internal_error(self) -> None:
        """A bug or a broken transport: an item's recipients (or, for a state
        change or a flush, anybody) may have missed something: a gap like any other."""
        now = time.monotonic()
        if now - self._last_trace >= 10.0:  # a traceback, but not one per notification
            self._last_trace = now
            log.exception("internal error while dispatching (further ones within 10 s"
                          " are only counted: sse_notifications_rejected_total)")
        self.stats.notifications_rejected["internal_error"] += 1
        self.gap("internal_error")

    def _handle(self, note: Notification, received: float) -> None:
        event_id = None if note.id is None else self._ids.public(note.id)
        if event_id is None or self._deferred or self.history.knows(event_id):
            # While a reset is deferred, streams may already hold events after an
            # unannounced gap: their ids must not resume exactly on another
            # instance, which never saw this gap.
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
        self._bad.warning("gap:" + reason, "event gap begins: %s", reason)
