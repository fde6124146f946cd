"""Recent events, and what a (re)connecting stream gets: replay, or a reset.

The history is a window over the notifications this process received, in
arrival order. Every notification gets a position; ``_index`` maps its id to
that position and each user keeps a short list of their own recent events.

A resume from id ``X`` is exact only when this process can prove it saw
everything after ``X``: ``X`` is an event still in the window or a marker
(:mod:`sse_service.markers`) whose position the window still reaches back
to, no gap (lost LISTEN connection, inbox overflow) happened since, and the
user's own list has not dropped anything newer than ``X``. Anything else is
a reset: the client is told to pull everything. Because event ids come from
the database and every instance receives the same notifications in the same
order, a client may resume on any instance; one that never saw ``X``
answers with a reset.

:meth:`History.preamble` answers "what does a stream that last saw ``X`` get
now?": the replay or the reset, and always a resume point on a block that
every SSE parser dispatches (an event with data: a ``sync:ping`` or the
``sync:reset``), never a bare ``id:`` line, which some clients drop.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from sse_service.markers import MarkerCodec
from sse_service.wire import ID_RE, Event, dumps, encode, ping

# Users whose recent events are kept: with every notification capped at 256
# recipients, this bounds the history's memory whoever sends notifications.
MAX_USERS = 200_000


@dataclass(frozen=True, slots=True)
class Reset:
    """The gap cannot be filled; ``reason`` goes to the client."""

    reason: str


@dataclass(slots=True)
class Resume:
    """An exact resume: the SSE blocks of the user's missed events, in order."""

    blocks: list[bytes] = field(default_factory=list)


class Preamble(NamedTuple):
    """What a new stream is written first: SSE blocks ending with a resume point."""

    blocks: bytes
    replayed: int = 0  # events replayed from the history
    reset: str | None = None  # the reason, if the stream starts with sync:reset


class History:
    """The bounded window of recent notifications and each user's events."""

    def __init__(self, *, window: int, per_user: int, max_age: float,
                 max_users: int = MAX_USERS) -> None:
        self.instance = "i" + secrets.token_hex(4)  # prefix of the ids made up here
        self._markers = MarkerCodec(self.instance)
        self._generation = 0  # ended by every clear(): no marker survives a gap
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
        # At most max_users lists: past it the oldest list goes, and a resume from
        # before the newest event it held cannot be proven exact for anybody
        # whose list may have been among them.
        self._max_users = max_users
        self._evicted_through = 0

    def knows(self, event_id: str) -> bool:
        return event_id in self._index

    def local_id(self) -> str:
        """A fresh id for a notification that came without one (resumable here only).

        Random, not counted: a counter would show how many such notifications
        other users got between two of one's own."""
        return f"{self.instance}-{secrets.token_hex(6)}"

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
                if len(logs) > self._max_users:
                    self._evict_oldest_user()
            log.append(entry)

    def _evict_oldest_user(self) -> None:
        oldest = next(iter(self._users))
        log = self._users.pop(oldest)
        if log:
            self._evicted_through = max(self._evicted_through, log[-1][0])

    def marker(self) -> str:
        """A fresh resume point for "everything recorded so far was seen"."""
        return self._markers.make(self._generation, self._pos)

    def clear(self) -> None:
        """Forget everything: after a gap no old id (event or marker) may resume exactly."""
        self._order.clear()
        self._index.clear()
        self._users.clear()
        self._generation += 1

    # -- what a stream gets ----------------------------------------------------

    def preamble(self, user: str, last_event_id: str | None) -> Preamble:
        """The first blocks of a stream of ``user`` that last saw ``last_event_id``."""
        if not last_event_id:
            return Preamble(ping(self.marker()))
        outcome = (self.resume(user, last_event_id) if ID_RE.match(last_event_id)
                   else Reset("invalid_last_event_id"))
        if isinstance(outcome, Reset):
            return Preamble(self.reset_block(outcome.reason), reset=outcome.reason)
        # A fresh marker after the replay moves a quiet client's resume point
        # forward, so that one that reconnects often does not age out of the window.
        blocks = outcome.blocks
        return Preamble(b"".join([*blocks, ping(self.marker())]), replayed=len(blocks))

    def reset_block(self, reason: str) -> bytes:
        """``sync:reset`` with a fresh resume point."""
        return encode(id=self.marker(), name="sync:reset", data=dumps({"reason": reason}))

    def resume(self, user: str, last_id: str) -> Resume | Reset:
        """What ``user`` missed after ``last_id``, or why that is unknowable."""
        pos = self._index.get(last_id)
        if pos is None:
            pos = self._marker_position(last_id)
            if pos is None:
                return Reset("unknown_last_event_id")
        log = self._users.get(user)
        if pos < self._evicted_through and (not log or log[0][0] > pos):
            return Reset("history_truncated")  # the user's list may have been evicted
        missed: list[bytes] = []
        if log:
            if len(log) == log.maxlen and log[0][0] > pos:
                # The list is full and starts after the resume point: it may have
                # dropped some of the user's events in between.
                return Reset("history_truncated")
            for event_pos, wire in reversed(log):
                if event_pos <= pos:
                    break
                missed.append(wire)
            missed.reverse()
        return Resume(missed)

    def _marker_position(self, marker: str) -> int | None:
        """The position a marker of this generation stands for, if the window
        still holds everything after it."""
        read = self._markers.read(marker)
        if read is None:
            return None
        generation, pos = read
        if generation != self._generation & 0xFFFFFFFF or pos > self._pos:
            return None
        first = self._order[0][0] if self._order else self._pos + 1
        return pos if pos >= first - 1 else None

    # -- housekeeping ----------------------------------------------------------

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
