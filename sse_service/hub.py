"""The hub: which streams are open, and the fan-out of events to them.

Everything here is synchronous and runs on the event loop: registering a
stream, computing its replay and writing it happen without an ``await`` in
between, so no live event can slip in between a replay and the stream's
registration, and every stream sees its events in notification order.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable

from sse_service.errors import OverCapacity
from sse_service.expiry import Expiries
from sse_service.history import History
from sse_service.logs import RateLimited
from sse_service.stats import Stats
from sse_service.subscriber import Subscriber
from sse_service.wire import Event, dumps, encode, frame, ping

log = logging.getLogger("sse_service.hub")


class Hub:
    """Routes events to the open streams of their recipients."""

    def __init__(self, *, history: History, stats: Stats, max_streams: int,
                 max_streams_per_user: int, retry_ms: int, evicted_retry_ms: int) -> None:
        self.history = history
        self.stats = stats
        self.max_streams = max_streams
        self.max_streams_per_user = max_streams_per_user
        self.retry_ms = retry_ms
        self.evicted_retry_ms = evicted_retry_ms
        self._streams: dict[str, list[Subscriber]] = {}
        # Staged by stage(), written by flush(): an event, or the SSE blocks of several.
        self._pending: dict[Subscriber, Event | list[bytes]] = {}
        self.count = 0
        self._opening = 0  # places held by reserve(), not yet attached or released
        self._shutdown_retry_ms: int | None = None  # set when the shutdown begins
        self.expiries = Expiries(_expire)
        self._log = RateLimited(log)

    # -- streams -------------------------------------------------------------

    def reserve(self) -> None:
        """Hold a place under ``max_streams`` for a stream about to open.

        Raises :class:`OverCapacity` when none is left. Taken before the handler's
        first ``await``, so that concurrent opens cannot all pass the check; the
        place is turned into a stream by :meth:`attach`, or given back by
        :meth:`release` on every path that does not get there.
        """
        if self.count + self._opening >= self.max_streams:
            raise OverCapacity("this instance holds its maximum number of streams",
                               retry_after=random.randint(5, 30))
        self._opening += 1

    def release(self) -> None:
        """Give back a place :meth:`reserve` held for a stream that will not attach."""
        if self._opening <= 0:
            raise RuntimeError("release() without reserve()")
        self._opening -= 1

    @property
    def opening(self) -> int:
        """Places reserved by streams that are still opening."""
        return self._opening

    def streams_of(self, user: str) -> int:
        """How many live streams ``user`` has open on this instance."""
        return sum(1 for sub in self._streams.get(user, ()) if not sub.closed)

    def attach(self, sub: Subscriber, last_event_id: str | None) -> None:
        """Register ``sub`` in the place :meth:`reserve` held, and write its preamble:
        ``retry:``, then what :meth:`History.preamble` says (a replay or a reset),
        always ending with a resume point."""
        self.release()  # the place becomes the stream (or nothing, on shutdown)
        self.flush()  # defensive: nothing staged may overtake, or follow, the replay
        if self._shutdown_retry_ms is not None:  # accepted just as the shutdown began
            sub.close("shutdown", final=self._restart_notice())
            return
        preamble = self.history.preamble(sub.user, last_event_id)
        if preamble.reset is not None:
            self.stats.resets[preamble.reset] += 1
        elif last_event_id:
            self.stats.replays += 1
            self.stats.replayed_events += preamble.replayed
        sub.write(frame(encode(retry=self.retry_ms) + preamble.blocks, sub.chunked))

        streams = self._streams.setdefault(sub.user, [])
        streams.append(sub)
        self.expiries.add(sub)
        self.count += 1
        self.stats.streams_opened += 1
        live = [s for s in streams if not s.closed]
        for oldest in live[: max(0, len(live) - self.max_streams_per_user)]:
            # A long retry: the evicted client must not come back and evict the next one.
            final = encode(retry=self.evicted_retry_ms, name="sync:closed", data=dumps(
                {"reason": "too_many_streams", "limit": self.max_streams_per_user}))
            oldest.close("too_many_streams", final=final)

    def detach(self, sub: Subscriber) -> None:
        """Forget ``sub``; its handler calls this when the stream ends, whatever the reason.

        Closing a stream only marks it and wakes its handler, so that no list is
        changed while the fan-out loop walks it.
        """
        streams = self._streams.get(sub.user)
        if streams is None or sub not in streams:
            return
        streams.remove(sub)
        self.expiries.discard(sub)
        if not streams:
            del self._streams[sub.user]
        self.count -= 1
        self.stats.streams_closed[sub.close_reason or "disconnected"] += 1

    def subscribers(self) -> list[Subscriber]:
        return [sub for streams in self._streams.values() for sub in streams]

    # -- fan-out -------------------------------------------------------------

    def write_now(self, event: Event, users: Iterable[str]) -> None:
        """Write ``event`` to every open stream of ``users`` now.

        The dispatcher's path for the last notification of a batch, which is
        the only one unless notifications arrive faster than they are handled.
        Writing at once skips the staging and its bookkeeping per delivery. If
        earlier notifications of the batch are staged, this one is staged
        behind them instead, so that every stream still sees its events in
        order, in one write.
        """
        if self._pending:
            self.stage(event, users)
            return
        streams = self._streams
        chunk, wire = event.chunk, event.wire
        delivered = dropped = 0
        for user in users:
            subs = streams.get(user)
            if subs is None:
                continue
            for sub in subs:  # close() only marks a stream: the list stays as it is
                if sub.write(chunk if sub.chunked else wire):
                    delivered += 1
                else:
                    dropped += 1
        self.stats.events_delivered += delivered
        self.stats.events_dropped += dropped

    def stage(self, event: Event, users: Iterable[str]) -> None:
        """Stage ``event`` for every open stream of ``users``; :meth:`flush` writes.

        The dispatcher stages the notifications of a batch while more wait
        behind them, and flushes once at the batch's end: a stream that gets
        several events in one batch gets them in one write, one system call.
        Under load the batches grow and the cost per event shrinks; a lone
        notification goes through :meth:`write_now` instead and nothing waits.
        """
        streams = self._streams
        pending = self._pending
        for user in users:
            subs = streams.get(user)
            if subs is None:
                continue
            for sub in subs:
                waiting = pending.get(sub)
                if waiting is None:
                    pending[sub] = event
                elif isinstance(waiting, list):
                    waiting.append(event.wire)
                else:
                    pending[sub] = [waiting.wire, event.wire]

    def flush(self) -> None:
        """Write what :meth:`stage` staged: one write per stream.

        For a stream with one staged event it writes that event's pre-framed
        bytes, the same object for every stream.
        """
        pending = self._pending
        if not pending:
            return
        self._pending = {}
        delivered = 0
        dropped = 0
        for sub, waiting in pending.items():
            if isinstance(waiting, list):
                count = len(waiting)
                data = frame(b"".join(waiting), sub.chunked)
            else:
                count = 1
                data = waiting.framed(sub.chunked)
            if sub.write(data):
                delivered += count
            else:
                dropped += count
        self.stats.events_delivered += delivered
        self.stats.events_dropped += dropped

    def broadcast(self, block: bytes) -> None:
        """Write one unframed SSE block to every open stream (after what is staged)."""
        self.flush()
        chunk = frame(block, True)
        for sub in self.subscribers():
            sub.write(chunk if sub.chunked else block)

    def ping(self) -> None:
        """The keepalive: one ``sync:ping`` for all; also notices dead peers.

        Its id is a fresh marker, made whether anything happened or not, so a
        ping says nothing about other users' activity."""
        self.broadcast(ping(self.history.marker()))

    def reset_all(self, reason: str) -> None:
        """Tell every open stream that events may have been lost."""
        if self.count:
            self.stats.resets[reason] += self.count
            # Rate-limited: whoever may NOTIFY can provoke gaps (an inbox overflow).
            self._log.warning(reason, "sent sync:reset to %d streams: %s", self.count, reason)
        self.broadcast(self.history.reset_block(reason))

    def close_all(self, reason: str, final: Callable[[], bytes] | None = None) -> int:
        """End every open stream, each after the block ``final()`` makes (if any)."""
        self.flush()
        subs = self.subscribers()
        for sub in subs:
            sub.close(reason, final=None if final is None else final())
        return len(subs)

    def shutdown(self, retry_ms: int) -> int:
        """Refuse new streams, and end every open one telling it to come back after
        about ``retry_ms`` (jittered ±50 %, so that clients do not return in one
        burst). Returns how many streams were open."""
        self._shutdown_retry_ms = retry_ms
        self.expiries.close()
        return self.close_all("shutdown", final=self._restart_notice)

    def _restart_notice(self) -> bytes:
        base = self._shutdown_retry_ms or 0
        retry = random.randint(base // 2, base + base // 2) if base else 0
        return encode(comment="server restarting", retry=retry)


_EXPIRED = encode(name="auth:expired", data=dumps({"reason": "token_expired"}))


def _expire(sub: Subscriber) -> None:
    """A stream's token expired: it may not receive anything more."""
    sub.close("token_expired", final=_EXPIRED)
