"""Recent events, for resuming a stream from ``Last-Event-ID``.

The history is a window over the notifications this process received, in
arrival order. Every notification gets a position; ``_index`` maps its id to
that position and each user keeps a short list of their own recent events.

A resume from id ``X`` is exact only when this process can prove it saw
everything after ``X``: ``X`` is still in the window, no gap (lost LISTEN
connection, inbox overflow) happened since, and the user's own list has not
dropped anything newer than ``X``. Anything else is a reset: the client is
told to pull everything. Because event ids come from the database and every
instance receives the same notifications in the same order, a client may
resume on any instance; one that never saw ``X`` answers with a reset.

Streams also need resume points that are not events (at connect, on every
``sync:ping``, with a ``sync:reset``). Those are *markers*: ids this instance
makes up and records in the window like a notification. A marker is made at
each keepalive tick whether anything happened or not, so it tells a stream
nothing about other users' activity (a wishlist owner must not see, even as a
changed id, that somebody marked a gift). Markers are local to the instance:
a client resuming from one elsewhere gets a reset.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from sse_service.events import Event


@dataclass(frozen=True, slots=True)
class Reset:
    """The gap cannot be filled; ``reason`` goes to the client."""

    reason: str


@dataclass(slots=True)
class Resume:
    """An exact resume: the missed events' SSE blocks, and a newer resume point
    (a marker id) to hand the stream after them, if there is one."""

    blocks: list[bytes] = field(default_factory=list)
    resume_point: str | None = None


class History:
    """The bounded window of recent notifications and each user's events."""

    def __init__(self, *, window: int, per_user: int, max_age: float) -> None:
        self.instance = "i" + secrets.token_hex(4)  # prefix of the ids made up here
        self._local = 0  # ids made up for notifications without one
        self._markers = 0  # a counter of its own: marker ids reveal nothing else
        self._marker: tuple[int, str] | None = None  # the newest marker: (position, id)
        self._window = window
        self._per_user = per_user
        self._max_age = max_age
        self._pos = 0
        self._order: deque[tuple[int, str, float]] = deque()  # (position, id, loop time)
        self._index: dict[str, int] = {}
        # Each user's recent events as (position, SSE block); a full deque drops its
        # oldest on append. Plain tuples of an int and bytes: the cycle collector
        # stops tracking them, so a full history adds nothing to its pauses.
        self._users: dict[str, deque[tuple[int, bytes]]] = {}

    @property
    def resume_point(self) -> str | None:
        """The newest marker still in the window: a resume point for any stream."""
        marker = self._marker
        if marker is None or self._index.get(marker[1]) != marker[0]:
            return None
        return marker[1]

    def knows(self, event_id: str) -> bool:
        return event_id in self._index

    def local_id(self) -> str:
        """A fresh id for a notification that came without one (resumable here only)."""
        self._local += 1
        return f"{self.instance}-{self._local}"

    def __len__(self) -> int:
        return len(self._order)

    def record(self, event: Event, users: Iterable[str], now: float) -> None:
        """Remember ``event`` as the next notification, addressed to ``users``."""
        self._pos += 1
        pos = self._pos
        self._order.append((pos, event.id, now))
        self._index[event.id] = pos
        if len(self._order) > self._window:
            self._forget_oldest()
        logs = self._users
        entry = (pos, event.wire)  # one tuple shared by all recipients
        for user in users:
            log = logs.get(user)
            if log is None:
                log = logs[user] = deque(maxlen=self._per_user)
            log.append(entry)

    def mark(self, now: float) -> str:
        """Record a new marker (a resume point that carries no event); its id."""
        self._markers += 1
        marker_id = f"{self.instance}-m{self._markers}"
        self._pos += 1
        self._order.append((self._pos, marker_id, now))
        self._index[marker_id] = self._pos
        self._marker = (self._pos, marker_id)
        if len(self._order) > self._window:
            self._forget_oldest()
        return marker_id

    def clear(self) -> None:
        """Forget everything: after a gap no old id may resume exactly."""
        self._order.clear()
        self._index.clear()
        self._users.clear()
        self._marker = None

    def resume(self, user: str, last_id: str) -> Resume | Reset:
        """What ``user`` missed after ``last_id``, or why that is unknowable."""
        pos = self._index.get(last_id)
        if pos is None:
            return Reset("unknown_last_event_id")
        log = self._users.get(user)
        missed: list[bytes] = []
        last = pos
        if log:
            if len(log) == log.maxlen and log[0][0] > pos:
                # The list is full and starts after the resume point: it may have
                # dropped some of the user's events in between.
                return Reset("history_truncated")
            for event_pos, wire in reversed(log):
                if event_pos <= pos:
                    break
                missed.append(wire)
                last = max(last, event_pos)
            missed.reverse()
        point = self.resume_point
        # A newer marker moves the stream's resume point forward (so a quiet client
        # that reconnects often does not age out of the window); an older one
        # would move it back and make a later resume replay events twice.
        newer = point if point is not None and self._index[point] > last else None
        return Resume(missed, newer)

    def expire(self, now: float) -> None:
        """Drop what is older than the maximum age, and users with nothing left."""
        cutoff = now - self._max_age
        while self._order and self._order[0][2] < cutoff:
            self._forget_oldest()
        start = self._order[0][0] if self._order else self._pos + 1
        for user in [u for u, log in self._users.items() if _prune(log, start)]:
            del self._users[user]

    def _forget_oldest(self) -> None:
        _pos, old_id, _at = self._order.popleft()
        if self._index.get(old_id) == _pos:
            del self._index[old_id]


def _prune(log: deque[tuple[int, bytes]], start: int) -> bool:
    """Drop entries before the window ``start``; True if nothing is left."""
    while log and log[0][0] < start:
        log.popleft()
    # What the window no longer holds cannot be resumed from anyway.
    return not log
