"""Recent events, for resuming a stream from ``Last-Event-ID``.

The history is a window over the notifications this process received, in
arrival order. Every notification gets a position; ``_index`` maps its id to
that position and each user keeps a short list of their own recent events.

A resume from id ``X`` is exact only when this process can prove it saw
everything after ``X``: ``X`` is still in the window, no gap (lost LISTEN
connection, inbox overflow) happened since, and the user's own list has not
dropped anything newer than ``X``. Anything else is a reset: the client is
told to pull everything. Because ids come from a database sequence and every
instance receives the same notifications in the same order, a client may
resume on any instance; one that never saw ``X`` answers with a reset.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from sse_service.events import Event


@dataclass(frozen=True, slots=True)
class Reset:
    """The gap cannot be filled; ``reason`` goes to the client."""

    reason: str


class History:
    """The bounded window of recent notifications and each user's events."""

    def __init__(self, *, window: int, per_user: int, max_age: float) -> None:
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
    def newest_id(self) -> str | None:
        """The id of the last notification seen: a resume point for everybody."""
        return self._order[-1][1] if self._order else None

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

    def mark(self, marker_id: str, now: float) -> None:
        """Record a resume point that carries no event (start of an epoch)."""
        self._pos += 1
        self._order.append((self._pos, marker_id, now))
        self._index[marker_id] = self._pos
        if len(self._order) > self._window:
            self._forget_oldest()

    def clear(self) -> None:
        """Forget everything: after a gap no old id may resume exactly."""
        self._order.clear()
        self._index.clear()
        self._users.clear()

    def resume(self, user: str, last_id: str) -> list[bytes] | Reset:
        """The SSE blocks of the events ``user`` missed after ``last_id``, or why
        that is unknowable."""
        pos = self._index.get(last_id)
        if pos is None:
            return Reset("unknown_last_event_id")
        log = self._users.get(user)
        if not log:
            return []
        if len(log) == log.maxlen and log[0][0] > pos:
            # The list is full and starts after the resume point: it may have
            # dropped some of the user's events in between.
            return Reset("history_truncated")
        missed: list[bytes] = []
        for event_pos, wire in reversed(log):
            if event_pos <= pos:
                break
            missed.append(wire)
        missed.reverse()
        return missed

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
